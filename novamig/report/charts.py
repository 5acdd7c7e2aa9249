"""The report's charts, drawn as inline SVG from `results.json` alone (see `novamig.report.svg`).

- `downtime_bars`: per migration, the four vantage points side by side, each with its resolution as
  an error bar and the case's noise floor per probe as a dashed line, so the gap between QEMU's
  figure (source side only) and what the guest saw shows at a glance;
- `timeline`: one migration over time: memory remaining and processed (from `progress[]`), the
  status phases as bands, the network probe's and Locust's blackouts as shaded spans, events as
  markers, and on a second axis (0–100 %) auto-converge's throttle and the dirty-page rate where
  results hold them (`_rates`);
- `strip_plot`: one metric per vantage point across all migrations of the run, one dot each.

Every chart returns None when it has nothing to draw; the page then says why instead.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from novamig.report.summary import PROBES
from novamig.report.svg import Canvas, Scale, min_max_downsample
from novamig.results import CaseResult, MigrationRecord
from novamig.stats import percentile

COLOURS: dict[str, str] = {
    "guest": "#1f77b4",
    "network": "#e8710a",
    "locust": "#2a9d3a",
    "hypervisor": "#8e44ad",
}
PHASE_COLOURS: dict[str, str] = {
    "accepted": "#f2f2f2",
    "queued": "#f2f2f2",
    "preparing": "#fdf3d8",
    "running": "#e3eefb",
    "post-copy": "#fbe3e6",
    "running (post-copy)": "#fbe3e6",
}
MAX_BAR_GROUPS = 60
"""Migrations drawn in one case's bar chart; the distributions below cover all of them."""
LINE_BUCKETS = 300
"""A line keeps at most the lowest and highest of its points per 1/300 of its width (~2 px)."""
MAX_SAMPLE_DOTS = 40
"""A timeline marks each progress sample with a dot up to this many samples per line."""
MAX_STRIP_TIPS = 2000
"""A strip plot row labels every dot on hover up to this many dots; beyond, only its top 5 %."""
THROTTLE_COLOUR = "#b00020"
DIRTY_COLOUR = "#6a3d9a"
KEY_EVENTS = ("post-copy", "abort", "force-complete", "error", "refused", "timeout")
MIB = 1024 * 1024


def _probes_with_figures(migrations: Sequence[MigrationRecord]) -> list[str]:
    return [p for p in PROBES if any(getattr(m.downtime_ms, p) is not None for m in migrations)]


def downtime_bars(case: CaseResult, limit: int = MAX_BAR_GROUPS) -> Markup | None:
    """Grouped bars: per completed migration (the first `limit`), each probe's downtime ± its resolution."""
    done = [m for m in case.migrations if m.status == "completed"][:limit]
    probes = _probes_with_figures(done)
    if not probes:
        return None
    floors = {p: f for p in probes if (f := getattr(case.noise_floor_ms, p)) is not None}
    tops = [
        getattr(m.downtime_ms, p) + (getattr(m.resolution_ms, p) or 0)
        for m in done
        for p in probes
        if getattr(m.downtime_ms, p) is not None
    ]
    bar, gap = 14.0, 18.0
    group = bar * len(probes) + gap
    left, right, top, bottom = 48.0, 130.0, 22.0, 36.0
    width = left + group * len(done) + right
    height = 230.0
    y = Scale(0, max([*tops, *floors.values()]) * 1.08, height - bottom, top)
    c = Canvas(width, height, f"downtime per migration, case {case.id}")
    c.y_axis(y, left, width - right, "downtime (ms)")
    for i, m in enumerate(done):
        x0 = left + gap / 2 + i * group
        for k, probe in enumerate(probes):
            _bar(c, m, probe, x=x0 + k * bar, w=bar, y=y)
        c.text(x0 + bar * len(probes) / 2, height - bottom + 14, f"#{i + 1}", anchor="middle", size=10)
    c.line(left, y(0), width - right, y(0), "#999")
    label_y = height
    for probe, floor in sorted(floors.items(), key=lambda item: item[1]):
        c.line(left, y(floor), width - right, y(floor), COLOURS[probe], extra=' stroke-dasharray="5 3"')
        label_y = min(y(floor) + 4, label_y - 11)  # stacked upwards, never overlapping
        c.text(width - right + 4, label_y, f"{probe} noise floor {floor:.1f}", size=9, fill=COLOURS[probe])
    _legend(c, probes, left, height - 8)
    return c.markup()


