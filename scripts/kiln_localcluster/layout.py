"""What a run is made of: the cluster and run specs, the fake GPU nodes'
manifests, each component's command line and health endpoint."""

from __future__ import annotations

import json
import os
import ssl
import textwrap
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .common import SERVICE_CIDR
from .nodenet import host_ip


@dataclass
class ClusterSpec:
    name: str
    dir: str
    ports: dict[str, int] = field(default_factory=dict)
    slot: int = -1  # Network slot of the cluster's real nodes (nodenet), -1 without any.

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.dir, "kubeconfig")


@dataclass
class RunSpec:
    dir: str
    clusters: list[ClusterSpec]
    nodes: int
    gpus_per_node: int
    gpu_product: str
    nodes_per_nvlink_domain: int
    nodes_per_rack: int
    zones: int
    bin_dir: str
    owner_pid: int
    real_nodes: int = 0
    real_node_gpus: int = 0
    images: list[str] = field(default_factory=list)
    # Fake nodes without a kubelet or kwok behind them (--static-nodes): made
    # Ready, never heartbeating (the node lifecycle controller is off, so
    # they stay Ready); the scheduler binds pods to them, nothing runs them.
    # For fleets too large for kwok's heartbeats on this machine.
    static_nodes: bool = False


def node_manifests(cluster: str, spec: RunSpec) -> str:
    docs = []
    gpu_memory_mib = 81559 if "H100" in spec.gpu_product else 143771
    for i in range(spec.nodes):
        # Contiguous blocks of nodes per zone, so racks and NVLink domains stay in one zone.
        zone = f"{cluster}-zone-{chr(ord('a') + i * spec.zones // spec.nodes)}"
        labels = {
            "type": "static" if spec.static_nodes else "kwok",
            "kubernetes.io/hostname": f"{cluster}-gpu-{i}",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": f"gpu-{spec.gpus_per_node}x",
            "topology.kubernetes.io/region": f"local-{cluster}",
            "topology.kubernetes.io/zone": zone,
            "kiln.dev/cluster": cluster,
            "kiln.dev/rack": f"{cluster}-rack-{i // spec.nodes_per_rack}",
            "kiln.dev/nvlink-domain": f"{cluster}-nvl-{i // spec.nodes_per_nvlink_domain}",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": spec.gpu_product,
            "nvidia.com/gpu.count": str(spec.gpus_per_node),
            "nvidia.com/gpu.memory": str(gpu_memory_mib),
        }
        resources = {"cpu": "96", "memory": "1024Gi", "pods": "110",
                     "ephemeral-storage": "2Ti", "nvidia.com/gpu": str(spec.gpus_per_node)}
        status = {"capacity": resources, "allocatable": resources}
        annotations = {"node.alpha.kubernetes.io/ttl": "0"}
        if spec.static_nodes:
            status["conditions"] = [{"type": "Ready", "status": "True", "reason": "StaticNode",
                                     "message": "a static fake node (localcluster --static-nodes)"}]
        else:
            annotations["kwok.x-k8s.io/node"] = "fake"
        docs.append({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"{cluster}-gpu-{i}",
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {},
            "status": status,
        })
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=1)


def kwok_config() -> str:
    # An explicit (empty-options) config keeps kwok from reading ~/.kwok; with
    # no Stage objects given, kwok runs its default node and pod lifecycles.
    return textwrap.dedent("""\
        apiVersion: config.kwok.x-k8s.io/v1alpha1
        kind: KwokConfiguration
        options: {}
        """)


def component_argv(name: str, c: ClusterSpec, spec: RunSpec) -> list[str]:
    b = Path(spec.bin_dir)
    d = Path(c.dir)
    pki = d / "pki"
    p = c.ports
    if name == "etcd":
        return [str(b / "etcd"), "--name", c.name, "--data-dir", str(d / "etcd-data"),
                "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
                "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
                "--listen-peer-urls", f"http://127.0.0.1:{p['etcd-peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd-peer']}",
                "--initial-cluster", f"{c.name}=http://127.0.0.1:{p['etcd-peer']}",
                "--initial-cluster-state", "new", "--unsafe-no-fsync",
                "--log-level", "warn"]
    if name == "kube-apiserver":
        # With real nodes, the `kubernetes` Service points at the API forwarder
        # on the first node's host-side address, which pods can reach.
        advertise = host_ip(c.slot, 0) if spec.real_nodes and c.slot >= 0 else "127.0.0.1"
        return [str(b / "kube-apiserver"),
                "--etcd-servers", f"http://127.0.0.1:{p['etcd']}",
                "--bind-address", "127.0.0.1", "--advertise-address", advertise,
                "--secure-port", str(p["apiserver"]),
                "--cert-dir", str(d / "apiserver-certs"),
                "--tls-cert-file", str(pki / "apiserver.crt"),
                "--tls-private-key-file", str(pki / "apiserver.key"),
                "--client-ca-file", str(pki / "ca.crt"),
                "--service-account-key-file", str(pki / "sa.pub"),
                "--service-account-signing-key-file", str(pki / "sa.key"),
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--authorization-mode", "Node,RBAC",
                "--kubelet-preferred-address-types", "InternalIP",
                "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
                "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
                "--allow-privileged=true", "--profiling=false", "--v=1"] + (
                    # Static nodes: no not-ready taint on a new node (the node
                    # lifecycle controller that would lift it is off).
                    ["--disable-admission-plugins=TaintNodesByCondition"]
                    if spec.static_nodes else [])
    kubeconfig = str(d / f"{name}.kubeconfig")
    if name == "kube-controller-manager":
        return [str(b / name), "--kubeconfig", kubeconfig,
                "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
                "--bind-address", "127.0.0.1", "--secure-port", str(p["controller-manager"]),
                "--cluster-name", c.name,
                "--service-account-private-key-file", str(pki / "sa.key"),
                "--root-ca-file", str(pki / "ca.crt"),
                "--cluster-signing-cert-file", str(pki / "ca.crt"),
                "--cluster-signing-key-file", str(pki / "ca.key"),
                "--use-service-account-credentials=true", "--leader-elect=false",
                "--profiling=false", "--v=1"] + (
                    ["--controllers=*,-node-lifecycle-controller"] if spec.static_nodes else [])
    if name == "kube-scheduler":
        return [str(b / name), "--kubeconfig", kubeconfig,
                "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
                "--bind-address", "127.0.0.1", "--secure-port", str(p["scheduler"]),
                "--leader-elect=false", "--profiling=false", "--v=1"]
    if name == "kwok":
        return [str(b / "kwok"), "--kubeconfig", kubeconfig, "--config", str(d / "kwok.yaml"),
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds", "40", "--cidr", "10.244.0.1/16",
                "--node-ip", "10.0.0.1",
                "--server-address", f"127.0.0.1:{p['kwok']}"]
    raise ValueError(name)


def health_url(name: str, c: ClusterSpec) -> str:
    p = c.ports
    return {
        "etcd": f"http://127.0.0.1:{p['etcd']}/health",
        "kube-apiserver": f"https://127.0.0.1:{p['apiserver']}/readyz",
        "kube-controller-manager": f"https://127.0.0.1:{p['controller-manager']}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{p['scheduler']}/healthz",
        "kwok": f"http://127.0.0.1:{p['kwok']}/healthz",
    }[name]


def probe(url: str, pki: Path, timeout: float = 2.0) -> bool:
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.check_hostname = False
        # Self-signed serving certs of kcm/scheduler are not from our CA.
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status == 200
    except Exception:  # Any failure means "not healthy yet".
        return False
