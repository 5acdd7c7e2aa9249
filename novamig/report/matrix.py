"""The matrix grid of index.html: one table cell per matrix cell, coloured by a median.

A matrix scenario (e.g. `dirty_rate_mib_s` × `post_copy_after_s`) asks how a figure moves across
the cells; a grid coloured by the median downtime (and another by the median duration) shows the
slope at a glance, and each cell links to its cases (one per repeat). The first parameter gives the
rows, the others together the columns. A plain HTML table with background colours: it needs no
chart code, reads as text with colours off, and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from novamig.results import CaseResult, MigrationRecord
from novamig.stats import percentile

PROBE_ORDER = ("guest", "network", "locust", "hypervisor")
"""The downtime the grid shows: the first vantage point with figures (the guest's when measured)."""


@dataclass(frozen=True)
class GridCell:
    value: float | None
    background: str
    foreground: str
    links: list[tuple[str, str]]
    """(anchor, label) of each case of the cell, one per repeat."""


@dataclass(frozen=True)
class Grid:
    title: str
    unit: str
    row_key: str
    column_label: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], GridCell]


def _shade(value: float | None, lo: float, hi: float) -> tuple[str, str]:
    """Pale for the lowest value, deep blue for the highest; white text on the dark end."""
    if value is None:
        return "#ffffff", "#777777"
    f = 0.0 if hi <= lo else (value - lo) / (hi - lo)
    start, end = (0xF0, 0xF5, 0xFB), (0x08, 0x45, 0x94)
    rgb = "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(start, end, strict=True))
    return f"#{rgb}", "#ffffff" if f > 0.55 else "#222222"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _value(value: object) -> str:
    """As the scenario's YAML spells it (`null`, not Python's None)."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _label(params: dict[str, object], keys: Sequence[str]) -> str:
    """A column's heading: the value alone under one column parameter, key=value pairs under more."""
    if len(keys) == 1:
        return _value(params.get(keys[0]))
    return ", ".join(f"{_short(k)}={_value(params.get(k))}" for k in keys)


def _grid(
    cases: Sequence[tuple[str, CaseResult]],
    title: str,
    unit: str,
    figure: Callable[[MigrationRecord], float | None],
) -> Grid:
    keys = list(cases[0][1].params)
    row_key, column_keys = keys[0], keys[1:]
    rows: list[str] = []
    columns: list[str] = []
    values: dict[tuple[str, str], list[float]] = {}
    links: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for anchor, case in cases:
        row, column = _value(case.params.get(row_key)), _label(case.params, column_keys) or "—"
        rows += [row] if row not in rows else []
        columns += [column] if column not in columns else []
        found = [v for m in case.migrations if m.status == "completed" and (v := figure(m)) is not None]
        values.setdefault((row, column), []).extend(found)
        links.setdefault((row, column), []).append((anchor, f"r{case.repetition}"))
    medians = {key: percentile(v, 50) for key, v in values.items()}
    known = [v for v in medians.values() if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    cells = {key: GridCell(medians[key], *_shade(medians[key], lo, hi), links=links[key]) for key in values}
    return Grid(title, unit, _short(row_key), ", ".join(map(_short, column_keys)), rows, columns, cells)


def matrix_grids(cases: Sequence[tuple[str, CaseResult]]) -> list[Grid]:
    """The grids of a matrix scenario (cases with `params`), by median downtime and duration."""
    if not cases or not all(case.params for _, case in cases):
        return []
    probe = next(
        (
            p
            for p in PROBE_ORDER
            if any(getattr(m.downtime_ms, p) is not None for _, c in cases for m in c.migrations)
        ),
        PROBE_ORDER[0],
    )
    return [
        _grid(cases, f"median {probe} downtime", "ms", lambda m: getattr(m.downtime_ms, probe)),
        _grid(cases, "median duration", "s", lambda m: m.duration_s),
    ]
