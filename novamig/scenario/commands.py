"""The `novamig validate` and `novamig schema` commands (called by `novamig.cli`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from novamig.exitcodes import ExitCode
from novamig.scenario.issues import ScenarioInvalid
from novamig.scenario.loader import load_scenario
from novamig.scenario.schema import scenario_json_schema


def cmd_validate(paths: list[str], overrides: Sequence[str], out: TextIO) -> int:
    """Check every file; print `FILE: ok` or each problem as `FILE:LINE:COL: key.path: message`.

    Returns 0 when every file is valid, 2 otherwise. Bad input never raises: an unexpected exception
    while checking a file is reported on that file's line as an internal error, so one bad file cannot
    hide the verdict on the others.
    """
    status = ExitCode.OK
    for path in paths:
        try:
            load_scenario(path, overrides)
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
    return int(status)


def cmd_schema(out: TextIO) -> int:
    """Print the scenario JSON Schema, indented for reading."""
    print(json.dumps(scenario_json_schema(), indent=2), file=out)
    return int(ExitCode.OK)
