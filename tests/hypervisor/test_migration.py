"""Real QEMU live migrations (TCG) driven by the engine, checked from QEMU's and the guest's side."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor.errors import QemuLaunchError
from novamig.hypervisor.heartbeat import HeartbeatCollector
from novamig.hypervisor.machine import GuestSpec, QemuMachine
from novamig.hypervisor.migration import (
    MigrationOutcome,
    MigrationState,
    QemuProgress,
    migrate,
    start_migration,
)
from novamig.hypervisor.policy import QemuMigrationSettings

from .conftest import MachineFactory

WaitUntil = Callable[[Callable[[], bool], float, str], None]  # the `wait_until` fixture

pytestmark = pytest.mark.qemu

GBIT_MIB_S = 1e9 / 8 / 2**20  # 1 Gbit/s in MiB/s
INTEGRITY_MIB = 16


#: `source(name, dirty_mib_s=0, wset_mib=96)`: a launched source guest with its integrity region.
SourceFactory = Callable[..., QemuMachine]


@pytest.fixture
def source(machines: MachineFactory, wait_until: WaitUntil) -> SourceFactory:
    """Source guests; one with a dirtier is returned once the dirtier has written memory."""

    def make(name: str, dirty_mib_s: float = 0, wset_mib: int = 96) -> QemuMachine:
        vm = machines(name, memory_mib=256)
        vm.agent.integrity_start(INTEGRITY_MIB)
        if dirty_mib_s:
            vm.agent.dirty(dirty_mib_s, wset_mib)
            wait_until(lambda: vm.agent.dirty_stats().pages > 0, 10.0, f"{name}'s dirtier to write memory")
        return vm

    return make


def _moves(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The engine's state moves as logged, `from>to` each (its one log line per move)."""
    return [
        f"{r.args[2]}>{r.args[3]}"
        for r in caplog.records
        if r.name == "novamig.hypervisor.migration" and isinstance(r.args, tuple) and len(r.args) == 5
    ]


def _copying(seen: list[QemuProgress]) -> bool:
    """The migration is in pre-copy and has sent memory (a switch or a cancel now hits a live one)."""
    return any(s.status == "active" and s.processed_bytes > 0 for s in seen)


def _destination(machines: MachineFactory, source: QemuMachine) -> QemuMachine:
    return machines(spec=source.spec.for_destination())


def _assert_alive_and_intact(vm: QemuMachine) -> None:
    """The guest runs: it sends new heartbeats, answers, and its integrity region verifies."""
    now = time.monotonic_ns()
    assert vm.agent.beats.wait_after(now, 5.0), f"{vm.name}: no heartbeat after the migration"
    assert vm.command("query-status")["running"]
    check = vm.agent.integrity_check()
    assert check.ok, f"{vm.name}: memory integrity failed: {check}"


def test_idle_guest_migrates_with_memory_intact(
    machines: MachineFactory, source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="novamig.hypervisor.migration")
    src = source("idle")
    dst = _destination(machines, src)
    seen: list[QemuProgress] = []
    result = migrate(src, dst, QemuMigrationSettings(timeout_s=60), progress=seen.append)

    assert result.status is MigrationOutcome.COMPLETED, result.error
    assert _moves(caplog) == ["new>setting-up", "setting-up>pre-copy", "pre-copy>ended"]
    assert result.total_ms is not None and result.total_ms > 0
    assert result.qemu_downtime_ms is not None
    assert result.stop_resume_ms is not None and result.stop_resume_ms >= 0
    assert result.ram_total_bytes is not None and result.ram_total_bytes >= 256 * 2**20
    assert result.bytes_total is not None and 0 < result.bytes_total < result.ram_total_bytes
    names = {(e.side, e.name) for e in result.events}
    assert {("source", "STOP"), ("destination", "RESUME")} <= names
    assert seen and seen[-1].status == "completed"
    steps = [b.host_ns - a.host_ns for a, b in zip(result.progress, result.progress[1:], strict=False)]
    if steps:
        assert statistics.median(steps) <= 100e6, "query-migrate must be sampled every <= 100 ms"
    assert src.command("query-status")["status"] == "postmigrate"
    _assert_alive_and_intact(dst)
    hb = HeartbeatCollector(src.agent, dst.agent).analyse(result)
    assert hb.switchover_gap_ms is not None and hb.switchover_gap_ms > 0
    # The guest cannot have been interrupted for less than QEMU's own stop, less one beat and
    # what the host's reading of the beats adds: the last beat before the stop, read late, is
    # stamped late and shortens the gap by that much (the source's longest beat gap in the quiet
    # 2 s before the migration, beyond one beat, measures that lateness in this run).
    assert hb.noise_floor_ms is not None, hb
    read_late_ms = max(0.0, hb.noise_floor_ms - 1.0)
    assert hb.switchover_gap_ms >= result.qemu_downtime_ms - 1 - read_late_ms, (hb, result.qemu_downtime_ms)


