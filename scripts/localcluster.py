#!/usr/bin/env python3
"""kiln's local multi-cluster Kubernetes control plane, built from real parts.

Each cluster is an etcd, a kube-apiserver (RBAC, client-certificate auth with
certificates made by openssl), a kube-controller-manager, a kube-scheduler and
kwok, which plays the kubelets of fake GPU nodes. All of them run on loopback
under one supervisor process per run directory; the supervisor kills every
component when told to stop, when its owner process exits, or when it dies
itself (children carry PR_SET_PDEATHSIG).

Commands:
  up       start N clusters in DIR, wait until ready, print kubeconfig paths
  down     stop everything started in DIR and verify nothing is left behind
  restart  stop one component, keep it down a while, start it again
  status   show the components of DIR and whether they run
  env      print shell exports for DIR's kubeconfigs

Ports come from below the kernel's ephemeral range and are reserved in a shared
registry under a lock, so parallel runs on one machine never collide.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import fcntl
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field, asdict
from pathlib import Path

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                     "kubectl")
SERVICE_CIDR = "10.96.0.0/16"  # Cluster-internal addresses only; nothing routes there.
STOP_GRACE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


class ClusterError(Exception):
    """A failure with a message meant for the person running the command."""


def log(msg: str) -> None:
    print(f"[localcluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    if os.environ.get("KILN_CACHE_DIR"):
        return Path(os.environ["KILN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln"


def default_bin_dir() -> Path:
    return Path(os.environ.get("KILN_TOOLS_BIN") or cache_dir() / "tools" / "bin")


def check_binaries(bin_dir: Path) -> None:
    missing = [b for b in REQUIRED_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise ClusterError(
            f"missing control-plane binaries in {bin_dir}: {', '.join(missing)}\n"
            f"  fix: run scripts/setup.sh (or scripts/build-tools.sh) to build them")
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        raise ClusterError("openssl is required to make the clusters' certificates\n"
                           "  fix: apt-get install openssl (scripts/setup.sh does this)")


# ----------------------------------------------------------------------------
# Port registry


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortRegistry:
    """Reservations of loopback ports shared by every kiln run on the machine.

    A reservation is a file named after the port holding the owner's pid; it is
    stale once that pid is gone. Ports are taken below the ephemeral range, so
    the kernel never hands them to outgoing connections.
    """

    def __init__(self, root: Path | None = None):
        self.root = root or Path(os.environ.get("KILN_PORT_REGISTRY")
                                 or Path(tempfile.gettempdir()) / "kiln-ports")
        self.root.mkdir(parents=True, exist_ok=True)

    def reserve(self, count: int, owner_pid: int) -> list[int]:
        high = min(_ephemeral_start(), 65536) - 1
        low = max(10000, high - 20000)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken: list[int] = []
            for _ in range(count * 200):
                if len(taken) == count:
                    break
                port = random.randint(low, high)
                if port in taken or not self._available(port):
                    continue
                (self.root / str(port)).write_text(str(owner_pid))
                taken.append(port)
            if len(taken) < count:
                for port in taken:
                    (self.root / str(port)).unlink(missing_ok=True)
                raise ClusterError(f"could not reserve {count} free loopback ports in {low}-{high}")
            return taken

    def _available(self, port: int) -> bool:
        entry = self.root / str(port)
        if entry.exists():
            try:
                if _pid_alive(int(entry.read_text() or "0")):
                    return False
            except ValueError:
                pass
        return port_is_free(port)

    def release(self, ports: list[int], owner_pid: int) -> None:
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for port in ports:
                entry = self.root / str(port)
                try:
                    if entry.read_text() == str(owner_pid):
                        entry.unlink()
                except FileNotFoundError:
                    pass


# ----------------------------------------------------------------------------
# Certificates and kubeconfigs


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def make_pki(pki: Path, cluster: str) -> None:
    """A CA per cluster, the apiserver's serving cert and one client cert per user."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", f"/CN=kiln-local-ca-{cluster}", cwd=pki)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    leaves = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth",
                      "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                      "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,"
                      "IP:127.0.0.1,IP:10.96.0.1"),
        "admin": ("/O=system:masters/CN=kiln-admin", "clientAuth", None),
        "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", None),
        "scheduler": ("/CN=system:kube-scheduler", "clientAuth", None),
        "kwok": ("/O=system:masters/CN=kiln-kwok", "clientAuth", None),
    }
    for name, (subject, usage, sans) in leaves.items():
        ext = pki / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append(f"subjectAltName={sans}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-set_serial", str(random.getrandbits(63)), "-days", "365",
                 "-extfile", ext.name, "-out", f"{name}.crt", cwd=pki)
        (pki / f"{name}.csr").unlink()
        ext.unlink()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_yaml(entries: list[tuple[str, str, Path, str]]) -> str:
    """entries: (context name, server URL, pki dir, user cert name)."""
    clusters, users, contexts = [], [], []
    for name, server, pki, user in entries:
        clusters.append(f"- name: {name}\n  cluster:\n    server: {server}\n"
                        f"    certificate-authority-data: {_b64(pki / 'ca.crt')}\n")
        users.append(f"- name: {name}-{user}\n  user:\n"
                     f"    client-certificate-data: {_b64(pki / (user + '.crt'))}\n"
                     f"    client-key-data: {_b64(pki / (user + '.key'))}\n")
        contexts.append(f"- name: {name}\n  context:\n    cluster: {name}\n"
                        f"    user: {name}-{user}\n")
    return ("apiVersion: v1\nkind: Config\n"
            f"current-context: {entries[0][0]}\n"
            "clusters:\n" + "".join(clusters) + "users:\n" + "".join(users) +
            "contexts:\n" + "".join(contexts) + "preferences: {}\n")


