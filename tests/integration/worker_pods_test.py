"""kiln-worker pods on the local clusters' real nodes (issue 12's tests): a pod
prepares the fortunes corpus and trains 20 steps on the CPU, writing a
checkpoint to a hostPath volume, and `kubectl logs` shows the steps; a second
pod resumes from that checkpoint at step 21; a worker that meets corrupt data
exits with the data-error code 6 and its termination message in the pod's
status; a Service in front of two `kiln-worker serve` pods answers
/v1/completions through its DNS name from a third pod.

The image: $KILN_WORKER_IMAGE (an OCI archive), else build/images/kiln-worker.tar
from scripts/images.sh, else one packed here from $KILN_WORKER_BIN and the shared
libraries it links (same entrypoint and user, so the pods are the same).

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir> KILN_WORKER_BIN=build/cpu/worker/kiln-worker \\
  python3 tests/integration/worker_pods_test.py
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnode_test import (RUN_DIR, ROOT, kubectl, real_nodes, testbox_image,  # noqa: E402
                           wait_phase)
from kiln_localcluster import ociimage  # noqa: E402

FORTUNES = "/usr/share/games/fortunes"


def local_image_archive(binary: Path, path: str, name: str, out: Path) -> None:
    """An image named `name` of `binary` at `path` and every shared library ldd
    names, at their paths; user 65532, `binary` as the entrypoint."""
    files = {path: binary}
    for line in subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            lib = Path(match.group(1))
            files[str(lib)] = lib.resolve()
    ociimage.write_archive(out, name, files, [path], user="65532")


def import_archive(archive: Path) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "localcluster.py"),
                          "import-image", "--dir", RUN_DIR, str(archive)],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].split(": ", 1)[1].split(",")[0].strip()


class WorkerPodsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        archive = Path(os.environ.get("KILN_WORKER_IMAGE") or ROOT / "build/images/kiln-worker.tar")
        cls.tmp = tempfile.TemporaryDirectory()
        if not archive.is_file():
            binary = os.environ.get("KILN_WORKER_BIN")
            if not binary or not Path(binary).is_file():
                raise unittest.SkipTest("no kiln-worker image or binary (KILN_WORKER_IMAGE, "
                                        "KILN_WORKER_BIN)")
            archive = Path(cls.tmp.name) / "kiln-worker.tar"
            local_image_archive(Path(binary), "/kiln-worker", "kiln.dev/kiln-worker-local:test",
                                archive)
        cls.image = import_archive(archive)
        cls.testbox = testbox_image()
        print(f"worker image: {cls.image} from {archive}")
        cls.ns = "worker-" + uuid.uuid4().hex[:6]
        kubectl("create", "namespace", cls.ns)
        deadline = time.monotonic() + 60
        while kubectl("get", "serviceaccount", "default", "-n", cls.ns, check=False).returncode:
            if time.monotonic() > deadline:
                raise AssertionError("no default ServiceAccount")
            time.sleep(0.3)
        # The volume the pods share, on the machine (every real node sees it):
        # writable by the image's user.
        cls.work = Path(RUN_DIR) / "volumes" / cls.ns
        cls.work.mkdir(parents=True)
        os.chmod(cls.work, 0o777)
        cls.node = real_nodes()[0]
        cls.trained = False

    @classmethod
    def tearDownClass(cls):
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)
        cls.tmp.cleanup()

    def worker_pod(self, name, args, init_args=None, labels=None, restart="Never"):
        def container(cname, cargs):
            return {"name": cname, "image": self.image, "imagePullPolicy": "IfNotPresent",
                    "args": cargs, "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"},
                                     {"name": "fortunes", "mountPath": "/fortunes",
                                      "readOnly": True}]}
        spec = {"nodeName": self.node, "restartPolicy": restart,
                "containers": [container("worker", args)],
                "volumes": [{"name": "work", "hostPath": {"path": str(self.work),
                                                          "type": "Directory"}},
                            {"name": "fortunes", "hostPath": {"path": FORTUNES,
                                                              "type": "Directory"}}]}
        if init_args:
            spec["initContainers"] = [container("prepare", init_args)]
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": name, "labels": labels or {}}, "spec": spec}))

    def events(self, pod):
        return [json.loads(line) for line in kubectl("logs", "-n", self.ns, pod).stdout.splitlines()
                if line.startswith("{")]

    def train_first(self):
        if WorkerPodsTest.trained:
            return
        start = time.monotonic()
        self.worker_pod("train", ["train", "--data", "/work/data/manifest.json", "--steps", "20",
                                  "--checkpoint-dir", "/work/ckpt", "--checkpoint-every", "20"],
                        init_args=["prepare", "--input", "/fortunes", "--output", "/work/data"])
        got = wait_phase(self.ns, "train", ("Succeeded", "Failed"), timeout=240)
        print(f"figure: prepare + 20 CPU steps in a pod, create to Succeeded "
              f"{time.monotonic() - start:.1f} s")
        self.assertEqual(got["status"]["phase"], "Succeeded",
                         kubectl("logs", "-n", self.ns, "train").stdout[-2000:])
        WorkerPodsTest.trained = True

    def test_1_train_20_steps_with_a_checkpoint_on_the_volume(self):
        self.train_first()
        steps = [e["step"] for e in self.events("train") if e.get("event") == "step"]
        self.assertEqual(steps[-1], 20)
        self.assertTrue((self.work / "ckpt").is_dir())
        self.assertTrue(any(p.name.startswith("step-00000020") for p in (self.work / "ckpt").iterdir()))

    def test_2_second_pod_resumes_at_step_21(self):
        self.train_first()
        self.worker_pod("resume", ["train", "--data", "/work/data/manifest.json", "--steps", "22",
                                   "--checkpoint-dir", "/work/ckpt"])
        got = wait_phase(self.ns, "resume", ("Succeeded", "Failed"), timeout=180)
        self.assertEqual(got["status"]["phase"], "Succeeded")
        events = self.events("resume")
        resumed = [e for e in events if e.get("event") == "resumed"]
        self.assertEqual(resumed[0]["step"], 20)
        steps = [e["step"] for e in events if e.get("event") == "step"]
        self.assertEqual(steps[0], 21)

    def test_3_corrupt_data_exits_6_with_the_termination_message(self):
        self.train_first()
        bad = self.work / "bad"
        shutil.copytree(self.work / "data", bad)
        shard = next(bad.glob("train_*.bin"))
        shard.write_bytes(shard.read_bytes()[:100])
        self.worker_pod("corrupt", ["train", "--data", "/work/bad/manifest.json", "--steps", "2"])
        got = wait_phase(self.ns, "corrupt", ("Failed",), timeout=120)
        term = got["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual(term["exitCode"], 6)
        message = json.loads(term["message"])
        self.assertEqual(message["reason"], "DataError")
        self.assertIn("truncated", message["message"])

    def test_4_service_of_two_serve_pods_answers_completions_by_dns_name(self):
        self.train_first()
        for name in ("serve-a", "serve-b"):
            self.worker_pod(name, ["serve", "--checkpoint", "/work/ckpt", "--bind", ":8000"],
                            labels={"app": "serve"}, restart="Always")
        kubectl("create", "service", "clusterip", "serve", "-n", self.ns, "--tcp=80:8000")
        for name in ("serve-a", "serve-b"):
            wait_phase(self.ns, name, ("Running",), timeout=120)
        body = json.dumps({"prompt": "Q: Why", "max_tokens": 8})
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ask"},
            "spec": {"nodeName": real_nodes()[-1], "restartPolicy": "Never", "containers": [{
                "name": "main", "image": self.testbox, "imagePullPolicy": "IfNotPresent",
                "args": ["post", "--retry-for", "60s",
                         f"http://serve.{self.ns}.svc.cluster.local/v1/completions", body]}]}}))
        got = wait_phase(self.ns, "ask", ("Succeeded", "Failed"), timeout=120)
        out = kubectl("logs", "-n", self.ns, "ask").stdout
        self.assertEqual(got["status"]["phase"], "Succeeded", out)
        self.assertTrue(out.startswith("200 "), out)
        answer = json.loads(out[4:])
        self.assertTrue(answer["choices"][0]["text"], answer)


if __name__ == "__main__":
    unittest.main(verbosity=2)
