#!/usr/bin/env python3
"""kiln's story, for real, on the local clusters (the README's main command
runs it through scripts/demo.sh):

  1. clusters  two clusters (kiln-1, the hub, and kiln-2), each with a real
               node (kubelet, containerd) advertising fake GPUs, and kwok nodes;
  2. install   kiln's Helm chart on kiln-1: kiln-operator (2 replicas, one
               leader) and kiln-router (2 replicas), from the images that
               scripts/images.sh built, on the real node;
  3. fleet     both clusters registered as MemberClusters (kiln-1 local,
               kiln-2 through a kubeconfig Secret) and Ready;
  4. train     a TrainingJob trains a small GPT on the fortunes corpus with 2
               workers (1 GPU each) on kiln-2; one worker is killed mid-run;
               the gang resumes from its newest checkpoint and completes;
  5. serve     a ModelDeployment serves the job's mid-run checkpoint as v1,
               through kiln-router, while a load generator sends completions;
  6. rollout   v2, the job's final checkpoint, passes the quality gate (held-out
               fortunes scored against v1) and rolls out by canary steps and an
               analysis of the router's error rate to Healthy;
  7. gate      v3, an early checkpoint, is stopped by the quality gate and
               rolled back automatically: it never takes a request.

Every transition is waited for and checked; a missing one stops the demo with
the reason (exit 1). The end is a summary table with each phase's time and the
requests: their count by version and the failed ones (target zero).

  demo.py up [--dir DIR] [--small]   the story (leaves the clusters up)
  demo.py down [--dir DIR]           stops them, removes nothing else
  demo.py status [--dir DIR]

--small trains fewer steps (the integration test's size). The images must
exist in build/images (scripts/images.sh).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALCLUSTER = ROOT / "scripts" / "localcluster.py"
# kubectl's kiln plugin (docs/cli.md), as scripts/demo.sh builds it (and
# links it into the tools' bin, on the summary's PATH).
PLUGIN_DIR = ROOT / "build" / "ci" / "plugin"
FORTUNES = Path("/usr/share/games/fortunes")
NAMESPACE = "demo"
RELEASE = "kiln"
SYSTEM_NS = "kiln-system"
JOB = "fortunes"
MODEL = "fortunes-gpt"
HUB, MEMBER = "kiln-1", "kiln-2"
MOUNT = "/shared"


class DemoError(Exception):
    pass


# ---------------------------------------------------------------------------
# Output: one line per event, prefixed with the time since the start; a live
# line (redrawn in place on a terminal, printed when it changes otherwise).

class Display:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.tty = sys.stdout.isatty()
        self.live_text = ""
        self.live_printed = 0.0
        self.lock = threading.Lock()

    def stamp(self) -> str:
        t = int(time.monotonic() - self.start)
        return f"[{t // 60:2d}:{t % 60:02d}]"

    def say(self, phase: str, text: str) -> None:
        with self.lock:
            if self.tty and self.live_text:
                sys.stdout.write("\r\033[K")
            print(f"{self.stamp()} {phase:<8} {text}", flush=True)
            self.live_text = ""

    def live(self, phase: str, text: str) -> None:
        """A progress line: redrawn in place on a terminal; elsewhere (a log,
        CI) printed when it changes, at most every 5 seconds."""
        with self.lock:
            if text == self.live_text:
                return
            line = f"{self.stamp()} {phase:<8} {text}"
            if self.tty:
                self.live_text = text
                sys.stdout.write("\r\033[K" + line[:200])
                sys.stdout.flush()
            elif time.monotonic() - self.live_printed >= 5:
                self.live_text = text
                self.live_printed = time.monotonic()
                print(line, flush=True)


OUT = Display()


class Phases:
    """Each phase's start and end, for the summary table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, str]] = []
        self.current: tuple[str, float] | None = None

    def begin(self, name: str) -> None:
        self.current = (name, time.monotonic())

    def end(self, outcome: str) -> None:
        assert self.current
        name, t0 = self.current
        self.rows.append((name, t0, time.monotonic(), outcome))
        self.current = None


# ---------------------------------------------------------------------------
# The clusters.