def _bar(c: Canvas, m: MigrationRecord, probe: str, *, x: float, w: float, y: Scale) -> None:
    value: float | None = getattr(m.downtime_ms, probe)
    if value is None:
        c.text(x + w / 2, y(0) - 3, "×", anchor="middle", size=10, fill="#999")
        return
    resolution: float | None = getattr(m.resolution_ms, probe)
    tip = f"{m.server} {probe}: {value:.1f} ms" + (f" ± {resolution:g} ms (resolution)" if resolution else "")
    c.rect(x + 1, y(value), w - 2, y(0) - y(value), COLOURS[probe], tip=tip)
    if resolution:
        lo, hi = y(max(0.0, value - resolution)), y(value + resolution)
        mid = x + w / 2
        c.path([(mid, lo, mid, hi), (mid - 3, hi, mid + 3, hi), (mid - 3, lo, mid + 3, lo)], "#222")


def _legend(c: Canvas, probes: Sequence[str], x: float, y: float) -> None:
    for probe in probes:
        c.rect(x, y - 9, 10, 10, COLOURS[probe])
        c.text(x + 14, y, probe, size=10)
        x += 24 + 7 * len(probe)


@dataclass(frozen=True)
class _Band:
    status: str
    start: float
    end: float


def _bands(m: MigrationRecord, end: float) -> list[_Band]:
    """Consecutive progress samples of one status, each band lasting until the next status."""
    bands: list[_Band] = []
    for sample in m.progress:
        if bands and bands[-1].status == sample.status:
            continue
        if bands:
            bands[-1] = _Band(bands[-1].status, bands[-1].start, sample.t)
        bands.append(_Band(sample.status, sample.t, end))
    return bands


def _blackout(m: MigrationRecord) -> tuple[float, float] | None:
    network = m.details.network
    if network is None or network.gap_from_s is None or network.gap_to_s is None:
        return None
    return float(network.gap_from_s), float(network.gap_to_s)


@dataclass(frozen=True)
class _Rates:
    """Auto-converge's CPU throttle (%) and QEMU's dirty-page rate (pages/s) over one migration,
    on the case clock, and their peaks (known even when the series are not)."""

    throttle: list[tuple[float, float]]
    dirty: list[tuple[float, float]]
    throttle_peak: float | None
    dirty_peak: float | None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _series(raw: object, anchor: float) -> list[tuple[float, float]]:
    """QEMU's ``[[seconds since migrate, value], ...]`` on the case clock from `anchor`."""
    out = []
    for pair in raw if isinstance(raw, list) else []:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            t, v = _number(pair[0]), _number(pair[1])
            if t is not None and v is not None:
                out.append((anchor + t, v))
    return out


def _rates(m: MigrationRecord) -> _Rates:
    """Throttle and dirty rate where results hold them: the hypervisor block's ``throttle_series``
    / ``dirty_rate_series`` (QEMU's samples, seconds since its migrate command), placed on the case
    clock from ``migrate_at_s`` (the driver's stamp of that command), or for results without it
    from the first ``running`` progress sample — Nova marks the migration running as it starts the
    hypervisor's, so that is good to one poll period. Results with only the peaks
    (``throttle_max_percent``, ``dirty_pages_rate_max``) get them as text.
    """
    hv = m.hypervisor
    if hv is None:
        return _Rates([], [], None, None)
    anchor = _number(hv.migrate_at_s)
    if anchor is None:
        anchor = next((s.t for s in m.progress if s.status == "running"), None)
    throttle = _series(hv.throttle_series, anchor) if anchor is not None else []
    dirty = _series(hv.dirty_rate_series, anchor) if anchor is not None else []
    throttle_peak, dirty_peak = _number(hv.throttle_max_percent), _number(hv.dirty_pages_rate_max)
    return _Rates(
        throttle,
        dirty,
        throttle_peak if throttle_peak is not None else max((v for _, v in throttle), default=None),
        dirty_peak if dirty_peak is not None else max((v for _, v in dirty), default=None),
    )


