"""SLA verdicts of one case, Rally style: one entry per criterion — name, limit, value, passed.

Every criterion is one `Check` in `CHECKS`: its name, the figure it reads, the statistic that turns
the case's values into one, how the value is held to the limit, and what a null value means. A
check the scenario does not ask for (no limit) is not judged. A check on a figure that was not
measured fails with value null and the reason in its ``reason`` — the probe is not set up, it
cannot measure on this cloud (and why), or no migration completed — because a gate that passes
without data would be a gate that cannot fail.

Criteria come from the scenario's ``sla`` block, plus one that always applies:
``migrations.failed`` (limit 0) counts migrations whose outcome was ``error`` or ``timeout``, or
``cancelled`` when the scenario did not ask for an abort (an expected abort is not a failure).
``migrations.completed_ratio`` (the scenario's ``migrations_completed_ratio``, 1.0 by default) is
the share of migrations that ended ``completed``, judged once the case requested any. A scenario
that lowers that ratio below 1 says how many migrations may fail, so ``migrations.failed`` is then
not judged: with both, a ratio of 0.5 could never pass a case in which one migration timed out.

Downtime and duration are judged over completed migrations; downtime on the probe the scenario
names (``downtime_ms.guest.max`` …). When no migration completed and the case's own completed
ratio is 0 (a sweep's cell where the scenario expects migrations not to converge, `sla_by_cell`),
those checks and memory integrity have nothing to judge and the scenario said so: they pass with
value null and that reason, instead of failing the case the ratio allowed. Percentiles are
`novamig.stats.percentile`'s nearest rank: a p95 is a value some migration really had (with fewer
than 20 migrations, the largest). A failed downtime check whose limit is below the case's own noise
floor on that probe (the longest gap it saw with no migration) says so in its ``reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from novamig.measure.contract import not_measured_reason
from novamig.results import MigrationRecord, SlaCheck
from novamig.stats import percentile

Value = float | bool
Limit = float | bool


@dataclass(frozen=True)
class SlaSpec:
    """The scenario's ``sla`` block as the checks read it (None: no limit, not judged)."""

    downtime_probe: str = "guest"
    downtime_max_ms: float | None = None
    downtime_p95_ms: float | None = None
    duration_max_s: float | None = None
    duration_p95_s: float | None = None
    locust_failure_ratio_max: float | None = None
    memory_integrity: bool | None = None
    migrations_completed_ratio: float | None = 1.0


@dataclass(frozen=True)
class CaseFigures:
    """What the checks read of one case."""

    migrations: Sequence[MigrationRecord]
    abort_expected: bool = False
    locust_failure_ratio: float | None = None  # the case's locust.total.failure_ratio
    probes: Mapping[str, str | None] | None = None
    """Figure → None when its probe ran, or the reason it was unavailable; a figure missing from
    the mapping had no probe set up. None: not known (every figure is taken as set up)."""
    noise_floor_ms: Mapping[str, float | None] | None = None
    """Probe → the case's noise floor (its longest gap with no migration), where measured."""

    @property
    def completed(self) -> list[MigrationRecord]:
        return [m for m in self.migrations if m.status == "completed"]

    def probe_problem(self, figure: str) -> str | None:
        """Why `figure` has no probe measuring it in this case (None: it has one)."""
        if self.probes is None:
            return None
        if figure not in self.probes:
            return f"the {figure} probe is not set up in this case (measure.probes does not name it)"
        unavailable = self.probes[figure]
        if unavailable is not None:
            return f"the {figure} probe cannot measure on this cloud: {unavailable}"
        return None


def _count(values: Sequence[Value | None]) -> float | None:
    return sum(1 for v in values if v is True)


def _share(values: Sequence[Value | None]) -> float | None:
    return round(sum(1 for v in values if v is True) / len(values), 6) if values else None


def _all(values: Sequence[Value | None]) -> bool | None:
    if not values or any(v is None for v in values):
        return None  # an unchecked migration must fail the check, not pass it by default
    return all(values)


def _only(values: Sequence[Value | None]) -> Value | None:
    return values[0] if values else None


