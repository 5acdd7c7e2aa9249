"""`novamig trend RESULTS.json... | DIR`: how one scenario's figures move over many runs.

Where `compare` asks "is NEW worse than BASE?", trend shows a nightly job's history: every run of
the same scenario side by side, one chart per metric per case, and the run where a metric moved.

- **Grouping.** Runs are grouped by a hash of the scenario as run (results.json's ``scenario``, as
  canonical JSON), the way Rally groups its trends by task config: a changed limit, matrix or
  ``--set`` override is another scenario whose figures do not belong on the same line. Within a
  group, runs are in the order they started.
- **Per run and metric** (the metrics of `compare`: duration, each vantage point's downtime and
  brownout, Locust's failure ratio and p95 latency; repeats of one matrix cell pooled): min,
  median, p95 and max over the run's samples (nearest rank, `novamig.stats.percentile`).
- **Step detection** (simple, on the run medians): the split of the series into a before and an
  after part with the least squared deviation of each part from its own mean is the most likely
  place of a single step; it is reported when the median of the after runs' medians over the
  median of the before runs' medians is beyond the factor (`compare`'s, default 1.1) either way.
  Needs at least 3 runs. One run's bad luck at the end of a series can read as a step: the chart
  shows whether later runs confirm it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from markupsafe import Markup

from novamig.exitcodes import ExitCode
from novamig.report.compare import DEFAULT_FACTOR, METRICS, Metric, collect
from novamig.report.render import ENV
from novamig.report.svg import Canvas, Scale
from novamig.results import Results, ResultsError, load_results
from novamig.stats import percentile

DEFAULT_HTML = "trend.html"
MIN_RUNS_FOR_STEP = 3


class TrendError(Exception):
    """The inputs cannot make a trend (one line, for the user)."""


@dataclass(frozen=True)
class Run:
    number: int
    """1-based, in start order within its scenario group."""
    path: str
    results: Results

    @property
    def started(self) -> str:
        return self.results.environment.started_at.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Point:
    """One metric of one case in one run."""

    run: int
    n: int
    min: float
    median: float
    p95: float
    max: float


@dataclass(frozen=True)
class Step:
    run: int
    """The first run after the move."""
    before: float
    """Median of the run medians before it."""
    after: float
    ratio: float


@dataclass
class Series:
    case: str
    metric: Metric
    points: list[Point]
    step: Step | None = None
    chart: Markup | None = None


@dataclass
class Group:
    name: str
    digest: str
    runs: list[Run]
    series: list[Series] = field(default_factory=list)

    @property
    def steps(self) -> list[Series]:
        return [s for s in self.series if s.step is not None]

    @property
    def by_case(self) -> list[tuple[str, list[Series]]]:
        """The series per case, cases in the order the runs first had them."""
        cases: dict[str, list[Series]] = {}
        for s in self.series:
            cases.setdefault(s.case, []).append(s)
        return list(cases.items())


def scenario_digest(results: Results) -> str:
    """A short hash of the scenario as run: canonical JSON, so key order does not matter."""
    text = json.dumps(results.scenario, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def find_results(inputs: Sequence[str]) -> list[Path]:
    """The results files named, and every ``results.json`` under a directory named (recursively)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(path.rglob("results.json"))
            if not inside:
                raise TrendError(f"{path}: no results.json in this directory or below it")
            found += inside
        elif path.exists():
            found.append(path)
        else:
            raise TrendError(f"{path}: no such file or directory")
    unique = {p.resolve(): p for p in found}  # a file named twice (as file and inside a DIR) counts once
    return list(unique.values())


def _ratio(before: float, after: float) -> float:
    if before == 0:
        return 1.0 if after == 0 else float("inf")
    return after / before


def _sse(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values)


def detect_step(medians: Sequence[float], factor: float) -> tuple[int, float, float] | None:
    """The index where the series steps, and the before and after levels; None without a step.

    The split with the least within-part squared deviation is where a single step most likely is
    (binary segmentation's first cut); it counts when the after/before ratio of the parts' medians
    is beyond `factor` or below 1/`factor`.
    """
    if len(medians) < MIN_RUNS_FOR_STEP:
        return None
    k = min(range(1, len(medians)), key=lambda i: (_sse(medians[:i]) + _sse(medians[i:]), i))
    before, after = percentile(medians[:k], 50), percentile(medians[k:], 50)
    assert before is not None and after is not None
    ratio = _ratio(before, after)
    if ratio > factor or ratio < 1 / factor:
        return k, before, after
    return None


def _point(run: int, values: list[float]) -> Point:
    lo, mid, p95, hi = (percentile(values, p) for p in (0, 50, 95, 100))
    assert lo is not None and mid is not None and p95 is not None and hi is not None
    return Point(run, len(values), lo, mid, p95, hi)


def _series(runs: Sequence[Run], factor: float) -> list[Series]:
    samples = [(run.number, collect(run.results)) for run in runs]
    cases = list(dict.fromkeys(case for _, per_case in samples for case in per_case))
    out = []
    for case in cases:
        for metric in METRICS:
            points = [
                _point(number, values)
                for number, per_case in samples
                if (values := per_case.get(case, {}).get(metric.key))
            ]
            if not points:
                continue
            series = Series(case, metric, points)
            found = detect_step([p.median for p in points], factor)
            if found is not None:
                k, before, after = found
                series.step = Step(points[k].run, before, after, _ratio(before, after))
            series.chart = trend_chart(series)
            out.append(series)
    return out