def _steps(series: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A series as a step line: QEMU's value holds until the next sample (results keep only the
    samples where it changed), so a straight line between two of them would invent a ramp."""
    out: list[tuple[float, float]] = []
    for t, v in series:
        if out:
            out.append((t, out[-1][1]))
        out.append((t, v))
    return out


def _draw_rates(c: Canvas, rates: _Rates, x: Scale, box: tuple[float, float, float, float]) -> None:
    """Throttle (%) and dirty rate (% of its peak) on a right-hand 0–100 % axis, peaks as text."""
    left, right, top, bottom = box
    pct = Scale(0, 100, bottom, top)
    if rates.throttle or rates.dirty:
        for tick in (0, 50, 100):
            c.text(right + 4, pct(tick) + 3, f"{tick}%", size=9, fill="#777")
    if rates.throttle:
        points = [(x(t), pct(v)) for t, v in _steps(rates.throttle)]
        c.polyline(points, THROTTLE_COLOUR, tip="auto-converge throttle %")
    peak = rates.dirty_peak or max((v for _, v in rates.dirty), default=0.0)
    if rates.dirty and peak > 0:
        points = [(x(t), pct(v / peak * 100)) for t, v in _steps(rates.dirty)]
        c.polyline(points, DIRTY_COLOUR, tip=f"dirty rate, % of its peak {peak:g} pages/s")
    said = []
    if rates.throttle_peak is not None:
        said.append(f"throttle peak {rates.throttle_peak:g} %")
    if rates.dirty_peak is not None:
        said.append(f"dirty rate peak {rates.dirty_peak:g} pages/s")
    if said:
        drawn = " (right axis)" if rates.throttle or rates.dirty else ""
        c.text(left, bottom + 28, " · ".join(said) + drawn, size=10, fill=DIRTY_COLOUR)  # beside the x title


def _span(
    c: Canvas, span: tuple[float, float], x: Scale, box: tuple[float, float], *, colour: str, tip: str
) -> None:
    """A shaded time span, cut to the plot's time range (a probe's gap may start before the
    migration's request); the hover text keeps its true ends."""
    start, end = max(span[0], x.lo), min(span[1], x.hi)
    if end < start:
        return
    top, bottom = box
    width = max(2.0, x(end) - x(start))
    c.rect(x(start), top, width, bottom - top, colour, tip=tip, extra=' fill-opacity="0.35"')


def _locust_blackout(m: MigrationRecord) -> tuple[float, float] | None:
    locust = m.details.locust
    span = locust.blackout_s if locust is not None else None
    return (float(span[0]), float(span[1])) if span and len(span) == 2 else None


