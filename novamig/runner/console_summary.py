"""The few lines `novamig run` prints when it ends: per case its verdict, and why it failed.

The console is where an operator first looks, so a failed migration says its own reason here (Nova's
failed step, or what novamig saw) instead of sending them to results.json for it. A case with many
failed migrations prints the first few and a count, so one bad case cannot bury the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from novamig.results import CaseResult, Results

MIGRATION_ERRORS_SHOWN = 5  # per case; the rest are counted


def _migration_errors(case: CaseResult) -> list[str]:
    lines = []
    for index, migration in enumerate(case.migrations):
        if migration.status == "completed":
            continue
        reason = migration.error or "no reason recorded"
        lost = "; server lost" if migration.server_lost else ""
        lines.append(f"     migration {index + 1} ({migration.server}): {migration.status}: {reason}{lost}")
    if len(lines) > MIGRATION_ERRORS_SHOWN:
        hidden = len(lines) - MIGRATION_ERRORS_SHOWN
        lines = [*lines[:MIGRATION_ERRORS_SHOWN], f"     … and {hidden} more (results.json)"]
    return lines


def print_summary(results: Results, out_dir: Path, stream: IO[str]) -> None:
    for case in results.cases:
        done = sum(1 for m in case.migrations if m.status == "completed")
        verdict = "PASS" if case.passed else "FAIL"
        print(f"{verdict} {case.id}: {done}/{len(case.migrations)} migrations completed", file=stream)
        for reason in case.sla_reasons:
            print(f"     own SLA: {reason}", file=stream)
        if case.error:
            print(f"     error: {case.error}", file=stream)
        for line in _migration_errors(case):
            print(line, file=stream)
        for check in case.sla:
            if not check.passed:
                value = "not measured" if check.value is None else f"value {check.value}"
                if check.reason:  # why it is null, or what else a failure's value says
                    value += f" ({check.reason})"
                print(f"     SLA {check.name}: {value}, limit {check.limit}", file=stream)
    state = "interrupted" if results.interrupted else ("passed" if results.passed else "failed")
    print(f"novamig: run {state}; results in {out_dir / 'results.json'}", file=stream)
    print(f"novamig: HTML report: {(out_dir / 'index.html').resolve()}", file=stream)
