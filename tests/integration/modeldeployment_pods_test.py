"""The ModelDeployment controller with real serve pods (issue 16): on the real
nodes, kiln-router (helm install, router only) and kiln-operator (run here, on
the cluster's kubeconfig, its analysis reading the router's /debug/summary)
serve a ModelDeployment whose versions are two tiny checkpoints trained here
(2 and 4 steps) on a host folder every real node mounts. The operator makes
each version's Deployment of `kiln-worker serve` pods and its Service; the
router finds them by their EndpointSlices. Under steady load (one client
sending completions back to back to one router pod, at its IP), v2 rolls
out by its steps (50%, a pause, an analysis of that router's error rate) to
Healthy, then `rollout.action: Rollback` returns every new request to v1.
Every request must be answered 200; the times are printed. The namespace
enforces the restricted Pod Security Standard, so every pod kiln makes is
admitted under it (the checkpoints come through a PersistentVolumeClaim). A
second
deployment runs the quality gate's real `kiln-worker eval` Jobs: a canary
trained longer passes it (and a background analysis and a `qualityGate`
step) and is promoted; one trained less is stopped by the gate before it
takes any traffic.

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir> KILN_ROUTER_BIN=build/ci/router/kiln-router \\
  KILN_WORKER_BIN=build/ci/worker/kiln-worker \\
  KILN_OPERATOR_BIN=build/ci/operator/kiln-operator \\
  python3 tests/integration/modeldeployment_pods_test.py
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnode_test import CLUSTER, RUN_DIR, ROOT, dies_with_this_process, kubectl  # noqa: E402
from router_pods_test import HELM, image  # noqa: E402
from worker_pods_test import FORTUNES  # noqa: E402

RELEASE = "kiln"
MODEL = "chat"


def post(base, body, timeout=30):
    """(status, headers, parsed body) of one POST /v1/completions to `base`."""
    req = urllib.request.Request(f"{base}/v1/completions", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


class Load:
    """One client sending completions back to back; records each answer."""

    def __init__(self, base, model=MODEL):
        self.base = base
        self.model = model
        self.answers = []  # (monotonic time, status, version)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                status, headers, _ = post(self.base, {"model": self.model, "prompt": "Hi",
                                                      "max_tokens": 2}, timeout=10)
                version = headers.get("x-kiln-version", "")
            except Exception as e:  # A connection error counts as a failure.
                status, version = 0, repr(e)
            self.answers.append((time.monotonic(), status, version))

    def failed(self, since=0.0):
        return [a for a in self.answers if a[0] >= since and a[1] != 200]


class ModelDeploymentPodsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        worker_bin = os.environ.get("KILN_WORKER_BIN")
        operator_bin = os.environ.get("KILN_OPERATOR_BIN")
        if not worker_bin or not Path(worker_bin).is_file():
            raise unittest.SkipTest("KILN_WORKER_BIN is needed to train the served checkpoints")
        if not operator_bin or not Path(operator_bin).is_file():
            raise unittest.SkipTest("KILN_OPERATOR_BIN is needed to run the operator")
        cls.router_image = image("router", cls.tmp.name)
        cls.worker_image = image("worker", cls.tmp.name)
        cls.ns = "kiln-mdp-" + uuid.uuid4().hex[:6]

        # The two versions: a tiny model trained 2 and 4 steps.
        cls.work = (Path(RUN_DIR) / "volumes" / cls.ns).resolve()
        cls.work.mkdir(parents=True)
        os.chmod(cls.work, 0o755)
        subprocess.run([worker_bin, "prepare", "--input", FORTUNES, "--output",
                        str(cls.work / "data")], check=True, capture_output=True)
        # v60, trained 60 steps, scores clearly better (loss ~5.0 against ~5.5
        # for 2 steps on eval.jsonl) for the quality gate's test.
        for version, steps in (("v1", 2), ("v2", 4), ("v60", 60)):
            subprocess.run([worker_bin, "train", "--data", str(cls.work / "data/manifest.json"),
                            "--steps", str(steps), "--layers", "1", "--heads", "2",
                            "--channels", "32", "--batch", "2", "--seq", "32",
                            "--checkpoint-dir", str(cls.work / version),
                            "--checkpoint-every", str(steps)], check=True, capture_output=True)
        # The gate's evaluation set: the first 64 fortunes as {"text": ...} lines.
        fortunes = (Path(FORTUNES) / "fortunes").read_text(errors="ignore").split("\n%\n")
        with open(cls.work / "eval.jsonl", "w") as f:
            for text in [t.strip() for t in fortunes if t.strip()][:64]:
                f.write(json.dumps({"text": text}) + "\n")
        for p in cls.work.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

        repository, tag = cls.router_image.rsplit(":", 1)
        helm_home = Path(cls.tmp.name) / "helm"
        cls.helm_env = dict(os.environ, KUBECONFIG=CLUSTER["dir"] + "/kubeconfig",
                            HELM_CONFIG_HOME=str(helm_home / "config"),
                            HELM_CACHE_HOME=str(helm_home / "cache"),
                            HELM_DATA_HOME=str(helm_home / "data"))
        # The router alone (replicaCount=0: the operator runs here instead),
        # watching this namespace only; the chart installs kiln's CRDs.
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
        # One router pod, straight at its IP (the real nodes' pod network is
        # reachable from this machine): `kubectl port-forward` sessions hang
        # once the node tears down another pod's sandbox (seen when v2's pod
        # went), which would make the test measure kubectl, not the rollout.
        routers = json.loads(kubectl("get", "pods", "-n", cls.ns, "-l",
                                     "app.kubernetes.io/component=router", "-o",
                                     "json").stdout)["items"]
        cls.router = f"http://{routers[0]['status']['podIP']}:8000"

        # The namespace enforces the restricted Pod Security Standard from
        # here on: every pod kiln makes (serving Deployments, gate Jobs) must
        # be admitted under it. A host path is a volume restricted refuses,
        # so the checkpoints reach the pods through a claim on a PersistentVolume
        # over the same folder.
        kubectl("label", "namespace", cls.ns, "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/enforce-version=latest")
        cls.pv = cls.ns + "-models"
        kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": cls.pv},
             "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      "hostPath": {"path": str(cls.work), "type": "Directory"},
                      "claimRef": {"namespace": cls.ns, "name": "models"}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "models", "namespace": cls.ns},
             "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                      "volumeName": cls.pv, "resources": {"requests": {"storage": "1Gi"}}}}]}))

        cls.operator_log = open(Path(cls.tmp.name) / "operator.log", "w")
        cls.operator = subprocess.Popen(dies_with_this_process(
            [operator_bin, "--kubeconfig", CLUSTER["dir"] + "/kubeconfig",
             "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
             "--member-secret-namespace", cls.ns,
             "--shared-volume-claim", "models", "--shared-volume-mount-path", "/models",
             "--router-url", cls.router]),
            stdout=cls.operator_log, stderr=subprocess.STDOUT)

    @classmethod
    def tearDownClass(cls):
        for p in ("operator",):
            if getattr(cls, p, None):
                getattr(cls, p).kill()
                getattr(cls, p).wait()
        if getattr(cls, "operator_log", None):
            cls.operator_log.close()
        kubectl("delete", "modeldeployment", MODEL, "-n", cls.ns, "--ignore-not-found",
                "--wait=false", check=False)
        subprocess.run([str(HELM), "uninstall", RELEASE, "--namespace", cls.ns, "--wait",
                        "--timeout", "120s"], env=cls.helm_env, capture_output=True)
        kubectl("delete", "crd", "-l", f"app.kubernetes.io/instance={RELEASE}",
                "--ignore-not-found", check=False)
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)
        if getattr(cls, "pv", None):
            kubectl("delete", "persistentvolume", cls.pv, "--wait=false", check=False)
        cls.tmp.cleanup()

    def status(self):
        out = kubectl("get", "modeldeployment", MODEL, "-n", self.ns, "-o", "json", check=False)
        return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}

    def weight(self, status, version):
        return sum(t["weight"] for t in status.get("traffic", []) if t["version"] == version)

    def wait(self, what, probe, bound=240, detail=lambda: ""):
        start = time.monotonic()
        while not probe():
            if time.monotonic() - start > bound:
                log = (Path(self.tmp.name) / "operator.log").read_text()[-3000:]
                self.fail(f"timed out waiting for {what}: {json.dumps(self.status())}\n"
                          f"{detail()}\n{log}")
            time.sleep(0.2)
        return time.monotonic() - start

    def patch(self, spec):
        kubectl("patch", "modeldeployment", MODEL, "-n", self.ns, "--type=merge", "-p",
                json.dumps({"spec": spec}))

    def test_quality_gate_stops_a_worse_checkpoint(self):
        """Real `kiln-worker eval` Jobs on the real nodes: a canary trained
        longer passes the gate and rolls out, through a background analysis
        of the router's error rate under load and a `qualityGate` step; one
        trained less (worse text, as fast as any) is stopped by the gate
        before it takes any traffic."""
        name = "gated"

        def status():
            out = kubectl("get", "modeldeployment", name, "-n", self.ns, "-o", "json",
                          check=False)
            return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}

        def set_model(version, checkpoint):
            kubectl("patch", "modeldeployment", name, "-n", self.ns, "--type=merge", "-p",
                    json.dumps({"spec": {"model": {"name": name, "version": version,
                                                   "uri": f"file:///models/{checkpoint}"}}}))

        def gate_runs(s):
            return [r for r in s.get("analysisRuns", []) if r["name"].endswith("-quality-gate")]

        kubectl("apply", "-n", self.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "kiln.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": name, "version": "s2", "uri": "file:///models/v1"},
                "image": self.worker_image, "replicas": 1, "gpusPerReplica": 0,
                "nodeSelector": {"kiln.dev/node-kind": "real"},
                "strategy": {"canary": {"steps": [{"analysis": {"background": True}},
                                                  {"setWeight": 50},
                                                  {"pause": {"duration": "2s"}},
                                                  {"qualityGate": {"samples": 32}},
                                                  {"pause": {"duration": "1s"}}],
                                        "scaleDownDelay": "30s"}},
                "analysis": {"interval": "1s", "failureLimit": 0, "inconclusiveLimit": 30,
                             "metrics": [{"name": "errors", "router": {"metric": "errorRate"},
                                          "max": 0.01}],
                             "qualityGate": {"evaluationSet": "file:///models/eval.jsonl",
                                             "maxRegression": 0.02, "samples": 64}}}}))
        self.wait("s2 Healthy", lambda: status().get("phase") == "Healthy")
        self.wait("a 200 from s2", lambda: post(self.router, {"model": name, "prompt": "Hi",
                                                              "max_tokens": 2})[0] == 200)

        # Better: the gate passes, then the steps run to the promotion, the
        # background analysis measuring the router's window under load.
        load = Load(self.router, name)
        load.thread.start()
        start = time.monotonic()
        set_model("s60", "v60")
        self.wait("s60 promoted", lambda: (lambda s: s.get("phase") == "Healthy" and
                                           s.get("stableVersion") == "s60")(status()),
                  detail=lambda: kubectl("get", "jobs,pods", "-n", self.ns, "-o", "wide",
                                         check=False).stdout)
        passed = time.monotonic() - start
        load.stop.set()
        load.thread.join(timeout=15)
        self.assertEqual(load.failed(), [], load.failed()[:5])
        self.assertIn("s60", {a[2] for a in load.answers})
        s = status()
        runs = {r["name"]: r for r in s.get("analysisRuns", [])}
        self.assertEqual({n: r["phase"] for n, r in runs.items()},
                         {"s60-quality-gate": "Successful",
                          "s60-step0": "Successful",
                          "s60-step3-quality-gate": "Successful"}, s)
        self.assertTrue(runs["s60-step0"].get("background"), runs["s60-step0"])
        measured = [m for m in runs["s60-step0"].get("measurements", [])
                    if m.get("phase") == "Successful"]
        self.assertTrue(measured, runs["s60-step0"])
        for gate in ("s60-quality-gate", "s60-step3-quality-gate"):
            self.assertTrue(runs[gate].get("measurements"), runs[gate])

        # Worse (2 steps against 60): stopped by the gate, never any weight.
        start = time.monotonic()
        set_model("s2b", "v1")
        weights = []

        def stopped():
            s = status()
            weights.append(self.weight(s, "s2b"))
            return s.get("phase") == "Degraded"

        self.wait("s2b stopped by the gate", stopped)
        stopped_after = time.monotonic() - start
        s = status()
        self.assertEqual(max(weights), 0, "the worse canary took traffic")
        self.assertEqual(self.weight(s, "s60"), 100, s)
        self.assertEqual(s.get("stoppedVersion"), "s2b", s)
        failed = [r for r in gate_runs(s) if r["phase"] == "Failed"]
        self.assertEqual(len(failed), 1, gate_runs(s))
        self.assertIn("loss", failed[0].get("message", ""), failed[0])
        self.assertIn("loss", s.get("message", ""), s)
        print(f"figure: quality gate on real pods: a 60-step canary passed two gates and a "
              f"background analysis ({len(load.answers)} requests) and was promoted "
              f"in {passed:.1f} s; a 2-step canary was stopped by the gate in "
              f"{stopped_after:.1f} s ({failed[0].get('message')}); it never had weight")
        kubectl("delete", "modeldeployment", name, "-n", self.ns, "--wait=false", check=False)

    def test_rollout_and_rollback_under_load(self):
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "kiln.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": MODEL},
            "spec": {
                "model": {"name": MODEL, "version": "v1", "uri": "file:///models/v1"},
                "image": self.worker_image, "replicas": 1, "gpusPerReplica": 0,
                "nodeSelector": {"kiln.dev/node-kind": "real"},
                "strategy": {"canary": {"steps": [{"setWeight": 50},
                                                  {"pause": {"duration": "3s"}},
                                                  {"analysis": {"duration": "4s"}}],
                                        "scaleDownDelay": "5m"}},
                "analysis": {"interval": "1s", "failureLimit": 0, "inconclusiveLimit": 10,
                             "metrics": [{"name": "errors", "router": {"metric": "errorRate"},
                                          "max": 0.01}]}}}))
        start = time.monotonic()
        self.wait("v1 Healthy", lambda: self.status().get("phase") == "Healthy")
        # The router has v1's endpoint once its slice is synced.
        self.wait("a 200 from v1", lambda: post(self.router, {"model": MODEL, "prompt": "Hi",
                                                              "max_tokens": 2})[0] == 200)
        print(f"figure: first version, apply -> a request answered through the router "
              f"{time.monotonic() - start:.1f} s (real serve pods)")

        load = Load(self.router)
        load.thread.start()
        time.sleep(1)
        rollout_start = time.monotonic()
        self.patch({"model": {"name": MODEL, "version": "v2", "uri": "file:///models/v2"}})
        self.wait("v2 promoted", lambda: (lambda s: s.get("phase") == "Healthy" and
                                          s.get("stableVersion") == "v2")(self.status()))
        rollout = time.monotonic() - rollout_start
        time.sleep(1)
        status = self.status()
        versions_seen = {a[2] for a in load.answers if a[0] >= rollout_start}
        self.assertEqual(self.weight(status, "v2"), 100, status)
        self.assertEqual(status.get("previousVersion"), "v1", status)
        runs = status.get("analysisRuns", [])
        self.assertEqual([r["phase"] for r in runs], ["Successful"], runs)
        self.assertIn("v1", versions_seen)
        self.assertIn("v2", versions_seen)
        during_rollout = [a for a in load.answers if a[0] >= rollout_start]

        rollback_start = time.monotonic()
        self.patch({"rollout": {"action": "Rollback"}})
        self.wait("the status back on v1", lambda: self.weight(self.status(), "v1") == 100)
        decided = time.monotonic() - rollback_start
        # The first request answered by v1 after which every answer is v1's.
        self.wait("every new request on v1",
                  lambda: len([a for a in load.answers if a[0] >= rollback_start]) >= 5 and all(
                      a[2] == "v1" for a in load.answers[-5:]), bound=60,
                  detail=lambda: f"last answers: {load.answers[-10:]}")
        after = [a for a in load.answers if a[0] >= rollback_start]
        last_other = max((a[0] for a in after if a[2] != "v1"), default=rollback_start)
        time.sleep(2)
        load.stop.set()
        load.thread.join(timeout=15)
        late = [a for a in load.answers if a[0] > last_other + 0.001 and a[2] != "v1"]
        failed = load.failed()
        print(f"figure: under one client's back-to-back load ({len(load.answers)} requests): "
              f"{len(failed)} failed; rollout v1 -> v2 (50%, 3 s pause, 4 s analysis) "
              f"{rollout:.1f} s with {len(during_rollout)} requests; rollback: the spec write "
              f"-> status {decided * 1000:.0f} ms, -> last request answered by v2 "
              f"{(last_other - rollback_start) * 1000:.0f} ms (one router pod, at its IP)")
        self.assertEqual(failed, [], failed[:5])
        self.assertEqual(late, [])
        status = self.status()
        self.assertEqual(status.get("phase"), "RolledBack", status)
        self.assertEqual(status.get("rollbacks"), 1, status)

        # A checkpoint that does not load: the canary's worker exits, v1 keeps
        # all traffic, and the status says why in the worker's words.
        self.patch({"model": {"name": MODEL, "version": "v3", "uri": "file:///models/missing"}})
        weights = []

        def explained():
            s = self.status()
            weights.append(self.weight(s, "v3"))
            return "last exit" in s.get("message", "") and "v3" in s.get("message", "")

        explained_after = self.wait("the worker's reason in the status", explained, bound=120)
        status = self.status()
        print(f"figure: a model that does not load: its worker's reason in the status "
              f"{explained_after:.1f} s after the spec change: {status.get('message')}")
        self.assertEqual(max(weights), 0, "v3 took traffic without a ready pod")
        self.assertEqual(self.weight(status, "v1"), 100, status)
        self.assertIn("missing", status.get("message", ""), status)


if __name__ == "__main__":
    unittest.main(verbosity=2)
