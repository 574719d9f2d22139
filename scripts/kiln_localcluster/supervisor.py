"""The supervisor: one process per run directory that starts every component,
waits until the clusters are ready, restarts a component on request and stops
everything when told to, when its owner exits or when it dies itself
(children carry PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from .common import COMPONENTS, PR_SET_PDEATHSIG, STOP_GRACE_SECONDS, ClusterError, log
from .layout import ClusterSpec, RunSpec, component_argv, health_url, kwok_config, node_manifests, probe
from .nodenet import SlotRegistry, host_ip
from .pki import kubeconfig_yaml, make_pki
from .ports import PortRegistry, pid_alive
from .nodeconfig import COREDNS_READY_PORT_NAME
from .realnode import RealNodes


def _set_pdeathsig() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)


def terminate(procs) -> None:
    """SIGTERM to each process group, then SIGKILL to those still running
    after the grace period (said in the log)."""
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


class Supervisor:
    """Owns every component process of one run directory."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.run_dir = Path(spec.dir)
        self.procs: dict[tuple[str, str], subprocess.Popen] = {}
        self.stopping = False
        self.figures: dict[str, float] = {}  # Timings `status` and the tests print.
        self.real: RealNodes | None = None

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
            "figures": self.figures,
        }
        tmp = self.state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_path())

    def start(self, c: ClusterSpec, name: str) -> None:
        self.start_process(c, name, component_argv(name, c, self.spec))

    def start_process(self, c: ClusterSpec, name: str, argv: list[str]) -> subprocess.Popen:
        """Starts `argv` as component `name` of `c`, logging to logs/NAME.log
        ('/' in NAME becomes '-')."""
        logs = Path(c.dir) / "logs"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{name.replace('/', '-')}.log", "ab")
        env = dict(os.environ, HOME=c.dir)  # Keeps tools away from the user's ~/.kube, ~/.kwok.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=c.dir, env=env,
                                preexec_fn=_set_pdeathsig)
        out.close()
        self.procs[(c.name, name)] = proc
        return proc

    def check_running(self, c: ClusterSpec) -> None:
        """Raises when a component of `c` has exited, with its last log lines."""
        for (cluster, name), proc in self.procs.items():
            if cluster == c.name and proc.poll() is not None:
                log_file = Path(c.dir) / "logs" / f"{name.replace('/', '-')}.log"
                raise ClusterError(f"{name} of cluster {cluster} exited with code "
                                   f"{proc.returncode} while starting; last log lines:\n"
                                   f"{tail(log_file)}")

    def wait_healthy_url(self, url: str, deadline: float) -> bool:
        while not probe(url, Path(self.spec.clusters[0].dir) / "pki"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)
        return True

    def stop_matching(self, wanted) -> None:
        """Stops (SIGTERM, then SIGKILL after the grace period) every running
        component whose name satisfies `wanted`."""
        procs = [p for (_, n), p in self.procs.items() if wanted(n) and p.poll() is None]
        for proc in procs:
            proc.reported = True  # type: ignore[attr-defined]  # An intended exit.
        terminate(procs)

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
                        fake = (n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"
                                or n["metadata"].get("labels", {}).get("type") == "static")
                        if not fake:
                            continue  # A real node; RealNodes waits for those.
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
            # kubectl writes one node at a time (create: one request each;
            # apply would read each first) under its client rate limit, and
            # slower on a busy machine: thousands of nodes take minutes.
            applied = self.kubectl(c, "create", "-f", "-",
                                   stdin=node_manifests(c.name, self.spec),
                                   timeout=max(60.0, self.spec.nodes / 4))
            if applied.returncode != 0:
                raise ClusterError(f"creating fake GPU nodes in {c.name} failed: {applied.stderr}")
        self.wait_cluster_ready(deadline)
        if self.real:
            self.real.bring_up(deadline)

    def stop_one(self, proc: subprocess.Popen) -> None:
        proc.reported = True  # type: ignore[attr-defined]  # An intended exit.
        terminate([proc])

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
        if self.real:
            self.real.stop()
        # In tiers, clients first and etcd last: an apiserver whose etcd is
        # already gone spends its whole grace period retrying shutdown writes.
        for tier in (COMPONENTS[2:], ("kube-apiserver",), ("etcd",)):
            terminate([p for (_, n), p in self.procs.items() if n in tier and p.poll() is None])

    def run(self, timeout: float) -> int:
        registry = PortRegistry()
        reserved: list[int] = []
        slots = SlotRegistry()
        reserved_slots: list[int] = []

        def on_term(signum, frame):  # noqa: ARG001
            self.stopping = True
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_term)
        code = 0
        try:
            names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
            if self.spec.real_nodes:
                names += (COREDNS_READY_PORT_NAME,)
                reserved_slots = slots.reserve(len(self.spec.clusters), os.getpid())
                for c, slot in zip(self.spec.clusters, reserved_slots):
                    c.slot = slot
            reserved = registry.reserve(len(names) * len(self.spec.clusters), os.getpid())
            it = iter(reserved)
            for c in self.spec.clusters:
                c.ports = {n: next(it) for n in names}
                clients = {"apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client"}
                if self.spec.real_nodes:
                    clients.update({f"node-{i}": f"/O=system:nodes/CN=system:node:{c.name}-real-{i}"
                                    for i in range(self.spec.real_nodes)})
                    clients.update({"kube-proxy": "/CN=system:kube-proxy",
                                    "coredns": "/O=system:masters/CN=kiln-coredns"})
                make_pki(Path(c.dir) / "pki", c.name,
                         tuple(host_ip(c.slot, i) for i in range(self.spec.real_nodes)), clients)
                (Path(c.dir) / "kwok.yaml").write_text(kwok_config())
                Path(c.kubeconfig).write_text(
                    kubeconfig_yaml([(c.name, c.server, Path(c.dir) / "pki", "admin")]))
                for comp, user in (("kube-controller-manager", "controller-manager"),
                                   ("kube-scheduler", "scheduler"), ("kwok", "kwok")):
                    (Path(c.dir) / f"{comp}.kubeconfig").write_text(
                        kubeconfig_yaml([(c.name, c.server, Path(c.dir) / "pki", user)]))
                if self.spec.real_nodes:
                    # The admin kubeconfig as pods on the real nodes (of any
                    # cluster of this run) reach this API server: through the
                    # forwarder on its first node's host-side address. For a
                    # MemberCluster's Secret when kiln-operator runs in a pod.
                    Path(c.dir, "pods.kubeconfig").write_text(kubeconfig_yaml([
                        (c.name, f"https://{host_ip(c.slot, 0)}:{c.ports['apiserver']}",
                         Path(c.dir) / "pki", "admin")]))
            (self.run_dir / "kubeconfig").write_text(kubeconfig_yaml(
                [(c.name, c.server, Path(c.dir) / "pki", "admin")
                 for c in self.spec.clusters]))
            if self.spec.real_nodes:
                self.real = RealNodes(self)
                for c in self.spec.clusters:
                    self.real.write_files(c, Path(c.dir) / "pki")
            self.write_state("starting")
            self.bring_up(timeout)
            self.write_state("ready")
            log(f"ready: {len(self.spec.clusters)} cluster(s), supervisor pid {os.getpid()}")
            control = self.run_dir / "control"
            control.mkdir(exist_ok=True)
            while not self.stopping:
                for request in sorted(control.glob("*.json")):
                    self.handle_control(request)
                if self.spec.owner_pid and not pid_alive(self.spec.owner_pid):
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
            slots.release(reserved_slots, os.getpid())
            self.write_state("failed" if code else "stopped",
                             json.loads(self.state_path().read_text()).get("error", "")
                             if self.state_path().exists() else "")
        return code


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
