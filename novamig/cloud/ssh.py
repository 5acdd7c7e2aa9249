"""One SSH call to a compute host, shared by everything that reaches DevStack hosts over SSH.

The host policy (`host_policy.SshHostPolicy`) and the hypervisor figure on DevStack (the probe
`novamig.measure.libvirt_jobstats.LibvirtJobFigures`) both run one remote command per call on the
hosts named in the ``NOVAMIG_SSH_HOSTS`` file. The options live here once so that both behave
alike: key-based only (``BatchMode=yes``: a password prompt would hang a run, so it fails instead),
a bounded connect (``ConnectTimeout``) and a bounded whole call (``timeout_s``), and one error type
for every way the call can fail, so callers that must not raise (probes) catch one thing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

CONNECT_TIMEOUT_S = 15
"""ssh's own connect timeout (whole seconds): an unreachable host fails in seconds, not minutes."""


class SshError(RuntimeError):
    """The remote command could not be run or exited non-zero. The message names the target and the
    command (never stdin, which may carry a configuration file) and quotes up to 300 characters of
    stderr."""


def run_ssh(target: str, command: str, *, stdin: str | None = None, timeout_s: float = 60.0) -> str:
    """Run `command` on `target` (``user@address``) through the local ``ssh``; its stdout.

    Raises `SshError` on a non-zero exit, on `timeout_s` passing (the process is killed), and when
    ``ssh`` cannot be started at all.
    """
    try:
        result = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", target, command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SshError(f"ssh {target}: {command!r} timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise SshError(f"ssh {target}: cannot run ssh: {exc.strerror or exc}") from None
    if result.returncode != 0:
        raise SshError(f"ssh {target}: {command!r} failed: {result.stderr.strip()[:300]}")
    return result.stdout


class HostSsh:
    """`run_ssh` addressed by Nova compute host name: `targets` maps host names to ssh destinations
    (the hosts file). A host that is not in it is an `SshError` too, so it reads like any other
    unreachable host."""

    def __init__(self, targets: Mapping[str, str], timeout_s: float = 60.0) -> None:
        self.targets = dict(targets)
        self.timeout_s = timeout_s

    def __call__(self, host: str, command: str, stdin: str | None = None) -> str:
        target = self.targets.get(host)
        if target is None:
            raise SshError(f"no SSH target for compute host {host!r} (add it to the hosts file)")
        return run_ssh(target, command, stdin=stdin, timeout_s=self.timeout_s)
