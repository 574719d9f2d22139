"""The real nodes' cgroups (v1 hierarchies): a root per node, made before
its kubelet starts, and their removal at teardown, killing what runs in
them first."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .nodeconfig import run_id

CGROUP_FS = Path("/sys/fs/cgroup")


def cgroup_hierarchies() -> list[Path]:
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and os.path.ismount(p))


def make_cgroup_root(name: str) -> None:
    for h in cgroup_hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if h.name == "cpuset":  # A v1 cpuset child starts with no CPUs or memory nodes.
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((h / f).read_text())


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
