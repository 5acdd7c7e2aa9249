"""index.html from results: a single self-contained page (inline CSS, no scripts, no fetches).

Rendered from `Results` only. This is the minimal page written by every run; the full report
(charts, timelines, comparisons) replaces the template, not the contract: `render_index(results)`.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from novamig.results import Results

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("novamig.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


ENV.filters["fmt"] = _fmt


def render_index(results: Results) -> str:
    return ENV.get_template("index.html.j2").render(r=results)


def write_index(results: Results, path: Path) -> None:
    path.write_text(render_index(results))
