"""libvirt's job-completed events, the hypervisor figure after a post-copy migration (fast).

The listener's command here is a shell printing what ``virsh event --event job-completed --loop``
printed for a post-copy migration between the libvirt mode's two hosts (libvirt 11.3): an earlier
migration's event first, then this one's. The live path is in the libvirt mode's slow test."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from novamig.measure.contract import CaseClock
from novamig.measure.libvirt_job_events import JobCompletedEvents, Spawner, ended_by_stdin
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures
from novamig.results import MigrationRecord

EVENT = """event 'job-completed' for domain 'instance-00000001':
	operation: 5
	time_elapsed: {elapsed}
	time_elapsed_net: 3144
	downtime: {downtime}
	downtime_net: 46
	data_total: 269090816
	memory_total: 269090816
	memory_postcopy_requests: 12
	memory_iteration: 2
"""


def _printing(text_by_host: dict[str, str], calls: list[tuple[str, str]]) -> Spawner:
    """A spawner whose "host" prints `text_by_host[host]` (after the case started) and then waits
    like ``--loop`` until stopped."""

    def spawn(host: str, command: str) -> subprocess.Popen[str]:
        calls.append((host, command))
        script = f"sleep 0.3; printf %s {shlex.quote(text_by_host.get(host, ''))}; exec sleep 60"
        return subprocess.Popen(
            ["sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
        )

    return spawn


def test_the_figure_after_post_copy_comes_from_the_sources_event() -> None:
    calls: list[tuple[str, str]] = []
    spawn = _printing({"compute1": EVENT.format(elapsed=3153, downtime=55)}, calls)
    events = JobCompletedEvents(spawn, ["compute1", "compute2"])
    # The destination answers as libvirt does after post-copy: no completed job.
    probe = LibvirtJobFigures(
        lambda host, command: "Job type: 0\n\n",
        lambda server_id: DomainPlace("instance-00000001", "compute2", 7),
        events,
    )
    clock = CaseClock()
    probe.start([], clock)
    try:
        record = MigrationRecord(
            server="s", source_host="compute1", dest_host="compute2", status="completed", requested_at=0.0
        )
        probe.capture(record, "s", 7)
        figure = probe.figure(record, "s", 7)
    finally:
        probe.stop()
    assert [c[0] for c in calls] == ["compute1", "compute2"]
    assert calls[0][1] == ended_by_stdin("virsh -c qemu:///system event --event job-completed --loop")
    assert figure.reason is None and figure.downtime_ms == 55.0, figure
    assert figure.details is not None
    assert figure.details["operation"] == "Outgoing migration"
    assert figure.details["format"] == "job-completed event" and figure.details["libvirt_host"] == "compute1"
    assert (figure.details["postcopy_requests"], figure.details["time_elapsed_ms"]) == (12, 3153)


def test_an_event_from_before_the_migration_is_not_taken() -> None:
    calls: list[tuple[str, str]] = []
    events = JobCompletedEvents(
        _printing({"compute1": EVENT.format(elapsed=1, downtime=9)}, calls), ["compute1"]
    )
    events.start()
    try:
        deadline = time.monotonic() + 10
        while events.take("compute1", "instance-00000001", since=0.0, timeout_s=0.1) is None:
            assert time.monotonic() < deadline, "the event was never read"
        # Taken once only; and an event older than the migration's request is never its figure.
        assert events.take("compute1", "instance-00000001", since=0.0, timeout_s=0.3) is None
        assert events.take("compute1", "instance-00000001", since=time.monotonic(), timeout_s=0.3) is None
    finally:
        events.stop()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _sleepers(pid: int) -> list[int]:
    out: list[int] = []
    for p in _descendants(pid):
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{p}/comm").read_text().strip() == "sleep":
                out.append(p)
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_listener_ends_when_its_callers_stdin_closes() -> None:
    """What ends ``virsh event --loop`` on a DevStack host when the local ssh goes: sshd closes the
    remote command's stdin. Here the command's stdin is closed the same way, with no signal sent."""
    proc = subprocess.Popen(
        ["sh", "-c", ended_by_stdin("sleep 600")], stdin=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while not (sleepers := _sleepers(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sleepers, "the wrapped command did not start"
        time.sleep(0.2)
        assert proc.poll() is None, "the wrapper ended before its stdin closed"
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_running(c) for c in sleepers) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_running(c) for c in sleepers), "the wrapped command outlived its caller's stdin"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