def timeline(m: MigrationRecord) -> Markup | None:
    """Memory remaining and processed over time, phases as bands, blackouts as spans, events as
    markers, throttle and dirty rate on a second axis where known."""
    end = m.finished_at if m.finished_at is not None else max([m.requested_at, *(s.t for s in m.progress)])
    if end <= m.requested_at and not m.progress:
        return None
    width, height = 680.0, 200.0
    left, right, top, bottom = 56.0, 36.0, 30.0, 40.0
    x = Scale(m.requested_at, max(end, m.requested_at + 0.001), left, width - right)
    totals = [s.memory_total_bytes for s in m.progress if s.memory_total_bytes]
    processed = [s.memory_processed_bytes for s in m.progress if s.memory_processed_bytes]
    peak = max([*totals, *processed, MIB]) / MIB
    y = Scale(0, peak * 1.05, height - bottom, top)
    c = Canvas(width, height, f"timeline of {m.server}")
    for band in _bands(m, end):
        colour = PHASE_COLOURS.get(band.status, "#f7f7f7")
        tip = f"{band.status}: {band.start:.3f}–{band.end:.3f} s"
        c.rect(x(band.start), top, x(band.end) - x(band.start), height - bottom - top, colour, tip=tip)
        if x(band.end) - x(band.start) > 6 * len(band.status) + 6:
            c.text(x(band.start) + 3, top + 11, band.status, size=9, fill="#777")
    blackout = _blackout(m)
    if blackout:
        tip = f"network blackout {blackout[0]:.3f}–{blackout[1]:.3f} s"
        _span(c, blackout, x, (top, height - bottom), colour="#333", tip=tip)
    unserved = _locust_blackout(m)
    if unserved:
        tip = f"Locust: no request answered {unserved[0]:.3f}–{unserved[1]:.3f} s"
        lower = (top + (height - bottom - top) / 2, height - bottom)  # the lower half: both spans show
        _span(c, unserved, x, lower, colour=COLOURS["locust"], tip=tip)
    c.y_axis(y, left, width - right, "memory (MiB)")
    c.x_axis(x, height - bottom, "seconds since case start")
    for key, colour in (("memory_remaining_bytes", "#1f77b4"), ("memory_processed_bytes", "#e8710a")):
        data = [(s.t, v / MIB) for s in m.progress if (v := getattr(s, key)) is not None]
        points = [(x(t), y(v)) for t, v in min_max_downsample(data, LINE_BUCKETS)]
        c.polyline(points, colour, tip=key.removeprefix("memory_").removesuffix("_bytes"))
        if len(points) <= MAX_SAMPLE_DOTS:  # beyond, the dots merge into the line and only add bytes
            c.dots(points, colour, 2)
    _draw_rates(c, _rates(m), x, (left, width - right, top, height - bottom))
    _events(c, m, x, top)
    c.text(width - right, 12, "— remaining", anchor="end", size=10, fill="#1f77b4")
    c.text(width - right - 80, 12, "— processed", anchor="end", size=10, fill="#e8710a")
    return c.markup()


def _events(c: Canvas, m: MigrationRecord, x: Scale, top: float) -> None:
    ticks: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
    for event in m.events:
        key = any(word in event.what.lower() for word in KEY_EVENTS)
        ticks[key].append((x(event.t), top - 8, x(event.t), top))
        c.rect(x(event.t) - 3, top - 10, 6, 10, "transparent", tip=f"{event.t:.3f} s: {event.what}")
    c.path(ticks[False], "#888")
    c.path(ticks[True], "#b00020", extra=' stroke-width="2"')


def _jitter(seed: str) -> float:
    """A stable vertical offset in [-1, 1] so the same run always draws the same picture."""
    return int(hashlib.blake2s(seed.encode(), digest_size=2).hexdigest(), 16) / 32767.5 - 1


def _tip_from(values: Sequence[float]) -> float:
    """The smallest value whose dot gets a hover label: every dot's up to `MAX_STRIP_TIPS` dots
    in a row, beyond that the top 5 % only (the tail one hovers for; a label costs ~100 bytes)."""
    if len(values) <= MAX_STRIP_TIPS:
        return -math.inf
    p95 = percentile(values, 95)
    assert p95 is not None
    return p95


