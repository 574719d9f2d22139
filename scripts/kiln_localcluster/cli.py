"""The commands: up, down, restart, status, env, and the hidden _supervise
that `up` starts in the background."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import __doc__ as package_doc
from .common import COMPONENTS, STOP_GRACE_SECONDS, ClusterError, cache_dir, check_binaries, \
    default_bin_dir, log
from . import containerd, nodeconfig, realnode
from .layout import ClusterSpec, RunSpec
from .ports import pid_alive, port_is_free
from .supervisor import Supervisor

# The entry point, which `up` runs again as the supervisor.
SCRIPT = Path(__file__).resolve().parent.parent / "localcluster.py"


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


def ancestors() -> set[int]:
    """This process and its ancestors: a caller such as `timeout 300
    localcluster.py up --dir D` names D too, and is no leftover."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def leftover_pids(run_dir: Path) -> list[int]:
    """Processes whose command line names the run directory or a path in it."""
    root = str(run_dir.resolve())
    found = []
    mine = ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(mentions_dir(a, root) for a in args) and pid_alive(int(entry.name)):
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
    if not 0 <= args.real_nodes <= 63 or args.real_node_gpus < 0:
        raise ClusterError("--real-nodes must be 0 to 63, --real-node-gpus at least 0")
    if args.real_nodes:
        check_binaries(bin_dir, ("kubelet", "kube-proxy", "coredns"))
        containerd.check_host()
    images = [str(Path(i).resolve()) for i in args.image]
    for image in images:
        if not Path(image).is_file():
            raise ClusterError(f"image archive {image} does not exist\n"
                               f"  fix: build it first (scripts/images.sh writes build/images/*.tar)")
    if images and not args.real_nodes:
        raise ClusterError("--image needs real nodes to import into\n  fix: add --real-nodes N")
    if (run_dir / "state.json").exists():
        state = json.loads((run_dir / "state.json").read_text())
        if pid_alive(state.get("supervisorPid", 0)):
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
    if is_run_dir(run_dir):  # Containers of real nodes from a crashed run, and their cgroups.
        realnode.kill_shims(str(run_dir))
        realnode.kill_cgroup_processes(str(run_dir))
        realnode.remove_socket_dir(str(run_dir))
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
                   bin_dir=str(bin_dir), owner_pid=owner, real_nodes=args.real_nodes,
                   real_node_gpus=args.real_node_gpus, images=images,
                   static_nodes=args.static_nodes)
    (run_dir / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    log(f"starting {args.clusters} cluster(s) with {args.nodes} fake {args.gpus_per_node}-GPU "
        f"node(s) and {args.real_nodes} real node(s) each in {run_dir}")
    with open(run_dir / "supervisor.log", "ab") as out:
        sup = subprocess.Popen([sys.executable, str(SCRIPT), "_supervise",
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
    print(f"tear down:    {os.path.relpath(SCRIPT)} down --dir {run_dir}")
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
    if pid_alive(sup):
        os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 20
        while pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.2)
    for pid in leftover_pids(run_dir):
        log(f"killing leftover process {pid}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # After a crash: containers and shims of real nodes, and their cgroups.
    realnode.kill_shims(str(run_dir))
    realnode.kill_cgroup_processes(str(run_dir))
    realnode.remove_socket_dir(str(run_dir))
    time.sleep(0.2)
    problems = [f"process {pid} still running" for pid in leftover_pids(run_dir)]
    slots = [c.get("slot", -1) for c in state.get("spec", {}).get("clusters", [])]
    problems += realnode.leftovers(str(run_dir), [s for s in slots if s >= 0])
    if pid_alive(sup):
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
    print(f"kiln local control plane in {run_dir} is down; no processes, ports, cgroups, "
          f"network interfaces or mounts left")
    return 0


def cmd_import_image(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    state = read_state(run_dir)
    if state["phase"] != "ready":
        raise ClusterError(f"clusters in {run_dir} are not ready (phase {state['phase']})")
    sockets = []
    for c in state["spec"]["clusters"]:
        if args.cluster and c["name"] != args.cluster:
            continue
        sockets += sorted(nodeconfig.socket_dir(str(run_dir)).glob(f"{c['name']}-real-*/containerd.sock"))
    if not sockets:
        raise ClusterError(f"no real nodes in {run_dir}"
                           + (f" for cluster {args.cluster}" if args.cluster else "")
                           + "\n  fix: start the clusters with up --real-nodes N")
    for archive in args.archives:
        for sock in sockets:
            names = containerd.import_image(sock, Path(archive).resolve())
            print(f"imported {archive} into {sock.parent.name}: {', '.join(names) or '(no names)'}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir).resolve()
    state = read_state(run_dir)
    if state["phase"] != "ready" or not pid_alive(state["supervisorPid"]):
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
        if time.monotonic() > deadline or not pid_alive(state["supervisorPid"]):
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
          f"({'running' if pid_alive(state['supervisorPid']) else 'gone'})")
    if state.get("error"):
        print(f"error: {state['error']}")
    for name, value in state.get("figures", {}).items():
        print(f"figure: {name} {value}")
    for p in state["processes"]:
        print(f"  {p['cluster']:<10} {p['component']:<24} pid {p['pid']:<8} "
              f"{'running' if pid_alive(p['pid']) else 'exited'}")
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
    parser = argparse.ArgumentParser(description=package_doc,
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
    up.add_argument("--real-nodes", type=int, default=0,
                    help="real nodes per cluster (kubelet, containerd, kube-proxy; CoreDNS)")
    up.add_argument("--real-node-gpus", type=int, default=0,
                    help="fake nvidia.com/gpu capacity advertised on each real node")
    up.add_argument("--static-nodes", action="store_true",
                    help="fake nodes with no kwok behind them: Ready once, never heartbeating "
                         "(node lifecycle controller off); pods are bound, never run")
    up.add_argument("--image", action="append", default=[], metavar="ARCHIVE",
                    help="OCI archive to import into every real node (repeatable)")
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

    imp = sub.add_parser("import-image", help="import OCI archives into the real nodes' containerd")
    imp.add_argument("archives", nargs="+", metavar="ARCHIVE")
    imp.add_argument("--dir", default=default_dir)
    imp.add_argument("--cluster", default="", help="only this cluster's nodes (default: all)")
    imp.set_defaults(func=cmd_import_image)

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
