"""QEMU killed mid-migration on the embedded cloud: that migration is an error, the run goes on.

A real `novamig run` (in-process, `cmd_run`) on the session's embedded cloud, one 256 MiB guest and
two migrations slowed to 8 MiB/s (host policy) so that the first is still copying memory when a
thread of the test SIGKILLs one of the guest's two QEMU processes: the destination's (started by
``pre_live_migration``, its pid file appears beside the source's) or the source's. The guest's
QEMU processes are found through the pid files the cloud keeps (``guests/<host>/<uuid>.pid``).

* destination killed: the first migration ends `error` with its reason in the timeline, the server's
  state is recorded (ACTIVE on its source, its guest running), and the second migration runs;
* source killed: the guest is gone, though Nova still records the server ACTIVE and running on its
  source: the migration ends `error`, the hypervisor's answer through Nova's diagnostics marks the
  server lost, its second migration is skipped with the reason, and the run's cleanup still
  deletes every server and flavor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from novamig import process_state
from novamig.embedded.controller import EmbeddedCloud
from novamig.results import load_results
from novamig.runner.commands import cmd_run

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

SCENARIO = """\
name: qemu-faults
fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: memory, memory: {dirty_rate_mib_s: 4, working_set_mib: 96}}
migration: {count: 2, interval_s: 0.5, policy: {bandwidth_mib_s: 8, timeout_s: 120}}
measure: {probes: [hypervisor], noise_floor_s: 0}
"""
KILL_DEADLINE_S = 120.0


@dataclass
class Killer:
    """Kills one QEMU of the first migration: `which` is "destination" or "source"."""

    guests: Path
    which: str
    killed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def pids_by_server(self) -> dict[str, list[tuple[float, int]]]:
        found: dict[str, list[tuple[float, int]]] = {}
        for pid_file in self.guests.glob("*/*.pid"):
            try:
                entry = (pid_file.stat().st_mtime, int(pid_file.read_text().strip()))
            except (OSError, ValueError):
                continue  # being written or removed
            found.setdefault(pid_file.stem, []).append(entry)
        return found

    def run(self) -> None:
        deadline = time.monotonic() + KILL_DEADLINE_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            for server, entries in self.pids_by_server().items():
                if len(entries) == 2:  # the incoming QEMU is up: the migration is under way
                    source, destination = sorted(entries)
                    time.sleep(
                        1.0
                    )  # into the memory copy (8 MiB/s: seconds for the 96 MiB the guest keeps dirtying)
                    pid = destination[1] if self.which == "destination" else source[1]
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(f"{self.which} QEMU {pid} of {server}")
                    return
            self.stop.wait(0.05)


@pytest.fixture
def run_env(embedded_cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedCloud]:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(embedded_cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    yield embedded_cloud


def _run_with(killer: Killer, cloud: EmbeddedCloud, tmp_path: Path) -> tuple[int, Path]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    thread = threading.Thread(target=killer.run, name="qemu-killer")
    thread.start()
    try:
        rc = cmd_run(str(scenario), cloud.cloud_name, str(tmp_path / "out"), [])
    finally:
        killer.stop.set()
        thread.join()
    return rc, tmp_path / "out" / "results.json"


def _nothing_left(cloud: EmbeddedCloud) -> None:
    conn = cloud.connection()
    try:
        assert [s.name for s in conn.compute.servers(all_projects=True)] == []
        assert [f.name for f in conn.compute.flavors() if f.name.startswith("novamig-")] == []
    finally:
        conn.close()
    # No QEMU of the run left: a failed migration's incoming QEMU is ended by Nova's rollback on the
    # destination, which is a message of its own, so it may come a moment after the run ended.
    deadline = time.monotonic() + 30.0
    while (left := _running_guests(cloud)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def _running_guests(cloud: EmbeddedCloud) -> list[str]:
    running = []
    for pid_file in cloud.workdir.glob("guests/*/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if process_state.alive(pid):
                running.append(f"{pid_file.parent.name}/{pid_file.name}: {pid}")
    return running


def test_destination_qemu_killed_the_migration_errs_and_the_run_goes_on(
    tmp_path: Path, run_env: EmbeddedCloud
) -> None:
    killer = Killer(run_env.workdir / "guests", "destination")
    rc, results_path = _run_with(killer, run_env, tmp_path)
    assert killer.killed, "the migration ended before the destination QEMU could be killed"
    [case] = load_results(results_path).cases
    assert rc == 1, case
    first, second = case.migrations
    assert first.status == "error", first
    notes = " ".join(e.what for e in first.events)
    assert "migration: running → failed" in notes, notes  # the reason, as Nova recorded it
    assert "server: MIGRATING → ACTIVE" in notes, notes  # the server's state: back on its source
    after = first.server_after
    assert after is not None, first
    assert (after.status, after.host, after.guest_running) == ("ACTIVE", first.source_host, True), after
    assert first.server_lost is None and first.error, first
    assert second.status == "completed", second
    _nothing_left(run_env)


def test_source_qemu_killed_the_server_is_lost_its_next_migration_skipped_and_cleanup_completes(
    tmp_path: Path, run_env: EmbeddedCloud
) -> None:
    killer = Killer(run_env.workdir / "guests", "source")
    rc, results_path = _run_with(killer, run_env, tmp_path)
    assert killer.killed, "the migration ended before the source QEMU could be killed"
    [case] = load_results(results_path).cases
    assert rc == 1, case
    [lost] = case.migrations  # the second migration of the lost server was never requested
    assert lost.status == "error", lost
    assert lost.server_lost is True, lost
    after = lost.server_after
    assert after is not None, lost
    # Nova's own record still says the guest runs on its source; the hypervisor says it does not
    assert (after.status, after.host, after.power_state) == ("ACTIVE", lost.source_host, "running"), after
    assert after.guest_running is False, after
    assert lost.error is not None and "server lost: its guest no longer runs" in lost.error, lost.error
    notes = [e.what for e in lost.events]
    assert "1 further migration(s) of this server skipped: the server is lost" in notes, notes
    _nothing_left(run_env)
