"""Where one QEMU machine's files live: its run directory, sockets and logs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


@dataclass
class RunFiles:
    """Where one machine's files live. Sockets sit in the run directory whatever its length.

    sun_path holds 108 bytes and run directories under pytest's or Nova's trees are longer. QEMU
    runs with the run directory as its cwd and gets *relative* socket paths when the absolute ones
    are too long; novamig reaches the same sockets through `/proc/self/fd/<dirfd>/…` (an fd on the
    run directory held open for the machine's life). No socket directory is ever made elsewhere,
    so nothing can be left behind outside the run directory.
    """

    rundir: Path
    console: Path
    qemu_log: Path
    dirfd: int | None = None

    def qemu_path(self, name: str) -> str:
        """The socket path as QEMU (cwd = rundir) is given it."""
        full = str(self.rundir / name)
        return full if len(full) <= _SOCKET_PATH_MAX else name

    def host_path(self, name: str) -> Path:
        """The socket path novamig connects to."""
        full = self.rundir / name
        if len(str(full)) <= _SOCKET_PATH_MAX:
            return full
        if self.dirfd is None:
            self.dirfd = os.open(self.rundir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return Path(f"/proc/self/fd/{self.dirfd}/{name}")

    @property
    def qmp_sock(self) -> Path:
        return self.host_path("qmp.sock")

    @property
    def agent_sock(self) -> Path:
        return self.host_path("agent.sock")

    def close(self) -> None:
        if self.dirfd is not None:
            os.close(self.dirfd)
            self.dirfd = None


def tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
