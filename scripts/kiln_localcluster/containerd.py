"""containerd for a real node: its config (root, socket, CRI plugin with runc
and the CNI bridge under the node's folder), the pause image (a static C
program built here, since no registry is reachable) and image import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .common import ClusterError
from .ociimage import write_archive

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
# Debian's runc 1.1.5 (package runc 1.1.5+ds1-1+deb12u1) and containernetworking-plugins
# 1.1.1; the variables point elsewhere (the setup-error tests use them).
RUNC = os.environ.get("KILN_RUNC", "/usr/sbin/runc")
CNI_BIN_DIR = os.environ.get("KILN_CNI_BIN_DIR", "/usr/lib/cni")
PAUSE_SOURCE = Path(__file__).resolve().parents[2] / "tools" / "pause" / "pause.c"


def check_host() -> None:
    """Fails with what is missing and how to get it when this machine cannot
    run real nodes."""
    missing = []
    if not shutil.which("containerd") or not shutil.which("ctr"):
        missing.append(("containerd (and ctr)", "containerd"))
    if not Path(RUNC).is_file():
        missing.append((f"runc ({RUNC})", "runc"))
    if not all((Path(CNI_BIN_DIR) / p).is_file()
               for p in ("bridge", "host-local", "loopback", "portmap")):
        missing.append((f"the CNI plugins bridge, host-local, loopback and portmap in {CNI_BIN_DIR}",
                        "containernetworking-plugins"))
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2"),
                          ("iptables", "iptables"), ("gcc", "build-essential")):
        if not shutil.which(tool):
            missing.append((tool, package))
    if os.geteuid() != 0:
        raise ClusterError("real nodes need root (network and mount namespaces, cgroups, "
                           "containerd)\n  fix: run localcluster.py as root, or without --real-nodes")
    if not Path("/proc/sys/net/bridge").is_dir():
        missing.append(("the br_netfilter kernel module (Services answering from the same node)",
                        "kmod"))
    if missing:
        raise ClusterError(
            "real nodes need: " + "; ".join(what for what, _ in missing) + " (not found)\n"
            "  fix: apt-get install " + " ".join(sorted({p for _, p in missing}))
            + " (scripts/setup.sh does this)"
            + ("; modprobe br_netfilter" if any(p == "kmod" for _, p in missing) else ""))


def config_toml(node_dir: Path, socket: Path) -> str:
    """containerd's config: everything it writes under `node_dir`, except its
    state, which lives on the node's private /run, and its sockets."""
    d = node_dir
    return f"""version = 2
root = "{d}/containerd/root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine refuses a negative oom_score_adj; without this every sandbox
  # fails in runc init.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni"
"""


def cni_conflist(node_dir: Path, subnet: str, gateway: str) -> str:
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "kiln-pods",
        "plugins": [
            {"type": "bridge", "bridge": "kiln0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(node_dir / "cni-ipam"),
                      "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=1)


def ctr(socket: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
                          capture_output=True, text=True, timeout=timeout)


def wait_ready(socket: Path, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise ClusterError(f"containerd exited with code {proc.returncode} while starting; "
                               f"see {log}")
        if socket.exists() and ctr(socket, "version", timeout=10).returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"containerd did not answer on {socket} in time; see {log}")
        time.sleep(0.2)


def import_image(socket: Path, archive: Path) -> list[str]:
    """Imports an OCI (or docker) archive into the node's k8s.io namespace;
    returns the image names it holds."""
    if not archive.is_file():
        raise ClusterError(f"image archive {archive} does not exist\n"
                           f"  fix: build it first (scripts/images.sh writes build/images/*.tar)")
    done = ctr(socket, "images", "import", "--all-platforms", str(archive), timeout=600)
    if done.returncode != 0:
        raise ClusterError(f"importing {archive} into {socket.parent.name} failed: "
                           f"{done.stderr.strip() or done.stdout.strip()}\n"
                           f"  fix: check that {archive} is an OCI or docker image archive "
                           f"(tar of an image layout with index.json)")
    names = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("unpacking")]
    unnamed = [n for n in names if n.startswith("import-")]
    if unnamed:
        # ctr's name for an image whose archive gives only a tag.
        raise ClusterError(f"{archive} names its image only by a tag, so containerd called it "
                           f"{unnamed[0]}; pods could not refer to it\n"
                           f"  fix: write the full reference (e.g. ghcr.io/kiln-dev/kiln-worker:0.1.0) "
                           f"into the index's org.opencontainers.image.ref.name annotation "
                           f"(skopeo copy ... oci-archive:FILE:REFERENCE does)")
    return names


def pause_archive(work: Path) -> Path:
    """Builds the static pause program and its image archive in `work`."""
    binary, archive = work / "pause", work / "pause.tar"
    if not archive.exists():
        work.mkdir(parents=True, exist_ok=True)
        built = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(PAUSE_SOURCE)],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise ClusterError(f"building the pause program failed: {built.stderr.strip()}\n"
                               f"  fix: apt-get install build-essential (static glibc: libc6-dev)")
        write_archive(archive, PAUSE_IMAGE, {"/pause": binary}, ["/pause"], user="65535")
    return archive
