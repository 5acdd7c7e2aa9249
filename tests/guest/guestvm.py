"""Compatibility shim, not a QEMU runner any more.

The guest image and agent tests and bench/guest_image.py run their guests on novamig's hypervisor
layer (`QemuMachine`, its `AgentChannel`, `UserModeNetwork`, `migrate`). This module keeps the three
names tests/guest/test_full_image.py still imports from it, each a thin wrapper over the hypervisor
layer or the standard library; remove it once that test no longer imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from novamig.guest.protocol import Ready
from novamig.hypervisor import AgentChannel as _HypervisorAgentChannel
from novamig.hypervisor import AgentTimeout


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentChannel(_HypervisorAgentChannel):
    """The hypervisor's agent channel, connected on construction; `wait_ready` raises the
    standard TimeoutError / ConnectionError the old runner raised."""

    def __init__(self, path: Path, name: str | None = None, connect_timeout: float = 30.0) -> None:
        super().__init__(Path(path), name or Path(path).parent.name)
        self.connect(timeout=connect_timeout)

    def wait_ready(self, timeout: float = 60) -> Ready:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return super().wait_ready(max(0.0, min(0.2, deadline - time.monotonic())))
            except AgentTimeout:
                if self.closed_host_ns is not None:
                    raise ConnectionError("agent channel closed before READY") from None
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no READY within {timeout} s") from None


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """End a QEMU started by the caller: SIGTERM to its process group, then SIGKILL; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
