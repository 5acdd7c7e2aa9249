"""libvirt's ``job-completed`` events on each compute host: the statistics of a post-copy migration.

After a pre-copy live migration libvirt keeps the job's statistics on the destination's domain
(``domjobinfo --completed``, `novamig.measure.libvirt_jobstats`). After a switch to post-copy it does
not: the destination's domain holds no completed job (``Job type: None``, seconds later too —
measured with libvirt 11.3 and QEMU 10.0 on the libvirt mode's two hosts), because libvirt finishes
an incoming migration that ran in post-copy in its unattended completion path, which does not store
the statistics there. The source refreshes its statistics when the post-copy phase ends (its
Confirm phase) and emits them in a ``VIR_DOMAIN_EVENT_ID_JOB_COMPLETED`` event (``Operation:
Outgoing migration``, with ``downtime``, ``downtime_net`` and ``memory_postcopy_requests``), then
undefines the domain (``VIR_MIGRATE_UNDEFINE_SOURCE``), so nothing can read them there afterwards:
the event is the only place they exist. This listener therefore runs for the whole case, one
``virsh event --event job-completed --loop`` per compute host over the same transport as the probe
(SSH on DevStack, the host's namespaces on the embedded cloud's libvirt mode), and keeps each event
for the probe to take. Each ends with the case, on the far host too (`ended_by_stdin`).

virsh prints each event as ``event 'job-completed' for domain 'NAME':`` followed by one indented
``name: value`` line per typed parameter (the names ``--rawstats`` prints), which the probe's parser
reads once a ``Job type`` line for "Completed" is put in front.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO

from novamig.cloud.ssh import CONNECT_TIMEOUT_S
from novamig.hypervisor.libvirt_hosts import LibvirtHost

log = logging.getLogger(__name__)

VIRSH_EVENT = shlex.join(["virsh", "-c", "qemu:///system", "event", "--event", "job-completed", "--loop"])


def ended_by_stdin(command: str) -> str:
    """`command` under a shell that ends it once the caller's end of stdin closes.

    Over SSH, killing the local ``ssh`` closes the channel, but a remote command without a terminal
    gets no SIGHUP: ``virsh event --loop`` would notice only when it next writes an event, which
    may be never, and would stay on the compute host. sshd does close the remote command's stdin,
    so ``cat`` returns and the shell kills the command. On the libvirt mode's namespaces the same
    wrapper runs under ``nsenter``, so both transports end the listener the same way. (In a shell
    without job control, a background command's stdin is ``/dev/null``: only ``cat`` reads ours.)
    """
    script = f"{command} & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait $pid"
    return shlex.join(["sh", "-c", script])


EVENT_COMMAND = ended_by_stdin(VIRSH_EVENT)
"""What the listener runs on each host (both transports)."""
_HEADER = re.compile(r"^event 'job-completed' for domain '?([^':]+)'?:\s*$")
SETTLE_S = 0.2
"""An event is complete once no line has come for this long (virsh prints it in one go)."""

Spawner = Callable[[str, str], "subprocess.Popen[str]"]
"""(host, shell command) → the running command on that host, stdout piped as text."""


def ssh_spawner(targets: Mapping[str, str]) -> Spawner:
    """Long-running commands on DevStack's compute hosts (the hosts file's ``user@address``)."""

    def spawn(host: str, command: str) -> subprocess.Popen[str]:
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            targets[host],
            command,
        ]
        return _popen(argv)

    return spawn


def _popen(argv: list[str]) -> subprocess.Popen[str]:
    """In a session of its own: `stop` ends the whole group — ``nsenter`` execs a shell that runs
    virsh as its child, and a SIGTERM to the shell alone leaves virsh running (and its pipe open).
    stdin is a pipe kept open until `stop`: closing it is what ends the command on the far side
    (`ended_by_stdin`)."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def namespace_spawner(hosts: Mapping[str, LibvirtHost]) -> Spawner:
    """Long-running commands inside the embedded cloud's libvirt hosts' namespaces."""

    def spawn(host: str, command: str) -> subprocess.Popen[str]:
        return _popen(hosts[host].exec_argv(["sh", "-c", command]))

    return spawn


def _signal_group(proc: subprocess.Popen[str], signum: int) -> None:
    """`signum` to the command's process group (see `_popen`), else to the command alone."""
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)


@dataclass
class _Event:
    domain: str
    lines: list[str] = field(default_factory=list)
    last_line_at: float = 0.0
    taken: bool = False


class JobCompletedEvents:
    """``virsh event --event job-completed --loop`` on each of `hosts` while started."""

    def __init__(self, spawn: Spawner, hosts: Iterable[str]) -> None:
        self._spawn = spawn
        self._hosts = sorted(set(hosts))
        self._lock = threading.Lock()
        self._events: dict[str, list[_Event]] = {}
        self._procs: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for host in self._hosts:
            try:
                proc = self._spawn(host, EVENT_COMMAND)
            except (OSError, KeyError) as exc:  # no listener on that host: its figures say so later
                log.warning("cannot listen for libvirt's job-completed events on %s: %s", host, exc)
                continue
            self._procs.append(proc)
            thread = threading.Thread(
                target=self._read, args=(host, proc.stdout), name=f"job-events-{host}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:  # ends the remote listener (`ended_by_stdin`)
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self._procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for thread in self._threads:
            thread.join(5)
        self._procs.clear()
        self._threads.clear()

    def _read(self, host: str, stream: IO[str] | None) -> None:
        if stream is None:
            return
        current: _Event | None = None
        for line in stream:
            header = _HEADER.match(line.strip())
            with self._lock:
                if header is not None:
                    current = _Event(header.group(1), last_line_at=time.monotonic())
                    self._events.setdefault(host, []).append(current)
                elif current is not None and ":" in line:
                    current.lines.append(line.strip())
                    current.last_line_at = time.monotonic()

    def take(self, host: str, domain: str, since: float, timeout_s: float = 3.0) -> str | None:
        """The newest event of `domain` on `host` that came after `since` (monotonic; the
        migration's request) and was not taken yet, as ``domjobinfo --rawstats`` text with ``Job
        type: 3`` (Completed) in front; None when none came within `timeout_s` (the event comes
        before Nova marks the migration completed, but the listener may still be reading it).
        Events of earlier migrations (each one's source emits one, pre-copy too) are never taken."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = [
                    e
                    for e in self._events.get(host, [])
                    if e.domain == domain and not e.taken and e.last_line_at >= since
                ]
                if pending and time.monotonic() - pending[-1].last_line_at >= SETTLE_S:
                    pending[-1].taken = True
                    return "\n".join(["Job type: 3", *pending[-1].lines]) + "\n"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
