"""Fixtures for scenario tests: write a scenario text to a file and run `novamig validate` on it."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from scenario_testlib import Check

from novamig.scenario.commands import cmd_validate


@pytest.fixture
def check(tmp_path: Path) -> Check:
    """Validate a dedented YAML text; return the printed lines with the file name shown as `F`.

    Asserts the exit status agrees with the output: 0 with `F: ok`, 2 with error lines. Warnings
    (`F: warning: …`, a valid file's advice) are not returned: tests of them call `cmd_validate`.
    """

    def run(text: str, overrides: Sequence[str] = ()) -> list[str]:
        path = tmp_path / "scenario.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        out = io.StringIO()
        status = cmd_validate([str(path)], list(overrides), out)
        lines = [line.replace(str(path), "F", 1) for line in out.getvalue().splitlines()]
        lines = [line for line in lines if not line.startswith("F: warning: ")]
        assert status == (0 if lines == ["F: ok"] else 2), lines
        return lines

    return run
