"""What every part of the local control plane shares: the component names,
the error meant for the person running the command, logging, and where the
tools live."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def check_binaries(bin_dir: Path, names: tuple[str, ...] = REQUIRED_BINARIES) -> None:
    missing = [b for b in names if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        kind = "control-plane" if names == REQUIRED_BINARIES else "real-node"
        raise ClusterError(
            f"missing {kind} binaries in {bin_dir}: {', '.join(missing)}\n"
            f"  fix: run scripts/setup.sh (or scripts/build-tools.sh) to build them")
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        raise ClusterError("openssl is required to make the clusters' certificates\n"
                           "  fix: apt-get install openssl (scripts/setup.sh does this)")
