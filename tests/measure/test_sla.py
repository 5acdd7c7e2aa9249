"""SLA checks: each criterion's value, its verdict, and why a null value failed."""

from __future__ import annotations

from novamig.measure.sla import CHECKS, SlaSpec, evaluate
from novamig.results import MigrationRecord, PerProbe


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


def test_duration_limits() -> None:
    checks = by_name(
        evaluate(SlaSpec(duration_max_s=2.0, duration_p95_s=1.5), [mig(duration=d) for d in (1, 1, 3)])
    )
    assert checks["duration_s.max"].value == 3 and not checks["duration_s.max"].passed
    # nearest rank (novamig.stats.percentile): with fewer than 20 migrations the p95 is the largest
    assert checks["duration_s.p95"].value == 3 and not checks["duration_s.p95"].passed
    durations = [mig(duration=float(d)) for d in range(1, 41)]
    assert by_name(evaluate(SlaSpec(duration_p95_s=50), durations))["duration_s.p95"].value == 38


def test_all_pass_when_within_limits() -> None:
    checks = evaluate(
        SlaSpec(duration_max_s=5.0, downtime_max_ms=100, downtime_probe="guest"),
        [mig(guest=40.0), mig(guest=60.0)],
    )
    assert all(c.passed for c in checks), checks
    assert by_name(checks)["downtime_ms.guest.max"].value == 60.0


def test_unmeasured_downtime_fails_with_null_value_and_the_reason() -> None:
    spec = SlaSpec(downtime_max_ms=500, downtime_probe="network")
    checks = by_name(evaluate(spec, [mig(guest=10.0)]))
    check = checks["downtime_ms.network.max"]
    assert check.value is None and check.passed is False
    assert check.reason == "no completed migration has a network figure"
    unavailable = {"guest": None, "network": "needs root"}
    check = by_name(evaluate(spec, [mig(guest=10.0)], probes=unavailable))["downtime_ms.network.max"]
    assert check.reason == "the network probe cannot measure on this cloud: needs root"
    check = by_name(evaluate(spec, [mig("error")], probes={"network": None}))["downtime_ms.network.max"]
    assert check.reason == "no migration completed (1 requested)"
    assert by_name(evaluate(spec, []))["downtime_ms.network.max"].reason == "no migration was requested"
    assert all(c.reason is None for c in evaluate(spec, [mig(guest=10.0)]) if c.value is not None)


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
    assert checks["locust_failure_ratio.max"].reason == "Locust gave no failure ratio: it recorded no request"
    assert not checks["memory_integrity"].passed
    assert checks["memory_integrity"].reason is not None
    assert checks["memory_integrity"].reason.startswith("1 of 1 completed migrations were not checked")
    checked = mig()
    checked.memory_integrity = True
    checks = by_name(evaluate(spec, [checked], locust_failure_ratio=0.0))
    assert checks["locust_failure_ratio.max"].passed and checks["memory_integrity"].passed
    no_load = by_name(evaluate(spec, [checked], probes={"guest": None}))["locust_failure_ratio.max"]
    assert no_load.reason == "the case runs no Locust load"


def test_memory_integrity_needs_every_completed_migration_checked() -> None:
    spec = SlaSpec(memory_integrity=True, migrations_completed_ratio=None)
    ok, bad, unchecked = mig(), mig(), mig()
    ok.memory_integrity, bad.memory_integrity = True, False
    failed = mig("error")

    def verdict(*records: MigrationRecord) -> tuple[bool | float | None, bool]:
        check = by_name(evaluate(spec, list(records), abort_expected=True))["memory_integrity"]
        return check.value, check.passed

    assert verdict(ok, failed) == (True, True)
    assert verdict(ok, bad) == (False, False)
    assert verdict(ok, unchecked) == (None, False)
    assert verdict(failed) == (None, False)


