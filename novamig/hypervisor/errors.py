"""Errors of the hypervisor layer.

Each error carries what a person needs to find the cause without re-running: the QEMU command line,
the tail of QEMU's own log and of the guest console, and for QMP the command sent and the reply. A
launch failure that only says "QEMU exited" costs an hour; one that shows the bad option costs a
minute.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any


class HypervisorError(Exception):
    """Base class for everything raised by `novamig.hypervisor`."""


class QemuError(HypervisorError):
    """A QEMU process misbehaved; carries its command line and log tails."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        qemu_log: str = "",
        console_log: str = "",
        exit_code: int | None = None,
    ) -> None:
        self.message = message
        self.argv = list(argv)
        self.qemu_log = qemu_log
        self.console_log = console_log
        self.exit_code = exit_code
        super().__init__(self._render())

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def _render(self) -> str:
        parts = [self.message]
        if self.exit_code is not None:
            parts.append(f"exit code: {self.exit_code}")
        if self.argv:
            parts.append(f"command line: {self.command_line}")
        if self.qemu_log.strip():
            parts.append("QEMU log (tail):\n" + _indent(self.qemu_log))
        if self.console_log.strip():
            parts.append("guest console (tail):\n" + _indent(self.console_log))
        return "\n".join(parts)


class QemuLaunchError(QemuError):
    """QEMU did not start: exited early, or its QMP socket never appeared."""


class QemuShutdownError(QemuError):
    """QEMU could not be stopped even with SIGKILL (should not happen; reported, not hidden)."""


class GuestBootError(QemuError):
    """QEMU runs but the guest agent did not report READY in time."""


class QmpCommandError(HypervisorError):
    """A QMP command failed or timed out; carries the command, its arguments and the reply."""

    def __init__(
        self, machine: str, command: str, arguments: dict[str, Any] | None, reply: object, reason: str
    ) -> None:
        self.machine = machine
        self.command = command
        self.arguments = arguments
        self.reply = reply
        self.reason = reason
        super().__init__(
            f"{machine}: QMP {command} {arguments or {}} failed: {reason}"
            + (f"; reply: {reply!r}" if reply is not None else "")
        )


class AgentError(HypervisorError):
    """The guest agent channel failed: not connected, timed out, or replied with an error."""


class AgentTimeout(AgentError):
    """No reply (or no READY) from the guest agent within the deadline."""


class NetworkError(HypervisorError):
    """Creating or tearing down the guest network namespace failed; carries the command and output."""

    def __init__(self, message: str, argv: Sequence[str] = (), output: str = "") -> None:
        self.argv = list(argv)
        self.output = output
        detail = f"\ncommand: {shlex.join(self.argv)}" if self.argv else ""
        if output.strip():
            detail += "\noutput:\n" + _indent(output)
        super().__init__(message + detail)


class MachineUnusable(HypervisorError):
    """This machine cannot run novamig guests at all (no QEMU, no accelerator that boots)."""


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())