def strip_plot(title: str, unit: str, values: Mapping[str, Sequence[tuple[str, float]]]) -> Markup | None:
    """One row per vantage point (or metric), one dot per migration, the median as a bar."""
    rows = {k: v for k, v in values.items() if v}
    if not rows:
        return None
    width, row_h = 680.0, 34.0
    left, right, top, bottom = 90.0, 16.0, 22.0, 40.0
    height = top + row_h * len(rows) + bottom
    hi = max(v for points in rows.values() for _, v in points)
    x = Scale(0, hi * 1.05 or 1, left, width - right)
    c = Canvas(width, height, title)
    c.text(left, 12, title, size=10, fill="#666")
    for i, (name, points) in enumerate(rows.items()):
        mid = top + row_h * (i + 0.5)
        colour = COLOURS.get(name, "#555")
        c.text(left - 6, mid + 4, name, anchor="end", size=11)
        c.line(left, mid, width - right, mid, "#eee")
        tipped = _tip_from([v for _, v in points])
        dots = [(x(v), mid + _jitter(f"{name}{label}") * row_h * 0.3, label, v) for label, v in points]
        c.dots([(px, py) for px, py, _, v in dots if v < tipped], colour, 3, opacity=0.6)
        labelled = [(px, py, f"{label}: {v:g} {unit}") for px, py, label, v in dots if v >= tipped]
        c.dot_group(labelled, colour, 3, opacity=0.6)
        median = percentile([v for _, v in points], 50)
        assert median is not None  # rows without points were dropped above
        c.line(x(median), mid - row_h * 0.4, x(median), mid + row_h * 0.4, "#000", extra=' stroke-width="2"')
    many = any(len(points) > MAX_STRIP_TIPS for points in rows.values())
    c.x_axis(x, height - bottom, f"{unit} (bar: median{'; hover labels: top 5 %' if many else ''})")
    return c.markup()


def locust_rate(case: CaseResult) -> Markup | None:
    """Locust's requests and failures per second over the whole case, migrations as shaded spans.

    The load's view of each migration: the dip in completed requests (and any failures) lines up
    with the migration's window, on the same case clock as the timelines.
    """
    total = case.locust.total if case.locust is not None else None
    rate = total.rps if total is not None else None
    if rate is None or rate.t0_s is None or not rate.step_s or not rate.requests:
        return None
    step, t0 = float(rate.step_s), float(rate.t0_s)
    requests = [n / step for n in rate.requests]
    failures = [n / step for n in (rate.failures or [])]
    width, height = 680.0, 180.0
    left, right, top, bottom = 56.0, 16.0, 24.0, 40.0
    starts = [t0, *(m.requested_at for m in case.migrations)]
    ends = [t0 + step * len(requests), *(m.finished_at or m.requested_at for m in case.migrations)]
    x = Scale(min(starts), max(ends), left, width - right)  # every migration in view, with or without load
    y = Scale(0, max([*requests, *failures, 1.0]) * 1.1, height - bottom, top)
    c = Canvas(width, height, f"Locust requests per second, case {case.id}")
    for i, m in enumerate(case.migrations, 1):
        end = m.finished_at if m.finished_at is not None else m.requested_at
        tip = f"migration #{i} {m.server}: {m.requested_at:.3f}–{end:.3f} s ({m.status})"
        c.rect(
            x(m.requested_at),
            top,
            max(2.0, x(end) - x(m.requested_at)),
            height - bottom - top,
            "#e3eefb",
            tip=tip,
        )
        if x(end) - x(m.requested_at) >= 14:  # a label fits; narrower spans keep it in the hover text
            c.text(x(m.requested_at) + 2, top + 10, f"#{i}", size=9, fill="#777")
    c.y_axis(y, left, width - right, "per second")
    c.x_axis(x, height - bottom, "seconds since case start")
    for values, colour, name in (
        (requests, COLOURS["locust"], "requests/s"),
        (failures, "#b00020", "failures/s"),
    ):
        data = [(t0 + step * (k + 0.5), v) for k, v in enumerate(values)]
        points = [(x(t), y(v)) for t, v in min_max_downsample(data, LINE_BUCKETS)]
        c.polyline(points, colour, tip=name)
    c.text(width - right, 12, "— requests/s", anchor="end", size=10, fill=COLOURS["locust"])
    c.text(width - right - 90, 12, "— failures/s", anchor="end", size=10, fill="#b00020")
    return c.markup()
