"""What a valid scenario's SLA says that it may not mean, for `novamig validate` to warn about.

A `p95` limit is a nearest-rank percentile over one case's migrations (`novamig.stats.percentile`):
over fewer than 20 migrations the 95th percentile is the largest of them, so the `p95` limit is a
`max` limit, and a single slow migration fails it. A scenario that sets `p95: 1000` beside
`max: 2000` over six migrations means "most under 1 s, none over 2 s", and gets "none over 1 s".
"""

from __future__ import annotations

from novamig.scenario.matrix import expand_cases
from novamig.scenario.models import Scenario

#: Fewer migrations than this per case: the nearest-rank p95 is the largest one.
P95_MIN_MIGRATIONS = 20


def migrations_per_case(scenario: Scenario) -> int:
    """How many live migrations one case of `scenario` (a cell: no matrix) requests."""
    per_server = 1 if scenario.migration.target.startswith("drain:") else scenario.migration.count
    return scenario.fleet.count * per_server


def p95_warnings(scenario: Scenario) -> list[str]:
    """One line per `p95` limit that some case judges over too few migrations to be a percentile."""
    found: dict[str, None] = {}
    for case in expand_cases(scenario):
        s = case.scenario
        n = migrations_per_case(s)
        if n == 0 or n >= P95_MIN_MIGRATIONS:
            continue
        limits = {"sla.downtime_ms.p95": s.sla.downtime_ms.p95, "sla.duration_s.p95": s.sla.duration_s.p95}
        for key, limit in limits.items():
            if limit is not None:
                found.setdefault(
                    f"{key} is judged over {n} migration(s) per case: with fewer than "
                    f"{P95_MIN_MIGRATIONS} the nearest-rank p95 is the largest of them, so it acts as a "
                    f"max of {limit:g} (more migrations per case, e.g. migration.count, make it a percentile)"
                )
    return list(found)
