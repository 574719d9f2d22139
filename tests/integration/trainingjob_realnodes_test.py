"""A TrainingJob trained for real (issue 14's first test): the kiln-operator
binary runs against the real-node cluster (which is hub and member), a
2-worker job asking for one GPU each trains on the fortunes corpus in
kiln-worker pods on the real nodes (their GPUs are advertised, not there: the
workers say they train on the CPU), checkpointing to the shared hostPath
volume; the job's status shows rank 0's step, loss, tokens/s and newest
checkpoint (read through the API server's pod proxy); a worker killed mid-run
makes the whole gang restart as a new attempt whose ranks resume from the
newest checkpoint, holding the checkpoints' fence, so that a rank of the old
attempt started again on the same volume stops with exit 8; `kubectl scale` to 1 worker resizes the running gang (a
checkpoint on SIGTERM, then one worker accumulating both micro-batches of the
same global batch resumes from it, in the same attempt); the job then
succeeds.

The worker image as in worker_pods_test.py ($KILN_WORKER_IMAGE, else
build/images/kiln-worker.tar, else one packed from $KILN_WORKER_BIN).

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir> KILN_WORKER_BIN=build/cpu/worker/kiln-worker \\
  KILN_OPERATOR_BIN=build/ci/operator/kiln-operator \\
  python3 tests/integration/trainingjob_realnodes_test.py
"""

import base64
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnode_test import (CLUSTER, RUN_DIR, ROOT, dies_with_this_process, kubectl,  # noqa: E402
                           wait_established)
from worker_pods_test import FORTUNES, import_archive, local_image_archive  # noqa: E402

STEPS = 800
EVERY = 50


def wait(what, probe, timeout=240.0):
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


class TrainingJobOnRealNodesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        operator = os.environ.get("KILN_OPERATOR_BIN")
        if not operator or not Path(operator).is_file():
            raise unittest.SkipTest("KILN_OPERATOR_BIN is not set to a kiln-operator binary")
        cls.tmp = tempfile.TemporaryDirectory()
        archive = Path(os.environ.get("KILN_WORKER_IMAGE") or ROOT / "build/images/kiln-worker.tar")
        if not archive.is_file():
            binary = os.environ.get("KILN_WORKER_BIN")
            if not binary or not Path(binary).is_file():
                raise unittest.SkipTest("no kiln-worker image or binary (KILN_WORKER_IMAGE, "
                                        "KILN_WORKER_BIN)")
            archive = Path(cls.tmp.name) / "kiln-worker.tar"
            local_image_archive(Path(binary), "/usr/bin/kiln-worker",
                                "kiln.dev/kiln-worker-local:tj", archive)
        cls.image = import_archive(archive)
        cls.ns = "tj-" + uuid.uuid4().hex[:6]
        for crd in ("memberclusters", "trainingjobs", "modeldeployments"):
            kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / f"kiln.dev_{crd}.yaml"))
            wait_established(f"{crd}.kiln.dev")
        kubectl("create", "namespace", cls.ns)
        # The shared volume: every real node sees this folder; the corpus goes
        # on it, and the checkpoints.
        cls.shared = Path(RUN_DIR) / "volumes" / cls.ns
        cls.shared.mkdir(parents=True)
        shutil.copytree(FORTUNES, cls.shared / "fortunes")
        for path in [cls.shared, *cls.shared.rglob("*")]:
            os.chmod(path, 0o777 if path.is_dir() else 0o666)
        kubeconfig = Path(CLUSTER["dir"]) / "kubeconfig"
        kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "self", "namespace": cls.ns},
            "data": {"kubeconfig": base64.b64encode(kubeconfig.read_bytes()).decode()}}))
        cls.member = "self-" + cls.ns
        kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "kiln.dev/v1alpha1", "kind": "MemberCluster",
            "metadata": {"name": cls.member},
            "spec": {"kubeconfigSecretRef": {"name": "self", "namespace": cls.ns},
                     "heartbeatInterval": "1s", "unreachableAfter": "10s"}}))
        cls.log = open(Path(cls.tmp.name) / "operator.log", "w")
        cls.operator = subprocess.Popen(dies_with_this_process(
            [operator, "--kubeconfig", str(kubeconfig), "--member-secret-namespace", cls.ns,
             "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
             "--shared-volume-host-path", str(cls.shared),
             "--shared-volume-mount-path", "/checkpoints", "--log-format", "text"]),
            stdout=cls.log, stderr=subprocess.STDOUT)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "operator", None):
            kubectl("delete", "trainingjob", "--all", "-n", cls.ns, "--wait=true",
                    "--timeout=60s", check=False)
            cls.operator.terminate()
            try:
                cls.operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.operator.kill()
            cls.log.close()
            kubectl("delete", "membercluster", cls.member, "--wait=true", "--timeout=60s",
                    check=False)
            kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)
            # The chart test on this cluster installs kiln's CRDs itself and
            # refuses to find them there (CTest runs the two one at a time).
            for crd in ("memberclusters", "trainingjobs", "modeldeployments"):
                kubectl("delete", "crd", f"{crd}.kiln.dev", "--ignore-not-found", check=False)
        cls.tmp.cleanup()

    def status(self, name):
        r = kubectl("get", "trainingjob", name, "-n", self.ns, "-o", "json", check=False)
        return json.loads(r.stdout).get("status", {}) if r.returncode == 0 else {}

    def pods(self, name, attempt=None):
        selector = f"kiln.dev/trainingjob={name}"
        if attempt is not None:
            selector += f",kiln.dev/attempt={attempt}"
        return json.loads(kubectl("get", "pods", "-n", self.ns, "-l", selector, "-o",
                                  "json").stdout)["items"]

    def steps_of(self, pod):
        r = kubectl("logs", "-n", self.ns, pod, "-c", "worker", check=False)
        events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        return events

    def operator_log(self):
        return (Path(self.tmp.name) / "operator.log").read_text()[-4000:]

    def job(self, name, steps, every, failure_policy):
        """A 2-worker job of a small GPT on the fortunes corpus, 1 fake GPU and
        1 CPU thread per worker, on the real nodes."""
        return {
            "apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "model": {"architecture": "gpt", "layers": 2, "hiddenSize": 64, "heads": 4,
                          "vocabSize": 257, "contextLength": 64},
                "data": {"uri": "file:///checkpoints/fortunes"},
                "training": {"steps": steps, "globalBatchSize": 16, "microBatchSize": 8,
                             "sequenceLength": 64, "learningRate": 0.002, "seed": 7},
                "workers": {"replicas": 2, "gpusPerWorker": 1, "image": self.image,
                            "nodeSelector": {"kiln.dev/node-kind": "real"},
                            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
                "checkpoint": {"uri": f"file:///checkpoints/{name}/ckpt",
                               "intervalSteps": every},
                "failurePolicy": failure_policy}}

    def check_fence(self, name):
        """Attempt 1 holds the checkpoints' fence (worker/train/fence.h) from
        the step it resumed at; a rank of attempt 0 started again on the same
        volume, as a gang in a member cut off from the hub would still run,
        exits 8 (Superseded) before writing anything."""
        uid = json.loads(kubectl("get", "trainingjob", name, "-n", self.ns, "-o",
                                 "json").stdout)["metadata"]["uid"]
        events = wait("attempt 1 resumed", lambda: (lambda es: es if any(
            e.get("event") == "resumed" for e in es) else None)(self.steps_of(f"{name}-1-0")),
            timeout=120)
        resumed = next(e for e in events if e.get("event") == "resumed")
        fenced = [e for e in events if e.get("event") == "fenced"]
        self.assertEqual(len(fenced), 1, events[:8])
        self.assertEqual((fenced[0]["job"], fenced[0]["attempt"], fenced[0]["baseStep"]),
                         (uid, 1, resumed["step"]))
        fence = json.loads((self.shared / name / "ckpt" / "fence.json").read_text())
        self.assertEqual((fence["job"], fence["attempt"]), (uid, 1))

        # The stale rank: attempt 1's rank-0 pod spec, alone (world size 1,
        # on the CPU, no GPU asked) and with attempt 0's token, unlabelled so
        # the operator leaves it alone.
        spec = json.loads(kubectl("get", "pod", f"{name}-1-0", "-n", self.ns, "-o",
                                  "json").stdout)["spec"]
        for key in ("hostname", "subdomain", "nodeName", "schedulingGates", "affinity",
                    "priority"):
            spec.pop(key, None)
        worker = spec["containers"][0]
        worker.pop("resources", None)
        worker["args"] = [f"--fence={uid}:0" if a.startswith("--fence=") else
                          "--device=cpu" if a.startswith("--device=") else a
                          for a in worker["args"]]
        self.assertIn(f"--fence={uid}:0", worker["args"])
        env = {e["name"]: e for e in worker.get("env", [])}
        env["WORLD_SIZE"] = {"name": "WORLD_SIZE", "value": "1"}
        env["RANK"] = {"name": "RANK", "value": "0"}
        env["MASTER_ADDR"] = {"name": "MASTER_ADDR", "value": "127.0.0.1"}
        worker["env"] = list(env.values())
        stale = f"{name}-stale"
        kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": stale, "namespace": self.ns}, "spec": spec}))
        ended = wait("the stale rank's end", lambda: (lambda st: st if st and st.get(
            "terminated") else None)(next(iter(json.loads(kubectl(
                "get", "pod", stale, "-n", self.ns, "-o", "json").stdout)["status"].get(
                    "containerStatuses", [])), {}).get("state")), timeout=180)
        log = self.steps_of(stale)
        self.assertEqual(ended["terminated"]["exitCode"], 8, (ended, log[-5:]))
        message = json.loads(ended["terminated"].get("message") or "{}")
        self.assertEqual(message.get("reason"), "Superseded", message)
        self.assertFalse([e for e in log if e.get("event") in ("checkpoint", "fenced", "step")],
                         log)
        fence = json.loads((self.shared / name / "ckpt" / "fence.json").read_text())
        self.assertEqual((fence["job"], fence["attempt"]), (uid, 1))
        kubectl("delete", "pod", stale, "-n", self.ns, "--wait=false")
        print(f"figure: a rank of attempt 0 started beside attempt 1 exited 8 (Superseded): "
              f"{message.get('message', '')[:120]}")

    def test_a_gang_trains_survives_a_killed_worker_and_succeeds(self):
        name = "fortunes"
        job = self.job(name, STEPS, EVERY, {"maxRestarts": 3, "backoff": {"initial": "1s"}})
        start = time.monotonic()
        kubectl("apply", "-f", "-", stdin=json.dumps(job))
        try:
            wait("the gang running", lambda: self.status(name).get("phase") == "Running")
        except AssertionError:
            raise AssertionError(f"status {self.status(name)}\npods "
                                 f"{json.dumps([p['status'] for p in self.pods(name)])[:3000]}"
                                 f"\noperator:\n{self.operator_log()}")
        print(f"figure: TrainingJob submit → 2 workers Running on real nodes "
              f"{time.monotonic() - start:.1f} s")
        rank0 = f"{name}-0-0"
        # The fake GPU was allocated; the worker fell back to the CPU and said so.
        pod0 = json.loads(kubectl("get", "pod", rank0, "-n", self.ns, "-o", "json").stdout)
        limits = pod0["spec"]["containers"][0]["resources"]["limits"]
        self.assertEqual(str(limits["nvidia.com/gpu"]), "1")
        warnings = wait("the CPU fallback warning", lambda: [
            e for e in self.steps_of(rank0) if e.get("event") == "warning"], timeout=120)
        self.assertIn("training on the CPU", warnings[0]["message"])
        # Past the first checkpoint, kill rank 1.
        wait("a checkpoint", lambda: any(e.get("event") == "checkpoint"
                                         for e in self.steps_of(rank0)), timeout=300)
        # Rank 0's progress reaches the status through the pod proxy (read
        # every 15 s at most, so within ~20 s of the checkpoint).
        checkpointed = time.monotonic()
        progress = wait("the progress in status", lambda: (
            lambda s: s if s.get("lastCheckpoint") and "loss" in s else None)(self.status(name)),
            timeout=60)
        print(f"figure: a checkpoint seen in rank 0's log → progress with lastCheckpoint in "
              f"status {time.monotonic() - checkpointed:.1f} s "
              f"(step {progress['step']}, loss {progress['loss']:.3f}, "
              f"{progress.get('tokensPerSecond', 0):.0f} tokens/s, lastCheckpoint "
              f"{progress['lastCheckpoint']['uri']})")
        self.assertGreaterEqual(progress["step"], EVERY)
        self.assertGreater(progress["loss"], 0)
        self.assertGreater(progress.get("tokensPerSecond", 0), 0)
        self.assertGreaterEqual(progress["lastCheckpoint"]["step"], EVERY)
        self.assertTrue(progress["lastCheckpoint"]["uri"].startswith(
            f"file:///checkpoints/{name}/ckpt/"), progress["lastCheckpoint"])
        killed = time.monotonic()
        kubectl("delete", "pod", f"{name}-0-1", "-n", self.ns, "--grace-period=0", "--force")
        wait("the restart", lambda: self.status(name).get("restarts") == 1, timeout=120)
        wait("attempt 1 running", lambda: self.status(name).get("phase") == "Running",
             timeout=180)
        print(f"figure: worker killed → whole gang Running again as attempt 1 "
              f"{time.monotonic() - killed:.1f} s")
        history = self.status(name)["restartHistory"]
        self.assertEqual(len(history), 1)
        self.assertEqual(history[0]["reason"], "WorkerError")
        # The restart names the checkpoint the status last showed.
        self.assertGreaterEqual(history[0].get("resumedFromStep", 0), EVERY, history)

        self.check_fence(name)

        # kubectl scale to 1 while attempt 1 trains: resized in place of a
        # restart; the one worker accumulates 2 micro-batches of 8, so the
        # global batch stays 16.
        before = wait("attempt 1 training", lambda: [
            e for e in self.steps_of(f"{name}-1-0") if e.get("event") == "step"], timeout=120)
        scaled = time.monotonic()
        kubectl("scale", "trainingjob", name, "-n", self.ns, "--replicas=1")
        wait("resized to 1 worker", lambda: (
            lambda s: s.get("replicas") == 1 and s.get("phase") == "Running")(self.status(name)),
            timeout=180)
        print(f"figure: kubectl scale 2 → 1 → the gang Running again with 1 worker "
              f"{time.monotonic() - scaled:.1f} s")
        resized = self.status(name)
        self.assertEqual(resized["restarts"], 1, resized)
        self.assertEqual(len(resized["restartHistory"]), 1, resized)
        pods = self.pods(name)
        self.assertEqual([p["metadata"]["name"] for p in pods], [f"{name}-1-0"])
        worker = pods[0]["spec"]["containers"][0]
        self.assertIn({"name": "WORLD_SIZE", "value": "1"}, worker["env"])
        self.assertIn("--grad-accum=2", worker.get("args", []) + worker.get("command", []))
        wait("the job done", lambda: self.status(name).get("phase") in ("Succeeded", "Failed"),
             timeout=600)
        final = self.status(name)
        self.assertEqual(final["phase"], "Succeeded", json.dumps(final, indent=1))
        self.assertGreater(final["step"], progress["step"])
        events = self.steps_of(f"{name}-1-0")  # The resized worker's.
        resumed = [e for e in events if e.get("event") == "resumed"]
        self.assertTrue(resumed, events[:5])
        # From the checkpoint the 2-worker gang wrote on its way out.
        self.assertGreaterEqual(resumed[0]["step"], before[-1]["step"])
        steps = [e["step"] for e in events if e.get("event") == "step"]
        self.assertEqual(steps[0], resumed[0]["step"] + 1)
        self.assertEqual(steps[-1], STEPS)
        # The status holds the run's end as rank 0 saw it (its termination
        # message), not the last progress read up to 15 s before.
        done = [e for e in events if e.get("event") == "done"]
        self.assertTrue(done, events[-3:])
        self.assertEqual(final.get("loss"), done[-1]["loss"], final)
        self.assertEqual(final["lastCheckpoint"]["step"], STEPS, final)
        print(f"figure: resized to 1 worker, resumed at step {resumed[0]['step']} and finished "
              f"step {STEPS}; submit → Succeeded {time.monotonic() - start:.1f} s")

    def logged(self, pod):
        """(host time in seconds, event) for each JSON line of the worker's
        log, timed by the container runtime (kubectl logs --timestamps)."""
        r = kubectl("logs", "-n", self.ns, pod, "-c", "worker", "--timestamps", check=False)
        out = []
        for line in r.stdout.splitlines():
            stamp, _, text = line.partition(" ")
            if not text.startswith("{"):
                continue
            # RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
            day, _, rest = stamp.partition("T")
            clock, _, frac = rest.rstrip("Z").partition(".")
            when = datetime.datetime.fromisoformat(
                f"{day}T{clock}.{(frac + '000000')[:6]}+00:00").timestamp()
            out.append((when, json.loads(text)))
        return out

    def bench_resume_after_faults(self):
        """bench/trainingjob_realnodes_bench.sh: fault → every rank of the
        new attempt trained its first step after resuming, over
        KILN_BENCH_FAULTS worker pods force-deleted (rank 0 and rank 1 in
        turn), each once the attempt has trained and checkpointed; backoff
        fixed at 1 s. Not a test (no test_ prefix): asserts only that every
        rank of each new attempt resumed from a checkpoint (the job's status
        may not know the newest one yet: progress is read every 15 s)."""
        faults = int(os.environ.get("KILN_BENCH_FAULTS", "20"))
        name = "bench"
        kubectl("apply", "-f", "-", stdin=json.dumps(self.job(
            name, 1_000_000, 25,
            {"maxRestarts": faults + 5, "backoff": {"initial": "1s", "max": "1s"}})))
        recorded, running, resumed_all = [], [], []
        for attempt in range(faults + 1):
            # The attempt trains and checkpoints before the next fault.
            def trained():
                got = [self.logged(f"{name}-{attempt}-{r}") for r in (0, 1)]
                ok = (any(e.get("event") == "checkpoint" for _, e in got[0]) and
                      all(any(e.get("event") == "step" for _, e in g) for g in got))
                return got if ok else None
            logs = wait(f"attempt {attempt} training and checkpointed", trained, timeout=300)
            if attempt > 0:
                # Each rank's first step after its "resumed" line.
                firsts = []
                for g in logs:
                    at = next(i for i, (_, e) in enumerate(g) if e.get("event") == "resumed")
                    self.assertGreater(g[at][1]["step"], 0, g[at])  # From a checkpoint.
                    firsts.append(next(t for t, e in g[at:] if e.get("event") == "step"))
                resumed_all.append(max(firsts) - fault_at)
            if attempt == faults:
                break
            fault_at = time.time()
            kubectl("delete", "pod", f"{name}-{attempt}-{attempt % 2}", "-n", self.ns,
                    "--grace-period=0", "--force", "--wait=false")
            wait("the restart", lambda: self.status(name).get("restarts", 0) > attempt,
                 timeout=120)
            recorded.append(time.time() - fault_at)
            wait("Running", lambda: self.status(name).get("phase") == "Running", timeout=180)
            running.append(time.time() - fault_at)
        kubectl("delete", "trainingjob", name, "-n", self.ns, "--wait=true", "--timeout=120s")

        def p(xs, q):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(q * len(xs)))]
        for what, xs in (("fault → restart recorded", recorded),
                         ("fault → gang Running again", running),
                         ("fault → every rank trained a step after resuming", resumed_all)):
            print(f"trainingjob_realnodes_bench: {what}: p50 {p(xs, 0.5):.2f} s, "
                  f"p99 {p(xs, 0.99):.2f} s, min {min(xs):.2f} s "
                  f"(n={len(xs)}: {' '.join(f'{x:.1f}' for x in xs)})", flush=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
