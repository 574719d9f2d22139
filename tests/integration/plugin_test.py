"""kubectl-kiln, the real binary, against the shared control plane: kiln-2
is the hub (kiln's CRDs, a TrainingJob and a ModelDeployment whose status
the test writes through the API, as the controllers would) and kiln-1 a
member cluster reached through a MemberCluster and its kubeconfig Secret.

It checks `status` (the readable view, -o json/yaml, lists, KUBECONFIG and
--context), `watch` (a block per status change, no escape codes off a
terminal, exit on a terminal phase), the rollout actions (spec.rollout.action
written by a merge patch, nothing written when it is already there), `logs`
(the worker pod found in the hub and in the member; kwok's nodes serve no
logs, so the API server's answer is what is printed; tests/integration/
plugin_logs_test.py reads a real log on the real nodes), and the errors: an
unknown object, a ServiceAccount token without RBAC (403 naming verb,
resource and namespace), a Secret the user may not read, bad usage.

Run by CTest; by hand: KILN_LOCALCLUSTER_DIR=<dir> KUBECTL_KILN=<binary>
python3 tests/integration/plugin_test.py
"""

import base64
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

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = os.environ.get("KILN_LOCALCLUSTER_DIR") or sys.exit(
    "plugin_test: KILN_LOCALCLUSTER_DIR is not set (CTest sets it; see "
    "tests/integration/CMakeLists.txt)")
PLUGIN = os.environ.get("KUBECTL_KILN") or sys.exit("plugin_test: KUBECTL_KILN is not set")
STATE = json.loads((Path(RUN_DIR) / "state.json").read_text())
CLUSTERS = STATE["spec"]["clusters"]
KUBECTL = Path(STATE["spec"]["bin_dir"]) / "kubectl"
MEMBER, HUB = CLUSTERS[0], CLUSTERS[1]
HUB_KUBECONFIG = HUB["dir"] + "/kubeconfig"
MEMBER_KUBECONFIG = MEMBER["dir"] + "/kubeconfig"
ID = uuid.uuid4().hex[:6]
NS = f"plugin-{ID}"


def kubectl(*args, kubeconfig=HUB_KUBECONFIG, stdin=None, check=True):
    r = subprocess.run([str(KUBECTL), "--kubeconfig", kubeconfig, *args], input=stdin,
                       capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{r.stderr}")
    return r


def kiln(*args, env=None, kubeconfig=HUB_KUBECONFIG, timeout=60):
    """Runs kubectl-kiln; the kubeconfig comes from $KUBECONFIG unless `env` says otherwise."""
    e = dict(os.environ, KUBECONFIG=kubeconfig)
    e.update(env or {})
    return subprocess.run([PLUGIN, *args], capture_output=True, text=True, timeout=timeout, env=e)


def apply(obj, kubeconfig=HUB_KUBECONFIG):
    return json.loads(kubectl("apply", "-o", "json", "-f", "-", stdin=json.dumps(obj),
                              kubeconfig=kubeconfig).stdout)


def write_status(kind, name, status):
    kubectl("patch", kind, name, "-n", NS, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))


def get(kind, name):
    return json.loads(kubectl("get", kind, name, "-n", NS, "-o", "json").stdout)


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def example(name, new_name):
    obj = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    obj["metadata"] = {"name": new_name, "namespace": NS}
    return obj


def wait_established(names, timeout=60.0):
    deadline = time.monotonic() + timeout
    for crd in names:
        while True:
            r = kubectl("get", "crd", crd, "-o",
                        'jsonpath={.status.conditions[?(@.type=="Established")].status}',
                        check=False)
            if r.returncode == 0 and r.stdout.strip() == "True":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"CRD {crd} not Established: {r.stderr}")
            time.sleep(0.2)


def token_kubeconfig(path, sa):
    """A kubeconfig for ServiceAccount `sa` in NS (a TokenRequest token, the hub's CA)."""
    token = kubectl("create", "token", sa, "-n", NS, "--duration", "1h").stdout.strip()
    hub = yaml.safe_load(Path(HUB_KUBECONFIG).read_text())["clusters"][0]["cluster"]
    ca = hub.get("certificate-authority-data") or base64.b64encode(
        Path(HUB["dir"], hub["certificate-authority"]).read_bytes()).decode()
    Path(path).write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": sa,
        "clusters": [{"name": "hub", "cluster": {"server": hub["server"],
                                                 "certificate-authority-data": ca}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "hub", "user": sa, "namespace": NS}}]}))
    return path


class PluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        kubectl("apply", "-f", str(ROOT / "crds"))
        wait_established(["trainingjobs.kiln.dev", "modeldeployments.kiln.dev",
                          "memberclusters.kiln.dev"])
        kubectl("create", "namespace", NS)
        kubectl("create", "namespace", NS, kubeconfig=MEMBER_KUBECONFIG)
        cls.job = apply(example("trainingjob", "gpt"))
        cls.md = apply(example("modeldeployment", "chat"))

    @classmethod
    def tearDownClass(cls):
        kubectl("delete", "namespace", NS, "--wait=false", check=False)
        kubectl("delete", "namespace", NS, "--wait=false", kubeconfig=MEMBER_KUBECONFIG,
                check=False)
        kubectl("delete", "membercluster", f"plugin-member-{ID}", f"plugin-local-{ID}",
                "--ignore-not-found", check=False)
        kubectl("delete", "clusterrole,clusterrolebinding", f"plugin-reader-{ID}",
                "--ignore-not-found", check=False)
        cls.tmp.cleanup()

    def running_job(self, name="gpt", step=1200, phase="Running", cluster="gpu-east"):
        t = now()
        write_status("trainingjob", name, {
            "phase": phase, "step": step, "loss": 2.61434, "validationLoss": 2.7012,
            "tokensPerSecond": 16477.3, "readyWorkers": 2, "restarts": 1, "startTime": t,
            "lastCheckpoint": {"step": 1000, "uri": "file:///checkpoints/gpt/step-00001000.ckpt",
                               "time": t, "loss": 2.65},
            "restartHistory": [{"time": t, "reason": "GPUFault", "exitCode": 3,
                                "message": "Xid 79: GPU has fallen off the bus",
                                "cluster": cluster, "node": "node-3", "failedAtStep": 812,
                                "resumedFromStep": 800}],
            "placement": [{"cluster": cluster, "workers": 2, "nodes": ["node-0", "node-1"]}],
            "conditions": [{"type": "Running", "status": "True", "reason": "GangRunning",
                            "message": "2 of 2 workers running", "lastTransitionTime": t}]})

    def canary(self, name="chat"):
        t = now()
        write_status("modeldeployment", name, {
            "phase": "Progressing", "message": "step 1: analysis of step-6000",
            "stableVersion": "step-5000", "stableUri": "file:///checkpoints/fortunes-gpt/step-5000",
            "canaryVersion": "step-6000", "currentStep": 1, "canaryWeight": 10,
            "stepStartedAt": t, "handledAction": "Continue",
            "traffic": [{"version": "step-5000", "weight": 90},
                        {"version": "step-6000", "weight": 10}],
            "analysisRuns": [{"name": "step-6000-step1", "step": 1, "phase": "Running",
                              "startedAt": t, "measurements": [
                                  {"metric": "error-rate", "value": 0.0021,
                                   "phase": "Successful", "time": t}]}]})

    def test_status_of_a_training_job(self):
        self.running_job()
        r = kiln("status", "tj", "gpt", "-n", NS)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        for line in ["Name:             gpt\n", "Phase:            Running (attempt 1)\n",
                     "Progress:         step 1200 / 5000 (24.0%)\n",
                     "Loss:             2.614 (validation 2.701)\n",
                     "Tokens/s:         16,477\n", "Workers:          2 ready of 2\n",
                     "                  file:///checkpoints/gpt/step-00001000.ckpt\n",
                     "Restarts:         1 (at most 20)\n"]:
            self.assertIn(line, out)
        self.assertRegex(out, r"Last checkpoint:  step 1000 \(loss 2.65\), \d+s ago")
        self.assertRegex(out, r"\n  1  \d+s +GPUFault  gpu-east  node-3  3     812      800 +"
                              r"Xid 79: GPU has fallen off the bus\n")
        self.assertIn("  gpu-east  2        node-0, node-1\n", out)
        self.assertRegex(out, r"  Running  True    GangRunning  \d+s +2 of 2 workers running")

        # The same from the fixture's kubeconfig of every cluster, by context.
        r = kiln("--context", HUB["name"], "status", "tj", "gpt", "-n", NS,
                 kubeconfig=str(Path(RUN_DIR) / "kubeconfig"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("step 1200 / 5000", r.stdout)
        # A KUBECONFIG list: the first file's current context wins.
        r = kiln("status", "tj", "gpt", "-n", NS,
                 kubeconfig=f"{HUB_KUBECONFIG}:{MEMBER_KUBECONFIG}")
        self.assertEqual(r.returncode, 0, r.stderr)

        as_json = json.loads(kiln("status", "tj", "gpt", "-n", NS, "-o", "json").stdout)
        self.assertEqual(as_json["status"]["step"], 1200)
        self.assertNotIn("managedFields", as_json["metadata"])
        as_yaml = yaml.safe_load(kiln("status", "trainingjob", "gpt", "-n", NS, "-o", "yaml").stdout)
        self.assertEqual(as_yaml["metadata"]["uid"], as_json["metadata"]["uid"])
        self.assertEqual(as_yaml["spec"], as_json["spec"])

    def test_status_of_a_model_deployment_and_lists(self):
        self.canary()
        r = kiln("status", "md", "chat", "-n", NS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Phase:            Progressing\n", r.stdout)
        self.assertIn("  stable  step-5000  90%", r.stdout)
        self.assertIn("  canary  step-6000  10%", r.stdout)
        self.assertIn("Steps: 2 of 7, canary weight 10%\n  done  0  setWeight 10%\n"
                      "    ->  1  analysis 2m", r.stdout)
        self.assertIn("        3  qualityGate samples 1024\n"
                      "        4  analysis (background, until promotion)\n", r.stdout)
        self.assertRegex(r.stdout, r"    error-rate  0.0021  Successful  \d+s")

        r = kiln("status", "md", "-n", NS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"chat +Progressing +step-5000 +step-6000 +"
                                   r"step-5000=90,step-6000=10 +1 +0")
        r = kiln("status", "tj", "-A")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rf"\n{NS} +gpt ")
        r = kiln("status", "tj", "-n", NS + "-empty")
        self.assertEqual(r.stdout, f'No trainingjobs found in namespace "{NS}-empty".\n')

    def test_watch_redraws_on_change_and_ends_on_a_terminal_phase(self):
        apply(example("trainingjob", "watched"))
        self.running_job("watched", step=100)
        p = subprocess.Popen([PLUGIN, "watch", "tj", "watched", "-n", NS], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, KUBECONFIG=HUB_KUBECONFIG))
        try:
            lines = []

            def wait_for(text):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    line = p.stdout.readline()
                    if not line:
                        break
                    lines.append(line)
                    if text in line:
                        return
                self.fail(f"watch never printed {text!r}; got:\n{''.join(lines)}")

            wait_for("step 100 / 5000")
            write_status("trainingjob", "watched", {"step": 200})
            wait_for("step 200 / 5000")
            write_status("trainingjob", "watched", {"phase": "Succeeded", "step": 5000})
            out, err = p.communicate(timeout=20)
            text = "".join(lines) + out
        finally:
            p.kill()
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(text.count("--- trainingjob/watched in " + NS), 3, text)
        self.assertIn("Phase:            Succeeded (attempt 1)", text)
        self.assertTrue(text.endswith('trainingjob "watched" is Succeeded.\n'), text)
        self.assertNotIn("\x1b", text)

        # A ModelDeployment that ends Degraded: exit 1.
        apply(example("modeldeployment", "watched-md"))
        self.canary("watched-md")
        p = subprocess.Popen([PLUGIN, "watch", "md", "watched-md", "-n", NS],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, KUBECONFIG=HUB_KUBECONFIG))
        try:
            self.assertIn("---", p.stdout.readline())
            write_status("modeldeployment", "watched-md",
                         {"phase": "Degraded", "canaryVersion": None,
                          "message": "analysis failed at step 1: error-rate = 0.4 > max 0.01",
                          "traffic": [{"version": "step-5000", "weight": 100}]})
            out, err = p.communicate(timeout=20)
        finally:
            p.kill()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("Message:          analysis failed at step 1", out)
        self.assertTrue(out.endswith('modeldeployment "watched-md" is Degraded.\n'), out)

    @unittest.skipUnless(shutil.which("script"), "util-linux's script (a terminal) is missing")
    def test_watch_redraws_in_place_on_a_terminal(self):
        apply(example("trainingjob", "on-tty"))
        self.running_job("on-tty", step=10)
        # script(1) gives the plugin a pseudo-terminal as its stdout.
        p = subprocess.Popen(["script", "-qec", f"{PLUGIN} watch tj on-tty -n {NS}", "/dev/null"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, KUBECONFIG=HUB_KUBECONFIG))
        try:
            first = b""
            while b"step 10 / 5000" not in first:
                chunk = p.stdout.read1(4096)
                self.assertTrue(chunk, "watch ended before its first view")
                first += chunk
            write_status("trainingjob", "on-tty", {"phase": "Failed"})
            out, _ = p.communicate(timeout=20)
        finally:
            p.kill()
        text = (first + out).decode()
        self.assertEqual(p.returncode, 1)
        self.assertEqual(text.count("\x1b[H\x1b[2J"), 2, text)  # Cleared before each view.
        self.assertIn("Phase:            Failed (attempt 1)", text)
        self.assertIn('trainingjob "on-tty" is Failed.', text)

    def test_watch_stops_on_ctrl_c(self):
        p = subprocess.Popen([PLUGIN, "watch", "md", "chat", "-n", NS], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, KUBECONFIG=HUB_KUBECONFIG))
        self.canary()
        self.assertIn("---", p.stdout.readline())
        p.send_signal(2)  # SIGINT
        p.communicate(timeout=10)
        self.assertEqual(p.returncode, 130)

    def test_rollout_actions_write_spec_rollout_action(self):
        apply(example("modeldeployment", "acted"))
        self.canary("acted")
        generation = get("modeldeployment", "acted")["metadata"]["generation"]
        r = kiln("promote", "acted", "-n", NS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f'modeldeployment "acted" in namespace "{NS}": wrote spec.rollout.action: '
                      f"Promote (was Continue), generation {generation + 1}.", r.stdout)
        self.assertIn("step-6000 skips its remaining steps", r.stdout)
        md = get("modeldeployment", "acted")
        self.assertEqual(md["spec"]["rollout"]["action"], "Promote")
        self.assertEqual(md["metadata"]["generation"], generation + 1)
        managers = json.loads(kubectl("get", "md", "acted", "-n", NS, "-o", "json",
                                      "--show-managed-fields").stdout)["metadata"]["managedFields"]
        self.assertIn("kubectl-kiln", [m["manager"] for m in managers])

        # Again before the controller acted: nothing written.
        r = kiln("promote", "md", "acted", "-n", NS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("already Promote; nothing written. The controller has not acted on it yet",
                      r.stdout)
        self.assertEqual(get("modeldeployment", "acted")["metadata"]["generation"], generation + 1)
        # Once it has, the same: it acts once, when it changes.
        write_status("modeldeployment", "acted",
                     {"handledAction": "Promote", "handledActionGeneration": generation + 1})
        r = kiln("promote", "acted", "-n", NS)
        self.assertIn(f"already Promote and was acted on at generation {generation + 1}", r.stdout)
        self.assertIn(f"kubectl kiln continue md acted", r.stdout)

        for verb, action in [("abort", "Abort"), ("rollback", "Rollback"),
                             ("continue", "Continue")]:
            r = kiln(verb, "acted", "-n", NS)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"wrote spec.rollout.action: {action}", r.stdout)
            self.assertEqual(get("modeldeployment", "acted")["spec"]["rollout"]["action"], action)

    def test_logs_find_the_pod_in_the_hub_and_in_a_member(self):
        job = apply(example("trainingjob", "logged"))
        member = f"plugin-member-{ID}"
        local = f"plugin-local-{ID}"
        # Rank 0 was placed on a member cluster reached through a Secret,
        # rank 1 on the hub (spec.local).
        kubectl("create", "secret", "generic", "member-kubeconfig", "-n", NS,
                f"--from-file=kubeconfig={MEMBER_KUBECONFIG}")
        apply({"apiVersion": "kiln.dev/v1alpha1", "kind": "MemberCluster",
               "metadata": {"name": member},
               "spec": {"kubeconfigSecretRef": {"name": "member-kubeconfig", "namespace": NS}}})
        apply({"apiVersion": "kiln.dev/v1alpha1", "kind": "MemberCluster",
               "metadata": {"name": local}, "spec": {"local": True}})
        write_status("trainingjob", "logged", {
            "phase": "Running", "restarts": 0,
            "placement": [{"cluster": member, "workers": 1, "nodes": ["n0"]},
                          {"cluster": local, "workers": 1, "nodes": ["n1"]}]})

        def worker_pod(name, rank, kubeconfig):
            apply({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": NS, "labels": {
                       "kiln.dev/trainingjob": "logged",
                       "kiln.dev/trainingjob-uid": job["metadata"]["uid"],
                       "kiln.dev/rank": str(rank), "kiln.dev/attempt": "0"}},
                   "spec": {"containers": [{"name": "worker", "image": "kiln-worker"}]}},
                  kubeconfig=kubeconfig)

        worker_pod("logged-0-0", 0, MEMBER_KUBECONFIG)
        worker_pod("logged-0-1", 1, HUB_KUBECONFIG)

        # kwok's nodes serve no logs: the API server's answer is the error,
        # after the pod was found where it runs.
        r = kiln("logs", "tj", "logged", "-n", NS)
        self.assertIn(f"# trainingjob logged rank 0: pod logged-0-0 in member cluster {member}\n",
                      r.stderr)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f'error: get pods/log "logged-0-0" in namespace "{NS}": 404 NotFound',
                      r.stderr)
        r = kiln("logs", "logged", "--rank", "1", "-n", NS)
        self.assertIn("# trainingjob logged rank 1: pod logged-0-1 in the hub\n", r.stderr)

        r = kiln("logs", "logged", "--rank", "2", "-n", NS)
        self.assertEqual(r.returncode, 1)
        self.assertIn('trainingjob "logged" has 2 workers (ranks 0-1); there is no rank 2',
                      r.stderr)

        # A user who may read jobs, pods and MemberClusters but not Secrets.
        kubectl("create", "serviceaccount", "viewer", "-n", NS)
        kubectl("create", "role", "viewer", "-n", NS, "--verb=get,list",
                "--resource=trainingjobs.kiln.dev,pods")
        kubectl("create", "rolebinding", "viewer", "-n", NS, "--role=viewer",
                f"--serviceaccount={NS}:viewer")
        kubectl("create", "clusterrole", f"plugin-reader-{ID}", "--verb=get",
                "--resource=memberclusters.kiln.dev")
        kubectl("create", "clusterrolebinding", f"plugin-reader-{ID}",
                f"--clusterrole=plugin-reader-{ID}", f"--serviceaccount={NS}:viewer")
        viewer = token_kubeconfig(self.tmp.name + "/viewer", "viewer")
        deadline = time.monotonic() + 10  # RBAC caches settle within a moment.
        while True:
            r = kiln("logs", "logged", kubeconfig=viewer)
            if "Secret" in r.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"rank 0 runs on member cluster {member}, whose kubeconfig is in Secret "
                      f"{NS}/member-kubeconfig, which cannot be read: forbidden: you may not get "
                      f'secrets "member-kubeconfig" in namespace "{NS}"', r.stderr)
        self.assertIn(f"kubectl logs -n {NS} logged-0-0 -c worker", r.stderr)

    def test_errors(self):
        r = kiln("status", "tj", "nope", "-n", NS)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, f'error: trainingjob "nope" not found in namespace "{NS}"\n')
        self.assertEqual(r.stdout, "")
        r = kiln("promote", "nope", "-n", NS)
        self.assertEqual(r.stderr,
                         f'error: modeldeployment "nope" not found in namespace "{NS}"\n')

        # A ServiceAccount token with no RBAC at all.
        kubectl("create", "serviceaccount", "nobody", "-n", NS)
        nobody = token_kubeconfig(self.tmp.name + "/nobody", "nobody")
        r = kiln("status", "tj", "gpt", kubeconfig=nobody)  # Namespace from the context.
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith(
            f'error: forbidden: you may not get trainingjobs.kiln.dev "gpt" in namespace "{NS}" '
            f'(the API server: '), r.stderr)
        self.assertIn(f"system:serviceaccount:{NS}:nobody", r.stderr)
        r = kiln("watch", "md", "chat", kubeconfig=nobody)
        self.assertEqual(r.returncode, 1)
        self.assertIn("forbidden: you may not get modeldeployments.kiln.dev", r.stderr)
        r = kiln("status", "md", "-A", kubeconfig=nobody)
        self.assertIn("forbidden: you may not list modeldeployments.kiln.dev", r.stderr)

        # Bad usage: exit 2 with the usage; no stack traces anywhere.
        r = kiln("status")
        self.assertEqual(r.returncode, 2)
        self.assertIn("error: status needs a kind", r.stderr)
        self.assertIn("Usage:", r.stderr)
        r = kiln("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("kubectl kiln logs [tj] NAME", r.stdout)
        r = kiln("status", "tj", "gpt", kubeconfig="/nonexistent/kubeconfig")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/kubeconfig", r.stderr)
        self.assertNotIn("terminate", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
