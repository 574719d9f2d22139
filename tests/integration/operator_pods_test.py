"""The operator for real (issue 12 point 3): `helm install` of charts/kiln on
the real nodes runs the kiln-operator image: both replicas Running and Ready
(their /readyz passes), exactly one holds the leader Lease, and /metrics
answers through the metrics Service from a pod.

The image: $KILN_OPERATOR_IMAGE (an OCI archive), else
build/images/kiln-operator.tar from scripts/images.sh, else one packed here
from $KILN_OPERATOR_BIN and the shared libraries it links (on PATH as
kiln-operator, user 65532, as the chart expects).

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir> KILN_OPERATOR_BIN=build/cpu/operator/kiln-operator \\
  python3 tests/integration/operator_pods_test.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnode_test import ROOT, STATE, kubectl, real_nodes, testbox_image, wait_phase  # noqa: E402
from worker_pods_test import import_archive, local_image_archive  # noqa: E402

HELM = Path(STATE["spec"]["bin_dir"]) / "helm"
RELEASE = "kiln"


class OperatorPodsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        archive = Path(os.environ.get("KILN_OPERATOR_IMAGE")
                       or ROOT / "build/images/kiln-operator.tar")
        if not archive.is_file():
            binary = os.environ.get("KILN_OPERATOR_BIN")
            if not binary or not Path(binary).is_file():
                raise unittest.SkipTest("no kiln-operator image or binary (KILN_OPERATOR_IMAGE, "
                                        "KILN_OPERATOR_BIN)")
            archive = Path(cls.tmp.name) / "kiln-operator.tar"
            local_image_archive(Path(binary), "/kiln-operator", "kiln.dev/kiln-operator-local:test",
                                archive)
        cls.image = import_archive(archive)
        cls.testbox = testbox_image()
        print(f"operator image: {cls.image} from {archive}")
        cls.ns = "kiln-op-" + uuid.uuid4().hex[:6]
        repository, tag = cls.image.rsplit(":", 1)
        helm_home = Path(cls.tmp.name) / "helm"
        cls.helm_env = dict(os.environ, KUBECONFIG=kubeconfig(),
                            HELM_CONFIG_HOME=str(helm_home / "config"),
                            HELM_CACHE_HOME=str(helm_home / "cache"),
                            HELM_DATA_HOME=str(helm_home / "data"))
        start = time.monotonic()
        subprocess.run([str(HELM), "install", RELEASE, str(ROOT / "charts" / "kiln"),
                        "--namespace", cls.ns, "--create-namespace",
                        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                        "--set", "nodeSelector.kiln\\.dev/node-kind=real",
                        "--wait", "--timeout", "180s"],
                       env=cls.helm_env, check=True, capture_output=True, text=True)
        print(f"figure: helm install --wait with the operator on real nodes "
              f"{time.monotonic() - start:.1f} s")

    @classmethod
    def tearDownClass(cls):
        subprocess.run([str(HELM), "uninstall", RELEASE, "--namespace", cls.ns, "--wait",
                        "--timeout", "120s"], env=cls.helm_env, capture_output=True)
        kubectl("delete", "crd", "-l", f"app.kubernetes.io/instance={RELEASE}",
                "--ignore-not-found", check=False)
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)
        cls.tmp.cleanup()

    def operator_pods(self):
        return json.loads(kubectl("get", "pods", "-n", self.ns, "-l",
                                  "app.kubernetes.io/component=operator", "-o", "json").stdout)["items"]

    def test_two_replicas_running_and_ready_on_real_nodes(self):
        pods = self.operator_pods()
        self.assertEqual(len(pods), 2)
        real = set(real_nodes())
        for p in pods:
            self.assertEqual(p["status"]["phase"], "Running")
            self.assertIn(p["spec"]["nodeName"], real)
            ready = [c for c in p["status"]["conditions"] if c["type"] == "Ready"]
            self.assertEqual(ready[0]["status"], "True", p["metadata"]["name"])

    def test_exactly_one_leader(self):
        pods = {p["metadata"]["name"] for p in self.operator_pods()}
        deadline = time.monotonic() + 60
        while True:
            lease = kubectl("get", "lease", f"{RELEASE}-operator", "-n", self.ns, "-o", "json",
                            check=False)
            holder = json.loads(lease.stdout)["spec"].get("holderIdentity", "") \
                if lease.returncode == 0 else ""
            if any(holder.startswith(p) for p in pods):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no operator pod holds the Lease (holder {holder!r})")
            time.sleep(1)
        self.assertEqual(sum(holder.startswith(p) for p in pods), 1)

    def test_metrics_through_the_service(self):
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "scrape"},
            "spec": {"nodeName": real_nodes()[-1], "restartPolicy": "Never",
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{
                         "name": "main", "image": self.testbox, "imagePullPolicy": "IfNotPresent",
                         "args": ["get", "--retry-for", "30s",
                                  f"http://{RELEASE}-operator-metrics.{self.ns}.svc:8080/metrics"],
                         "securityContext": {"allowPrivilegeEscalation": False,
                                             "capabilities": {"drop": ["ALL"]}}}]}}))
        got = wait_phase(self.ns, "scrape", ("Succeeded", "Failed"), timeout=90)
        out = kubectl("logs", "-n", self.ns, "scrape").stdout
        self.assertEqual(got["status"]["phase"], "Succeeded", out[-2000:])
        self.assertTrue(out.startswith("200 "), out[:500])
        self.assertIn("# TYPE", out)


def kubeconfig():
    return STATE["spec"]["clusters"][0]["dir"] + "/kubeconfig"


if __name__ == "__main__":
    unittest.main(verbosity=2)
