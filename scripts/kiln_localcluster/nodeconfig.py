"""What a real node is and the configuration files of its parts: the
kubelet's, kube-proxy's and CoreDNS's, the node's labels, and the names of
its cgroup root."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import nodenet
from .common import ClusterError

KUBELET_PORT = 10250
# Where the kubelet's root (the node folder's kubelet/) is bound inside the
# node's mount namespace, on its private /var/lib.
KUBELET_ROOT = "/var/lib/kubelet"
# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
COREDNS_READY_PORT_NAME = "coredns-ready"


@dataclass
class RealNode:
    cluster: str
    index: int
    slot: int
    dir: str
    sockets: str  # socket_dir(run dir) / name: see there.

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
        return Path(self.sockets) / "containerd.sock"


def run_id(run_dir: str) -> str:
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def socket_dir(run_dir: str) -> Path:
    """Where the run's containerd sockets live, one folder per node: a unix
    socket's path may not exceed 107 bytes, and one in a node's folder under
    a deep checkout would. The host and the nodes' namespaces both see /tmp
    (a node's private mounts are /run, /var/lib and /var/log); the run's id
    keeps runs apart, and the shims' command lines name it."""
    return Path("/tmp") / f"kiln-{run_id(run_dir)}"


def check_socket_paths(node: RealNode) -> None:
    """Fails before anything starts when a node's name makes its sockets'
    paths too long."""
    longest = f"{node.socket}.ttrpc"
    if len(longest.encode()) > MAX_SOCKET_PATH:
        raise ClusterError(
            f"{longest} is {len(longest.encode())} bytes long; a unix socket path may be at most "
            f"{MAX_SOCKET_PATH}\n  fix: pass a shorter --name-prefix")


def cgroup_name(run_dir: str, node: RealNode) -> str:
    return f"kiln-{run_id(run_dir)}-{node.name}"


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
