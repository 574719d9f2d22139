"""The kiln.dev/v1alpha1 CRDs on a real API server (the shared fixture's
second cluster, so the Helm test on the first never races these CRDs): they
install and become Established, every example passes a server-side dry run, a
table of bad manifests is rejected with messages naming the field, immutable
fields stay put, defaults and the status and scale subresources work, and
kubectl shows the printer columns.

Run by CTest; by hand: KILN_LOCALCLUSTER_DIR=<dir> python3 tests/integration/api_test.py
"""

import copy
import json
import os
import subprocess
import sys
import time
import unittest
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KILN_CACHE_DIR",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln"))
KUBECTL = CACHE / "tools" / "bin" / "kubectl"


def cluster_kubeconfig():
    base = os.environ.get("KILN_LOCALCLUSTER_DIR")
    if not base:
        sys.exit("api_test: KILN_LOCALCLUSTER_DIR is not set (CTest sets it; see "
                 "tests/integration/CMakeLists.txt)")
    kubeconfigs = sorted(Path(base).glob("*/kubeconfig"))
    if len(kubeconfigs) < 2:
        sys.exit(f"api_test: want 2 clusters in {base}, found {len(kubeconfigs)}")
    return str(kubeconfigs[1])


KUBECONFIG = cluster_kubeconfig()


def kubectl(*args, stdin=None, check=True):
    r = subprocess.run([str(KUBECTL), "--kubeconfig", KUBECONFIG, *args], input=stdin,
                       capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{r.stderr}")
    return r


def wait_established(crds, timeout=60.0):
    """Waits until every CRD reports Established. Polls rather than running
    `kubectl wait`, which fails at once ("accessor error: <nil>") when it reads
    a CRD whose status has no conditions yet, right after it was applied."""
    deadline = time.monotonic() + timeout
    pending = list(crds)
    while pending:
        r = kubectl("get", "crd", pending[0], "-o",
                    'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False)
        if r.returncode == 0 and r.stdout.strip() == "True":
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"CRD {pending[0]} not Established after {timeout}s: "
                                 f"{r.stdout.strip() or r.stderr.strip()}")
        time.sleep(0.2)


def example(name):
    return yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())


