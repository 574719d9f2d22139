"""kiln-router for real (issue 15): `helm install` of charts/kiln with
router.enabled on the real nodes runs 2 kiln-router pods, Ready only once they
have synced from the API through their read-only ServiceAccount. Two
`kiln-worker serve` pods play versions v1 and v2 of a ModelDeployment, each
behind a Service labelled with the deployment and version (the EndpointSlice
controller copies the labels onto the slices the router watches). Requests go
to the router Service through `kubectl port-forward` (loopback to a pod this
test created): they reach v1; a write of status.traffic sends every new
request to v2, and the rollback back to v1 (the time from the status write to
the first request answered by the new version is printed, not asserted);
/debug/summary counts both versions; an unknown model gets 404 and a version
without endpoints 503, both as JSON naming the reason.

The images: $KILN_ROUTER_IMAGE / $KILN_WORKER_IMAGE (OCI archives), else
build/images/kiln-router.tar / kiln-worker.tar from scripts/images.sh, else
packed here from $KILN_ROUTER_BIN / $KILN_WORKER_BIN and their shared
libraries. The checkpoint the workers serve is a 2-step tiny model trained
here with $KILN_WORKER_BIN.

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir> KILN_ROUTER_BIN=build/ci/router/kiln-router \\
  KILN_WORKER_BIN=build/ci/worker/kiln-worker python3 tests/integration/router_pods_test.py
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnode_test import (KUBECTL, CLUSTER, RUN_DIR, ROOT, STATE, kubectl,  # noqa: E402
                           real_nodes, wait_phase)
from worker_pods_test import FORTUNES, import_archive, local_image_archive  # noqa: E402

HELM = Path(STATE["spec"]["bin_dir"]) / "helm"
RELEASE = "kiln"
MODEL = "chat"


def image(name, tmp):
    """The image archive for `name`, imported into the nodes; its reference."""
    archive = Path(os.environ.get(f"KILN_{name.upper()}_IMAGE")
                   or ROOT / f"build/images/kiln-{name}.tar")
    if not archive.is_file():
        binary = os.environ.get(f"KILN_{name.upper()}_BIN")
        if not binary or not Path(binary).is_file():
            raise unittest.SkipTest(f"no kiln-{name} image or binary (KILN_{name.upper()}_IMAGE, "
                                    f"KILN_{name.upper()}_BIN)")
        archive = Path(tmp) / f"kiln-{name}.tar"
        local_image_archive(Path(binary), f"/kiln-{name}", f"kiln.dev/kiln-{name}-local:test",
                            archive)
    return import_archive(archive)


def post(port, body, headers=None, timeout=30):
    """(status, headers, parsed body) of one POST /v1/completions."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


class RouterPodsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        worker_bin = os.environ.get("KILN_WORKER_BIN")
        if not worker_bin or not Path(worker_bin).is_file():
            raise unittest.SkipTest("KILN_WORKER_BIN is needed to train the served checkpoint")
        cls.router_image = image("router", cls.tmp.name)
        cls.worker_image = image("worker", cls.tmp.name)
        cls.ns = "kiln-rt-" + uuid.uuid4().hex[:6]
        cls.nodes = real_nodes()

        # The served model: 2 steps of a tiny one, on a volume every real node sees.
        cls.work = Path(RUN_DIR) / "volumes" / cls.ns
        cls.work.mkdir(parents=True)
        os.chmod(cls.work, 0o755)
        subprocess.run([worker_bin, "prepare", "--input", FORTUNES, "--output",
                        str(cls.work / "data")], check=True, capture_output=True)
        subprocess.run([worker_bin, "train", "--data", str(cls.work / "data/manifest.json"),
                        "--steps", "2", "--layers", "1", "--heads", "2", "--channels", "32",
                        "--batch", "2", "--seq", "32", "--checkpoint-dir", str(cls.work / "ckpt"),
                        "--checkpoint-every", "2"], check=True, capture_output=True)
        for p in cls.work.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

        repository, tag = cls.router_image.rsplit(":", 1)
        helm_home = Path(cls.tmp.name) / "helm"
        cls.helm_env = dict(os.environ, KUBECONFIG=CLUSTER["dir"] + "/kubeconfig",
                            HELM_CONFIG_HOME=str(helm_home / "config"),
                            HELM_CACHE_HOME=str(helm_home / "cache"),
                            HELM_DATA_HOME=str(helm_home / "data"))
        start = time.monotonic()
        # The router alone (replicaCount=0: no operator), watching this
        # namespace only (a Role, not a ClusterRole).
        subprocess.run([str(HELM), "install", RELEASE, str(ROOT / "charts" / "kiln"),
                        "--namespace", cls.ns, "--create-namespace", "--set", "replicaCount=0",
                        "--set", "router.enabled=true",
                        "--set", f"router.image.repository={repository}",
                        "--set", f"router.image.tag={tag}",
                        "--set", f"router.watchNamespace={cls.ns}",
                        "--set", "router.drainTimeoutSeconds=5",
                        "--set", "router.nodeSelector.kiln\\.dev/node-kind=real",
                        "--wait", "--timeout", "180s"],
                       env=cls.helm_env, check=True, capture_output=True, text=True)
        print(f"figure: helm install --wait with 2 routers on real nodes "
              f"{time.monotonic() - start:.1f} s")

        for i, version in enumerate(("v1", "v2")):
            cls.serve_pod(version, cls.nodes[i % len(cls.nodes)])
        kubectl("apply", "-n", cls.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "kiln.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": MODEL},
            "spec": {"model": {"name": MODEL, "version": "v2", "uri": "file:///models/v2"},
                     "image": cls.worker_image, "replicas": 1,
                     "traffic": {"provider": "Router"}}}))
        cls.set_traffic(100, 0)
        for version in ("v1", "v2"):
            wait_phase(cls.ns, f"serve-{version}", ("Running",), timeout=120)
        cls.forward = subprocess.Popen(
            [str(KUBECTL), "--kubeconfig", CLUSTER["dir"] + "/kubeconfig", "port-forward", "-n",
             cls.ns, f"svc/{RELEASE}-router", ":8000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = cls.forward.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            cls.forward.kill()
            raise AssertionError(f"port-forward: {line}{cls.forward.stderr.read()}")
        cls.port = int(match.group(1))

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "forward", None):
            cls.forward.kill()
            cls.forward.wait()
        subprocess.run([str(HELM), "uninstall", RELEASE, "--namespace", cls.ns, "--wait",
                        "--timeout", "120s"], env=cls.helm_env, capture_output=True)
        kubectl("delete", "crd", "-l", f"app.kubernetes.io/instance={RELEASE}",
                "--ignore-not-found", check=False)
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)
        cls.tmp.cleanup()

    @classmethod
    def serve_pod(cls, version, node):
        labels = {"app": f"serve-{version}"}
        kubectl("apply", "-n", cls.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"serve-{version}", "labels": labels},
            "spec": {"nodeName": node, "restartPolicy": "Always",
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{
                         "name": "worker", "image": cls.worker_image,
                         "imagePullPolicy": "IfNotPresent",
                         "args": ["serve", "--checkpoint", "/work/ckpt", "--bind", ":8000",
                                  "--model-name", MODEL, "--model-version", version],
                         "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                         "ports": [{"name": "http", "containerPort": 8000}],
                         "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                                            "periodSeconds": 1},
                         "securityContext": {"allowPrivilegeEscalation": False,
                                             "capabilities": {"drop": ["ALL"]}},
                         "volumeMounts": [{"name": "work", "mountPath": "/work",
                                           "readOnly": True}]}],
                     "volumes": [{"name": "work", "hostPath": {"path": str(cls.work),
                                                               "type": "Directory"}}]}}))
        kubectl("apply", "-n", cls.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{MODEL}-{version}",
                         "labels": {"kiln.dev/model-deployment": MODEL,
                                    "kiln.dev/model-version": version}},
            "spec": {"selector": labels,
                     "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}}))

    @classmethod
    def set_traffic(cls, v1, v2):
        status = {"stableVersion": "v1", "canaryVersion": "v2",
                  "traffic": [{"version": "v1", "weight": v1}, {"version": "v2", "weight": v2}]}
        kubectl("patch", "modeldeployment", MODEL, "-n", cls.ns, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": status}))

    def until_version(self, version, bound=60):
        """Sends requests back to back until one is answered by `version`;
        returns the seconds that took. Every answer must be a 200."""
        start = time.monotonic()
        while True:
            status, headers, body = post(self.port, {"model": MODEL, "prompt": "Hi",
                                                     "max_tokens": 2})
            self.assertEqual(status, 200, body)
            if headers.get("x-kiln-version") == version:
                return time.monotonic() - start
            self.assertLess(time.monotonic() - start, bound, f"never answered by {version}")

    def test_1_routers_ready_on_real_nodes(self):
        pods = json.loads(kubectl("get", "pods", "-n", self.ns, "-l",
                                  "app.kubernetes.io/component=router", "-o", "json").stdout)
        self.assertEqual(len(pods["items"]), 2)
        for p in pods["items"]:
            self.assertEqual(p["status"]["phase"], "Running")
            self.assertIn(p["spec"]["nodeName"], self.nodes)
            ready = [c for c in p["status"]["conditions"] if c["type"] == "Ready"]
            self.assertEqual(ready[0]["status"], "True", p["metadata"]["name"])

    def test_2_traffic_follows_the_status_and_rolls_back(self):
        # Both workers' readiness first: until then a version has no endpoint
        # (503). v2 has no weight yet, so the tester's header asks for it.
        deadline = time.monotonic() + 120
        for extra in ({"x-kiln-version": "v2"}, {}):
            while True:
                status, headers, body = post(self.port, {"model": MODEL, "prompt": "Hi",
                                                         "max_tokens": 2}, headers=extra)
                if status == 200:
                    break
                self.assertIn(status, (503,), body)
                self.assertLess(time.monotonic(), deadline, body)
                time.sleep(0.5)
        self.assertEqual(headers.get("x-kiln-version"), "v1")
        self.assertEqual(headers.get("X-Kiln-Model-Version"), "v1")
        self.assertEqual(body["model"], MODEL)
        for _ in range(5):
            self.assertEqual(post(self.port, {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
                                  )[1].get("x-kiln-version"), "v1")
        self.set_traffic(0, 100)
        to_canary = self.until_version("v2")
        for _ in range(10):  # Then every request: the router of each request has the write.
            self.assertEqual(post(self.port, {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
                                  )[1].get("x-kiln-version"), "v2")
        self.set_traffic(100, 0)
        rollback = self.until_version("v1")
        print(f"figure: status.traffic written -> a request answered by the new version: "
              f"{to_canary * 1000:.0f} ms (to canary), {rollback * 1000:.0f} ms (rollback), "
              f"through kubectl port-forward, 2 router replicas")
        # A streamed completion comes through as SSE.
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/completions", method="POST",
            data=json.dumps({"model": MODEL, "prompt": "Hi", "max_tokens": 4,
                             "stream": True}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        self.assertTrue(text.startswith("data: {"), text)
        self.assertTrue(text.rstrip().endswith("data: [DONE]"), text)

    def test_3_bad_requests_get_json_errors_naming_the_reason(self):
        status, _, body = post(self.port, {"model": "nope"})
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["code"], "unknown_model")
        status, _, body = post(self.port, {"model": MODEL}, {"x-kiln-version": "v9"})
        self.assertEqual(status, 400)
        self.assertIn("is no version of", body["error"]["message"])

    def test_4_summary_counts_versions(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/debug/summary?window=5m",
                                    timeout=30) as r:
            summary = json.loads(r.read())
        versions = {v["version"]: v for v in summary["versions"]}
        # This replica saw some of the traffic (the Service spreads connections).
        self.assertTrue(set(versions) <= {"v1", "v2"}, summary)
        self.assertGreater(sum(v["requests"] for v in versions.values()), 0, summary)


if __name__ == "__main__":
    unittest.main(verbosity=2)
