"""Real nodes beside the kwok ones: per node a network and mount namespace
(held by a pause process) with containerd, a kubelet and kube-proxy in it;
per cluster CoreDNS on the host, answering on the nodes' host-side
addresses. What each writes lives under the node's folder or on the
namespace's private tmpfs mounts (/run, /var/lib, /var/log), so the mounts
vanish with the namespace; cgroups live under one root per node, named after
the run, which teardown empties and removes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import nodenet
from .cgroups import cgroup_hierarchies, kill_cgroup_processes, make_cgroup_root
from .common import ClusterError
from .containerd import cni_conflist, config_toml, import_image, pause_archive, wait_ready
from .nodeconfig import (COREDNS_READY_PORT_NAME, KUBELET_ROOT, RealNode, cgroup_name,
                         check_socket_paths, corefile, socket_dir, kube_proxy_config, kubelet_config,
                         node_labels, run_id)
from .pki import kubeconfig_yaml

# What the kubelet would set these kernel settings to. It rewrites any that
# differ (machine-wide); the node's mount namespace shows it these values instead.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}


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
    """Private tmpfs over /run, /var/lib and /var/log inside the node, the
    node's kubelet folder bound at KUBELET_ROOT (the kubelet makes unix
    sockets under its root, whose paths may not exceed 107 bytes: under a
    deep run directory they would), and the kernel settings the kubelet
    wants, shown to it without changing them."""
    def ns(*argv: str) -> None:
        done = subprocess.run(["nsenter", "-t", str(holder_pid), "-m", "--", *argv],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} in the node's mount namespace failed: "
                               f"{done.stderr.strip()}")
    for target in ("/run", "/var/lib", "/var/log"):
        ns("mount", "-t", "tmpfs", "-o", "mode=755", "kiln-node", target)
    kubelet_dir = node_dir / "kubelet"
    kubelet_dir.mkdir(exist_ok=True)
    ns("mkdir", "-p", KUBELET_ROOT)
    ns("mount", "--bind", str(kubelet_dir), KUBELET_ROOT)
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


def kill_shims(run_dir: str) -> None:
    """Kills the containerd shims of the run's nodes (they outlive containerd
    by design); their command line names the node's containerd socket."""
    root = str(socket_dir(run_dir)) + "/"
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


def remove_socket_dir(run_dir: str) -> None:
    """Removes the run's socket folders once containerd and the shims are gone."""
    shutil.rmtree(socket_dir(run_dir), ignore_errors=True)


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
    if socket_dir(run_dir).exists():
        found.append(f"socket folder {socket_dir(run_dir)}")
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
        sockets = socket_dir(self.spec.dir)
        self.nodes = {c.name: [RealNode(c.name, i, c.slot,
                                        str(Path(c.dir) / "nodes" / f"{c.name}-real-{i}"),
                                        str(sockets / f"{c.name}-real-{i}"))
                               for i in range(self.spec.real_nodes)] for c in self.spec.clusters}

    def write_files(self, c, pki: Path) -> None:
        for node in self.nodes[c.name]:
            check_socket_paths(node)
            Path(node.sockets).mkdir(parents=True, exist_ok=True)
            d = Path(node.dir)
            (d / "cni").mkdir(parents=True, exist_ok=True)
            server = f"https://{node.host_ip}:{c.ports['apiserver']}"
            (d / "kubelet.kubeconfig").write_text(
                kubeconfig_yaml([(c.name, server, pki, f"node-{node.index}")]))
            (d / "kube-proxy.kubeconfig").write_text(
                kubeconfig_yaml([(c.name, server, pki, "kube-proxy")]))
            (d / "kubelet.yaml").write_text(kubelet_config(node, self.spec.dir, pki))
            (d / "kube-proxy.yaml").write_text(kube_proxy_config(node, d / "kube-proxy.kubeconfig"))
            (d / "containerd.toml").write_text(config_toml(d, node.socket))
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
                nodenet.connect_node(holder.pid, node.slot, node.index, tuple(
                    o.slot for o in self.spec.clusters if o.slot != c.slot))
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
                     "--kubeconfig", str(d / "kubelet.kubeconfig"), "--root-dir", KUBELET_ROOT,
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
        remove_socket_dir(self.spec.dir)
