"""Real nodes beside the kwok ones: per node a network and mount namespace
(held by a pause process) with containerd, a kubelet and kube-proxy in it;
per cluster CoreDNS on the host, answering on the nodes' host-side
addresses. What each writes lives under the node's folder or on the
namespace's private tmpfs mounts (/run, /var/lib, /var/log), so the mounts
vanish with the namespace; cgroups live under one root per node, named after
the run, which teardown empties and removes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import nodenet
from .common import ClusterError
from .containerd import cni_conflist, config_toml, import_image, pause_archive, wait_ready
from .pki import kubeconfig_yaml

KUBELET_PORT = 10250
COREDNS_READY_PORT_NAME = "coredns-ready"
# What the kubelet would set these kernel settings to. It rewrites any that
# differ (machine-wide); the node's mount namespace shows it these values instead.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
CGROUP_FS = Path("/sys/fs/cgroup")


@dataclass
class RealNode:
    cluster: str
    index: int
    slot: int
    dir: str

    @property
    def name(self) -> str:
        return f"{self.cluster}-real-{self.index}"

    @property
    def ip(self) -> str:
        return nodenet.node_ip(self.slot, self.index)

    @property
    def host_ip(self) -> str:
        return nodenet.host_ip(self.slot, self.index)

    @property
    def socket(self) -> Path:
        return Path(self.dir) / "containerd.sock"


def run_id(run_dir: str) -> str:
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def cgroup_name(run_dir: str, node: RealNode) -> str:
    return f"kiln-{run_id(run_dir)}-{node.name}"


def cgroup_hierarchies() -> list[Path]:
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and os.path.ismount(p))


def make_cgroup_root(name: str) -> None:
    for h in cgroup_hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if h.name == "cpuset":  # A v1 cpuset child starts with no CPUs or memory nodes.
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((h / f).read_text())


def node_labels(node: RealNode, spec) -> dict[str, str]:
    """The same label keys as the kwok nodes (layout.node_manifests), so
    placement reads real and fake nodes alike; real nodes form their own racks
    and NVLink domains in the first zone."""
    i = node.index
    return {
        "kiln.dev/node-kind": "real",
        "topology.kubernetes.io/region": f"local-{node.cluster}",
        "topology.kubernetes.io/zone": f"{node.cluster}-zone-a",
        "kiln.dev/cluster": node.cluster,
        "kiln.dev/rack": f"{node.cluster}-rack-real-{i // spec.nodes_per_rack}",
        "kiln.dev/nvlink-domain": f"{node.cluster}-nvl-real-{i // spec.nodes_per_nvlink_domain}",
        "nvidia.com/gpu.present": "true" if spec.real_node_gpus else "false",
        "nvidia.com/gpu.product": spec.gpu_product,
        "nvidia.com/gpu.count": str(spec.real_node_gpus),
        "node.kubernetes.io/instance-type": f"gpu-{spec.real_node_gpus}x",
    }


def kubelet_config(node: RealNode, run_dir: str, pki: Path) -> str:
    d = Path(node.dir)
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": node.ip, "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": "/" + cgroup_name(run_dir, node),
        "cgroupsPerQOS": True, "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "clusterDNS": [node.host_ip], "clusterDomain": "cluster.local",
        "resolvConf": "",  # Pods resolve cluster names only, never the machine's resolvers.
        "podLogsDir": str(d / "pod-logs"),
        "volumePluginDir": str(d / "volume-plugins"),
        "oomScoreAdj": 0,  # This machine refuses negative values.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }, sort_keys=False)


def kube_proxy_config(node: RealNode, kubeconfig: Path) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "healthzBindAddress": f"{node.ip}:10256",
        "metricsBindAddress": f"{node.ip}:10249",
        "clusterCIDR": nodenet.pod_cidr(node.slot),
        # Leave the machine-wide conntrack settings alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }, sort_keys=False)


def corefile(nodes: list[RealNode], kubeconfig: Path, context: str, ready_port: int) -> str:
    binds = " ".join(n.host_ip for n in nodes)
    return f""".:53 {{
    bind {binds}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def in_node(holder_pid: int, argv: list[str]) -> list[str]:
    """`argv` run inside a node's network and mount namespaces."""
    return ["nsenter", "-t", str(holder_pid), "-m", "-n", "--", *argv]


def wait_holder(proc: subprocess.Popen, pause: Path, deadline: float) -> None:
    """Waits until the holder has left the host's namespaces and runs pause."""
    while True:
        if proc.poll() is not None:
            raise ClusterError(f"the node namespace holder exited with code {proc.returncode}")
        try:
            if os.readlink(f"/proc/{proc.pid}/exe") == str(pause):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ClusterError("the node namespace holder did not start")
        time.sleep(0.05)


def prepare_mounts(holder_pid: int, node_dir: Path) -> None:
    """Private tmpfs over /run, /var/lib and /var/log inside the node, and the
    kernel settings the kubelet wants, shown to it without changing them."""
    def ns(*argv: str) -> None:
        done = subprocess.run(["nsenter", "-t", str(holder_pid), "-m", "--", *argv],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} in the node's mount namespace failed: "
                               f"{done.stderr.strip()}")
    for target in ("/run", "/var/lib", "/var/log"):
        ns("mount", "-t", "tmpfs", "-o", "mode=755", "kiln-node", target)
    sysctl_dir = node_dir / "sysctl"
    sysctl_dir.mkdir(exist_ok=True)
    for key, value in KUBELET_SYSCTLS.items():
        proc_file = Path("/proc/sys") / key
        if proc_file.read_text().strip() == value:
            continue
        shown = sysctl_dir / key.replace("/", ".")
        shown.write_text(value + "\n")
        ns("mount", "--bind", str(shown), str(proc_file))


def patch_gpus(kubectl, node: str, gpus: int) -> None:
    """Advertises `gpus` fake nvidia.com/gpu on the node, the documented way
    for extended resources: a JSON patch of the node's status."""
    patch = json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu",
                         "value": str(gpus)}])
    done = kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p", patch)
    if done.returncode != 0:
        raise ClusterError(f"advertising {gpus} GPUs on {node} failed: {done.stderr.strip()}")


