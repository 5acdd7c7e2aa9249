"""`novamig compare BASE.json NEW.json [NEW2 ...]`: did a change make migration worse?

Per case (matched by scenario name and matrix cell: the case's `params`; the repeats of one cell are
pooled) and per metric, the ratio NEW/BASE of the medians and a verdict. A metric *regressed* only
when both hold, the way asv decides:

- the samples differ: a two-sided Mann-Whitney U test on the raw samples gives p < `P_THRESHOLD`
  (noise between runs is large — a downtime depends on where the switchover lands — so a ratio of
  medians alone would flag noise);
- the change matters: the ratio of medians is beyond `--factor` (a significant 2 % is not a
  regression worth a bug).

With too few samples for the test to ever reach p < `P_THRESHOLD` (`utest.min_p_value`: fewer than
5 per side at 0.01), the verdict rests on the factor alone and says so: "not enough repeats to
test". Every metric is lower-is-better.

Samples: per completed migration, its duration and each vantage point's downtime and brownout; per
case (one per repeat), Locust's failure ratio and p95 latency. A failed migration has no
meaningful downtime, so it adds no sample (its failure shows in the run's own verdict).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from novamig.exitcodes import ExitCode
from novamig.report.render import ENV
from novamig.report.utest import mann_whitney_u, min_p_value
from novamig.results import (
    CaseResult,
    MigrationRecord,
    PerProbe,
    RequestStats,
    Results,
    ResultsError,
    load_results,
)
from novamig.stats import percentile

P_THRESHOLD = 0.01
"""Two-sided p below which two samples are called different.

Why 0.01: downtimes are noisy (a floor plus a long tail: the medians of two runs of 10 identical
migrations differ by more than 13 % one time in ten), so the factor alone filters little noise;
a compare tests ~10 metrics per case, and at 0.05 one in three comparisons of two identical setups
would flag something. At 0.01 a metric of identical setups is flagged ~1.3 % of the time and a
×1.5 downtime over 10 repeats is caught ~97 % of the time (docs/reports.md). asv uses a stricter
0.002 on benchmarks it can repeat cheaply; that needs 7 samples a side before it can say anything,
and a novamig repeat costs minutes. At 0.01 the test needs 5 a side (2 / C(10, 5) = 0.008)."""

DEFAULT_FACTOR = 1.1

PROBES: tuple[str, ...] = ("guest", "network", "locust", "hypervisor")


class Verdict(enum.StrEnum):
    REGRESSED = "regressed"
    IMPROVED = "improved"
    SAME = "no significant change"
    NOT_COMPARABLE = "not comparable"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    digits: int


def _probe_metrics(kind: str) -> list[Metric]:
    return [Metric(f"{kind}.{p}", f"{kind} {p}", "ms", 1) for p in PROBES]


METRICS: tuple[Metric, ...] = (
    Metric("duration", "duration", "s", 3),
    *_probe_metrics("downtime"),
    *_probe_metrics("brownout"),
    Metric("locust.failure_ratio", "locust failure ratio", "", 4),
    Metric("locust.latency_p95", "locust latency p95", "ms", 1),
)

Samples = dict[str, list[float]]


@dataclass(frozen=True)
class Row:
    """One metric of one case: BASE against one NEW run."""

    case: str
    metric: Metric
    base: list[float]
    new: list[float]
    verdict: Verdict
    ratio: float | None = None
    p: float | None = None
    tested: bool = False
    note: str = ""

    @property
    def base_median(self) -> float | None:
        return percentile(self.base, 50)

    @property
    def new_median(self) -> float | None:
        return percentile(self.new, 50)

    @property
    def label(self) -> str:
        """The verdict as printed: a verdict on the factor alone says it was not tested."""
        if self.note:
            return f"{self.verdict.value} ({self.note})"
        return self.verdict.value


@dataclass
class Comparison:
    base_path: str
    new_path: str
    rows: list[Row] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(r.verdict is Verdict.REGRESSED for r in self.rows)


class CompareError(Exception):
    """The inputs cannot be compared (one line, for the user)."""


def case_label(case: CaseResult) -> str:
    """The matrix cell a case ran, or its id without the repeat suffix for a scenario without one."""
    if case.params:
        return ", ".join(f"{k}={v}" for k, v in sorted(case.params.items()))
    return case.id.split("#", 1)[0]


def _locust_total(case: CaseResult) -> RequestStats:
    """The case's Locust totals; an empty block when the case ran no Locust."""
    locust = case.locust
    return locust.total if locust is not None and locust.total is not None else RequestStats()


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _add(samples: Samples, key: str, value: object) -> None:
    number = _number(value)
    if number is not None:
        samples.setdefault(key, []).append(number)


def _add_migration(samples: Samples, m: MigrationRecord) -> None:
    _add(samples, "duration", m.duration_s)
    for kind, figures in (("downtime", m.downtime_ms), ("brownout", m.brownout_ms)):
        per_probe: PerProbe = figures
        for probe in PROBES:
            _add(samples, f"{kind}.{probe}", getattr(per_probe, probe))


def collect(results: Results) -> dict[str, Samples]:
    """Samples per case label and metric key, repeats of one cell pooled."""
    cases: dict[str, Samples] = {}
    for case in results.cases:
        samples = cases.setdefault(case_label(case), {})
        for m in case.migrations:
            if m.status == "completed":
                _add_migration(samples, m)
        total = _locust_total(case)
        _add(samples, "locust.failure_ratio", total.failure_ratio)
        _add(samples, "locust.latency_p95", total.latency_ms.p95 if total.latency_ms is not None else None)
    return cases


def _ratio(base: float, new: float) -> float:
    if base == 0:
        return 1.0 if new == 0 else float("inf")
    return new / base


