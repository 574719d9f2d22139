"""Real nodes of the local clusters (scripts/localcluster.py up --real-nodes):
the nodes are Ready with fake GPUs and the placement labels; a pod runs on a
real node, gets an address from its node's bridge, `kubectl logs` and
`kubectl exec` work, its exit code and termination message land in its
status; a ClusterIP Service answers by DNS name from a pod on the other node;
the API server's pod proxy reaches a pod. The pods run `testbox`
(tests/images/testbox), a static Go program, packed into an OCI archive here
and imported with `localcluster.py import-image`. Prints the node Ready and
pod create-to-Running times (no timed assertions).

Run by CTest against the kiln_realnodes fixture; by hand:
KILN_LOCALCLUSTER_DIR=<dir started with --real-nodes 2> python3 tests/integration/realnode_test.py
"""

import ipaddress
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from kiln_localcluster import nodenet, ociimage  # noqa: E402

RUN_DIR = os.environ.get("KILN_LOCALCLUSTER_DIR") or sys.exit(
    "realnode_test: KILN_LOCALCLUSTER_DIR is not set (CTest sets it; see "
    "tests/integration/CMakeLists.txt)")
STATE = json.loads((Path(RUN_DIR) / "state.json").read_text())
CLUSTER = STATE["spec"]["clusters"][0]
KUBECTL = Path(STATE["spec"]["bin_dir"]) / "kubectl"
IMAGE = "kiln.dev/testbox:test"


