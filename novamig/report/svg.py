"""SVG primitives for the report's charts: a canvas that collects elements, linear scales, ticks.

Why hand-written SVG and not a chart library: the page must open from disk, as a CI artifact and on
paper with no network and no script; inline SVG is text the browser draws and prints sharply at any
zoom, costs a few hundred bytes per chart, and adds no dependency (uPlot or Chart.js would add 50 to
200 KB of vendored JavaScript to every report, and a blank chart when scripts are blocked).
Hover detail comes from SVG ``<title>`` elements, which every browser shows as a tooltip.

Every value drawn passes through `esc` (text) or `_num` (coordinates), so nothing from results.json
can inject markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape


def esc(text: object) -> str:
    return str(escape(str(text)))


def _num(value: float) -> str:
    """A coordinate: a tenth of a pixel is finer than any screen or printer draws a chart line;
    more decimals only grow the file (a 1 000-migration page has ~100 000 coordinates)."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


@dataclass(frozen=True)
class Scale:
    """Maps the data interval [lo, hi] linearly onto the pixel interval [start, end]."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        if span == 0:
            return (self.start + self.end) / 2
        return self.start + (value - self.lo) / span * (self.end - self.start)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × 10^k apart) within [lo, hi], about `count` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step  # inside the range: a tick outside it would leave the plot
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 10))
        k += 1
    return ticks


def min_max_downsample(points: Sequence[tuple[float, float]], buckets: int) -> list[tuple[float, float]]:
    """At most two points per bucket of equal x width: each bucket's lowest and highest, in x order.

    A line of 3 000 points drawn 600 pixels wide puts five points in each pixel column: the eye sees
    only each column's extent, so keeping the extremes draws the same picture (a dip of one sample,
    the blackout in a request rate, stays visible; an average would flatten it) with a fraction of
    the points. `points` must be in x order; fewer than 2 × `buckets` points come back as they are.
    """
    if len(points) <= 2 * buckets or buckets < 1:
        return list(points)
    lo, hi = points[0][0], points[-1][0]
    width = (hi - lo) / buckets or 1.0
    kept: list[tuple[float, float]] = []
    group: list[tuple[float, float]] = []
    current = 0
    for point in [*points, (math.inf, 0.0)]:
        index = min(buckets - 1, int((point[0] - lo) / width)) if point[0] != math.inf else buckets
        if index != current and group:
            low, high = min(group, key=lambda p: p[1]), max(group, key=lambda p: p[1])
            kept += sorted({low, high})
            group = []
        current = index
        group.append(point)
    return kept


def fmt_tick(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.3g}"


@dataclass
class Canvas:
    """An SVG document built element by element; `markup()` gives it for a template."""

    width: float
    height: float
    label: str
    parts: list[str] = field(default_factory=list)

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, *, tip: str = "", extra: str = ""
    ) -> None:
        body = f"<title>{esc(tip)}</title>" if tip else ""
        attrs = f'x="{_num(x)}" y="{_num(y)}" width="{_num(max(0.0, w))}" height="{_num(max(0.0, h))}"'
        self.parts.append(f'<rect {attrs} fill="{fill}"{extra}>{body}</rect>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str, *, extra: str = "") -> None:
        self.parts.append(
            f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="{stroke}"{extra}/>'
        )

    def circle(self, x: float, y: float, r: float, fill: str, *, tip: str = "", extra: str = "") -> None:
        body = f"<title>{esc(tip)}</title>" if tip else ""
        self.parts.append(
            f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(r)}" fill="{fill}"{extra}>{body}</circle>'
        )

    def path(
        self, segments: Sequence[tuple[float, float, float, float]], stroke: str, *, extra: str = ""
    ) -> None:
        """Line segments (x1, y1, x2, y2) as one <path>: a fifth of the bytes of as many <line>s."""
        if not segments:
            return
        d = "".join(f"M{_num(a)} {_num(b)}L{_num(c)} {_num(d)}" for a, b, c, d in segments)
        self.parts.append(f'<path d="{d}" stroke="{stroke}" fill="none"{extra}/>')

    def dot_group(
        self, dots: Sequence[tuple[float, float, str]], fill: str, r: float, *, opacity: float = 1.0
    ) -> None:
        """Dots of one colour in one <g> that carries the colour once; each with its hover text
        (empty: none). A strip plot of 4 000 dots saves ~35 bytes a dot."""
        body = []
        for x, y, tip in dots:
            title = f"<title>{esc(tip)}</title>" if tip else ""
            body.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(r)}">{title}</circle>')
        self.parts.append(f'<g fill="{fill}" fill-opacity="{opacity:g}">{"".join(body)}</g>')

    def dots(
        self, points: Sequence[tuple[float, float]], fill: str, r: float, *, opacity: float = 1.0
    ) -> None:
        """Dots without hover text as one <path> of zero-length strokes with round caps (drawn as
        discs of radius `r`): ~12 bytes a dot against ~48 for a <circle>, and one DOM node for all
        of them (a browser lays out 40 000 circles slowly, one path quickly)."""
        if not points:
            return
        d = "".join(f"M{_num(x)} {_num(y)}h0" for x, y in points)
        alpha = f' stroke-opacity="{opacity:g}"' if opacity < 1 else ""
        self.parts.append(
            f'<path d="{d}" stroke="{fill}" stroke-width="{_num(2 * r)}" stroke-linecap="round" '
            f'fill="none"{alpha}/>'
        )

    def polyline(self, points: list[tuple[float, float]], stroke: str, *, tip: str = "") -> None:
        if not points:
            return
        body = f"<title>{esc(tip)}</title>" if tip else ""
        coords = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        self.parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="1.5">{body}</polyline>'
        )

    def text(
        self, x: float, y: float, text: object, *, anchor: str = "start", size: float = 11, fill: str = "#333"
    ) -> None:
        self.parts.append(
            f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{_num(size)}" '
            f'fill="{fill}">'
            f"{esc(text)}</text>"
        )

    def y_axis(self, scale: Scale, x: float, x_end: float, title: str) -> None:
        """Grid lines with labels at round values, and the axis title above."""
        for tick in nice_ticks(scale.lo, scale.hi):
            y = scale(tick)
            self.line(x, y, x_end, y, "#e4e4e4")
            self.text(x - 4, y + 4, fmt_tick(tick), anchor="end", size=10, fill="#666")
        self.text(x, 12, title, size=10, fill="#666")

    def x_axis(self, scale: Scale, y: float, title: str) -> None:
        self.line(scale.start, y, scale.end, y, "#999")
        for tick in nice_ticks(scale.lo, scale.hi, 8):
            x = scale(tick)
            self.line(x, y, x, y + 4, "#999")
            self.text(x, y + 15, fmt_tick(tick), anchor="middle", size=10, fill="#666")
        self.text(scale.end, y + 28, title, anchor="end", size=10, fill="#666")

    def markup(self) -> Markup:
        head = (
            f'<svg class="chart" role="img" aria-label="{esc(self.label)}" '
            f'viewBox="0 0 {_num(self.width)} {_num(self.height)}" width="{_num(self.width)}" '
            f'height="{_num(self.height)}" font-family="system-ui, sans-serif">'
        )
        return Markup(head + f"<title>{esc(self.label)}</title>" + "".join(self.parts) + "</svg>")