def at(obj, path):
    """The parent container and key of a dotted path (list indices allowed)."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        obj = obj[k]
    return obj, keys[-1]


def put(path, value):
    def mutate(obj):
        parent, key = at(obj, path)
        parent[key] = value
    return mutate


def drop(path):
    def mutate(obj):
        parent, key = at(obj, path)
        del parent[key]
    return mutate


# (what, example, mutation, text the rejection must contain: the field's path)
BAD = [
    ("replicas is a string", "trainingjob", put("spec.workers.replicas", "two"),
     "spec.workers.replicas"),
    ("replicas below 1", "trainingjob", put("spec.workers.replicas", 0), "spec.workers.replicas"),
    ("too many GPUs per worker", "trainingjob", put("spec.workers.gpusPerWorker", 17),
     "spec.workers.gpusPerWorker"),
    ("unknown architecture", "trainingjob", put("spec.model.architecture", "rnn"),
     "spec.model.architecture"),
    ("heads do not divide hiddenSize", "trainingjob", put("spec.model.heads", 7),
     "spec.model.hiddenSize"),
    ("sequence longer than the context", "trainingjob", put("spec.training.sequenceLength", 4096),
     "spec.training.sequenceLength"),
    ("batch not a multiple of the micro-batch", "trainingjob",
     put("spec.training.globalBatchSize", 60), "spec.training.globalBatchSize"),
    ("learning rate of zero", "trainingjob", put("spec.training.learningRate", 0),
     "spec.training.learningRate"),
    ("elastic min above max", "trainingjob", put("spec.elastic.minReplicas", 5),
     "spec.elastic.minReplicas"),
    ("replicas outside the elastic range", "trainingjob", put("spec.workers.replicas", 8),
     "spec.workers.replicas"),
    ("replicas that do not split the global batch", "trainingjob",
     put("spec.workers.replicas", 3), "spec.workers.replicas"),
    ("data from an unsupported scheme", "trainingjob", put("spec.data.uri", "http://x/y"),
     "spec.data.uri"),
    ("checkpoint interval of zero", "trainingjob", put("spec.checkpoint.intervalSteps", 0),
     "spec.checkpoint.intervalSteps"),
    ("a rule with both matchers", "trainingjob",
     put("spec.failurePolicy.rules.0.onExitCodes", {"operator": "In", "values": [1]}),
     "spec.failurePolicy.rules[0]"),
    ("an unknown failure reason", "trainingjob",
     put("spec.failurePolicy.rules.2.onReasons", ["CosmicRays"]),
     "spec.failurePolicy.rules[2].onReasons[0]"),
    ("an exit code above 255", "trainingjob",
     put("spec.failurePolicy.rules.1.onExitCodes.values", [300]),
     "spec.failurePolicy.rules[1].onExitCodes.values[0]"),
    ("backoff initial above max", "trainingjob",
     put("spec.failurePolicy.backoff", {"initial": "10m", "max": "1m"}),
     "spec.failurePolicy.backoff"),
    ("a malformed duration", "trainingjob", put("spec.failurePolicy.nodeQuarantine.window", "1 day"),
     "spec.failurePolicy.nodeQuarantine.window"),
    ("a bad placement strategy", "trainingjob", put("spec.placement.strategy", "Random"),
     "spec.placement.strategy"),
    ("no model", "trainingjob", drop("spec.model"), "spec.model"),
    ("no worker image", "trainingjob", drop("spec.workers.image"), "spec.workers.image"),
    ("a resource quantity that is not one", "trainingjob",
     put("spec.workers.resources.requests.memory", "lots"), "spec.workers.resources.requests"),
    ("canary weight above 100", "modeldeployment",
     put("spec.strategy.canary.steps.0.setWeight", 150), "spec.strategy.canary.steps[0].setWeight"),
    ("canary weights decreasing", "modeldeployment",
     put("spec.strategy.canary.steps.2.setWeight", 5), "spec.strategy.canary.steps"),
    ("a step with two actions", "modeldeployment",
     put("spec.strategy.canary.steps.0.pause", {}), "spec.strategy.canary.steps[0]"),
    ("a step with a weight and a quality gate", "modeldeployment",
     put("spec.strategy.canary.steps.0.qualityGate", {}), "spec.strategy.canary.steps[0]"),
    ("a background analysis with a duration", "modeldeployment",
     put("spec.strategy.canary.steps.1.analysis", {"background": True, "duration": "1m"}),
     "spec.strategy.canary.steps[1].analysis.duration"),
    ("a quality gate step without spec.analysis.qualityGate", "modeldeployment",
     lambda o: (o["spec"]["strategy"]["canary"]["steps"].append({"qualityGate": {}}),
                o["spec"]["analysis"].pop("qualityGate")),
     "spec.analysis.qualityGate"),
    ("a metric with both providers", "modeldeployment",
     put("spec.analysis.metrics.0.prometheus",
         {"address": "http://prom:9090", "query": "up"}), "spec.analysis.metrics[0]"),
    ("a metric without bounds", "modeldeployment", drop("spec.analysis.metrics.0.max"),
     "spec.analysis.metrics[0]"),
    ("GatewayAPI without a route", "modeldeployment", put("spec.traffic.provider", "GatewayAPI"),
     "spec.traffic.gatewayAPI"),
    ("router settings on a GatewayAPI deployment", "modeldeployment",
     lambda o: o["spec"]["traffic"].update(provider="GatewayAPI", gatewayAPI={"httpRoute": "r"}),
     "spec.traffic.router"),
    ("a Mirrored metric with mirroring off", "modeldeployment-mirror",
     put("spec.traffic.router.mirrorPercent", 0), "spec.traffic.router.mirrorPercent"),
    ("a Mirrored metric without spec.traffic", "modeldeployment-mirror", drop("spec.traffic"),
     "spec.traffic.router.mirrorPercent"),
    ("a Mirrored metric on a deployment that mirrors nothing", "modeldeployment",
     put("spec.analysis.metrics.0.router.traffic", "Mirrored"),
     "spec.traffic.router.mirrorPercent"),
    ("an unknown kind of traffic to judge", "modeldeployment",
     put("spec.analysis.metrics.0.router.traffic", "Shadow"),
     "spec.analysis.metrics[0].router.traffic"),
    ("mirroring above 100 percent", "modeldeployment",
     put("spec.traffic.router.mirrorPercent", 101), "spec.traffic.router.mirrorPercent"),
    ("a sticky header that is not a header name", "modeldeployment",
     put("spec.traffic.router.stickyHeader", "x session"), "spec.traffic.router.stickyHeader"),
    ("a path prefix without a slash", "modeldeployment",
     put("spec.traffic.router.pathPrefix", "v1"), "spec.traffic.router.pathPrefix"),
    ("an analysis step measuring a metric spec.analysis lacks", "modeldeployment",
     put("spec.strategy.canary.steps.1.analysis.metrics", ["error-rate", "ttft"]),
     "spec.strategy.canary.steps"),
    ("an unknown rollout action", "modeldeployment", put("spec.rollout.action", "Yolo"),
     "spec.rollout.action"),
    ("a version with spaces", "modeldeployment", put("spec.model.version", "step 5"),
     "spec.model.version"),
    ("a negative replica count", "modeldeployment", put("spec.replicas", -1), "spec.replicas"),
    ("an S3 endpoint with a path", "trainingjob-s3",
     put("spec.storage.s3.endpoint", "http://s3.local:8333/bucket"), "spec.storage.s3.endpoint"),
    ("an S3 endpoint that is not http(s)", "modeldeployment-s3",
     put("spec.storage.s3.endpoint", "s3.local:8333"), "spec.storage.s3.endpoint"),
    ("S3 storage without a credentials Secret", "trainingjob-s3",
     drop("spec.storage.s3.credentialsSecretRef"), "spec.storage.s3.credentialsSecretRef"),
    ("an S3 credentials reference without a name", "trainingjob-s3",
     drop("spec.storage.s3.credentialsSecretRef.name"),
     "spec.storage.s3.credentialsSecretRef.name"),
    ("an S3 credentials Secret name that is not one", "modeldeployment-s3",
     put("spec.storage.s3.credentialsSecretRef.name", "S3_Keys"),
     "spec.storage.s3.credentialsSecretRef.name"),
    ("an unknown S3 addressing style", "trainingjob-s3",
     put("spec.storage.s3.addressingStyle", "path"), "spec.storage.s3.addressingStyle"),
    ("s3:// checkpoints without spec.storage.s3", "trainingjob-s3", drop("spec.storage"),
     "spec.storage"),
    ("an s3:// model without spec.storage.s3", "modeldeployment-s3", drop("spec.storage"),
     "spec.storage"),
    ("a weight above 1000", "membercluster", put("spec.weight", 5000), "spec.weight"),
    ("neither a kubeconfig Secret nor local", "membercluster", drop("spec.kubeconfigSecretRef"),
     "set exactly one of spec.kubeconfigSecretRef and spec.local"),
    ("both a kubeconfig Secret and local", "membercluster", put("spec.local", True),
     "set exactly one of spec.kubeconfigSecretRef and spec.local"),
    ("cordoned is not a boolean", "membercluster", put("spec.cordoned", "maybe"), "spec.cordoned"),
]


class CrdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=kiln-api-test",
                "-f", str(ROOT / "crds"))
        wait_established(["trainingjobs.kiln.dev", "modeldeployments.kiln.dev",
                          "memberclusters.kiln.dev"])
        cls.ns = "api-" + uuid.uuid4().hex[:8]
        kubectl("create", "namespace", cls.ns)

    @classmethod
    def tearDownClass(cls):
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)

    def apply(self, obj, *extra, check=False):
        if obj["kind"] != "MemberCluster":
            obj.setdefault("metadata", {})["namespace"] = self.ns
        return kubectl("apply", *extra, "-f", "-", stdin=json.dumps(obj), check=check)

    def test_every_example_passes_a_server_side_dry_run(self):
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            with self.subTest(example=path.name):
                r = kubectl("apply", "--dry-run=server", "-f", str(path),
                            check=False)
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_bad_manifests_are_rejected_naming_the_field(self):
        self.assertGreaterEqual(len(BAD), 20)
        for what, name, mutate, field in BAD:
            with self.subTest(what):
                obj = example(name)
                mutate(obj)
                r = self.apply(obj, "--dry-run=server")
                self.assertNotEqual(r.returncode, 0, f"accepted: {json.dumps(obj['spec'])}")
                self.assertIn(field, r.stderr)

    def test_immutable_fields_stay_put_and_defaults_apply(self):
        job = example("trainingjob")
        job["metadata"]["name"] = "immutable"
        del job["spec"]["failurePolicy"]["maxRestarts"]
        self.apply(job, check=True)
        got = json.loads(kubectl("get", "trainingjob", "immutable", "-n", self.ns,
                                 "-o", "json").stdout)
        self.assertEqual(got["spec"]["failurePolicy"]["maxRestarts"], 10)  # Defaulted.
        self.assertFalse(got["spec"]["suspend"])
        for path, value, message in [
                ("spec.model.layers", 24, "model is immutable"),
                ("spec.checkpoint.uri", "file:///elsewhere", "checkpoint.uri is immutable"),
                ("spec.workers.gpusPerWorker", 4, "workers.gpusPerWorker is immutable")]:
            with self.subTest(path):
                changed = copy.deepcopy(job)
                put(path, value)(changed)
                r = self.apply(changed)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(message, r.stderr)
        # Mutable fields do change: suspend, and replicas through the scale subresource.
        kubectl("patch", "trainingjob", "immutable", "-n", self.ns, "--type=merge",
                "-p", '{"spec":{"suspend":true}}')
        kubectl("scale", "trainingjob", "immutable", "-n", self.ns, "--replicas=4")
        got = json.loads(kubectl("get", "trainingjob", "immutable", "-n", self.ns,
                                 "-o", "json").stdout)
        self.assertEqual(got["spec"]["workers"]["replicas"], 4)
        # A size that does not split the global batch (64 = 8 x 8) is refused.
        r = kubectl("scale", "trainingjob", "immutable", "-n", self.ns, "--replicas=3",
                    check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("spec.workers.replicas", r.stderr)
        self.assertIn("microBatchSize x workers.replicas", r.stderr)
        self.assertTrue(got["spec"]["suspend"])
        # Scaling past the elastic bounds is refused like any other update.
        r = kubectl("scale", "trainingjob", "immutable", "-n", self.ns, "--replicas=9",
                    check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("elastic", r.stderr)

    def test_a_router_metric_judges_live_traffic_unless_mirrored(self):
        md = example("modeldeployment")
        md["metadata"]["name"] = "traffic-default"
        self.apply(md, check=True)
        got = json.loads(kubectl("get", "modeldeployment", "traffic-default", "-n", self.ns,
                                 "-o", "json").stdout)
        self.assertEqual(got["spec"]["analysis"]["metrics"][0]["router"]["traffic"], "Live")
        # Mirrored needs requests mirrored to the canary; the rule says so.
        put("spec.analysis.metrics.0.router.traffic", "Mirrored")(md)
        r = self.apply(md)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("traffic Mirrored needs spec.traffic.router.mirrorPercent above 0", r.stderr)
        put("spec.traffic.router.mirrorPercent", 10)(md)
        self.apply(md, check=True)

    def test_status_is_a_subresource_and_printer_columns_show(self):
        job = example("trainingjob")
        job["metadata"]["name"] = "columns"
        self.apply(job, check=True)
        status = {"status": {"phase": "Running", "readyWorkers": 2, "replicas": 2, "step": 1200,
                             "loss": 1.75, "restarts": 1,
                             "placement": [{"cluster": "kiln-2", "workers": 2}]}}
        kubectl("patch", "trainingjob", "columns", "-n", self.ns, "--subresource=status",
                "--type=merge", "-p", json.dumps(status))
        # A spec update cannot write status.
        kubectl("patch", "trainingjob", "columns", "-n", self.ns, "--type=merge",
                "-p", '{"status":{"phase":"Failed"}}')
        out = kubectl("get", "trainingjobs", "-n", self.ns).stdout
        header = out.splitlines()[0].split()
        self.assertEqual(header, ["NAME", "PHASE", "READY", "WORKERS", "STEP", "LOSS",
                                  "RESTARTS", "AGE"])
        row = next(l.split() for l in out.splitlines() if l.startswith("columns"))
        self.assertEqual(row[1:7], ["Running", "2", "2", "1200", "1.75", "1"])
        wide = kubectl("get", "tj", "columns", "-n", self.ns, "-o", "wide").stdout
        self.assertIn("TOKENS/S", wide.splitlines()[0])
        self.assertIn("kiln-2", wide)

        md = example("modeldeployment")
        self.apply(md, check=True)
        kubectl("patch", "md", md["metadata"]["name"], "-n", self.ns, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {
                    "stableVersion": "step-4000", "canaryVersion": "step-5000",
                    "canaryWeight": 10, "currentStep": 1, "phase": "Progressing",
                    "readyReplicas": 4}}))
        out = kubectl("get", "md", "-n", self.ns).stdout.splitlines()
        self.assertEqual(out[0].split(), ["NAME", "STABLE", "CANARY", "WEIGHT", "STEP", "PHASE",
                                          "READY", "AGE"])
        self.assertEqual(out[1].split()[1:7],
                         ["step-4000", "step-5000", "10", "1", "Progressing", "4"])

        mc = example("membercluster")
        mc["metadata"]["name"] = "mc-" + self.ns
        self.apply(mc, check=True)
        try:
            out = kubectl("get", "mc", mc["metadata"]["name"]).stdout.splitlines()
            self.assertEqual(out[0].split(), ["NAME", "REGION", "ZONE", "CORDONED", "READY",
                                              "NODES", "GPUS", "FREE", "AGE"])
            self.assertEqual(out[1].split()[1:4], ["us-west-2", "us-west-2a", "false"])
        finally:
            kubectl("delete", "mc", mc["metadata"]["name"], check=False)

        # The kiln category lists every kind.
        out = kubectl("get", "kiln", "-n", self.ns, "-o", "name").stdout
        self.assertIn("trainingjob.kiln.dev/columns", out)
        self.assertIn("modeldeployment.kiln.dev/fortunes-gpt", out)


if __name__ == "__main__":
    if not KUBECTL.exists():
        sys.exit(f"api_test: {KUBECTL} is missing; run scripts/setup.sh")
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
