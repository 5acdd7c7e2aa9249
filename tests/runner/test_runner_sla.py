from __future__ import annotations

import pytest

from novamig.results import MigrationRecord, PerProbe
from novamig.runner.sla import SlaSpec, evaluate, percentile


def mig(
    status: str = "completed", duration: float | None = 1.0, guest: float | None = None
) -> MigrationRecord:
    return MigrationRecord(
        server="s",
        source_host="a",
        dest_host="b",
        status=status,
        requested_at=0.0,
        duration_s=duration if status == "completed" else None,
        downtime_ms=PerProbe(guest=guest),
    )


def by_name(checks: list) -> dict:  # type: ignore[type-arg]
    return {c.name: c for c in checks}


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([7], 95) == 7
    with pytest.raises(ValueError):
        percentile([], 95)


def test_duration_limits() -> None:
    checks = by_name(
        evaluate(SlaSpec(duration_max_s=2.0, duration_p95_s=1.5), [mig(duration=d) for d in (1, 1, 3)])
    )
    assert checks["duration_s.max"].value == 3 and not checks["duration_s.max"].passed
    assert checks["duration_s.p95"].value == pytest.approx(2.8)
    assert not checks["duration_s.p95"].passed


def test_all_pass_when_within_limits() -> None:
    checks = evaluate(
        SlaSpec(duration_max_s=5.0, downtime_max_ms=100, downtime_probe="guest"),
        [mig(guest=40.0), mig(guest=60.0)],
    )
    assert all(c.passed for c in checks), checks
    assert by_name(checks)["downtime_ms.guest.max"].value == 60.0


def test_unmeasured_downtime_fails_with_null_value() -> None:
    checks = by_name(evaluate(SlaSpec(downtime_max_ms=500, downtime_probe="network"), [mig(guest=10.0)]))
    check = checks["downtime_ms.network.max"]
    assert check.value is None and check.passed is False


def test_failed_migration_fails_the_case_but_an_expected_abort_does_not() -> None:
    records = [mig(), mig("cancelled")]
    checks = by_name(evaluate(SlaSpec(migrations_completed_ratio=None), records, abort_expected=True))
    assert checks["migrations.failed"].passed
    checks = by_name(evaluate(SlaSpec(migrations_completed_ratio=None), records, abort_expected=False))
    assert checks["migrations.failed"].value == 1 and not checks["migrations.failed"].passed
    checks = by_name(evaluate(SlaSpec(), [mig(), mig("timeout")], abort_expected=True))
    assert not checks["migrations.failed"].passed
    assert checks["migrations.completed_ratio"].value == 0.5


def test_locust_and_memory_integrity_need_data() -> None:
    spec = SlaSpec(locust_failure_ratio_max=0.01, memory_integrity=True, migrations_completed_ratio=None)
    checks = by_name(evaluate(spec, [mig()]))
    assert not checks["locust_failure_ratio.max"].passed
    assert not checks["memory_integrity"].passed
    checks = by_name(evaluate(spec, [mig()], locust_failure_ratio=0.0, memory_intact=True))
    assert checks["locust_failure_ratio.max"].passed and checks["memory_integrity"].passed