def _numbers(values: Sequence[Value | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not isinstance(v, bool)]


Statistic = Literal["max", "p95", "count", "share", "all", "value"]
Comparison = Literal["at_most", "at_least", "is"]

STATISTICS: dict[Statistic, Callable[[Sequence[Value | None]], Value | None]] = {
    "max": lambda values: max(_numbers(values), default=None),  # of the measured values
    "p95": lambda values: percentile(_numbers(values), 95),  # nearest rank, of the measured values
    "count": _count,  # how many are true
    "share": _share,  # the fraction that is true
    "all": _all,  # every one true (null when one is unknown)
    "value": _only,  # the case's one value
}

COMPARISONS: dict[Comparison, Callable[[Value, Limit], bool]] = {
    "at_most": lambda value, limit: value <= limit,
    "at_least": lambda value, limit: value >= limit,
    "is": lambda value, limit: value is limit,
}


@dataclass(frozen=True)
class Check:
    """One SLA criterion."""

    name: str  # the results' entry name; ``{probe}`` is the scenario's downtime probe
    figure: str  # what it reads, per migration or for the case
    statistic: Statistic  # how the values become one (STATISTICS)
    compare: Comparison  # how the value is held to the limit (COMPARISONS)
    limit: Callable[[SlaSpec], Limit | None]  # None: the scenario does not ask, not judged
    values: Callable[[CaseFigures, SlaSpec], Sequence[Value | None]]
    if_null: Callable[[CaseFigures, SlaSpec], str]  # why the value is null
    needs_migrations: bool = False  # judged only once the case requested a migration
    of_completed: bool = False  # reads completed migrations only
    if_failed: Callable[[CaseFigures, SlaSpec, Limit], str | None] | None = None  # a failure's context

    def judge(self, case: CaseFigures, spec: SlaSpec) -> SlaCheck | None:
        limit = self.limit(spec)
        if limit is None or (self.needs_migrations and not case.migrations):
            return None
        name = self.name.format(probe=spec.downtime_probe)
        value = STATISTICS[self.statistic](self.values(case, spec))
        if value is None and self.of_completed and _none_completed_allowed(case, spec):
            allowed = f"{_no_completed_migration(case, spec)}, which the case's completed ratio of 0 allows"
            return SlaCheck(name=name, limit=limit, value=None, passed=True, reason=allowed)
        if value is None:
            return SlaCheck(name=name, limit=limit, value=None, passed=False, reason=self.if_null(case, spec))
        if isinstance(value, float):
            value = round(value, 6)
        passed = COMPARISONS[self.compare](value, limit)
        reason = self.if_failed(case, spec, limit) if not passed and self.if_failed is not None else None
        return SlaCheck(name=name, limit=limit, value=value, passed=passed, reason=reason)


def _floor_above_limit(case: CaseFigures, spec: SlaSpec, limit: Limit) -> str | None:
    """A downtime limit below the case's own noise floor cannot tell a slow switchover from a
    machine that stalls this long anyway: the check still fails (a gate that passes without
    evidence cannot fail), but says so, so that an operator looks at the machine's load first."""
    probe = spec.downtime_probe
    floor = (case.noise_floor_ms or {}).get(probe)
    if floor is None or isinstance(limit, bool) or floor <= limit:
        return None
    return (
        f"the {probe} probe's noise floor in this case, {floor:.0f} ms (its longest gap with no "
        f"migration), is above the limit: the machine stalled this long without any migration"
    )


def _none_completed_allowed(case: CaseFigures, spec: SlaSpec) -> bool:
    """No migration completed, and the case's SLA says none has to."""
    return bool(case.migrations) and not case.completed and spec.migrations_completed_ratio == 0


def _failed_limit(spec: SlaSpec) -> float | None:
    """0, unless the scenario's own completed ratio below 1 already says how many may fail."""
    ratio = spec.migrations_completed_ratio
    return None if ratio is not None and ratio < 1 else 0


def _failed(case: CaseFigures, spec: SlaSpec) -> list[Value | None]:
    bad = {"error", "timeout"} | (set() if case.abort_expected else {"cancelled"})
    return [m.status in bad for m in case.migrations]


def _durations(case: CaseFigures, spec: SlaSpec) -> list[Value | None]:
    return [m.duration_s for m in case.completed]


def _downtimes(case: CaseFigures, spec: SlaSpec) -> list[Value | None]:
    return [getattr(m.downtime_ms, spec.downtime_probe, None) for m in case.completed]


def _no_completed_migration(case: CaseFigures, spec: SlaSpec) -> str:
    if not case.migrations:
        return "no migration was requested"
    if not case.completed:
        return f"no migration completed ({len(case.migrations)} requested)"
    return "no completed migration has the figure"


def _downtime_null(case: CaseFigures, spec: SlaSpec) -> str:
    probe = spec.downtime_probe
    problem = case.probe_problem(probe)
    if problem is not None:
        return problem
    if not case.completed:
        return _no_completed_migration(case, spec)
    for m in case.completed:  # the reason recorded for the first migration without a figure
        why = not_measured_reason(m, probe)
        if why is not None:
            return f"no completed migration has a {probe} figure: {why}"
    return f"no completed migration has a {probe} figure"


def _locust_null(case: CaseFigures, spec: SlaSpec) -> str:
    if case.probes is not None and "locust" not in case.probes:
        return "the case runs no Locust load"
    problem = case.probe_problem("locust")
    return problem or "Locust gave no failure ratio: it recorded no request"


def _integrity_null(case: CaseFigures, spec: SlaSpec) -> str:
    if not case.completed:
        return _no_completed_migration(case, spec)
    unchecked = [m for m in case.completed if m.memory_integrity is None]
    problem = case.probe_problem("integrity")
    said = next((m.details.get("integrity") for m in unchecked if m.details.get("integrity")), None)
    why = problem or (said.get("error") if isinstance(said, dict) else None)
    return f"{len(unchecked)} of {len(case.completed)} completed migrations were not checked" + (
        f": {why}" if why else " (the guest answers GET /integrity after each migration)"
    )


def _completed(case: CaseFigures, spec: SlaSpec) -> list[Value | None]:
    return [m.status == "completed" for m in case.migrations]


def _locust_ratio(case: CaseFigures, spec: SlaSpec) -> list[Value | None]:
    return [case.locust_failure_ratio]


def _integrity(case: CaseFigures, spec: SlaSpec) -> list[Value | None]:
    return [m.memory_integrity for m in case.completed]


# Downtime and duration are read of completed migrations, the rest as said; {probe} in a name is
# sla.downtime_ms.probe. A null value fails with the reason the check's last column gives.
CHECKS: tuple[Check, ...] = (
    # name, figure it reads, statistic, comparison, limit (None: not judged), values, why null
    Check("migrations.failed", "status", "count", "at_most", _failed_limit, _failed, _no_completed_migration),
    Check(
        "migrations.completed_ratio", "status", "share", "at_least",
        lambda s: s.migrations_completed_ratio, _completed, _no_completed_migration, needs_migrations=True,
    ),
    Check("duration_s.max", "duration_s", "max", "at_most", lambda s: s.duration_max_s, _durations,
          _no_completed_migration, of_completed=True),
    Check("duration_s.p95", "duration_s", "p95", "at_most", lambda s: s.duration_p95_s, _durations,
          _no_completed_migration, of_completed=True),
    Check("downtime_ms.{probe}.max", "downtime_ms.{probe}", "max", "at_most", lambda s: s.downtime_max_ms,
          _downtimes, _downtime_null, of_completed=True, if_failed=_floor_above_limit),
    Check("downtime_ms.{probe}.p95", "downtime_ms.{probe}", "p95", "at_most", lambda s: s.downtime_p95_ms,
          _downtimes, _downtime_null, of_completed=True, if_failed=_floor_above_limit),
    Check("locust_failure_ratio.max", "locust.total.failure_ratio", "value", "at_most",
          lambda s: s.locust_failure_ratio_max, _locust_ratio, _locust_null),
    Check("memory_integrity", "memory_integrity", "all", "is", lambda s: True if s.memory_integrity else None,
          _integrity, _integrity_null, of_completed=True),
)  # fmt: skip
"""Every SLA criterion novamig judges, in the order results list them. Adding one is one row (and,
for a new limit, its field in `SlaSpec` and the scenario's ``sla`` block)."""


def evaluate(
    spec: SlaSpec,
    migrations: Sequence[MigrationRecord],
    *,
    abort_expected: bool = False,
    locust_failure_ratio: float | None = None,
    probes: Mapping[str, str | None] | None = None,
    noise_floor_ms: Mapping[str, float | None] | None = None,
) -> list[SlaCheck]:
    """Every check the scenario asks for, in `CHECKS` order."""
    case = CaseFigures(migrations, abort_expected, locust_failure_ratio, probes, noise_floor_ms)
    return [verdict for check in CHECKS if (verdict := check.judge(case, spec)) is not None]
