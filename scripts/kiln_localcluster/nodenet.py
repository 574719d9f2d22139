"""The real nodes' network: each real node is a network (and mount) namespace
of its own, joined to the host by a veth pair; its pods sit on a CNI bridge
inside it. Addresses come from a per-cluster slot reserved in a registry
shared by every run on the machine, so parallel runs never overlap:

  slot s, node n:  host side 10.99.s.(4n+1)/30, node side (the node IP) 10.99.s.(4n+2)
                   pods of the cluster 10.(100+s).0.0/16, of node n 10.(100+s).(n+1).0/24

Nothing routes anywhere else: a node namespace has routes to its link, to
its cluster's pods and to the links of the other clusters of its run (whose
host-side addresses are those clusters' API forwarders, so that an operator
in a pod of one cluster reaches another as a member) only; no default route.
The host forwards only between its clusters' veths. The API server stays on
loopback; a forwarder listens on each host-side address and relays to it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from .common import ClusterError
from .ports import PidRegistry

MAX_SLOTS = 100
MAX_NODES = 63  # Nodes per cluster: 4n+2 must stay below 256.


def host_ip(slot: int, node: int) -> str:
    return f"10.99.{slot}.{4 * node + 1}"


def node_ip(slot: int, node: int) -> str:
    return f"10.99.{slot}.{4 * node + 2}"


def link_cidr(slot: int) -> str:
    return f"10.99.{slot}.0/24"


def pod_cidr(slot: int) -> str:
    return f"10.{100 + slot}.0.0/16"


def node_pod_subnet(slot: int, node: int) -> str:
    return f"10.{100 + slot}.{node + 1}.0/24"


def host_iface(slot: int, node: int) -> str:
    return f"kiln{slot}-{node}"


def run(*argv: str, netns_of: int = 0) -> None:
    """Runs a command (in the network namespace of pid `netns_of` if given)."""
    cmd = list(argv)
    if netns_of:
        cmd = ["nsenter", "-t", str(netns_of), "-n", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


class SlotRegistry(PidRegistry):
    """Reservations of network slots, shared by every kiln run on the machine:
    a file per slot holding the owner's pid, stale once that pid is gone and
    no interface of the slot exists."""

    def __init__(self, root: Path | None = None):
        super().__init__(root or Path(os.environ.get("KILN_NET_REGISTRY")
                                      or Path(tempfile.gettempdir()) / "kiln-netslots"))

    def reserve(self, count: int, owner_pid: int) -> list[int]:
        return self._claim(range(MAX_SLOTS), count, owner_pid,
                           f"could not reserve {count} network slot(s) for real nodes "
                           f"(registry {self.root})")

    def _is_free(self, slot: int) -> bool:
        return not slot_interfaces(slot)


def slot_interfaces(slot: int) -> list[str]:
    """The host's interfaces that belong to `slot`."""
    prefix = f"kiln{slot}-"
    return sorted(i for i in os.listdir("/sys/class/net") if i.startswith(prefix))


def connect_node(holder_pid: int, slot: int, node: int, sibling_slots: tuple[int, ...] = ()
                 ) -> None:
    """Joins the network namespace of `holder_pid` to the host as node `node`
    of `slot`: the veth pair, addresses, routes and forwarding on both sides.
    `sibling_slots` are the other clusters of the run: the node gets a route
    to their links, whose host-side addresses (their API forwarders) are the
    host's own, so nothing is forwarded for it."""
    host, peer = host_iface(slot, node), f"kilnp{slot}-{node}"
    run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
    run("ip", "link", "set", peer, "netns", str(holder_pid))
    run("ip", "addr", "add", f"{host_ip(slot, node)}/30", "dev", host)
    run("ip", "link", "set", host, "up")
    # Forwarding on this interface only (the machine's ip_forward stays as it
    # is): packets from one node to another node's pods.
    Path(f"/proc/sys/net/ipv4/conf/{host}/forwarding").write_text("1\n")
    run("ip", "route", "add", node_pod_subnet(slot, node), "via", node_ip(slot, node), "dev", host)
    ns = holder_pid
    run("ip", "link", "set", "lo", "up", netns_of=ns)
    run("ip", "link", "set", peer, "name", "eth0", netns_of=ns)
    run("ip", "addr", "add", f"{node_ip(slot, node)}/30", "dev", "eth0", netns_of=ns)
    run("ip", "link", "set", "eth0", "up", netns_of=ns)
    run("ip", "route", "add", link_cidr(slot), "via", host_ip(slot, node), netns_of=ns)
    run("ip", "route", "add", pod_cidr(slot), "via", host_ip(slot, node), netns_of=ns)
    for other in sibling_slots:
        run("ip", "route", "add", link_cidr(other), "via", host_ip(slot, node), netns_of=ns)
    # Inside the node's namespace only: forward between its pods' bridge and
    # eth0, and let bridged pod-to-pod traffic pass through iptables, so a
    # Service whose endpoint is on the same bridge answers with its own address.
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns_of=ns)
    run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", netns_of=ns)


class ApiForwarder:
    """Relays TCP connections from host-side addresses to the API server on
    loopback, so that kubelets, kube-proxies and pods in the nodes' namespaces
    reach it. Daemon threads; stop() closes the listeners."""

    def __init__(self) -> None:
        self.listeners: list[socket.socket] = []

    def listen(self, address: str, port: int, target_port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        self.listeners.append(sock)
        threading.Thread(target=self._accept, args=(sock, target_port), daemon=True).start()

    def _accept(self, sock: socket.socket, target_port: int) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return  # Closed by stop().
            threading.Thread(target=self._relay, args=(client, target_port), daemon=True).start()

    @staticmethod
    def _relay(client: socket.socket, target_port: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def stop(self) -> None:
        for sock in self.listeners:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.listeners.clear()
