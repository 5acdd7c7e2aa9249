"""`novamig report RESULTS.json [--out FILE]`: re-render index.html from a results file."""

from __future__ import annotations

import sys
from pathlib import Path

from novamig.exitcodes import ExitCode
from novamig.report.render import write_index
from novamig.results import ResultsError, load_results


def cmd_report(results: str, out: str | None) -> int:
    try:
        loaded = load_results(Path(results))
    except ResultsError as exc:
        print(f"novamig report: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    target = Path(out) if out else Path(results).with_name("index.html")
    write_index(loaded, target)
    print(target)
    return int(ExitCode.OK)
