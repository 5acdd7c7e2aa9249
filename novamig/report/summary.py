"""Per-case figures for the report: p50/p95/max of duration and each vantage point's downtime.

A downtime smaller than its probe's resolution (the probe's sampling period) or its noise floor (the
longest gap that probe saw with no migration running) cannot be told from nothing, so it is shown as
a bound ("< 1 ms", "≤ 18.5 ms"), never as if exact. A figure that is missing says why, from the
reason the runner wrote into the migration's events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from novamig.measure.contract import not_measured_reason
from novamig.results import CaseResult, MigrationRecord, Results
from novamig.stats import percentile

PROBES: tuple[str, ...] = ("guest", "network", "locust", "hypervisor")


@dataclass(frozen=True)
class Figure:
    """One reported number and, when it is not exact, the bound it is shown as."""

    value: float
    digits: int
    bound: str | None = None
    """e.g. "< 1.0 (resolution)" or "≤ 18.5 (noise floor)": shown instead of `value`."""

    @property
    def text(self) -> str:
        return self.bound or f"{self.value:.{self.digits}f}"


@dataclass(frozen=True)
class MetricSummary:
    name: str
    unit: str
    figures: dict[str, Figure]
    """p50, p95, max; empty when no migration has the figure (see `reason`)."""
    count: int
    resolution: float | None = None
    noise_floor: float | None = None
    reason: str | None = None


def measured_probes(results: Results) -> set[str]:
    """The probes the scenario asked for (all of them when the scenario does not say)."""
    measure = results.scenario.get("measure")
    probes = measure.get("probes") if isinstance(measure, dict) else None
    return {str(p) for p in probes} if isinstance(probes, list) else set(PROBES)


def judged_on(check_name: str) -> str | None:
    """The vantage point an SLA check is judged on (`downtime_ms.guest.max` → guest), else None.

    Only downtime checks have one: duration and migration counts come from Nova's own records.
    """
    parts = check_name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in PROBES else None


def null_reason(m: MigrationRecord, probe: str, measured: set[str]) -> str:
    """Why `m` has no downtime figure for `probe`."""
    reason = not_measured_reason(m, probe)
    if reason:
        return reason
    if probe not in measured:
        return "not among the scenario's probes (measure.probes)"
    if m.status != "completed":
        return f"the migration did not complete ({m.status})"
    return "no reason recorded"


def _figure(value: float, digits: int, resolution: float | None, floor: float | None) -> Figure:
    if resolution is not None and value < resolution:
        return Figure(value, digits, f"< {resolution:.{digits}f} (resolution)")
    if floor is not None and value <= floor:
        return Figure(value, digits, f"≤ {floor:.{digits}f} (noise floor)")
    return Figure(value, digits)


def _summary(
    values: Sequence[float], digits: int, resolution: float | None, floor: float | None
) -> dict[str, Figure]:
    found = {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": percentile(values, 100)}
    return {k: _figure(v, digits, resolution, floor) for k, v in found.items() if v is not None}


def _worst(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def case_summaries(case: CaseResult, measured: set[str]) -> list[MetricSummary]:
    """Duration and each probe's downtime over the case's completed migrations."""
    done = [m for m in case.migrations if m.status == "completed"]
    durations = [m.duration_s for m in done if m.duration_s is not None]
    poll = _worst([m.poll_period_s for m in done])
    rows = [
        MetricSummary(
            "duration",
            "s",
            _summary(durations, 3, None, None),
            len(durations),
            resolution=poll,
            reason=None if durations else "no migration completed",
        )
    ]
    for probe in PROBES:
        values = [v for m in done if (v := getattr(m.downtime_ms, probe)) is not None]
        resolution = _worst([getattr(m.resolution_ms, probe) for m in done])
        floor = getattr(case.noise_floor_ms, probe)
        reason = None
        if not values:
            reason = null_reason(done[0], probe, measured) if done else "no migration completed"
        rows.append(
            MetricSummary(
                f"downtime {probe}",
                "ms",
                _summary(values, 1, resolution, floor),
                len(values),
                resolution=resolution,
                noise_floor=floor,
                reason=reason,
            )
        )
    return rows