def decide(case: str, metric: Metric, base: list[float], new: list[float], factor: float) -> Row:
    """The verdict on one metric: significant by the U test (when it can be) and beyond the factor."""
    if not base or not new:
        side = "BASE" if not base else "NEW"
        return Row(case, metric, base, new, Verdict.NOT_COMPARABLE, note=f"no samples in {side}")
    base_median, new_median = percentile(base, 50), percentile(new, 50)
    assert base_median is not None and new_median is not None
    ratio = _ratio(base_median, new_median)
    tested = min_p_value(len(base), len(new)) < P_THRESHOLD
    p = mann_whitney_u(base, new).p if tested else None
    significant = p is None or p < P_THRESHOLD
    if significant and ratio > factor:
        verdict = Verdict.REGRESSED
    elif significant and ratio < 1 / factor:
        verdict = Verdict.IMPROVED
    else:
        verdict = Verdict.SAME
    note = "" if tested else "factor only: not enough repeats to test"
    return Row(case, metric, base, new, verdict, ratio=ratio, p=p, tested=tested, note=note)


def compare(base: Results, new: Results, base_path: str, new_path: str, factor: float) -> Comparison:
    if base.scenario.get("name") != new.scenario.get("name"):
        raise CompareError(
            f"different scenarios: {base_path} ran {base.scenario.get('name')!r}, "
            f"{new_path} ran {new.scenario.get('name')!r}"
        )
    base_cases, new_cases = collect(base), collect(new)
    comparison = Comparison(base_path, new_path)
    comparison.only_base = [c for c in base_cases if c not in new_cases]
    comparison.only_new = [c for c in new_cases if c not in base_cases]
    for case, base_samples in base_cases.items():
        if case not in new_cases:
            continue
        new_samples = new_cases[case]
        for metric in METRICS:
            b, n = base_samples.get(metric.key, []), new_samples.get(metric.key, [])
            if b or n:
                comparison.rows.append(decide(case, metric, b, n, factor))
    return comparison


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    if value == float("inf"):
        return "∞"
    return f"{value:.{digits}f}"


def cells(row: Row) -> list[str]:
    """A row's printed cells: case, metric, base median (n), new median (n), ratio, p, verdict."""
    unit = f" {row.metric.unit}" if row.metric.unit else ""
    return [
        row.case,
        row.metric.label,
        f"{_fmt(row.base_median, row.metric.digits)}{unit} (n={len(row.base)})",
        f"{_fmt(row.new_median, row.metric.digits)}{unit} (n={len(row.new)})",
        "—" if row.ratio is None else f"×{_fmt(row.ratio, 3)}",
        "—" if row.p is None else (f"{row.p:.4f}" if row.p >= 1e-4 else "< 0.0001"),
        row.label,
    ]


HEADER = ["case", "metric", "BASE median", "NEW median", "NEW/BASE", "p", "verdict"]
_COLOURS = {Verdict.REGRESSED: "\033[1;31m", Verdict.IMPROVED: "\033[32m"}


def write_table(comparison: Comparison, factor: float, out: TextIO, colour: bool) -> None:
    out.write(
        f"BASE {comparison.base_path}  →  NEW {comparison.new_path}\n"
        f"(a change is significant at two-sided Mann-Whitney p < {P_THRESHOLD} and a ratio of "
        f"medians beyond ×{factor:g} or ×{1 / factor:.3g})\n"
    )
    table = [HEADER] + [cells(r) for r in comparison.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    for i, line in enumerate(table):
        text = "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        start = _COLOURS.get(comparison.rows[i - 1].verdict, "") if colour and i else ""
        out.write(f"{start}{text}{chr(27) + '[0m' if start else ''}\n")
    for label, cases in (("only in BASE", comparison.only_base), ("only in NEW", comparison.only_new)):
        for case in cases:
            out.write(f"{label}: {case}\n")
    counts = {v: sum(r.verdict is v for r in comparison.rows) for v in Verdict}
    out.write(", ".join(f"{n} {v.value}" for v, n in counts.items() if n) + "\n\n")


def render_compare(comparisons: Sequence[Comparison], factor: float) -> str:
    """The comparisons as one self-contained HTML page (inline CSS, no script, no fetch)."""
    return ENV.get_template("compare.html.j2").render(
        comparisons=comparisons, factor=factor, threshold=P_THRESHOLD, header=HEADER, cells=cells
    )


def _load_all(paths: Sequence[str]) -> list[Results]:
    loaded = []
    for path in paths:
        try:
            loaded.append(load_results(Path(path)))
        except ResultsError as exc:
            raise CompareError(str(exc)) from None
    return loaded


def cmd_compare(
    paths: Sequence[str],
    factor: float = DEFAULT_FACTOR,
    html: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Compare every NEW run with BASE: exit 1 when a metric regressed, 0 otherwise, 2 on bad input.

    The table goes to `out` (default: stdout at call time), coloured only when that is a terminal.
    """
    out = out or sys.stdout
    try:
        if len(paths) < 2:
            raise CompareError("needs a BASE results file and at least one NEW one")
        if not factor > 1:
            raise CompareError(f"--factor must be above 1, not {factor:g}")
        base, *news = _load_all(paths)
        comparisons = [
            compare(base, new, paths[0], path, factor) for new, path in zip(news, paths[1:], strict=True)
        ]
    except CompareError as exc:
        print(f"novamig compare: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    for comparison in comparisons:
        write_table(comparison, factor, out, colour=out.isatty())
    if html:
        Path(html).write_text(render_compare(comparisons, factor))
        out.write(f"HTML: {html}\n")
    regressed = any(c.regressed for c in comparisons)
    return int(ExitCode.FAILED if regressed else ExitCode.OK)
