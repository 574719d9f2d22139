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


class PidRegistry:
    """Numbered resources shared by every kiln run on the machine (ports, the
    real nodes' network slots): a file per claimed number holds its owner's
    pid and is stale once that pid is gone; an flock serialises claims.
    Subclasses say which numbers to try and whether one is free."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _is_free(self, number: int) -> bool:
        raise NotImplementedError

    def _claim(self, candidates, count: int, owner_pid: int, error: str) -> list[int]:
        """Claims `count` numbers from `candidates` for `owner_pid`, all or
        none (ClusterError `error` when too few are available)."""
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken: list[int] = []
            for number in candidates:
                if len(taken) == count:
                    break
                if number in taken or not self._available(number):
                    continue
                (self.root / str(number)).write_text(str(owner_pid))
                taken.append(number)
            if len(taken) < count:
                for number in taken:
                    (self.root / str(number)).unlink(missing_ok=True)
                raise ClusterError(error)
            return taken

    def _available(self, number: int) -> bool:
        entry = self.root / str(number)
        if entry.exists():
            try:
                if pid_alive(int(entry.read_text() or "0")):
                    return False
            except ValueError:
                pass
        return self._is_free(number)

    def release(self, numbers: list[int], owner_pid: int) -> None:
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for number in numbers:
                entry = self.root / str(number)
                try:
                    if entry.read_text() == str(owner_pid):
                        entry.unlink()
                except FileNotFoundError:
                    pass


class PortRegistry(PidRegistry):
    """Reservations of loopback ports shared by every kiln run on the machine.

    A reservation is a file named after the port holding the owner's pid; it is
    stale once that pid is gone. Ports are taken below the ephemeral range, so
    the kernel never hands them to outgoing connections.
    """

    def __init__(self, root: Path | None = None):
        super().__init__(root or Path(os.environ.get("KILN_PORT_REGISTRY")
                                      or Path(tempfile.gettempdir()) / "kiln-ports"))

    def reserve(self, count: int, owner_pid: int) -> list[int]:
        high = min(_ephemeral_start(), 65536) - 1
        low = max(10000, high - 20000)
        candidates = (random.randint(low, high) for _ in range(count * 200))
        return self._claim(candidates, count, owner_pid,
                           f"could not reserve {count} free loopback ports in {low}-{high}")

    def _is_free(self, port: int) -> bool:
        return port_is_free(port)
