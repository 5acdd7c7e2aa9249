"""Fast tests without QEMU: policy validation, gap arithmetic, the heartbeat collector's logic."""

from __future__ import annotations

import pytest

from novamig.hypervisor.heartbeat import HeartbeatCollector, PauseMeasurement, noise_floor
from novamig.hypervisor.migration import MigrationResult
from novamig.hypervisor.policy import UNLIMITED_BANDWIDTH_BYTES_S, QemuMigrationSettings
from novamig.hypervisor.selfcheck import pause_tolerance_ms

MS = 1_000_000


def test_policy_defaults_and_bandwidth() -> None:
    p = QemuMigrationSettings()
    assert p.max_bandwidth_bytes_s == UNLIMITED_BANDWIDTH_BYTES_S
    assert not p.post_copy_allowed
    assert QemuMigrationSettings(bandwidth_mib_s=125).max_bandwidth_bytes_s == 125 * 1024 * 1024
    assert QemuMigrationSettings(post_copy_after_s=0).post_copy_allowed
    assert QemuMigrationSettings(post_copy_after_iterations=3).post_copy_allowed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"downtime_limit_ms": 0},
        {"bandwidth_mib_s": -1},
        {"timeout_s": 0},
        {"post_copy_after_iterations": 0},
        {"sample_interval_s": 0.5},
        {"cpu_throttle_initial": 100},
        {"transport": "rdma"},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid migration policy"):
        QemuMigrationSettings(**kwargs)  # type: ignore[arg-type]


def test_policy_from_scenario_mapping() -> None:
    p = QemuMigrationSettings.from_mapping(
        {
            "downtime_limit_ms": 300,
            "bandwidth_mib_s": 0,
            "auto_converge": False,
            "post_copy_after_s": None,
            "abort_after_s": None,
            "timeout_s": 600,
        }
    )
    assert p == QemuMigrationSettings(timeout_s=600)
    with pytest.raises(ValueError, match="unknown migration policy keys: bogus"):
        QemuMigrationSettings.from_mapping({"bogus": 1})


def test_noise_floor() -> None:
    t = [i * MS for i in range(1000) if i != 500]  # one beat lost: a 2 ms gap
    nf = noise_floor(t, 0, 999 * MS)
    assert nf.period_ms == 1.0
    assert nf.max_ms == pytest.approx(2.0)
    assert nf.p99_ms == 1.0


def test_pause_measurement_subtracts_one_period() -> None:
    p = PauseMeasurement(
        requested_ms=100, stop_resume_ms=101.0, stop_ns=0, resume_ns=101 * MS, gap_ms=102.5, period_ms=1.0
    )
    assert p.measured_ms == pytest.approx(101.5)
    assert p.error_ms == pytest.approx(0.5)
    assert p.starved_ms is None
    starved = PauseMeasurement(
        requested_ms=100,
        stop_resume_ms=101.0,
        stop_ns=0,
        resume_ns=101 * MS,
        gap_ms=131.0,
        period_ms=1.0,
        guest_gap_ms=30.0,  # the guest's clock ran 29 ms more than one period: the host starved it
    )
    assert starved.starved_ms == pytest.approx(29.0)
    assert pause_tolerance_ms(50) == 5.0
    assert pause_tolerance_ms(500) == 25.0


class _Log:
    def __init__(self, times: list[int]) -> None:
        self.times = times

    def host_times(self) -> list[int]:
        return list(self.times)

    def wait_for(self, count: int, timeout: float) -> bool:
        return len(self.times) >= count


class _Chan:
    def __init__(self, times: list[int]) -> None:
        self.beats = _Log(times)


def _result(**kw: object) -> MigrationResult:
    base: dict[str, object] = {
        "status": "completed",
        "error": None,
        "started_ns": 100 * MS,
        "finished_ns": 400 * MS,
        "total_ms": 300.0,
        "qemu_downtime_ms": 10.0,
        "stop_resume_ms": 12.0,
        "setup_ms": 1.0,
        "bytes_total": 1,
        "bytes_precopy": 1,
        "bytes_downtime": 0,
        "bytes_postcopy": 0,
        "ram_total_bytes": 1,
        "dirty_sync_count": 3,
        "postcopy": False,
        "postcopy_started_ns": None,
        "postcopy_blocktime_ms": None,
        "postcopy_vcpu_blocktime_ms": None,
        "stop_ns": 380 * MS,
        "resume_ns": 395 * MS,
        "source_running_after": None,
    }
    base.update(kw)
    return MigrationResult(**base)  # type: ignore[arg-type]


def test_collector_switchover_and_source_stall() -> None:
    # source beats every ms until 380 ms, with a 200 ms stall (throttling) at 150..350 ms
    src = [t * MS for t in range(0, 150)] + [t * MS for t in range(350, 380)]
    dst = [t * MS for t in range(420, 500)]
    hb = HeartbeatCollector(_Chan(src), _Chan(dst)).analyse(_result(), settle_s=0)  # type: ignore[arg-type]
    assert hb.switchover_gap_ms == pytest.approx(41.0)  # 379 → 420
    assert hb.source_longest_gap_ms == pytest.approx(201.0)  # 149 → 350
    assert hb.destination_longest_gap_ms == pytest.approx(1.0)
    assert hb.guest_downtime_ms == pytest.approx(201.0)


def test_collector_without_destination_beats() -> None:
    src = [t * MS for t in range(0, 500)]
    hb = HeartbeatCollector(_Chan(src), _Chan([])).analyse(  # type: ignore[arg-type]
        _result(status="cancelled", stop_ns=None), settle_s=0
    )
    assert hb.switchover_gap_ms is None
    assert hb.source_longest_gap_ms == pytest.approx(1.0)


def test_noise_floor_period_comes_from_guest_timestamps_when_arrivals_burst() -> None:
    # beats generated every 1 ms in the guest, delivered to the host in bursts of 5 every 5 ms
    guest = [i * MS for i in range(1000)]
    host = [(i // 5) * 5 * MS + (i % 5) * 1000 for i in range(1000)]
    nf = noise_floor(host, 0, 999 * MS, guest)
    assert nf.period_ms == 1.0
    assert nf.max_ms == pytest.approx(4.996)
    assert noise_floor(host, 0, 999 * MS).period_ms < 0.01, "arrival gaps alone underestimate the period"


def test_stall_time_counts_whole_gaps_above_the_noise_floor() -> None:
    from novamig.hypervisor.heartbeat import stall_time
    from novamig.stats import Gap

    ms = 1_000_000
    found = [Gap(0, 1 * ms), Gap(1 * ms, 31 * ms), Gap(31 * ms, 32 * ms), Gap(32 * ms, 82 * ms)]
    assert stall_time(found, 20.0) == (80.0, 2)
    assert stall_time(found, 60.0) == (0.0, 0)
    assert stall_time(found, None) == (None, 0)


def test_a_stall_that_is_the_downtime_leaves_the_brownout() -> None:
    from novamig.hypervisor.heartbeat import apart_from_blackout

    # switchover 50 ms, stalls 292 (the worst: it is the downtime) and 30 above a 20 ms floor
    assert apart_from_blackout(322.0, 2, 50.0, 292.0, 20.0) == (30.0, 1)
    # the switchover is the worst: every stall stays brownout
    assert apart_from_blackout(80.0, 2, 300.0, 50.0, 20.0) == (80.0, 2)
    # the worst stall is within the noise floor: it was never counted
    assert apart_from_blackout(0.0, 0, 10.0, 15.0, 20.0) == (0.0, 0)
    assert apart_from_blackout(None, 0, 10.0, 50.0, None) == (None, 0)