class Clusters:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        state = json.loads((run_dir / "state.json").read_text())
        self.bin = Path(state["spec"]["bin_dir"])
        self.dirs = {c["name"]: Path(c["dir"]) for c in state["spec"]["clusters"]}
        self.kubeconfig = run_dir / "kubeconfig"

    def kubectl(self, context: str, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                            "--context", context, *args], input=stdin, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise DemoError(f"kubectl --context {context} {' '.join(args)}: {r.stderr.strip()}")
        return r

    def get(self, context: str, *args: str) -> dict:
        r = self.kubectl(context, "get", *args, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def apply(self, context: str, obj: dict) -> None:
        self.kubectl(context, "apply", "-f", "-", stdin=json.dumps(obj))

    def helm(self, *args: str) -> None:
        home = self.dir / "helm"
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                   HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
                   HELM_DATA_HOME=str(home / "data"))
        r = subprocess.run([str(self.bin / "helm"), "--kube-context", HUB, *args], env=env,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise DemoError(f"helm {' '.join(args[:2])}: {r.stderr.strip()}")


def wait(what: str, probe, timeout: float, every: float = 0.5, on_wait=None):
    """probe() until it returns something true; its value. on_wait() between
    tries (the live line)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        if on_wait:
            on_wait()
        time.sleep(every)


# ---------------------------------------------------------------------------
# Requests through kiln-router: a few clients sending completions back to
# back to the router pods (at their IPs; this machine reaches the real nodes'
# pod network), each answer recorded with the version that gave it.

class Load:
    PROMPTS = ["Q: What is a computer?\nA:", "You will", "The best way to", "Never trust",
               "A fortune:", "Life is"]

    def __init__(self, routers: list[str], clients: int = 2) -> None:
        self.routers = routers
        self.answers: list[tuple[float, int, str, str]] = []  # time, status, version, error
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(clients)]
        self.lock = threading.Lock()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def run(self, index: int) -> None:
        rng = random.Random(index)
        n = index
        while not self.stop.is_set():
            router = self.routers[n % len(self.routers)]
            n += 1
            body = {"model": MODEL, "prompt": rng.choice(self.PROMPTS), "max_tokens": 16,
                    "temperature": 0.8, "seed": n}
            status, version, error = post(router, body)
            with self.lock:
                self.answers.append((time.monotonic(), status, version, error))
            if status != 200:
                time.sleep(0.2)  # A failing router is not hammered.

    def since(self, t0: float) -> list[tuple[float, int, str, str]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= t0]

    def by_version(self, answers) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in answers:
            if a[1] == 200:
                out[a[2]] = out.get(a[2], 0) + 1
        return out


def post(base: str, body: dict, timeout: float = 20) -> tuple[int, str, str]:
    """(HTTP status, X-Kiln-Version, error text) of one completion."""
    req = urllib.request.Request(f"{base}/v1/completions", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status, r.headers.get("x-kiln-version", ""), ""
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-kiln-version", ""), e.read()[:200].decode(errors="replace")
    except Exception as e:  # A connection error counts as a failed request.
        return 0, "", repr(e)[:200]


def complete(base: str, prompt: str, version: str) -> str:
    """One sampled completion (temperature 0.7, a fixed seed) from `version`,
    asked for by the router's header override."""
    req = urllib.request.Request(
        f"{base}/v1/completions", method="POST",
        data=json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 48,
                         "temperature": 0.7, "seed": 42}).encode(),
        headers={"Content-Type": "application/json", "x-kiln-version": version})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["choices"][0]["text"]
    except Exception as e:
        return f"({e})"


# ---------------------------------------------------------------------------
# The story.

