"""The `novamig validate` and `novamig schema` commands (called by `novamig.cli`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TextIO

from novamig.exitcodes import ExitCode
from novamig.scenario.issues import ScenarioInvalid
from novamig.scenario.loader import load_scenario
from novamig.scenario.models import Scenario
from novamig.scenario.schema import scenario_json_schema
from novamig.scenario.sla_lint import p95_warnings

Warner = Callable[[Scenario], list[str]]
"""What a valid scenario cannot do on the cloud it would run on (`novamig.measure.sla_coverage`,
which this package ranks below and so is handed in by the command line)."""


def cmd_validate(
    paths: list[str], overrides: Sequence[str], out: TextIO, warner: Warner | None = None
) -> int:
    """Check every file; print `FILE: ok` or each problem as `FILE:LINE:COL: key.path: message`.

    A valid file's warnings (a `p95` limit over too few migrations to be a percentile,
    `sla_lint`; `warner`: an SLA figure no probe can measure on the chosen kind of cloud) follow its
    `ok` as `FILE: warning: ...`; they do not change the exit status, since the
    same file may run elsewhere.

    Returns 0 when every file is valid, 2 otherwise. Bad input never raises: an unexpected exception
    while checking a file is reported on that file's line as an internal error, so one bad file cannot
    hide the verdict on the others.
    """
    status = ExitCode.OK
    for path in paths:
        try:
            scenario = load_scenario(path, overrides)
            warnings = p95_warnings(scenario) + (warner(scenario) if warner is not None else [])
        except ScenarioInvalid as exc:
            status = ExitCode.BAD_INPUT
            for issue in exc.issues:
                print(issue, file=out)
        except Exception as exc:  # a novamig bug, not the user's: still no traceback
            status = ExitCode.BAD_INPUT
            print(
                f"{path}:0:0: (internal): novamig failed to check this file: {type(exc).__name__}: {exc}",
                file=out,
            )
        else:
            print(f"{path}: ok", file=out)
            for warning in warnings:
                print(f"{path}: warning: {warning}", file=out)
    return int(status)


def cmd_schema(out: TextIO) -> int:
    """Print the scenario JSON Schema, indented for reading."""
    print(json.dumps(scenario_json_schema(), indent=2), file=out)
    return int(ExitCode.OK)
