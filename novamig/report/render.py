"""index.html from results: a single self-contained page (inline CSS and SVG, no script, no fetch).

Rendered from `Results` only, so any results.json renders the same page: a finished run, an
interrupted one, one where every migration failed, one with no case at all, one where only some
vantage points measured. The view model is built here (figures, charts, reasons for missing
figures) and the template only lays it out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml
from markupsafe import Markup

from novamig.report.charts import MAX_BAR_GROUPS, downtime_bars, locust_rate, strip_plot, timeline
from novamig.report.explain import explain
from novamig.report.matrix import matrix_grids
from novamig.report.summary import (
    PROBES,
    MetricSummary,
    case_summaries,
    judged_on,
    measured_probes,
    null_reason,
)
from novamig.results import CaseResult, MigrationRecord, Results, SlaCheck
from novamig.scenario.redaction import redact

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("novamig.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

PAGE_TIMELINES = 240
"""Timelines drawn on the whole page: a run of many cases draws fewer per case (at least 2), so a
10 000-migration run of 100 cases stays a page a browser scrolls (~5 KB per timeline)."""
PAGE_BAR_GROUPS = 1200
"""Migrations drawn in the downtime bar charts of the whole page (at least 10 per case)."""
MIGRATIONS_OPEN = 50
"""A case's table of migrations is unfolded up to this many rows: a folded table is not laid out
until opened, which keeps a page of thousands of migrations quick to open and scroll."""
TIMELINES_OPEN = 8
"""A case with at most this many migrations shows their timelines unfolded."""
MAX_TIMELINES = 12
"""Timelines drawn per case. A timeline is ~5 KB of SVG: 1 000 migrations would make a 6 MB page.
Beyond this many, the page keeps the ones worth reading: failed migrations first, then the longest
downtimes (guest, else network, Locust, hypervisor), shown in run order."""


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


ENV.filters["fmt"] = _fmt


@dataclass
class CaseView:
    case: CaseResult
    anchor: str
    summaries: list[MetricSummary]
    bars: Markup | None
    bars_note: str
    timelines: list[tuple[int, MigrationRecord, Markup | None]]
    null_figures: list[str] = field(default_factory=list)
    locust_rate: Markup | None = None
    locust_names: list[NameRow] = field(default_factory=list)
    differences: list[tuple[int, str, list[str]]] = field(default_factory=list)
    """Per migration with a timeline (number, server, sentences): why its vantage points differ."""
    events_for: set[int] = field(default_factory=set)
    """Migrations (numbered from 1) whose events the table lists: those with a timeline drawn.
    Beyond them the page gives the count only: 13 000 event lines of a 1 000-migration run would
    be a log of ~0.7 MB, not a report; results.json keeps them all."""


@dataclass(frozen=True)
class NameRow:
    """One request name of one server: from novamig's per-request records (``by_name``: counts
    and nearest-rank p50/p95/p99/max) when results.json has them, else as Locust itself counted
    it (``locust_reported.by_name``: counts, mean and max only)."""

    server: str
    name: str
    requests: object
    failures: object
    mean_ms: object
    max_ms: object
    p50_ms: object = None
    p95_ms: object = None
    p99_ms: object = None


@dataclass(frozen=True)
class SlaRow:
    case: str
    anchor: str
    check: SlaCheck
    own_sla: str = ""  # why the case's SLA is not the scenario's (its `sla_by_cell` reasons)

    @property
    def probe(self) -> str:
        """The vantage point an SLA is judged on (`downtime_ms.guest.max` → guest), else "—"."""
        return judged_on(self.check.name) or "—"


def _null_figures(case: CaseResult, measured: set[str]) -> list[str]:
    """Why figures are missing, one line per (probe, reason) with the migrations it concerns."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i, m in enumerate(case.migrations, 1):
        if m.status != "completed":
            grouped[("all figures", f"the migration ended {m.status}")].append(f"#{i}")
            continue
        for probe in PROBES:
            if getattr(m.downtime_ms, probe) is None:
                grouped[(probe, null_reason(m, probe, measured))].append(f"#{i}")
    return [f"{probe}: {reason} ({', '.join(which)})" for (probe, reason), which in grouped.items()]


def _locust_names(case: CaseResult) -> list[NameRow]:
    servers = case.locust.servers if case.locust is not None else None
    rows = []
    for sid, stats in (servers or {}).items():
        own = stats.get("by_name")
        reported = (stats.locust_reported or {}).get("by_name")
        by_name = own if isinstance(own, dict) and own else reported
        means = reported if isinstance(reported, dict) else {}
        for name, figures in (by_name if isinstance(by_name, dict) else {}).items():
            get = figures.get if isinstance(figures, dict) else {}.get
            mean = means.get(name)
            rows.append(
                NameRow(
                    stats.name or sid,
                    str(name),
                    get("requests"),
                    get("failures"),
                    mean.get("mean_ms") if isinstance(mean, dict) else None,
                    get("max_ms"),
                    get("p50_ms"),
                    get("p95_ms"),
                    get("p99_ms"),
                )
            )
    return rows


