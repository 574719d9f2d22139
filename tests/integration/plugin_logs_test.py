"""`kubectl kiln logs` reading a real worker log: on the real-node cluster, a
TrainingJob (kiln's CRDs applied, its status written by the test) whose rank
1 is a pod labelled as the TrainingJob controller labels workers, running
testbox (tests/images/testbox) on a real node, which prints five lines. The
plugin finds the pod by the job's UID, rank and newest attempt (an older
attempt's pod beside it is passed over) and prints the log whole, its last
lines (--tail), and followed (-f) to the container's end.
tests/integration/plugin_test.py covers the rest of the plugin on kwok.

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir started with --real-nodes> KUBECTL_KILN=<binary>
python3 tests/integration/plugin_logs_test.py
"""

import json
import os
import subprocess
import sys
import unittest
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnode_test import (CLUSTER, ROOT, kubectl, real_nodes, testbox_image,  # noqa: E402
                           wait_established, wait_phase)

PLUGIN = os.environ.get("KUBECTL_KILN") or sys.exit("plugin_logs_test: KUBECTL_KILN is not set")
KUBECONFIG = CLUSTER["dir"] + "/kubeconfig"
NS = f"plugin-logs-{uuid.uuid4().hex[:6]}"


def kiln(*args):
    return subprocess.run([PLUGIN, *args, "-n", NS], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, KUBECONFIG=KUBECONFIG))


class PluginLogsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        kubectl("apply", "-f", str(ROOT / "crds"))
        wait_established("trainingjobs.kiln.dev")
        kubectl("create", "namespace", NS)
        cls.image = testbox_image()

    @classmethod
    def tearDownClass(cls):
        kubectl("delete", "namespace", NS, "--wait=false", check=False)

    def test_a_rank_log_from_a_real_node(self):
        job = yaml.safe_load((ROOT / "examples" / "trainingjob.yaml").read_text())
        job["metadata"] = {"name": "logged", "namespace": NS}
        job = json.loads(kubectl("apply", "-o", "json", "-f", "-", stdin=json.dumps(job)).stdout)
        kubectl("patch", "trainingjob", "logged", "-n", NS, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {"phase": "Running", "restarts": 1}}))
        node = real_nodes()[0]

        def worker(name, attempt, lines):
            kubectl("apply", "-f", "-", stdin=json.dumps({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": {
                    "kiln.dev/trainingjob": "logged",
                    "kiln.dev/trainingjob-uid": job["metadata"]["uid"],
                    "kiln.dev/rank": "1", "kiln.dev/attempt": str(attempt)}},
                "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{
                    "name": "worker", "image": self.image, "imagePullPolicy": "IfNotPresent",
                    "args": ["run", "--lines", str(lines)]}]}}))
            wait_phase(NS, name, ("Succeeded",))

        worker("logged-0-1", 0, 2)  # The earlier attempt's pod, still there.
        worker("logged-1-1", 1, 5)

        r = kiln("logs", "tj", "logged", "--rank", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "# trainingjob logged rank 1: pod logged-1-1 in the hub\n")
        self.assertEqual(r.stdout, "".join(f"testbox line {i}\n" for i in range(1, 6)))

        r = kiln("logs", "logged", "--rank", "1", "--tail", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "testbox line 4\ntestbox line 5\n")

        r = kiln("logs", "logged", "--rank=1", "-f")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "".join(f"testbox line {i}\n" for i in range(1, 6)))

        r = kiln("logs", "logged")  # Rank 0 has no pod.
        self.assertEqual(r.returncode, 1)
        self.assertIn("rank 0's pod is not in the hub", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
