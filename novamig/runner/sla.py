"""SLA verdicts of one case, Rally style: one line per criterion — name, limit, value, passed.

Criteria come from the scenario's ``sla`` block, plus one that always applies:
``migrations.failed`` (limit 0) counts migrations whose outcome was ``error`` or ``timeout``, or
``cancelled`` when the scenario did not ask for an abort (an expected abort is not a failure).

``migrations.completed_ratio`` (the scenario's ``migrations_completed_ratio``, 1.0 by default) is
the share of migrations that ended ``completed``.

Downtime is judged on the probe the scenario names (``downtime_ms.guest.max`` …); a criterion on a
figure that was not measured fails with value null — a gate that passes without data would be a
gate that cannot fail. Percentiles interpolate linearly between closest ranks (the
numpy default), over completed migrations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from novamig.results import MigrationRecord, SlaCheck


@dataclass(frozen=True)
class SlaSpec:
    downtime_probe: str = "guest"
    downtime_max_ms: float | None = None
    downtime_p95_ms: float | None = None
    duration_max_s: float | None = None
    duration_p95_s: float | None = None
    locust_failure_ratio_max: float | None = None
    memory_integrity: bool | None = None
    migrations_completed_ratio: float | None = 1.0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks; `q` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _check(name: str, limit: float, values: Sequence[float], stat: str) -> SlaCheck:
    if not values:
        return SlaCheck(name=name, limit=limit, value=None, passed=False)
    value = max(values) if stat == "max" else percentile(values, 95)
    value = round(value, 6)
    return SlaCheck(name=name, limit=limit, value=value, passed=value <= limit)


def failed_migrations(migrations: Sequence[MigrationRecord], abort_expected: bool) -> int:
    bad = {"error", "timeout"} | (set() if abort_expected else {"cancelled"})
    return sum(1 for m in migrations if m.status in bad)


def evaluate(
    spec: SlaSpec,
    migrations: Sequence[MigrationRecord],
    *,
    abort_expected: bool = False,
    locust_failure_ratio: float | None = None,
    memory_intact: bool | None = None,
) -> list[SlaCheck]:
    checks = [
        SlaCheck(
            name="migrations.failed",
            limit=0,
            value=failed_migrations(migrations, abort_expected),
            passed=failed_migrations(migrations, abort_expected) == 0,
        )
    ]
    completed = [m for m in migrations if m.status == "completed"]
    if spec.migrations_completed_ratio is not None and migrations:
        ratio = round(len(completed) / len(migrations), 6)
        checks.append(
            SlaCheck(
                name="migrations.completed_ratio",
                limit=spec.migrations_completed_ratio,
                value=ratio,
                passed=ratio >= spec.migrations_completed_ratio,
            )
        )
    durations = [m.duration_s for m in completed if m.duration_s is not None]
    if spec.duration_max_s is not None:
        checks.append(_check("duration_s.max", spec.duration_max_s, durations, "max"))
    if spec.duration_p95_s is not None:
        checks.append(_check("duration_s.p95", spec.duration_p95_s, durations, "p95"))
    for stat, limit in (("max", spec.downtime_max_ms), ("p95", spec.downtime_p95_ms)):
        if limit is None:
            continue
        probe = spec.downtime_probe
        values = [v for m in completed if (v := getattr(m.downtime_ms, probe, None)) is not None]
        checks.append(_check(f"downtime_ms.{probe}.{stat}", limit, values, stat))
    if spec.locust_failure_ratio_max is not None:
        limit = spec.locust_failure_ratio_max
        checks.append(
            SlaCheck(
                name="locust_failure_ratio.max",
                limit=limit,
                value=locust_failure_ratio,
                passed=locust_failure_ratio is not None and locust_failure_ratio <= limit,
            )
        )
    if spec.memory_integrity:
        checks.append(
            SlaCheck(name="memory_integrity", limit=True, value=memory_intact, passed=memory_intact is True)
        )
    return checks