def kubectl(*args, stdin=None, check=True, timeout=120):
    r = subprocess.run([str(KUBECTL), "--kubeconfig", CLUSTER["dir"] + "/kubeconfig", *args],
                       input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{r.stderr}")
    return r


def dies_with_this_process(argv):
    """`argv` run through util-linux's setpriv so that the child is killed when
    this test process dies, even without its teardown (a kiln-operator left
    behind would act on the next tests' objects)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


def wait_established(*crds, timeout=60.0):
    """Waits until each CRD (plural.group) is Established. Polls: `kubectl
    wait` fails at once on a CRD whose status has no conditions yet, as one
    just created may."""
    deadline = time.monotonic() + timeout
    for crd in crds:
        while True:
            r = kubectl("get", "crd", crd, "-o",
                        'jsonpath={.status.conditions[?(@.type=="Established")].status}',
                        check=False)
            if r.stdout.strip() == "True":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"CRD {crd} not Established after {timeout}s: {r.stderr}")
            time.sleep(0.2)


def testbox_image():
    """Builds testbox, packs it and imports it into every real node; returns its name."""
    with tempfile.TemporaryDirectory() as tmp:
        binary, archive = Path(tmp) / "testbox", Path(tmp) / "testbox.tar"
        env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=readonly",
                   GOMAXPROCS=os.environ.get("GOMAXPROCS", "2"))
        subprocess.run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), "."],
                       cwd=ROOT / "tests" / "images" / "testbox", env=env, check=True)
        ociimage.write_archive(archive, IMAGE, {"/testbox": binary}, ["/testbox"], user="65532")
        subprocess.run([sys.executable, str(ROOT / "scripts" / "localcluster.py"), "import-image",
                        "--dir", RUN_DIR, str(archive)], check=True, stdout=subprocess.DEVNULL)
    return IMAGE


def real_nodes():
    return sorted(n["metadata"]["name"] for n in json.loads(kubectl(
        "get", "nodes", "-l", "kiln.dev/node-kind=real", "-o", "json").stdout)["items"])


def pod(name, node, args, restart="Never", labels=None, port=None):
    container = {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "args": args}
    if port:
        container["ports"] = [{"containerPort": port}]
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "labels": labels or {}},
                       "spec": {"nodeName": node, "restartPolicy": restart,
                                "containers": [container]}})


def wait_phase(ns, name, phases, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        got = json.loads(kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        if got["status"].get("phase") in phases:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} still {got['status'].get('phase')} after {timeout}s:"
                                 f"\n{json.dumps(got['status'], indent=1)}")
        time.sleep(0.3)


class RealNodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        testbox_image()
        cls.ns = "realnode-" + uuid.uuid4().hex[:6]
        kubectl("create", "namespace", cls.ns)
        # The namespace's default ServiceAccount appears asynchronously.
        deadline = time.monotonic() + 60
        while kubectl("get", "serviceaccount", "default", "-n", cls.ns, check=False).returncode:
            if time.monotonic() > deadline:
                raise AssertionError("no default ServiceAccount")
            time.sleep(0.3)
        cls.nodes = real_nodes()

    @classmethod
    def tearDownClass(cls):
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)

    def test_nodes_ready_with_fake_gpus_and_placement_labels(self):
        self.assertEqual(len(self.nodes), STATE["spec"]["real_nodes"])
        for name in self.nodes:
            node = json.loads(kubectl("get", "node", name, "-o", "json").stdout)
            ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
            self.assertEqual(ready[0]["status"], "True", name)
            gpus = str(STATE["spec"]["real_node_gpus"] or "") or None  # Absent with no fake GPUs.
            self.assertEqual(node["status"]["capacity"].get("nvidia.com/gpu"), gpus)
            self.assertEqual(node["status"]["allocatable"].get("nvidia.com/gpu"), gpus)
            for key in ("topology.kubernetes.io/zone", "kiln.dev/rack", "kiln.dev/nvlink-domain",
                        "nvidia.com/gpu.product"):
                self.assertIn(key, node["metadata"]["labels"])
            addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
            self.assertTrue(ipaddress.ip_address(addresses["InternalIP"]) in
                            ipaddress.ip_network(nodenet.link_cidr(CLUSTER["slot"])))
        print(f"figure: real nodes Ready {STATE['figures']['realNodesReadySeconds']} s after "
              f"their kubelets started")

    def test_pod_logs_exit_code_and_termination_message(self):
        start = time.monotonic()
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=pod(
            "exits", self.nodes[0], ["run", "--lines", "3", "--message", "bad shard 7", "--exit", "6"]))
        got = wait_phase(self.ns, "exits", ("Failed",))
        print(f"figure: pod create to finished (exit 6) {time.monotonic() - start:.1f} s")
        term = got["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual(term["exitCode"], 6)
        self.assertEqual(term["message"], "bad shard 7")
        subnet = ipaddress.ip_network(nodenet.node_pod_subnet(CLUSTER["slot"], 0))
        self.assertIn(ipaddress.ip_address(got["status"]["podIP"]), subnet)
        logs = kubectl("logs", "-n", self.ns, "exits").stdout
        self.assertEqual(logs.splitlines(), ["testbox line 1", "testbox line 2", "testbox line 3"])

    def test_service_by_dns_name_exec_and_pod_proxy(self):
        start = time.monotonic()
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=pod(
            "web", self.nodes[0], ["serve", "--port", "8080", "--text", "kiln"], restart="Always",
            labels={"app": "web"}, port=8080))
        kubectl("create", "service", "clusterip", "web", "-n", self.ns, "--tcp=80:8080")
        wait_phase(self.ns, "web", ("Running",))
        print(f"figure: pod create to Running {time.monotonic() - start:.1f} s")
        # From a pod on the other node, through the Service's DNS name.
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=pod(
            "client", self.nodes[-1], ["get", f"http://web.{self.ns}.svc.cluster.local/"]))
        got = wait_phase(self.ns, "client", ("Succeeded", "Failed"))
        logs = kubectl("logs", "-n", self.ns, "client").stdout
        self.assertEqual(got["status"]["phase"], "Succeeded", logs)
        self.assertEqual(logs.strip(), "200 kiln from web")
        # kubectl exec into the serving pod.
        out = kubectl("exec", "-n", self.ns, "web", "--", "/testbox", "get",
                      f"http://web.{self.ns}.svc:80/").stdout
        self.assertEqual(out.strip(), "200 kiln from web")
        # The API server's pod proxy dials the pod's address.
        out = kubectl("get", "--raw", f"/api/v1/namespaces/{self.ns}/pods/web:8080/proxy/").stdout
        self.assertEqual(out.strip(), "kiln from web")

    def test_a_pod_asking_for_fake_gpus_is_scheduled_and_runs(self):
        gpus = STATE["spec"]["real_node_gpus"]
        if not gpus:
            self.skipTest("the run has no fake GPUs")
        manifest = json.loads(pod("gpu", "", ["run", "--lines", "1"]))
        del manifest["spec"]["nodeName"]  # The scheduler places it by the GPU request.
        manifest["spec"]["nodeSelector"] = {"kiln.dev/node-kind": "real"}
        manifest["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=json.dumps(manifest))
        got = wait_phase(self.ns, "gpu", ("Succeeded", "Failed"))
        self.assertEqual(got["status"]["phase"], "Succeeded")
        self.assertIn(got["spec"]["nodeName"], self.nodes)

    def test_pods_reach_the_api_server_through_the_kubernetes_service(self):
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=pod(
            "api", self.nodes[-1], ["get", "https://kubernetes.default.svc/version"]))
        got = wait_phase(self.ns, "api", ("Succeeded", "Failed"))
        logs = kubectl("logs", "-n", self.ns, "api").stdout
        self.assertEqual(got["status"]["phase"], "Succeeded", logs)
        self.assertTrue(logs.startswith("200 "), logs)
        self.assertEqual(json.loads(logs[4:])["gitVersion"], "v1.33.13")

    def test_pods_have_no_route_beyond_the_cluster(self):
        # The machine's own non-kiln address: were the rule broken, the packet
        # would still stay on this machine.
        addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                               text=True).stdout.splitlines()
        own = [line.split()[3].split("/")[0] for line in addrs
               if line.split()[1] != "lo" and not line.split()[1].startswith("kiln")]
        if not own:
            self.skipTest("this machine has no address besides loopback and kiln's")
        kubectl("apply", "-n", self.ns, "-f", "-", stdin=pod(
            "outside", self.nodes[0], ["get", f"http://{own[0]}:9/"]))
        got = wait_phase(self.ns, "outside", ("Succeeded", "Failed"))
        self.assertEqual(got["status"]["phase"], "Failed")
        self.assertIn("network is unreachable", kubectl("logs", "-n", self.ns, "outside").stdout
                      + kubectl("logs", "-n", self.ns, "outside").stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