# ----------------------------------------------------------------------------
# Cluster layout


@dataclass
class ClusterSpec:
    name: str
    dir: str
    ports: dict[str, int] = field(default_factory=dict)

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


def node_manifests(cluster: str, spec: RunSpec) -> str:
    docs = []
    gpu_memory_mib = 81559 if "H100" in spec.gpu_product else 143771
    for i in range(spec.nodes):
        # Contiguous blocks of nodes per zone, so racks and NVLink domains stay in one zone.
        zone = f"{cluster}-zone-{chr(ord('a') + i * spec.zones // spec.nodes)}"
        labels = {
            "type": "kwok",
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
        docs.append({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"{cluster}-gpu-{i}",
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake",
                                "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {},
            "status": {"capacity": resources, "allocatable": resources},
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
        return [str(b / "kube-apiserver"),
                "--etcd-servers", f"http://127.0.0.1:{p['etcd']}",
                "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
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
                "--allow-privileged=true", "--profiling=false", "--v=1"]
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
                "--profiling=false", "--v=1"]
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


# ----------------------------------------------------------------------------
# The supervisor


def _set_pdeathsig() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)


class Supervisor:
    """Owns every component process of one run directory."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.run_dir = Path(spec.dir)
        self.procs: dict[tuple[str, str], subprocess.Popen] = {}
        self.stopping = False

    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    def write_state(self, phase: str, error: str = "") -> None:
        state = {
            "phase": phase,
            "error": error,
            "supervisorPid": os.getpid(),
            "spec": asdict(self.spec),
            "processes": [{"cluster": c, "component": n, "pid": p.pid}
                          for (c, n), p in self.procs.items()],
        }
        tmp = self.state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_path())

    def start(self, c: ClusterSpec, name: str) -> None:
        logs = Path(c.dir) / "logs"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{name}.log", "ab")
        env = dict(os.environ, HOME=c.dir)  # Keeps tools away from the user's ~/.kube, ~/.kwok.
        self.procs[(c.name, name)] = subprocess.Popen(
            component_argv(name, c, self.spec), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, cwd=c.dir, env=env, preexec_fn=_set_pdeathsig)
        out.close()

    def wait_healthy(self, names: tuple[str, ...], deadline: float,
                     clusters: list[ClusterSpec] | None = None) -> None:
        pending = {(c.name, n) for c in (clusters or self.spec.clusters) for n in names}
        by_name = {c.name: c for c in self.spec.clusters}
        while pending:
            for key in sorted(pending):
                cluster, name = key
                proc = self.procs[key]
                if proc.poll() is not None:
                    raise ClusterError(
                        f"{name} of cluster {cluster} exited with code {proc.returncode} while "
                        f"starting; last log lines:\n{tail(Path(by_name[cluster].dir) / 'logs' / (name + '.log'))}")
                if probe(health_url(name, by_name[cluster]), Path(by_name[cluster].dir) / "pki"):
                    pending.discard(key)
            if pending and time.monotonic() > deadline:
                raise ClusterError("timed out waiting for " + ", ".join(
                    f"{n} of {c}" for c, n in sorted(pending)) + " to become healthy")
            if pending:
                time.sleep(0.25)

    def kubectl(self, c: ClusterSpec, *args: str, stdin: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(self.spec.bin_dir, "kubectl"),
                               "--kubeconfig", c.kubeconfig, *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def wait_cluster_ready(self, deadline: float) -> None:
        for c in self.spec.clusters:
            while True:
                nodes = self.kubectl(c, "get", "nodes", "-o", "json")
                sa = self.kubectl(c, "get", "serviceaccount", "default", "-n", "default")
                ready = 0
                if nodes.returncode == 0:
                    for n in json.loads(nodes.stdout)["items"]:
                        conds = n.get("status", {}).get("conditions", [])
                        ready += any(x["type"] == "Ready" and x["status"] == "True" for x in conds)
                if ready == self.spec.nodes and sa.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"cluster {c.name}: {ready}/{self.spec.nodes} nodes Ready, "
                                       f"default ServiceAccount {'present' if sa.returncode == 0 else 'missing'}"
                                       f" when the timeout passed")
                time.sleep(0.5)

    def bring_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for c in self.spec.clusters:
            self.start(c, "etcd")
        self.wait_healthy(("etcd",), deadline)
        for c in self.spec.clusters:
            self.start(c, "kube-apiserver")
        self.wait_healthy(("kube-apiserver",), deadline)
        for c in self.spec.clusters:
            for name in COMPONENTS[2:]:
                self.start(c, name)
        self.write_state("starting")
        self.wait_healthy(COMPONENTS[2:], deadline)
        for c in self.spec.clusters:
            applied = self.kubectl(c, "apply", "-f", "-",
                                   stdin=node_manifests(c.name, self.spec))
            if applied.returncode != 0:
                raise ClusterError(f"creating fake GPU nodes in {c.name} failed: {applied.stderr}")
        self.wait_cluster_ready(deadline)

    def stop_one(self, proc: subprocess.Popen) -> None:
        proc.reported = True  # type: ignore[attr-defined]  # An intended exit.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def handle_control(self, request: Path) -> None:
        """Restarts one component as asked by `localcluster.py restart`."""
        result = {"ok": True, "error": ""}
        try:
            data = json.loads(request.read_text())
            request.unlink()
            by_name = {c.name: c for c in self.spec.clusters}
            cluster, name = by_name.get(data["cluster"]), data["component"]
            if cluster is None or (cluster.name, name) not in self.procs:
                raise ClusterError(f"no component {name} in cluster {data['cluster']}")
            log(f"restarting {name} of {cluster.name} (down {data['down_seconds']}s)")
            self.stop_one(self.procs[(cluster.name, name)])
            time.sleep(float(data["down_seconds"]))
            self.start(cluster, name)
            self.wait_healthy((name,), time.monotonic() + 120, [cluster])
            self.write_state("ready")
        except (ClusterError, KeyError, ValueError, OSError) as e:
            result = {"ok": False, "error": str(e)}
        request.with_suffix(".done").write_text(json.dumps(result))

    def stop_all(self) -> None:
        # In tiers, clients first and etcd last: an apiserver whose etcd is
        # already gone spends its whole grace period retrying shutdown writes.
        for tier in (COMPONENTS[2:], ("kube-apiserver",), ("etcd",)):
            procs = [p for (_, n), p in self.procs.items() if n in tier and p.poll() is None]
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log(f"pid {proc.pid} ignored SIGTERM for {STOP_GRACE_SECONDS:.0f}s; killing it")
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()

    def run(self, timeout: float) -> int:
        registry = PortRegistry()
        reserved: list[int] = []

        def on_term(signum, frame):  # noqa: ARG001
            self.stopping = True
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_term)
        code = 0
        try:
            names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
            reserved = registry.reserve(len(names) * len(self.spec.clusters), os.getpid())
            it = iter(reserved)
            for c in self.spec.clusters:
                c.ports = {n: next(it) for n in names}
                make_pki(Path(c.dir) / "pki", c.name)
                (Path(c.dir) / "kwok.yaml").write_text(kwok_config())
                Path(c.kubeconfig).write_text(
                    kubeconfig_yaml([(c.name, c.server, Path(c.dir) / "pki", "admin")]))
                for comp, user in (("kube-controller-manager", "controller-manager"),
                                   ("kube-scheduler", "scheduler"), ("kwok", "kwok")):
                    (Path(c.dir) / f"{comp}.kubeconfig").write_text(
                        kubeconfig_yaml([(c.name, c.server, Path(c.dir) / "pki", user)]))
            (self.run_dir / "kubeconfig").write_text(kubeconfig_yaml(
                [(c.name, c.server, Path(c.dir) / "pki", "admin")
                 for c in self.spec.clusters]))
            self.write_state("starting")
            self.bring_up(timeout)
            self.write_state("ready")
            log(f"ready: {len(self.spec.clusters)} cluster(s), supervisor pid {os.getpid()}")
            control = self.run_dir / "control"
            control.mkdir(exist_ok=True)
            while not self.stopping:
                for request in sorted(control.glob("*.json")):
                    self.handle_control(request)
                if self.spec.owner_pid and not _pid_alive(self.spec.owner_pid):
                    log(f"owner process {self.spec.owner_pid} is gone; tearing down")
                    break
                for (cluster, name), proc in self.procs.items():
                    if proc.poll() is not None and not getattr(proc, "reported", False):
                        proc.reported = True  # type: ignore[attr-defined]
                        log(f"{name} of {cluster} exited with code {proc.returncode}")
                time.sleep(0.5)
        except ClusterError as e:
            log(f"error: {e}")
            self.write_state("failed", str(e))
            code = 1
        except Exception as e:  # Report anything unexpected to the waiting `up`.
            log(f"error: {e!r}")
            self.write_state("failed", repr(e))
            code = 1
        finally:
            self.stop_all()
            registry.release(reserved, os.getpid())
            self.write_state("failed" if code else "stopped",
                             json.loads(self.state_path().read_text()).get("error", "")
                             if self.state_path().exists() else "")
        return code


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------
# Commands


def read_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except FileNotFoundError:
        raise ClusterError(f"no local clusters in {run_dir} (state.json missing)")


def mentions_dir(arg: str, run_dir: str) -> bool:
    """True when a command-line argument names `run_dir` or a path inside it
    (as a whole path, so /x/lc does not match /x/lc-other), possibly after
    an '='."""
    for value in (arg, arg.split("=", 1)[-1]):
        if value == run_dir or value.startswith(run_dir + "/"):
            return True
    return False


def leftover_pids(run_dir: Path) -> list[int]:
    """Processes whose command line names the run directory or a path in it."""
    root = str(run_dir.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(mentions_dir(a, root) for a in args) and _pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


RUN_DIR_MARKER = ".kiln-localcluster"


def is_run_dir(path: Path) -> bool:
    """True for a directory this script made: the marker is written first, so
    even a run killed half-way through setting up is recognised."""
    return (path / RUN_DIR_MARKER).is_file() or (path / "spec.json").is_file()


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    bin_dir = Path(args.bin_dir).resolve()
    check_binaries(bin_dir)
    if args.clusters < 1 or args.nodes < 1 or args.gpus_per_node < 0:
        raise ClusterError("--clusters and --nodes must be at least 1, --gpus-per-node at least 0")
    if (run_dir / "state.json").exists():
        state = json.loads((run_dir / "state.json").read_text())
        if _pid_alive(state.get("supervisorPid", 0)):
            raise ClusterError(f"clusters are already running in {run_dir} "
                               f"(supervisor pid {state['supervisorPid']})\n"
                               f"  fix: scripts/localcluster.py down --dir {run_dir}")
    stale = leftover_pids(run_dir)
    if stale:
        log(f"killing {len(stale)} stale process(es) from an earlier run in {run_dir}")
        for pid in stale:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if run_dir.exists() and any(run_dir.iterdir()):
        if not is_run_dir(run_dir):
            raise ClusterError(f"{run_dir} is not empty and is not a kiln run directory; "
                               f"refusing to replace it\n  fix: pass an empty or new --dir")
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_DIR_MARKER).write_text("made by scripts/localcluster.py\n")
    owner = 0
    if args.owner_pid == "parent":
        owner = os.getppid()
    elif args.owner_pid:
        owner = int(args.owner_pid)
    clusters = []
    for i in range(args.clusters):
        name = f"{args.name_prefix}{i + 1}"
        (run_dir / name).mkdir()
        clusters.append(ClusterSpec(name=name, dir=str(run_dir / name)))
    spec = RunSpec(dir=str(run_dir), clusters=clusters, nodes=args.nodes,
                   gpus_per_node=args.gpus_per_node, gpu_product=args.gpu_product,
                   nodes_per_nvlink_domain=args.nodes_per_nvlink_domain,
                   nodes_per_rack=args.nodes_per_rack, zones=args.zones,
                   bin_dir=str(bin_dir), owner_pid=owner)
    (run_dir / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    log(f"starting {args.clusters} cluster(s) with {args.nodes} fake {args.gpus_per_node}-GPU "
        f"node(s) each in {run_dir}")
    with open(run_dir / "supervisor.log", "ab") as out:
        sup = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_supervise",
                                "--dir", str(run_dir), "--timeout", str(args.timeout)],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + args.timeout + 30
    while True:
        phase, error = "starting", ""
        if (run_dir / "state.json").exists():
            state = json.loads((run_dir / "state.json").read_text())
            phase, error = state["phase"], state.get("error", "")
        if phase == "ready":
            break
        if phase in ("failed", "stopped") or sup.poll() is not None:
            sup.wait()
            raise ClusterError(f"local clusters failed to start: {error or 'supervisor exited'}\n"
                               f"  logs: {run_dir}/*/logs and {run_dir}/supervisor.log")
        if time.monotonic() > deadline:
            os.kill(sup.pid, signal.SIGTERM)
            raise ClusterError("timed out waiting for the supervisor")
        time.sleep(0.3)
    print(f"kiln local control plane is up: {args.clusters} cluster(s) in {run_dir}")
    for c in clusters:
        print(f"  {c.name}: {c.kubeconfig}")
    print(f"all contexts: export KUBECONFIG={run_dir}/kubeconfig")
    print(f"kubectl:      {bin_dir}/kubectl --context {clusters[0].name} get nodes")
    print(f"tear down:    {os.path.relpath(__file__)} down --dir {run_dir}")
    return 0


def cmd_supervise(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir)
    raw = json.loads((run_dir / "spec.json").read_text())
    raw["clusters"] = [ClusterSpec(**c) for c in raw["clusters"]]
    return Supervisor(RunSpec(**raw)).run(args.timeout)


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    if not run_dir.exists():
        log(f"nothing to tear down: {run_dir} does not exist")
        return 0
    if not is_run_dir(run_dir):
        raise ClusterError(f"{run_dir} is not a kiln run directory; not touching it")
    state = {}
    try:
        state = read_state(run_dir)
    except ClusterError:
        pass
    sup = state.get("supervisorPid", 0)
    if _pid_alive(sup):
        os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 20
        while _pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.2)
    for pid in leftover_pids(run_dir):
        log(f"killing leftover process {pid}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    problems = [f"process {pid} still running" for pid in leftover_pids(run_dir)]
    if _pid_alive(sup):
        problems.append(f"supervisor {sup} still running")
    for c in state.get("spec", {}).get("clusters", []):
        for name, port in c.get("ports", {}).items():
            if not port_is_free(port):
                problems.append(f"port {port} ({c['name']} {name}) still in use")
    if problems:
        for p in problems:
            log(f"teardown incomplete: {p}")
        return 1
    if not args.keep:
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    print(f"kiln local control plane in {run_dir} is down; no processes or ports left")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    state = read_state(run_dir)
    if state["phase"] != "ready" or not _pid_alive(state["supervisorPid"]):
        raise ClusterError(f"clusters in {run_dir} are not running (phase {state['phase']})")
    if args.component not in COMPONENTS:
        raise ClusterError(f"unknown component {args.component}; one of: {', '.join(COMPONENTS)}")
    request = run_dir / "control" / f"{os.getpid()}-{time.time_ns()}.json"
    tmp = request.with_suffix(".tmp")
    tmp.write_text(json.dumps({"cluster": args.cluster, "component": args.component,
                               "down_seconds": args.down_seconds}))
    os.replace(tmp, request)
    done = request.with_suffix(".done")
    deadline = time.monotonic() + args.down_seconds + 180
    while not done.exists():
        if time.monotonic() > deadline or not _pid_alive(state["supervisorPid"]):
            raise ClusterError(f"restart of {args.component} in {args.cluster} did not finish")
        time.sleep(0.1)
    result = json.loads(done.read_text())
    done.unlink()
    if not result["ok"]:
        raise ClusterError(f"restart failed: {result['error']}")
    print(f"restarted {args.component} of {args.cluster}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    state = read_state(run_dir)
    print(f"phase: {state['phase']}  supervisor: {state['supervisorPid']} "
          f"({'running' if _pid_alive(state['supervisorPid']) else 'gone'})")
    if state.get("error"):
        print(f"error: {state['error']}")
    for p in state["processes"]:
        print(f"  {p['cluster']:<10} {p['component']:<24} pid {p['pid']:<8} "
              f"{'running' if _pid_alive(p['pid']) else 'exited'}")
    return 0 if state["phase"] == "ready" else 1


def cmd_env(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    state = read_state(run_dir)
    print(f"export KUBECONFIG={run_dir}/kubeconfig")
    for c in state["spec"]["clusters"]:
        var = "KILN_KUBECONFIG_" + c["name"].upper().replace("-", "_")
        print(f"export {var}={c['dir']}/kubeconfig")
    print(f"export PATH={state['spec']['bin_dir']}:$PATH")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default_dir = str(cache_dir() / "localcluster")

    up = sub.add_parser("up", help="start clusters and wait until they are ready")
    up.add_argument("--dir", default=default_dir, help="run directory (default: %(default)s)")
    up.add_argument("--clusters", type=int, default=2)
    up.add_argument("--nodes", type=int, default=4, help="fake GPU nodes per cluster")
    up.add_argument("--gpus-per-node", type=int, default=8)
    up.add_argument("--gpu-product", default="NVIDIA-H100-80GB-HBM3")
    up.add_argument("--nodes-per-nvlink-domain", type=int, default=2)
    up.add_argument("--nodes-per-rack", type=int, default=2)
    up.add_argument("--zones", type=int, default=2)
    up.add_argument("--name-prefix", default="kiln-", help="clusters are named PREFIX1..PREFIXN")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    up.add_argument("--owner-pid", default="",
                    help="tear down when this pid exits; 'parent' means the caller of up")
    up.add_argument("--bin-dir", default=str(default_bin_dir()))
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop everything in the run directory")
    down.add_argument("--dir", default=default_dir)
    down.add_argument("--keep", action="store_true", help="keep the directory (logs) after stopping")
    down.set_defaults(func=cmd_down)

    restart = sub.add_parser("restart", help="stop one component, wait, start it, wait until healthy")
    restart.add_argument("--dir", default=default_dir)
    restart.add_argument("--cluster", required=True)
    restart.add_argument("--component", required=True, choices=COMPONENTS)
    restart.add_argument("--down-seconds", type=float, default=0.0,
                         help="how long the component stays down")
    restart.set_defaults(func=cmd_restart)

    status = sub.add_parser("status", help="show the components and whether they run")
    status.add_argument("--dir", default=default_dir)
    status.set_defaults(func=cmd_status)

    env = sub.add_parser("env", help="print shell exports for the kubeconfigs")
    env.add_argument("--dir", default=default_dir)
    env.set_defaults(func=cmd_env)

    supervise = sub.add_parser("_supervise", help=argparse.SUPPRESS)
    supervise.add_argument("--dir", required=True)
    supervise.add_argument("--timeout", type=float, default=300.0)
    supervise.set_defaults(func=cmd_supervise)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ClusterError as e:
        print(f"localcluster: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        # The reader went away (e.g. `status | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