def test_50_mib_s_converges_at_1_gbit(machines: MachineFactory, source: SourceFactory) -> None:
    src = source("d50", dirty_mib_s=50)
    dst = _destination(machines, src)
    result = migrate(src, dst, QemuMigrationSettings(bandwidth_mib_s=GBIT_MIB_S, timeout_s=90))
    assert result.status is MigrationOutcome.COMPLETED, result.error
    assert result.dirty_sync_count is not None and result.dirty_sync_count >= 2
    assert any(rate > 0 for _, rate in result.dirty_rate_series), "a dirtying guest shows a dirty rate"
    _assert_alive_and_intact(dst)
    assert dst.agent.dirty_stats().running, "the dirtier keeps running on the destination"


def test_200_mib_s_does_not_converge_and_timeout_cancels(
    machines: MachineFactory, source: SourceFactory
) -> None:
    src = source("d200t", dirty_mib_s=200, wset_mib=128)
    dst = _destination(machines, src)
    result = migrate(src, dst, QemuMigrationSettings(bandwidth_mib_s=GBIT_MIB_S, timeout_s=5))
    assert result.status is MigrationOutcome.TIMEOUT
    assert result.source_running_after is True
    assert result.total_ms is None and result.qemu_downtime_ms is None
    assert result.bytes_total and result.bytes_total > 0
    assert not any(e.side == "source" and e.name == "STOP" for e in result.events)
    _assert_alive_and_intact(src)


@pytest.mark.parametrize("trigger", [{"post_copy_after_s": 2.0}, {"post_copy_after_iterations": 3}])
def test_200_mib_s_completes_with_post_copy(
    machines: MachineFactory, source: SourceFactory, trigger: dict[str, float]
) -> None:
    src = source("d200p", dirty_mib_s=200, wset_mib=128)
    dst = _destination(machines, src)
    result = migrate(src, dst, QemuMigrationSettings(bandwidth_mib_s=GBIT_MIB_S, timeout_s=90, **trigger))  # type: ignore[arg-type]
    assert result.status is MigrationOutcome.COMPLETED, result.error
    assert result.postcopy
    started = result.postcopy_started_ns
    assert started is not None
    if "post_copy_after_s" in trigger:
        assert (started - result.started_ns) / 1e9 >= trigger["post_copy_after_s"]
    else:
        before = [s for s in result.progress if s.host_ns <= started]
        assert before and before[-1].dirty_sync_count >= trigger["post_copy_after_iterations"]
    assert result.bytes_postcopy and result.bytes_postcopy > 0
    assert any(e.name == "MIGRATION" and e.data.get("status") == "postcopy-active" for e in result.events)
    _assert_alive_and_intact(dst)


@pytest.mark.slow
def test_200_mib_s_completes_with_auto_converge_and_stall_is_reported(
    machines: MachineFactory, source: SourceFactory
) -> None:
    src = source("d200a", dirty_mib_s=200, wset_mib=128)
    dst = _destination(machines, src)
    policy = QemuMigrationSettings(
        bandwidth_mib_s=GBIT_MIB_S,
        auto_converge=True,
        cpu_throttle_initial=50,
        cpu_throttle_increment=25,
        timeout_s=120,
    )
    result = migrate(src, dst, policy)
    assert result.status is MigrationOutcome.COMPLETED, result.error
    assert result.stop_ns is not None
    hb = HeartbeatCollector(src.agent, dst.agent).analyse(result)
    assert hb.source_longest_gap_ms is not None

    # QEMU 7.2 throttles by putting the vCPU to sleep for 10 ms * p / (1 - p) per 10 ms slice, so a
    # throttle level that was in force long enough must show up as a heartbeat stall at least that
    # long; QEMU's downtime figure says nothing about it.
    def sleep_s(pct: int) -> float:
        return 0.010 * pct / (100 - pct) if pct < 100 else 1.0

    stop_t = (result.stop_ns - result.started_ns) / 1e9
    settled = [pct for t, pct in result.throttle_series if pct and t + sleep_s(pct) + 0.2 <= stop_t]
    assert settled, f"auto-converge never throttled long enough: {result.throttle_series}"
    expected_ms = sleep_s(max(settled)) * 1000
    assert hb.source_longest_gap_ms >= 0.9 * expected_ms - 2, (
        f"throttle {max(settled)} % implies {expected_ms:.0f} ms stalls; heartbeat saw "
        f"{hb.source_longest_gap_ms:.1f} ms (QEMU downtime {result.qemu_downtime_ms} ms)"
    )
    assert hb.guest_downtime_ms is not None and hb.guest_downtime_ms >= hb.source_longest_gap_ms
    _assert_alive_and_intact(dst)


