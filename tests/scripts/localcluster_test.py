"""Unit tests of scripts/kiln_localcluster's pieces that need no cluster: the
port registry, the fake GPU node manifests and the kubeconfigs."""

import base64
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from kiln_localcluster import cli, layout, nodenet, nodeconfig, ociimage, pki, ports  # noqa: E402
from kiln_localcluster.common import ClusterError  # noqa: E402


def reserve_in_child(registry_dir, count, queue, hold):
    taken = ports.PortRegistry(Path(registry_dir)).reserve(count, os.getpid())
    queue.put(taken)
    hold.wait()  # Keep the owner alive until every child has reserved.


class PortRegistryTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.registry = ports.PortRegistry(Path(self.tmp.name))

    def tearDown(self):
        self.tmp.cleanup()

    def test_concurrent_reservations_are_disjoint_and_below_ephemeral_range(self):
        ctx = multiprocessing.get_context("fork")
        queue, hold = ctx.Queue(), ctx.Event()
        children = [ctx.Process(target=reserve_in_child, args=(self.tmp.name, 40, queue, hold))
                    for _ in range(6)]
        for c in children:
            c.start()
        results = [queue.get(timeout=60) for _ in children]
        hold.set()
        for c in children:
            c.join(timeout=30)
        every = [p for ports in results for p in ports]
        self.assertEqual(len(every), 240)
        self.assertEqual(len(set(every)), 240, "two runs were given the same port")
        self.assertTrue(all(p < ports._ephemeral_start() for p in every))

    def test_reservations_of_a_dead_owner_are_reused_and_live_ones_are_not(self):
        mine = self.registry.reserve(5, os.getpid())
        for p in mine:
            self.assertFalse(self.registry._available(p))
        dead = os.fork()
        if dead == 0:
            os._exit(0)
        os.waitpid(dead, 0)
        (Path(self.tmp.name) / str(mine[0])).write_text(str(dead))
        self.assertTrue(self.registry._available(mine[0]))

    def test_release_removes_only_the_owners_entries(self):
        ports = self.registry.reserve(3, os.getpid())
        self.registry.release(ports, os.getpid() + 1)  # Someone else's pid: nothing removed.
        self.assertTrue(all((Path(self.tmp.name) / str(p)).exists() for p in ports))
        self.registry.release(ports, os.getpid())
        self.assertFalse(any((Path(self.tmp.name) / str(p)).exists() for p in ports))

    def test_a_listening_port_is_never_handed_out(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            self.assertFalse(ports.port_is_free(s.getsockname()[1]))


class LeftoverMatchTest(unittest.TestCase):
    def test_whole_path_components_only(self):
        # Regression: a substring match let one run's teardown kill another run
        # whose directory name merely started with the same characters.
        self.assertTrue(cli.mentions_dir("/b/lc", "/b/lc"))
        self.assertTrue(cli.mentions_dir("/b/lc/kiln-1/pki/ca.crt", "/b/lc"))
        self.assertTrue(cli.mentions_dir("--kubeconfig=/b/lc/kiln-1/kubeconfig", "/b/lc"))
        self.assertFalse(cli.mentions_dir("/b/lc-disruption", "/b/lc"))
        self.assertFalse(cli.mentions_dir("/b/lc-disruption/kiln-1/kubeconfig", "/b/lc"))

    def test_finds_a_live_process_by_its_arguments(self):
        with tempfile.TemporaryDirectory() as d:
            run_dir = Path(d) / "run"
            sibling = Path(d) / "run-other"
            # One process whose argv carries the path (no shell child that
            # would outlive kill() and hold ctest's output pipe open).
            sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            mine = subprocess.Popen(sleeper + [str(run_dir / "x")], **quiet)
            other = subprocess.Popen(sleeper + [str(sibling / "x")], **quiet)
            try:
                found = cli.leftover_pids(run_dir)
                self.assertIn(mine.pid, found)
                self.assertNotIn(other.pid, found)
            finally:
                for p in (mine, other):
                    p.kill()
                    p.wait()


class AncestorsTest(unittest.TestCase):
    def test_the_callers_chain_is_never_a_leftover(self):
        # Regression: `timeout 300 localcluster.py up --dir D` killed its own
        # `timeout` parent, whose command line names D.
        self.assertIn(os.getpid(), cli.ancestors())
        self.assertIn(os.getppid(), cli.ancestors())


class RealNodeLayoutTest(unittest.TestCase):
    def test_addresses_of_slots_and_nodes_never_overlap(self):
        import ipaddress
        nets = []
        for slot in (0, 1, nodenet.MAX_SLOTS - 1):
            nets.append(ipaddress.ip_network(nodenet.pod_cidr(slot)))
            nets.append(ipaddress.ip_network(nodenet.link_cidr(slot)))
            for node in (0, nodenet.MAX_NODES - 1):
                link = ipaddress.ip_network(f"{nodenet.node_ip(slot, node)}/30", strict=False)
                self.assertIn(ipaddress.ip_address(nodenet.host_ip(slot, node)), link)
                self.assertIn(ipaddress.ip_network(nodenet.node_pod_subnet(slot, node)),
                              list(ipaddress.ip_network(nodenet.pod_cidr(slot)).subnets(new_prefix=24)))
                self.assertLessEqual(len(nodenet.host_iface(slot, node)), 15)  # IFNAMSIZ - 1
        service = ipaddress.ip_network("10.96.0.0/16")
        for i, a in enumerate(nets):
            self.assertFalse(a.overlaps(service))
            for b in nets[i + 1:]:
                self.assertFalse(a.overlaps(b), f"{a} overlaps {b}")

    def test_kubelet_config_keeps_to_the_nodes_folder_and_addresses(self):
        node = nodeconfig.RealNode("c1", 1, 3, "/r/c1/nodes/c1-real-1", "/tmp/kiln-x/c1-real-1")
        config = yaml.safe_load(nodeconfig.kubelet_config(node, "/r", Path("/r/c1/pki")))
        self.assertEqual(config["address"], "10.99.3.6")
        self.assertEqual(config["clusterDNS"], ["10.99.3.5"])
        self.assertEqual(config["resolvConf"], "")
        self.assertEqual(config["cgroupRoot"], "/" + nodeconfig.cgroup_name("/r", node))
        self.assertEqual(config["containerRuntimeEndpoint"], "unix:///tmp/kiln-x/c1-real-1/containerd.sock")
        self.assertTrue(config["podLogsDir"].startswith("/r/c1/nodes/"))
        self.assertEqual(config["oomScoreAdj"], 0)

    def test_socket_paths_do_not_grow_with_the_run_directory(self):
        deep = "/" + "d" * 200
        self.assertTrue(str(nodeconfig.socket_dir(deep)).startswith("/tmp/kiln-"))
        self.assertNotEqual(nodeconfig.socket_dir(deep), nodeconfig.socket_dir(deep + "x"))
        node = nodeconfig.RealNode("c1", 1, 3, deep + "/c1/nodes/c1-real-1",
                                   str(nodeconfig.socket_dir(deep) / "c1-real-1"))
        nodeconfig.check_socket_paths(node)
        long_name = "c" * 90
        with self.assertRaisesRegex(ClusterError, r"(?s)at most 107.*--name-prefix"):
            nodeconfig.check_socket_paths(nodeconfig.RealNode(
                long_name, 1, 3, "/r", str(nodeconfig.socket_dir(deep) / f"{long_name}-real-1")))
        # The kubelet's sockets live under its root, bound at a short path
        # inside the node; the deepest it makes has a 10-digit name.
        self.assertLessEqual(len(nodeconfig.KUBELET_ROOT + "/pod-resources/1234567890"),
                             nodeconfig.MAX_SOCKET_PATH)

    def test_placement_labels_use_the_kwok_nodes_keys(self):
        spec = NodeManifestTest().spec()
        spec.real_node_gpus = 2
        kwok = json.loads(layout.node_manifests("c1", spec))["items"][0]["metadata"]["labels"]
        real = nodeconfig.node_labels(nodeconfig.RealNode("c1", 0, 0, "/x", "/s"), spec)
        for key in ("topology.kubernetes.io/zone", "kiln.dev/rack", "kiln.dev/nvlink-domain",
                    "nvidia.com/gpu.product", "nvidia.com/gpu.count", "kiln.dev/cluster"):
            self.assertIn(key, kwok)
            self.assertIn(key, real)
        self.assertEqual(real["nvidia.com/gpu.count"], "2")


class OciImageTest(unittest.TestCase):
    def test_same_inputs_same_digest_and_a_readable_layout(self):
        import tarfile
        with tempfile.TemporaryDirectory() as d:
            prog = Path(d) / "prog"
            prog.write_bytes(b"\x7fELF not really")
            a = ociimage.write_archive(Path(d) / "a.tar", "kiln.dev/x:1", {"/bin/prog": prog}, ["/bin/prog"])
            os.utime(prog, (1, 1))
            b = ociimage.write_archive(Path(d) / "b.tar", "kiln.dev/x:1", {"/bin/prog": prog}, ["/bin/prog"])
            self.assertEqual(a, b)
            with tarfile.open(Path(d) / "a.tar") as tar:
                index = json.loads(tar.extractfile("index.json").read())
                names = tar.getnames()
        self.assertEqual(index["manifests"][0]["digest"], a)
        self.assertEqual(index["manifests"][0]["annotations"]["io.containerd.image.name"], "kiln.dev/x:1")
        self.assertIn("blobs/sha256/" + a.split(":")[1], names)


class NodeManifestTest(unittest.TestCase):
    def spec(self, nodes=4, zones=2):
        return layout.RunSpec(dir="/x", clusters=[], nodes=nodes, gpus_per_node=8,
                          gpu_product="NVIDIA-H100-80GB-HBM3", nodes_per_nvlink_domain=2,
                          nodes_per_rack=2, zones=zones, bin_dir="/b", owner_pid=0)

    def test_gpu_capacity_and_topology_labels(self):
        items = json.loads(layout.node_manifests("c1", self.spec()))["items"]
        self.assertEqual([n["metadata"]["name"] for n in items],
                         ["c1-gpu-0", "c1-gpu-1", "c1-gpu-2", "c1-gpu-3"])
        for n in items:
            self.assertEqual(n["status"]["capacity"]["nvidia.com/gpu"], "8")
            self.assertEqual(n["metadata"]["annotations"]["kwok.x-k8s.io/node"], "fake")
        labels = [n["metadata"]["labels"] for n in items]
        self.assertEqual([l["kiln.dev/nvlink-domain"] for l in labels],
                         ["c1-nvl-0", "c1-nvl-0", "c1-nvl-1", "c1-nvl-1"])
        # Zones are contiguous blocks: an NVLink domain never spans two zones.
        self.assertEqual([l["topology.kubernetes.io/zone"] for l in labels],
                         ["c1-zone-a", "c1-zone-a", "c1-zone-b", "c1-zone-b"])

    def test_static_nodes_are_ready_without_kwok_and_keep_ready(self):
        spec = self.spec()
        spec.static_nodes = True
        for n in json.loads(layout.node_manifests("c1", spec))["items"]:
            self.assertNotIn("kwok.x-k8s.io/node", n["metadata"]["annotations"])
            self.assertEqual(n["metadata"]["labels"]["type"], "static")
            self.assertEqual([(c["type"], c["status"]) for c in n["status"]["conditions"]],
                             [("Ready", "True")])
        spec.clusters = [layout.ClusterSpec(name="c1", dir="/x/c1", ports={
            k: 1 for k in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")})]
        c = spec.clusters[0]
        # Nothing heartbeats for them: no lifecycle controller to mark them
        # unready, no admission taint that only it would lift.
        self.assertIn("--controllers=*,-node-lifecycle-controller",
                      layout.component_argv("kube-controller-manager", c, spec))
        self.assertIn("--disable-admission-plugins=TaintNodesByCondition",
                      layout.component_argv("kube-apiserver", c, spec))
        spec.static_nodes = False
        self.assertFalse(any(a.startswith("--controllers")
                             for a in layout.component_argv("kube-controller-manager", c, spec)))

    def test_uneven_zones(self):
        items = json.loads(layout.node_manifests("c", self.spec(nodes=5, zones=3)))["items"]
        zones = [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in items]
        self.assertEqual(zones, sorted(zones))
        self.assertEqual(len(set(zones)), 3)


class KubeconfigTest(unittest.TestCase):
    def test_contexts_users_and_credentials_round_trip_through_yaml(self):
        with tempfile.TemporaryDirectory() as tmp:
            entries = []
            for name in ("kiln-1", "kiln-2"):
                d = Path(tmp) / name
                d.mkdir()
                for f in ("ca.crt", "admin.crt", "admin.key"):
                    (d / f).write_text(f"{name} {f}: a: b # not yaml-safe\n")
                entries.append((name, f"https://127.0.0.1:{6443 + len(entries)}", d, "admin"))
            config = yaml.safe_load(pki.kubeconfig_yaml(entries))
        self.assertEqual(config["current-context"], "kiln-1")
        self.assertEqual([c["name"] for c in config["contexts"]], ["kiln-1", "kiln-2"])
        self.assertEqual(config["contexts"][1]["context"], {"cluster": "kiln-2", "user": "kiln-2-admin"})
        self.assertEqual(config["clusters"][1]["cluster"]["server"], "https://127.0.0.1:6444")
        key = base64.b64decode(config["users"][0]["user"]["client-key-data"]).decode()
        self.assertEqual(key, "kiln-1 admin.key: a: b # not yaml-safe\n")


if __name__ == "__main__":
    unittest.main()