def _worth_a_timeline(migrations: list[MigrationRecord], limit: int = MAX_TIMELINES) -> list[int]:
    """Indexes (0-based, in run order) of the migrations whose timelines the page draws."""
    if len(migrations) <= limit:
        return list(range(len(migrations)))

    def interest(i: int) -> tuple[bool, float]:
        m = migrations[i]
        figures = [getattr(m.downtime_ms, p) for p in PROBES]
        downtime = next((f for f in figures if f is not None), 0.0)
        return (m.status == "completed", -downtime)

    return sorted(sorted(range(len(migrations)), key=interest)[:limit])


@dataclass(frozen=True)
class Budget:
    """How much of each case the page draws, shared out over the run's cases."""

    timelines: int = MAX_TIMELINES
    bar_groups: int = MAX_BAR_GROUPS

    @classmethod
    def for_cases(cls, cases: int) -> Budget:
        share = max(1, cases)
        return cls(
            timelines=max(2, min(MAX_TIMELINES, PAGE_TIMELINES // share)),
            bar_groups=max(10, min(MAX_BAR_GROUPS, PAGE_BAR_GROUPS // share)),
        )


def _case_view(index: int, case: CaseResult, measured: set[str], budget: Budget = Budget()) -> CaseView:
    completed = sum(m.status == "completed" for m in case.migrations)
    chosen = _worth_a_timeline(case.migrations, budget.timelines)
    bars = downtime_bars(case, budget.bar_groups)
    if bars is None:
        note = "no downtime figure to draw: " + ("no migration completed" if not completed else "see below")
    elif completed > budget.bar_groups:
        shown = budget.bar_groups
        note = f"the first {shown} of {completed} completed migrations; the distributions cover all"
    else:
        note = ""
    return CaseView(
        case=case,
        anchor=f"case-{index}",
        summaries=case_summaries(case, measured),
        bars=bars,
        bars_note=note,
        timelines=[(i + 1, case.migrations[i], timeline(case.migrations[i])) for i in chosen],
        null_figures=_null_figures(case, measured),
        locust_rate=locust_rate(case),
        locust_names=_locust_names(case),
        events_for={i + 1 for i in chosen},
        differences=[
            (i + 1, m.server, lines)
            for i in chosen
            if (m := case.migrations[i]).status == "completed" and (lines := explain(m, case))
        ],
    )


def _distributions(results: Results) -> list[tuple[str, Markup | None]]:
    downtimes: dict[str, list[tuple[str, float]]] = {p: [] for p in PROBES}
    durations: dict[str, list[tuple[str, float]]] = {"duration": []}
    for case in results.cases:
        for i, m in enumerate(case.migrations, 1):
            if m.status != "completed":
                continue
            label = f"{case.id} #{i} {m.server}"
            for probe in PROBES:
                value = getattr(m.downtime_ms, probe)
                if value is not None:
                    downtimes[probe].append((label, value))
            if m.duration_s is not None:
                durations["duration"].append((label, m.duration_s))
    return [
        ("downtime per vantage point", strip_plot("downtime per vantage point (ms)", "ms", downtimes)),
        ("duration", strip_plot("migration duration (s)", "s", durations)),
    ]


def scenario_as_run(results: Results) -> str:
    """The scenario as results.json recorded it, as YAML, secret-looking values replaced.

    results.json already stores it redacted; redacting again here keeps a hand-edited or foreign
    results file from putting a password on a page that gets attached to bugs.
    """
    text: str = yaml.safe_dump(redact(results.scenario), sort_keys=False, allow_unicode=True)
    return text


def render_index(results: Results) -> str:
    measured = measured_probes(results)
    budget = Budget.for_cases(len(results.cases))
    views = [_case_view(i, c, measured, budget) for i, c in enumerate(results.cases, 1)]
    sla = [SlaRow(v.case.id, v.anchor, s, " ".join(v.case.sla_reasons)) for v in views for s in v.case.sla]
    return ENV.get_template("index.html.j2").render(
        r=results,
        views=views,
        sla=sla,
        distributions=_distributions(results),
        scenario_yaml=scenario_as_run(results),
        grids=matrix_grids([(v.anchor, v.case) for v in views]),
        timelines_open=TIMELINES_OPEN,
        migrations_open=MIGRATIONS_OPEN,
    )


def write_index(results: Results, path: Path) -> None:
    path.write_text(render_index(results))