def group_runs(paths: Sequence[Path], factor: float) -> list[Group]:
    """Load, group by scenario hash, order each group by start time, build its series."""
    by_digest: dict[str, list[tuple[Path, Results]]] = {}
    for path in paths:
        try:
            results = load_results(path)
        except ResultsError as exc:
            raise TrendError(str(exc)) from None
        by_digest.setdefault(scenario_digest(results), []).append((path, results))
    groups = []
    for digest, loaded in by_digest.items():
        loaded.sort(key=lambda item: item[1].environment.started_at)
        runs = [Run(i, str(path), results) for i, (path, results) in enumerate(loaded, 1)]
        name = str(runs[0].results.scenario.get("name", "?"))
        groups.append(Group(name, digest, runs, _series(runs, factor)))
    return groups


# ------------------------------------------------------------------------------------------------
# chart


def trend_chart(series: Series) -> Markup:
    """Per run: min–max as a whisker, p95 as a tick, the median as a dot joined run to run; the
    step, when one was found, as a dashed red line before the run it points at."""
    unit = series.metric.unit
    width, height = 680.0, 190.0
    left, right, top, bottom = 56.0, 16.0, 24.0, 40.0
    points = series.points
    x = Scale(points[0].run - 0.5, points[-1].run + 0.5, left, width - right)
    hi = max(p.max for p in points)
    y = Scale(0, hi * 1.08 or 1.0, height - bottom, top)
    c = Canvas(width, height, f"{series.metric.label} over runs, case {series.case}")
    c.y_axis(y, left, width - right, f"{series.metric.label}" + (f" ({unit})" if unit else ""))
    c.line(left, height - bottom, width - right, height - bottom, "#999")
    every = max(1, len(points) // 20)  # at most ~20 run labels under the axis
    for p in points:
        px = x(p.run)
        c.line(px, y(p.min), px, y(p.max), "#888")
        c.line(px - 3, y(p.min), px + 3, y(p.min), "#888")
        c.line(px - 3, y(p.max), px + 3, y(p.max), "#888")
        c.line(px - 5, y(p.p95), px + 5, y(p.p95), "#e8710a", extra=' stroke-width="2"')
        tip = (
            f"run {p.run}: median {p.median:g}, p95 {p.p95:g}, min {p.min:g}, max {p.max:g} {unit} (n={p.n})"
        )
        c.circle(px, y(p.median), 3.5, "#1f77b4", tip=tip)
        if p.run % every == 0 or p is points[0]:
            c.text(px, height - bottom + 14, f"#{p.run}", anchor="middle", size=10, fill="#666")
    c.polyline([(x(p.run), y(p.median)) for p in points], "#1f77b4", tip="median per run")
    c.text(width - right, height - 6, "run", anchor="end", size=10, fill="#666")
    if series.step is not None:
        sx = x(series.step.run - 0.5)
        c.line(sx, top, sx, height - bottom, "#b00020", extra=' stroke-dasharray="4 3"')
        c.text(sx + 3, top + 10, f"step ×{series.step.ratio:.2f}", size=10, fill="#b00020")
    c.text(left, height - 6, "● median  — p95  | min–max", size=10, fill="#666")
    return c.markup()


# ------------------------------------------------------------------------------------------------
# output


def _fmt(value: float, metric: Metric) -> str:
    if value == float("inf"):
        return "∞"
    return f"{value:.{metric.digits}f}" + (f" {metric.unit}" if metric.unit else "")


def step_text(series: Series) -> str:
    step = series.step
    if step is None:
        return "—"
    return (
        f"step at run {step.run}: ×{step.ratio:.2f} "
        f"({_fmt(step.before, series.metric)} → {_fmt(step.after, series.metric)})"
    )


def write_summary(groups: Sequence[Group], out: TextIO) -> None:
    for g in groups:
        runs = g.runs
        out.write(
            f"scenario {g.name} (as run: {g.digest}), {len(runs)} run(s), "
            f"{runs[0].started} → {runs[-1].started}\n"
        )
        for run in runs:
            out.write(f"  run {run.number}  {run.started}  {run.path}\n")
        header = ["case", "metric", "runs", "first median", "last median", "step"]
        table = [header] + [
            [
                s.case,
                s.metric.label,
                str(len(s.points)),
                _fmt(s.points[0].median, s.metric),
                _fmt(s.points[-1].median, s.metric),
                step_text(s),
            ]
            for s in g.series
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            out.write("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")
        if len(runs) < MIN_RUNS_FOR_STEP:
            out.write(f"  (steps are looked for from {MIN_RUNS_FOR_STEP} runs on)\n")
        out.write(f"  {len(g.steps)} step(s) found\n\n")


def render_trend(groups: Sequence[Group], factor: float) -> str:
    """The trend as one self-contained HTML page (inline CSS and SVG, no script, no fetch)."""
    return ENV.get_template("trend.html.j2").render(
        groups=groups, factor=factor, min_runs=MIN_RUNS_FOR_STEP, step_text=step_text
    )


def cmd_trend(
    inputs: Sequence[str],
    html: str = DEFAULT_HTML,
    factor: float = DEFAULT_FACTOR,
    out: TextIO | None = None,
) -> int:
    """Exit 0 with the trend written, 2 on bad input (one line on stderr)."""
    out = out or sys.stdout
    try:
        if not inputs:
            raise TrendError("needs results files or directories holding them")
        if not factor > 1:
            raise TrendError(f"--factor must be above 1, not {factor:g}")
        groups = group_runs(find_results(inputs), factor)
    except TrendError as exc:
        print(f"novamig trend: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    if len(groups) > 1:
        out.write(f"{len(groups)} different scenarios (as run) among the inputs: each has its own trend\n\n")
    write_summary(groups, out)
    try:
        Path(html).write_text(render_trend(groups, factor))
    except OSError as exc:
        print(f"novamig trend: cannot write {html}: {exc.strerror}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    out.write(f"HTML: {html}\n")
    return int(ExitCode.OK)
