"""The QEMU guests of the cloud process, shared by every compute host's driver instance.

All computes run in one process, so a live migration's destination QEMU (started by the
destination host's driver in ``pre_live_migration``) is handed to the source host's driver through
this registry. Each guest's PID is also written to ``guests/<host>/<uuid>.pid`` so that
``EmbeddedCloud.stop`` can end a guest even if this process died without cleaning up.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Guest:
    uuid: str
    host: str
    machine: Any  # novamig.hypervisor.machine.QemuMachine
    pid_file: Path
    paused: bool = False
    suspended: bool = False  # vCPUs stopped by suspend (the tiny guest has no disk to save to)
    powered_off: bool = False  # QEMU ended by power_off; the server still exists (SHUTOFF)
    # (command sent, command returned) host CLOCK_MONOTONIC ns of the last pause's QMP stop
    pause_started: tuple[int, int] | None = None
    # Console output of the QEMUs this guest ran in before (live migrations), as a libvirt host's
    # console.log on shared storage keeps it.
    console_history: str = ""
    # Per-migration figures of the hypervisor layer (MigrationResult.to_dict()), newest last.
    migrations: list[dict[str, Any]] = field(default_factory=list)


CONSOLE_LIMIT = 64 * 1024


def console_text(guest: Guest) -> str:
    """The guest's whole console (across live migrations), last ``CONSOLE_LIMIT`` characters."""
    text = guest.console_history + str(guest.machine.console_log(CONSOLE_LIMIT))
    return text[-CONSOLE_LIMIT:]


class GuestRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guests: dict[tuple[str, str], Guest] = {}

    def add(self, guest: Guest) -> None:
        pid = guest.machine.pid
        guest.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if pid is not None:
            guest.pid_file.write_text(f"{pid}\n")
        with self._lock:
            self._guests[(guest.host, guest.uuid)] = guest

    def get(self, host: str, uuid: str) -> Guest | None:
        with self._lock:
            return self._guests.get((host, uuid))

    def pop(self, host: str, uuid: str) -> Guest | None:
        with self._lock:
            guest = self._guests.pop((host, uuid), None)
        if guest is not None:
            with contextlib.suppress(FileNotFoundError):
                guest.pid_file.unlink()
        return guest

    def on_host(self, host: str) -> list[Guest]:
        with self._lock:
            return [g for (h, _), g in self._guests.items() if h == host]


REGISTRY = GuestRegistry()