def test_abort_mid_migration_leaves_the_source_running(
    machines: MachineFactory, source: SourceFactory, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="novamig.hypervisor.migration")
    src = source("abort", dirty_mib_s=200, wset_mib=128)
    dst = _destination(machines, src)
    seen: list[QemuProgress] = []
    job = start_migration(
        src, dst, QemuMigrationSettings(bandwidth_mib_s=GBIT_MIB_S, timeout_s=60), progress=seen.append
    )
    wait_until(lambda: _copying(seen), 30.0, "the migration to copy memory")
    assert job.state is MigrationState.PRECOPY
    assert not job.done()
    job.cancel()
    result = job.result(30)
    assert result.status is MigrationOutcome.CANCELLED
    assert _moves(caplog)[-2:] == ["pre-copy>cancelling", "cancelling>ended"]
    assert result.source_running_after is True
    _assert_alive_and_intact(src)


def test_abort_after_policy_cancels(machines: MachineFactory, source: SourceFactory) -> None:
    src = source("abortp")
    dst = _destination(machines, src)
    # 8 MiB/s makes even an idle 256 MiB guest take several seconds
    result = migrate(src, dst, QemuMigrationSettings(bandwidth_mib_s=8, abort_after_s=1.0, timeout_s=60))
    assert result.status is MigrationOutcome.CANCELLED
    assert 1.0 <= result.duration_s < 10
    assert result.source_running_after is True
    _assert_alive_and_intact(src)


def test_switch_to_post_copy_on_request(
    machines: MachineFactory, source: SourceFactory, wait_until: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="novamig.hypervisor.migration")
    src = source("force", dirty_mib_s=200, wset_mib=128)
    dst = _destination(machines, src)
    seen: list[QemuProgress] = []
    job = start_migration(
        src,
        dst,
        QemuMigrationSettings(bandwidth_mib_s=GBIT_MIB_S, allow_post_copy=True, timeout_s=60),
        progress=seen.append,
    )
    wait_until(lambda: _copying(seen), 30.0, "the migration to copy memory")
    job.switch_to_postcopy()
    result = job.result(90)
    assert result.status is MigrationOutcome.COMPLETED, result.error
    assert _moves(caplog)[-2:] == ["pre-copy>post-copy", "post-copy>ended"]
    assert result.postcopy
    _assert_alive_and_intact(dst)


def test_destination_that_fails_to_start_leaves_the_source_untouched(
    machines: MachineFactory, source: SourceFactory
) -> None:
    src = source("badst", dirty_mib_s=10)
    bad = src.spec.for_destination()
    bad = type(bad)(**{**bad.__dict__, "extra_args": ("-device", "no-such-device-xyz")})
    with pytest.raises(QemuLaunchError) as info:
        machines(spec=bad)
    assert "-incoming defer" in info.value.command_line
    assert "no-such-device-xyz" in info.value.qemu_log
    assert src.command("query-migrate") == {} or src.command("query-migrate").get("status") is None
    _assert_alive_and_intact(src)


def test_long_run_directories_still_work(tiny_image: GuestImage, tmp_path: Path) -> None:
    """Unix socket paths are limited to 108 bytes; deep run directories (Nova's, pytest's) must work
    without putting sockets anywhere else."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    before = set(Path(tempfile.gettempdir()).glob("novamig-sock-*"))
    with QemuMachine(GuestSpec(name="deep", image=tiny_image, memory_mib=128), deep) as src:
        assert len(str(src.rundir / "agent.sock")) > 108
        src.wait_ready(60)
        with QemuMachine(src.spec.for_destination(), deep) as dst:
            result = migrate(src, dst, QemuMigrationSettings(timeout_s=60))
            assert result.status is MigrationOutcome.COMPLETED, result.error
            assert dst.agent.ping().ok
        assert set(Path(tempfile.gettempdir()).glob("novamig-sock-*")) - before == set()
    assert not any(deep.iterdir())
