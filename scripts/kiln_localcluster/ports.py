"""Loopback ports for the clusters' components: a registry shared by every
kiln run on the machine, so parallel runs never collide, and liveness checks
of the processes that hold them."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

from .common import ClusterError


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def pid_alive(pid: int) -> bool:
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
                if pid_alive(int(entry.read_text() or "0")):
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