class Story:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.dir).resolve()
        self.shared = self.dir / "volumes" / "shared"
        self.phases = Phases()
        self.facts: dict[str, str] = {}
        if args.small:
            self.steps, self.every, self.kill_after = 600, 50, 100
            self.v1_step, self.v3_step = 150, 50
        else:
            self.steps, self.every, self.kill_after = 800, 100, 200
            self.v1_step, self.v3_step = 400, 100
        self.c: Clusters | None = None
        self.load: Load | None = None

    # -- 1. clusters ------------------------------------------------------

    def clusters(self) -> None:
        self.phases.begin("clusters")
        images = [ROOT / "build" / "images" / f"kiln-{n}.tar"
                  for n in ("operator", "router", "worker")]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DemoError(f"missing images {', '.join(missing)}: run scripts/images.sh")
        OUT.say("clusters", f"starting {HUB} (hub) and {MEMBER}: each 1 real node with 4 "
                f"advertised GPUs + 2 kwok nodes with 8, in {self.dir}")
        argv = [sys.executable, str(LOCALCLUSTER), "up", "--dir", str(self.dir),
                "--clusters", "2", "--nodes", "2", "--gpus-per-node", "8",
                "--real-nodes", "1", "--real-node-gpus", "4", "--timeout", "600"]
        for image in images:
            argv += ["--image", str(image)]
        # localcluster wants an empty or new folder: its output is kept here
        # and shown when it fails (its components log under DIR/*/logs).
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        while proc.poll() is None:
            OUT.live("clusters", "starting: etcd, API servers, kubelets, containerd, "
                     "CoreDNS, importing the images ...")
            time.sleep(1)
        reader.join(timeout=5)
        if proc.returncode != 0:
            raise DemoError("the clusters did not start:\n" + "".join(lines)[-1500:])
        self.c = Clusters(self.dir)
        for ctx in (HUB, MEMBER):
            nodes = self.c.get(ctx, "nodes").get("items", [])
            real = [n["metadata"]["name"] for n in nodes
                    if n["metadata"].get("labels", {}).get("kiln.dev/node-kind") == "real"]
            OUT.say("clusters", f"{ctx}: {len(nodes)} nodes Ready ({', '.join(real)} real)")
        self.phases.end("2 clusters, 2 real + 4 kwok nodes")

    # -- 2. install -------------------------------------------------------

    def helm_install(self) -> None:
        c = self.c
        c.helm("upgrade", "--install", RELEASE, str(ROOT / "charts" / "kiln"),
               "--namespace", SYSTEM_NS, "--create-namespace",
               "--set", "router.enabled=true",
               "--set", "router.drainTimeoutSeconds=5",
               "--set", "logFormat=text",
               "--set", f"sharedVolume.hostPath={self.shared}",
               "--set", f"sharedVolume.mountPath={MOUNT}",
               "--set", "nodeSelector.kiln\\.dev/node-kind=real",
               "--set", "router.nodeSelector.kiln\\.dev/node-kind=real",
               "--wait", "--timeout", "300s")

    def pods_not_ready(self) -> str:
        """Why the release's pods are not ready: each one's state and the
        tail of its log (a flag the image's binary does not know, say)."""
        notes = []
        for p in self.c.get(HUB, "pods", "-n", SYSTEM_NS).get("items", []):
            name = p["metadata"]["name"]
            for cs in p.get("status", {}).get("containerStatuses", []):
                if cs.get("ready"):
                    continue
                state = next(iter(cs.get("state", {})), "?")
                last = cs.get("lastState", {}).get("terminated", {})
                log = self.c.kubectl(HUB, "logs", name, "-n", SYSTEM_NS, "--tail=3",
                                     *(["--previous"] if last else []), check=False)
                notes.append(f"{name} {state} (restarts {cs.get('restartCount', 0)}): "
                             f"{' | '.join(log.stdout.strip().splitlines()[-3:]) or '-'}")
        return "pods not ready: " + ("; ".join(notes) if notes else "none listed")

    def install(self) -> None:
        c = self.c
        self.phases.begin("install")
        self.shared.mkdir(parents=True, exist_ok=True)
        os.chmod(self.shared, 0o777)
        OUT.say("install", f"helm install kiln charts/kiln on {HUB}: operator and router, "
                f"shared volume {self.shared} at {MOUNT}")
        try:
            self.helm_install()
        except DemoError as e:
            raise DemoError(f"{e}; {self.pods_not_ready()}") from None
        pods = c.get(HUB, "pods", "-n", SYSTEM_NS).get("items", [])
        for p in pods:
            OUT.say("install", f"pod {p['metadata']['name']} {p['status'].get('phase')} on "
                    f"{p['spec'].get('nodeName')}")
        holder = wait("the operator's leader", lambda: c.get(
            HUB, "lease", "-n", SYSTEM_NS, f"{RELEASE}-operator").get("spec", {}).get(
            "holderIdentity"), 120)
        OUT.say("install", f"leader: {holder}")
        self.phases.end(f"{len(pods)} pods Running; leader elected")

    # -- 3. fleet ---------------------------------------------------------

    def fleet(self) -> None:
        c = self.c
        self.phases.begin("fleet")
        pods_kubeconfig = c.dirs[MEMBER] / "pods.kubeconfig"
        c.apply(HUB, {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": f"{MEMBER}-kubeconfig", "namespace": SYSTEM_NS},
                      "data": {"kubeconfig": base64.b64encode(
                          pods_kubeconfig.read_bytes()).decode()}})
        c.apply(HUB, {"apiVersion": "kiln.dev/v1alpha1", "kind": "MemberCluster",
                      "metadata": {"name": HUB},
                      "spec": {"local": True, "priority": 0, "heartbeatInterval": "2s",
                               "unreachableAfter": "20s"}})
        c.apply(HUB, {"apiVersion": "kiln.dev/v1alpha1", "kind": "MemberCluster",
                      "metadata": {"name": MEMBER},
                      "spec": {"kubeconfigSecretRef": {"name": f"{MEMBER}-kubeconfig",
                                                       "namespace": SYSTEM_NS},
                               "priority": 10, "heartbeatInterval": "2s",
                               "unreachableAfter": "20s"}})
        OUT.say("fleet", f"MemberClusters {HUB} (local, priority 0) and {MEMBER} (kubeconfig "
                "Secret, priority 10: training goes there first)")

        def ready(name):
            st = c.get(HUB, "membercluster", name).get("status", {})
            ok = any(x.get("type") == "Ready" and x.get("status") == "True"
                     for x in st.get("conditions", []))
            return st if ok else None

        for name in (HUB, MEMBER):
            st = wait(f"MemberCluster {name} Ready", lambda: ready(name), 120,
                      on_wait=lambda: OUT.live("fleet", f"waiting for {name} Ready ..."))
            st = wait(f"{name}'s capacity in its status", lambda: (
                lambda s: s if "totalGPUs" in s else None)(c.get(
                    HUB, "membercluster", name).get("status", {})), 60)
            gpus = ", ".join(f"{g.get('allocatable')}/{g.get('capacity')} {g.get('model')}"
                             for g in st.get("gpus", []))
            OUT.say("fleet", f"{name} Ready: {st.get('schedulableNodes')} schedulable nodes, "
                    f"{st.get('allocatableGPUs')} of {st.get('totalGPUs')} GPUs free ({gpus}); "
                    f"{len(st.get('nvlinkDomains', []))} NVLink domains, "
                    f"{len(st.get('zones', []))} zones")
        self.phases.end("2 MemberClusters Ready")

    # -- 4. train ---------------------------------------------------------

    def prepare_data(self) -> int:
        """The corpus without every 10th fortune (held out: the quality gate's
        evaluation set, 256 of them). Returns the held-out count."""
        train = self.shared / "fortunes-train"
        if train.exists():
            shutil.rmtree(train)
        train.mkdir(parents=True)
        held: list[str] = []
        for f in sorted(FORTUNES.iterdir()):
            if f.suffix in (".dat", ".u8") or f.is_symlink() or not f.is_file():
                continue
            items = f.read_text(errors="replace").split("\n%\n")
            keep = [x for i, x in enumerate(items) if i % 10 != 5]
            held += [x.strip() for i, x in enumerate(items) if i % 10 == 5 and x.strip()]
            (train / f.name).write_text("\n%\n".join(keep))
        random.Random(7).shuffle(held)
        evals = self.shared / "eval"
        evals.mkdir(exist_ok=True)
        (evals / "fortunes-eval.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in held[:256]))
        for p in [self.shared, *self.shared.rglob("*")]:
            os.chmod(p, 0o777 if p.is_dir() else 0o666)
        return min(256, len(held))

    def job_status(self) -> dict:
        return self.c.get(HUB, "trainingjob", JOB, "-n", NAMESPACE).get("status", {})

    def show_training(self) -> None:
        s = self.job_status()
        ck = s.get("lastCheckpoint", {})
        OUT.live("train", f"{s.get('phase', '-'):<10} step {s.get('step', 0):>4}/{self.steps}  "
                 f"loss {s.get('loss', 0):.3f}  {s.get('tokensPerSecond', 0):>6.0f} tokens/s  "
                 f"checkpoint @{ck.get('step', '-')}  restarts {s.get('restarts', 0)}")

    def train(self) -> None:
        c = self.c
        self.phases.begin("train")
        held = self.prepare_data()
        c.kubectl(HUB, "create", "namespace", NAMESPACE, check=False)
        job = {
            "apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": JOB, "namespace": NAMESPACE},
            "spec": {
                "model": {"architecture": "gpt", "layers": 2, "hiddenSize": 64, "heads": 4,
                          "vocabSize": 257, "contextLength": 64},
                "data": {"uri": f"file://{MOUNT}/fortunes-train"},
                "training": {"steps": self.steps, "globalBatchSize": 16, "microBatchSize": 8,
                             "sequenceLength": 64, "learningRate": 0.003, "seed": 7},
                "workers": {"replicas": 2, "gpusPerWorker": 1,
                            "image": "ghcr.io/kiln-dev/kiln-worker:0.1.0",
                            "nodeSelector": {"kiln.dev/node-kind": "real"},
                            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
                "checkpoint": {"uri": f"file://{MOUNT}/{JOB}/ckpt",
                               "intervalSteps": self.every, "keep": 100},
                "failurePolicy": {"maxRestarts": 3, "backoff": {"initial": "1s"}}}}
        c.apply(HUB, job)
        OUT.say("train", f"TrainingJob {JOB}: GPT 2 layers x 64, {self.steps} steps, 2 workers "
                f"x 1 GPU, checkpoint every {self.every} steps to file://{MOUNT}/{JOB}/ckpt; "
                f"{held} fortunes held out for the quality gate")
        t0 = time.monotonic()
        s = wait("the gang Running", lambda: (lambda s: s if s.get("phase") == "Running"
                                              else None)(self.job_status()), 300,
                 on_wait=self.show_training)
        where = sorted({p.get("cluster", "?") for p in s.get("placement", [])})
        self.facts["submit → Running"] = f"{time.monotonic() - t0:.1f} s"
        OUT.say("train", f"placed whole on {', '.join(where)}; 2 workers Running "
                f"({time.monotonic() - t0:.1f} s after submit)")
        if where != [MEMBER]:
            raise DemoError(f"expected the gang on {MEMBER} (priority 10), got {where}")
        # The job's status is refreshed every few seconds; the checkpoint
        # files on the shared volume show up the moment a rank renames them
        # into place, so the kill lands early enough on a fast machine too.
        ckdir = self.shared / JOB / "ckpt"

        def newest_checkpoint() -> int:
            steps = [int(p.name[5:13]) for p in ckdir.glob("step-*.ckpt")
                     if p.name[5:13].isdigit()] if ckdir.is_dir() else []
            return max(steps, default=0)

        wait(f"a checkpoint at step {self.kill_after} or later",
             lambda: newest_checkpoint() >= self.kill_after, 600, every=0.1,
             on_wait=lambda: OUT.live("train", f"newest checkpoint on the volume "
                                      f"@{newest_checkpoint() or '-'}"))
        # The operator records where a restart resumes from the checkpoint the
        # status names: give the status (refreshed from rank 0 at least every
        # 30 s) the time to name it, so the restart says where it resumed;
        # but once two more checkpoints have landed, kill anyway, before a
        # fast machine ends the job (600 steps took 21 s on 2 cores).
        try:
            wait("the status to name the checkpoint", lambda: self.job_status().get(
                "lastCheckpoint", {}).get("step", 0) >= self.kill_after
                or newest_checkpoint() >= self.kill_after + 2 * self.every, 30, every=0.5,
                on_wait=self.show_training)
        except DemoError:
            pass  # Killed anyway: the workers still resume from the newest one.
        newest = newest_checkpoint()
        victim = f"{JOB}-0-1"
        OUT.say("train", f"checkpoint step-{newest:08d}.ckpt written: killing worker {victim} "
                f"on {MEMBER} (kubectl delete --force)")
        phase = self.job_status().get("phase")
        if phase != "Running":
            raise DemoError(f"the job is {phase} before the worker could be killed")
        killed = time.monotonic()
        c.kubectl(MEMBER, "delete", "pod", victim, "-n", NAMESPACE, "--grace-period=0",
                  "--force")
        wait("the restart", lambda: self.job_status().get("restarts", 0) >= 1, 120,
             every=0.2, on_wait=self.show_training)
        # Running again; a fast machine may finish the last steps between two
        # looks, which is a resumed gang too.
        again = wait("attempt 1 Running", lambda: (lambda s: s.get("phase") if s.get(
            "phase") in ("Running", "Succeeded") else None)(self.job_status()), 300,
            every=0.2, on_wait=self.show_training)
        recovered = time.monotonic() - killed
        h = self.job_status()["restartHistory"][0]
        # Killed before the status named a checkpoint (a fast run): the
        # operator recorded no step, and the workers load the newest one.
        resumed = h.get("resumedFromStep")
        where = (f"step {resumed}" if resumed is not None else
                 f"the newest checkpoint on the volume (@{newest}; the status had named none yet)")
        OUT.say("train", f"gang restarted as attempt 1 ({h.get('reason')}: "
                f"{h.get('message', '')[:140]}), resuming from {where}; "
                f"{'Running again' if again == 'Running' else 'done'} {recovered:.1f} s after the kill")
        self.facts["worker killed → gang Running again" if again == "Running" else
                   "worker killed → gang resumed and done"] = f"{recovered:.1f} s"
        self.facts["resumed from step"] = (str(resumed) if resumed is not None else
                                           f"the newest on the volume, @{newest}")
        final = wait("the job finished", lambda: (
            lambda s: s if s.get("phase") in ("Succeeded", "Failed") else None)(
            self.job_status()), 900, every=1, on_wait=self.show_training)
        if final["phase"] != "Succeeded":
            raise DemoError(f"the job {final['phase']}: {final.get('message')}")
        OUT.say("train", f"Succeeded: step {final.get('step')}, loss {final.get('loss', 0):.3f}, "
                f"{final.get('restarts')} restart; {time.monotonic() - t0:.0f} s in all")
        self.facts["final training loss"] = f"{final.get('loss', 0):.3f}"
        self.phases.end(f"{self.steps} steps, 1 worker killed, resumed at step "
                        f"{h.get('resumedFromStep')}")

    # -- 5-7. serve, roll out, gate -------------------------------------------

    def checkpoint_uri(self, step: int) -> str:
        name = f"step-{step:08d}.ckpt"
        if not (self.shared / JOB / "ckpt" / name).exists():
            raise DemoError(f"the job left no checkpoint {name} in {self.shared / JOB / 'ckpt'}")
        return f"file://{MOUNT}/{JOB}/ckpt/{name}"

    def md_status(self) -> dict:
        return self.c.get(HUB, "modeldeployment", MODEL, "-n", NAMESPACE).get("status", {})

    def show_rollout(self) -> None:
        s = self.md_status()
        split = " ".join(f"{t['version']}={t['weight']}%" for t in s.get("traffic", []))
        recent = self.load.since(time.monotonic() - 5) if self.load else []
        seen = self.load.by_version(recent) if self.load else {}
        failed = len([a for a in recent if a[1] != 200])
        OUT.live("rollout", f"{s.get('phase', '-'):<11} step {s.get('currentStep', '-')} "
                 f"weights [{split}]  last 5 s: {seen} answered, {failed} failed")

    def serve(self) -> None:
        c = self.c
        self.phases.begin("serve v1")
        spec = {
            "model": {"name": MODEL, "version": "v1", "uri": self.checkpoint_uri(self.v1_step)},
            "image": "ghcr.io/kiln-dev/kiln-worker:0.1.0", "replicas": 1, "gpusPerReplica": 0,
            "nodeSelector": {"kiln.dev/node-kind": "real"},
            "serving": {"maxTokens": 64},
            "strategy": {"canary": {"steps": [{"setWeight": 25},
                                              {"analysis": {"duration": "8s"}},
                                              {"setWeight": 60},
                                              {"pause": {"duration": "5s"}}],
                                    "scaleDownDelay": "10m"}},
            "analysis": {"interval": "2s", "failureLimit": 0, "inconclusiveLimit": 10,
                         "metrics": [{"name": "error-rate", "router": {"metric": "errorRate"},
                                      "max": 0.01}],
                         "qualityGate": {"evaluationSet": f"file://{MOUNT}/eval/"
                                         "fortunes-eval.jsonl",
                                         "metric": "loss", "maxRegression": 0.02}},
            "traffic": {"provider": "Router"}}
        c.apply(HUB, {"apiVersion": "kiln.dev/v1alpha1", "kind": "ModelDeployment",
                      "metadata": {"name": MODEL, "namespace": NAMESPACE}, "spec": spec})
        OUT.say("serve", f"ModelDeployment {MODEL} v1 = the job's checkpoint at step "
                f"{self.v1_step}; canary steps 25% → analysis 8 s → 60% → pause 5 s → 100%")
        t0 = time.monotonic()
        wait("v1 Healthy", lambda: self.md_status().get("phase") == "Healthy", 300,
             on_wait=self.show_rollout)
        routers = [f"http://{p['status']['podIP']}:8000" for p in c.get(
            HUB, "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=router").get(
            "items", []) if p["status"].get("podIP")]
        if not routers:
            raise DemoError("no kiln-router pod has an IP")
        wait("a 200 from v1 through every router", lambda: all(
            post(r, {"model": MODEL, "prompt": "Hi", "max_tokens": 2})[0] == 200
            for r in routers), 120)
        OUT.say("serve", f"v1 Healthy and answering through {len(routers)} kiln-router pods "
                f"({time.monotonic() - t0:.1f} s); load: 2 clients, back to back, from now on")
        self.facts["apply → v1 answering"] = f"{time.monotonic() - t0:.1f} s"
        self.routers = routers
        self.load = Load(routers)
        self.load.start()
        self.samples = {"v1": complete(routers[0], "The best way to", "v1")}
        self.phases.end("v1 Healthy behind kiln-router")

    def rollout(self) -> None:
        c = self.c
        self.phases.begin("roll out v2")
        t0 = time.monotonic()
        c.kubectl(HUB, "patch", "modeldeployment", MODEL, "-n", NAMESPACE, "--type=merge",
                  "-p", json.dumps({"spec": {"model": {
                      "name": MODEL, "version": "v2", "uri": self.checkpoint_uri(self.steps)}}}))
        OUT.say("rollout", f"v2 = the job's final checkpoint (step {self.steps}): spec.model "
                "patched; the quality gate scores v2 and v1 on the held-out fortunes first")
        seen_steps: set = set()

        def progress():
            s = self.md_status()
            key = (s.get("phase"), s.get("currentStep"), s.get("canaryWeight"))
            if key not in seen_steps and s.get("canaryVersion") == "v2":
                seen_steps.add(key)
                OUT.say("rollout", f"{s.get('phase')}: step {s.get('currentStep')}, canary "
                        f"weight {s.get('canaryWeight', 0)}% — {s.get('message', '')[:110]}")
            if s.get("phase") in ("Degraded", "Aborted", "RolledBack"):
                raise DemoError(f"v2 was stopped: {s.get('message')}")
            return s.get("phase") == "Healthy" and s.get("stableVersion") == "v2"

        wait("v2 promoted", progress, 600, on_wait=self.show_rollout)
        s = self.md_status()
        gate = [r for r in s.get("analysisRuns", []) if "gate" in r.get("name", "")]
        for r in s.get("analysisRuns", []):
            OUT.say("rollout", f"analysis {r.get('name')}: {r.get('phase')} — "
                    f"{r.get('message', '')[:120]}")
        self.facts["v2 rollout (gate + 4 steps)"] = f"{time.monotonic() - t0:.1f} s"
        if gate:
            self.facts["v2 quality gate"] = gate[-1].get("message", "")[:90]
        seen = self.load.by_version(self.load.since(t0))
        if "v2" not in seen:
            raise DemoError(f"no request was answered by v2 during its rollout: {seen}")
        OUT.say("rollout", f"v2 Healthy (stable); answers during the rollout by version: {seen}")
        self.samples["v2"] = complete(self.routers[0], "The best way to", "v2")
        self.phases.end("v2 Healthy; gate and analysis Successful")

    def gate(self) -> None:
        c = self.c
        self.phases.begin("gate v3")
        t0 = time.monotonic()
        c.kubectl(HUB, "patch", "modeldeployment", MODEL, "-n", NAMESPACE, "--type=merge",
                  "-p", json.dumps({"spec": {"model": {
                      "name": MODEL, "version": "v3", "uri": self.checkpoint_uri(self.v3_step)}}}))
        OUT.say("gate", f"v3 = the job's early checkpoint (step {self.v3_step}), a worse model: "
                "spec.model patched")

        def stopped():
            s = self.md_status()
            return s if s.get("phase") in ("Degraded", "Aborted", "RolledBack") else None

        s = wait("v3 stopped by the quality gate", stopped, 600, on_wait=self.show_rollout)
        decided = time.monotonic() - t0
        OUT.say("gate", f"{s.get('phase')}: {s.get('message', '')[:160]}")
        weights = {t["version"]: t["weight"] for t in s.get("traffic", [])}
        if weights.get("v2") != 100:
            raise DemoError(f"traffic is not all on v2 after the rollback: {weights}")
        if "quality" not in s.get("message", "").lower() and "loss" not in s.get(
                "message", "").lower():
            raise DemoError(f"v3 was stopped, but not by the quality gate: {s.get('message')}")
        time.sleep(3)
        seen = self.load.by_version(self.load.since(t0))
        if "v3" in seen:
            raise DemoError(f"v3 answered {seen['v3']} requests; it should have had none")
        OUT.say("gate", f"every request stayed on v2 ({seen}); rollbacks: "
                f"{s.get('rollbacks', 0)}")
        self.facts["v3 stopped by the gate"] = f"{decided:.1f} s after the patch"
        self.facts["v3 gate verdict"] = s.get("message", "")[:90]
        self.phases.end(f"{s.get('phase')}: v3 never served; all traffic on v2")

    # -- summary ----------------------------------------------------------

    def summary(self, ok: bool, error: str = "") -> None:
        answers = self.load.answers if self.load else []
        failed = [a for a in answers if a[1] != 200]
        total = time.monotonic() - OUT.start
        print()
        print("kiln demo — summary" + ("" if ok else " (STOPPED: " + error.splitlines()[0] + ")"))
        print(f"  {'phase':<13} {'time':>8}  outcome")
        for name, t0, t1, outcome in self.phases.rows:
            print(f"  {name:<13} {t1 - t0:>7.1f}s  {outcome}")
        if self.phases.current:
            print(f"  {self.phases.current[0]:<13} {'':>8}  did not finish")
        print(f"  {'total':<13} {total:>7.1f}s")
        for k, v in self.facts.items():
            print(f"  {k}: {v}")
        if answers:
            print(f"  requests through kiln-router: {len(answers)}, failed {len(failed)}; "
                  f"answered by version {self.load.by_version(answers)}")
            for a in failed[:3]:
                print(f"    failed: HTTP {a[1]} {a[3][:120]}")
        for v, text in getattr(self, "samples", {}).items():
            print(f"  {v} completes 'The best way to' (seed 42) → {text.strip()[:70]!r}")
        if getattr(self, "plugin_text", None):
            print(f"\n  kubectl kiln -n {NAMESPACE} status md {MODEL}:")
            print("\n".join("    " + line for line in self.plugin_text.splitlines()))
        print(f"\n  export KUBECONFIG={self.dir}/kubeconfig "
              f"PATH={self.c.bin if self.c else ''}:$PATH")
        print(f"  kubectl --context {HUB} get mc; kubectl --context {HUB} -n {NAMESPACE} get tj,md")
        print(f"  kubectl kiln --context {HUB} -n {NAMESPACE} status tj {JOB}")
        print("  stop everything: scripts/demo.sh down")

    def plugin_view(self) -> None:
        """The ModelDeployment as `kubectl kiln status` shows it: kubectl
        finding the plugin on PATH, as a user's would."""
        if not (PLUGIN_DIR / "kubectl-kiln").exists():
            self.plugin_text = (f"(no {PLUGIN_DIR / 'kubectl-kiln'}: build it with "
                                "'cmake --build --preset ci --target kubectl-kiln')")
            return
        env = dict(os.environ, PATH=f"{PLUGIN_DIR}:{os.environ.get('PATH', '')}")
        env["KUBECONFIG"] = str(self.c.kubeconfig)
        # kubectl passes no flags of its own to a plugin: they follow "kiln".
        r = subprocess.run([str(self.c.bin / "kubectl"), "kiln", "--context", HUB, "-n",
                            NAMESPACE, "status", "md", MODEL],
                           env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise DemoError(f"kubectl kiln status md {MODEL}: {r.stderr.strip() or r.stdout}")
        self.plugin_text = r.stdout.rstrip()

    def run(self) -> int:
        ok, error = True, ""
        try:
            self.clusters()
            self.install()
            self.fleet()
            self.train()
            self.serve()
            self.rollout()
            self.gate()
            self.plugin_view()
            if self.load:
                time.sleep(2)
                self.load.finish()
                failed = [a for a in self.load.answers if a[1] != 200]
                if failed:
                    raise DemoError(f"{len(failed)} requests failed through the router, e.g. "
                                    f"HTTP {failed[0][1]} {failed[0][3][:100]}")
        except (DemoError, subprocess.TimeoutExpired) as e:
            ok, error = False, str(e)
            OUT.say("error", str(e))
        finally:
            if self.load:
                self.load.finish()
        self.summary(ok, error)
        return 0 if ok else 1


def main(argv: list[str]) -> int:
    default_dir = Path(os.environ.get("KILN_CACHE_DIR", Path.home() / ".cache" / "kiln")) / "demo"
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"], nargs="?", default="up")
    parser.add_argument("--dir", default=str(os.environ.get("KILN_DEMO_DIR", default_dir)))
    parser.add_argument("--small", action="store_true", help="fewer training steps")
    args = parser.parse_args(argv)
    if args.command in ("down", "status"):
        return subprocess.call([sys.executable, str(LOCALCLUSTER), args.command, "--dir",
                                args.dir])
    if (Path(args.dir) / "state.json").exists():
        state = json.loads((Path(args.dir) / "state.json").read_text())
        if state.get("phase") in ("starting", "ready"):
            print(f"demo.py: a demo is already up in {args.dir}; run scripts/demo.sh down first",
                  file=sys.stderr)
            return 2
    return Story(args).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