def test_every_check_declares_what_it_reads() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    for check in CHECKS:
        assert check.figure and check.statistic and check.compare, check
    everything = SlaSpec(
        downtime_probe="guest",
        downtime_max_ms=1,
        downtime_p95_ms=1,
        duration_max_s=1,
        duration_p95_s=1,
        locust_failure_ratio_max=0.1,
        memory_integrity=True,
    )
    judged = [c.name for c in evaluate(everything, [mig(guest=0.5)])]
    assert judged == [c.name.format(probe="guest") for c in CHECKS]  # every check, in table order


def test_a_completed_ratio_of_zero_lets_a_case_with_no_completed_migration_pass() -> None:
    """A sweep's cell that expects no migration to converge (its own SLA's ratio 0): the checks that
    read completed migrations have nothing to judge and pass with the reason; with a ratio above 0,
    or once a migration completed, they judge as ever."""
    records = [mig("timeout"), mig("timeout")]
    spec = SlaSpec(
        migrations_completed_ratio=0, memory_integrity=True, downtime_max_ms=500, duration_max_s=60
    )
    checks = by_name(evaluate(spec, records))
    assert all(c.passed for c in checks.values()), checks
    assert checks["migrations.completed_ratio"].value == 0
    for name in ("memory_integrity", "downtime_ms.guest.max", "duration_s.max"):
        assert checks[name].value is None
        assert (
            checks[name].reason
            == "no migration completed (2 requested), which the case's completed ratio of 0 allows"
        )
    checks = by_name(evaluate(SlaSpec(migrations_completed_ratio=0.1, memory_integrity=True), records))
    assert not checks["memory_integrity"].passed
    one_done = [mig("timeout"), mig(guest=900.0)]
    checks = by_name(evaluate(spec, one_done))
    assert not checks["downtime_ms.guest.max"].passed and checks["downtime_ms.guest.max"].value == 900
    assert not checks["memory_integrity"].passed, "the migration that completed was not checked"


def test_a_completed_ratio_below_one_says_how_many_may_fail_instead_of_the_failed_count() -> None:
    records = [mig(), mig(), mig("timeout")]
    checks = by_name(evaluate(SlaSpec(migrations_completed_ratio=0.5), records))
    assert "migrations.failed" not in checks
    assert checks["migrations.completed_ratio"].passed and checks[
        "migrations.completed_ratio"
    ].value == round(2 / 3, 6)
    checks = by_name(evaluate(SlaSpec(migrations_completed_ratio=0.9), records))
    assert not checks["migrations.completed_ratio"].passed
    # the default (every migration must complete) keeps the count, with its number of failures
    checks = by_name(evaluate(SlaSpec(), records))
    assert checks["migrations.failed"].value == 1 and not checks["migrations.failed"].passed


def test_a_failed_downtime_check_says_when_the_noise_floor_was_already_above_its_limit() -> None:
    spec = SlaSpec(downtime_max_ms=1000, downtime_p95_ms=1000, downtime_probe="guest")
    migrations = [mig(guest=400.0), mig(guest=1500.0)]
    loaded = by_name(evaluate(spec, migrations, noise_floor_ms={"guest": 2318.0, "network": None}))
    for name in ("downtime_ms.guest.max", "downtime_ms.guest.p95"):
        assert not loaded[name].passed and loaded[name].value == 1500.0
        assert loaded[name].reason == (
            "the guest probe's noise floor in this case, 2318 ms (its longest gap with no migration), "
            "is above the limit: the machine stalled this long without any migration"
        )
    # a floor below the limit, or none measured: a plain failure
    quiet = by_name(evaluate(spec, migrations, noise_floor_ms={"guest": 166.0}))
    assert not quiet["downtime_ms.guest.max"].passed and quiet["downtime_ms.guest.max"].reason is None
    assert by_name(evaluate(spec, migrations))["downtime_ms.guest.max"].reason is None
    # a passing check says nothing, whatever the floor
    passing = by_name(evaluate(spec, [mig(guest=400.0)], noise_floor_ms={"guest": 2318.0}))
    assert passing["downtime_ms.guest.max"].passed and passing["downtime_ms.guest.max"].reason is None