def kill_cgroup_processes(run_dir: str) -> list[Path]:
    """Kills every process in the run's node cgroups and removes the cgroups,
    deepest first. Returns the cgroup folders that could not be removed."""
    prefix = f"kiln-{run_id(run_dir)}-"
    roots = [r for h in cgroup_hierarchies() for r in h.iterdir()
             if r.is_dir() and r.name.startswith(prefix)]
    for _ in range(50):
        pids = set()
        for root in roots:
            for procs in root.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    left = []
    for root in roots:
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            root.rmdir()
        except OSError:
            left.append(root)
    return left


def kill_shims(run_dir: str) -> None:
    """Kills the containerd shims of the run's nodes (they outlive containerd
    by design); their command line names the node's containerd socket."""
    root = str(Path(run_dir).resolve()) + "/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args and args[0].endswith("containerd-shim-runc-v2") and any(a.startswith(root) for a in args):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def leftovers(run_dir: str, slots: list[int]) -> list[str]:
    """What real nodes of this run left on the machine: cgroups, host
    interfaces, mounts under the run directory."""
    found = []
    prefix = f"kiln-{run_id(run_dir)}-"
    for h in cgroup_hierarchies():
        found += [f"cgroup {r}" for r in h.iterdir() if r.is_dir() and r.name.startswith(prefix)]
    for slot in slots:
        found += [f"network interface {i}" for i in nodenet.slot_interfaces(slot)]
    # kube-proxy's and CNI's rules live in the nodes' namespaces; none may
    # reach the host's tables (they would name the pods' addresses).
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    for slot in slots:
        prefix = nodenet.pod_cidr(slot).rsplit(".", 2)[0] + "."
        found += [f"host iptables rule {line}" for line in saved.splitlines()
                  if prefix in line or f"kiln{slot}-" in line]
    root = str(Path(run_dir).resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point == root or mount_point.startswith(root + "/"):
            found.append(f"mount {mount_point}")
    return found


class RealNodes:
    """Brings up and stops the real nodes of every cluster of a run. `sup` is
    the Supervisor: it starts and owns the processes."""

    def __init__(self, sup) -> None:
        self.sup = sup
        self.spec = sup.spec
        self.forwarder = nodenet.ApiForwarder()
        self.holders: dict[str, subprocess.Popen] = {}
        self.nodes = {c.name: [RealNode(c.name, i, c.slot,
                                        str(Path(c.dir) / "nodes" / f"{c.name}-real-{i}"))
                               for i in range(self.spec.real_nodes)] for c in self.spec.clusters}

    def write_files(self, c, pki: Path) -> None:
        for node in self.nodes[c.name]:
            d = Path(node.dir)
            (d / "cni").mkdir(parents=True, exist_ok=True)
            server = f"https://{node.host_ip}:{c.ports['apiserver']}"
            (d / "kubelet.kubeconfig").write_text(
                kubeconfig_yaml([(c.name, server, pki, f"node-{node.index}")]))
            (d / "kube-proxy.kubeconfig").write_text(
                kubeconfig_yaml([(c.name, server, pki, "kube-proxy")]))
            (d / "kubelet.yaml").write_text(kubelet_config(node, self.spec.dir, pki))
            (d / "kube-proxy.yaml").write_text(kube_proxy_config(node, d / "kube-proxy.kubeconfig"))
            (d / "containerd.toml").write_text(config_toml(d))
            subnet = nodenet.node_pod_subnet(node.slot, node.index)
            gateway = subnet.rsplit(".", 1)[0] + ".1"
            (d / "cni" / "10-kiln.conflist").write_text(cni_conflist(d, subnet, gateway))
        (Path(c.dir) / "coredns.kubeconfig").write_text(
            kubeconfig_yaml([(c.name, c.server, pki, "coredns")]))
        (Path(c.dir) / "Corefile").write_text(corefile(
            self.nodes[c.name], Path(c.dir) / "coredns.kubeconfig", c.name,
            c.ports[COREDNS_READY_PORT_NAME]))

    def bring_up(self, deadline: float) -> None:
        started = time.monotonic()
        kubelets_started = 0.0
        bin_dir = Path(self.spec.bin_dir)
        work = Path(self.spec.dir) / "images"
        pause_tar = pause_archive(work)
        pause_bin = work / "pause"
        for c in self.spec.clusters:
            for node in self.nodes[c.name]:
                d = Path(node.dir)
                holder = self.sup.start_process(
                    c, f"{node.name}/holder",
                    ["unshare", "--mount", "--net", "--propagation", "private", "--",
                     str(pause_bin), str(d)])
                wait_holder(holder, pause_bin, deadline)
                self.holders[node.name] = holder
                prepare_mounts(holder.pid, d)
                nodenet.connect_node(holder.pid, node.slot, node.index)
                self.forwarder.listen(node.host_ip, c.ports["apiserver"], c.ports["apiserver"])
                make_cgroup_root(cgroup_name(self.spec.dir, node))
                proc = self.sup.start_process(c, f"{node.name}/containerd", in_node(
                    holder.pid, ["containerd", "--config", str(d / "containerd.toml")]))
                wait_ready(node.socket, proc, Path(c.dir) / "logs" / f"{node.name}-containerd.log",
                           deadline)
                import_image(node.socket, pause_tar)
                for image in self.spec.images:
                    import_image(node.socket, Path(image))
            self.sup.start_process(c, "coredns", [str(bin_dir / "coredns"), "-conf",
                                                  str(Path(c.dir) / "Corefile")])
            kubelets_started = kubelets_started or time.monotonic()
            for node in self.nodes[c.name]:
                d = Path(node.dir)
                labels = ",".join(f"{k}={v}" for k, v in node_labels(node, self.spec).items())
                self.sup.start_process(c, f"{node.name}/kubelet", in_node(
                    self.holders[node.name].pid,
                    [str(bin_dir / "kubelet"), "--config", str(d / "kubelet.yaml"),
                     "--kubeconfig", str(d / "kubelet.kubeconfig"), "--root-dir", str(d / "kubelet"),
                     "--hostname-override", node.name, "--node-ip", node.ip,
                     "--node-labels", labels, "--v=1"]))
                self.sup.start_process(c, f"{node.name}/kube-proxy", in_node(
                    self.holders[node.name].pid,
                    [str(bin_dir / "kube-proxy"), "--config", str(d / "kube-proxy.yaml"), "--v=1"]))
        self.wait_ready(deadline)
        # From the first node's namespace to every node Ready with its GPUs;
        # and from the kubelets' start.
        self.sup.figures["realNodesUpSeconds"] = round(time.monotonic() - started, 1)
        self.sup.figures["realNodesReadySeconds"] = round(time.monotonic() - kubelets_started, 1)

    def wait_ready(self, deadline: float) -> None:
        """Waits until every real node is Ready and, once its fake GPUs are
        patched in, shows them as allocatable; then until CoreDNS is ready."""
        for c in self.spec.clusters:
            pending = {n.name for n in self.nodes[c.name]}
            patched: set[str] = set()
            while pending:
                try:
                    self.sup.check_running(c)
                except ClusterError as e:
                    raise ClusterError(f"{e}\n  fix: read the log above (the whole log is in "
                                       f"{c.dir}/logs); kubelet and kube-proxy come from "
                                       f"scripts/build-tools.sh node")
                for name in sorted(pending):
                    got = self.sup.kubectl(c, "get", "node", name, "-o", "json")
                    if got.returncode != 0:
                        continue
                    status = json.loads(got.stdout).get("status", {})
                    conds = status.get("conditions", [])
                    if not any(x["type"] == "Ready" and x["status"] == "True" for x in conds):
                        continue
                    gpus = self.spec.real_node_gpus
                    if gpus and name not in patched:
                        patch_gpus(lambda *a: self.sup.kubectl(c, *a), name, gpus)
                        patched.add(name)
                    if not gpus or status.get("allocatable", {}).get("nvidia.com/gpu") == str(gpus):
                        pending.discard(name)
                if pending and time.monotonic() > deadline:
                    raise ClusterError(
                        f"real node(s) {', '.join(sorted(pending))} of {c.name} not Ready in time\n"
                        f"  fix: read {c.dir}/logs/<node>-kubelet.log and <node>-containerd.log")
                if pending:
                    time.sleep(0.3)
            if not self.sup.wait_healthy_url(
                    f"http://127.0.0.1:{c.ports[COREDNS_READY_PORT_NAME]}/ready", deadline):
                raise ClusterError(f"CoreDNS of {c.name} not ready in time\n"
                                   f"  fix: read {c.dir}/logs/coredns.log")

    def stop(self) -> None:
        """Stops the nodes: kubelets, kube-proxies and CoreDNS, then every
        container (through the nodes' cgroups and the shims), then containerd
        and the namespace holders; removes the cgroups."""
        self.forwarder.stop()
        self.sup.stop_matching(lambda name: name.endswith(("/kubelet", "/kube-proxy"))
                               or name == "coredns")
        kill_cgroup_processes(self.spec.dir)
        self.sup.stop_matching(lambda name: name.endswith("/containerd"))
        kill_shims(self.spec.dir)
        self.sup.stop_matching(lambda name: name.endswith("/holder"))
        kill_cgroup_processes(self.spec.dir)
