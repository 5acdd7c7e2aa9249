"""`load_scenario`: a file plus overrides in, a valid `Scenario` or every problem with its position out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from novamig.scenario.errors import problems_from
from novamig.scenario.issues import OVERRIDE_FILE, Issue, KeyPath, ScenarioInvalid, format_key_path
from novamig.scenario.models import Scenario
from novamig.scenario.overrides import apply_overrides
from novamig.scenario.problems import Problem
from novamig.scenario.yamlsource import NodePos, Source, load_source


class _Locator:
    """Finds where a problem is written: in the file, or in an override."""

    def __init__(self, source: Source, overridden: list[KeyPath]) -> None:
        self.source = source
        self.overridden = overridden

    def _from_override(self, path: KeyPath) -> bool:
        return any(path[: len(o)] == o for o in self.overridden)

    def _written(self, path: KeyPath) -> NodePos | None:
        return None if self._from_override(path) else self.source.positions.get(path)

    def issue(self, problem: Problem) -> Issue:
        key_path = format_key_path(problem.path)
        if self._from_override(problem.path):
            return Issue(OVERRIDE_FILE, 0, 0, key_path, problem.message)
        pos = self._written(problem.path)
        at_key = problem.at_key
        if pos is None:
            for alt in problem.alt_paths:
                pos = self._written(alt)
                if pos is not None:
                    break
                if self._from_override(alt):
                    return Issue(OVERRIDE_FILE, 0, 0, key_path, problem.message)
        if pos is None:
            # Not written (it took its default, or it is missing): point at the closest written parent.
            at_key = False
            path = problem.path
            while pos is None and path:
                path = path[:-1]
                if self._from_override(path):
                    return Issue(OVERRIDE_FILE, 0, 0, key_path, problem.message)
                pos = self.source.positions.get(path)
        if pos is None:  # pragma: no cover - the root is always in positions
            return Issue(self.source.file, 0, 0, key_path, problem.message)
        where = pos.key if at_key else pos.value
        return Issue(self.source.file, where.line, where.col, key_path, problem.message)


def validate_source(source: Source, overrides: Sequence[str] = ()) -> Scenario:
    """Validate parsed scenario data with overrides applied; raise `ScenarioInvalid` on any problem."""
    applied = apply_overrides(source.data, overrides)
    locator = _Locator(source, applied.paths)
    issues: list[Issue] = list(applied.issues)
    data: dict[str, Any] = applied.data
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        issues.extend(locator.issue(p) for p in problems_from(exc, data, Scenario))
    if issues or scenario is None:
        unique = list(dict.fromkeys(issues))
        unique.sort(key=lambda i: (i.file != OVERRIDE_FILE, i.line, i.col))
        raise ScenarioInvalid(unique)
    return scenario


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, parse and validate a scenario file; `ScenarioInvalid.issues` lists every problem found."""
    return validate_source(load_source(str(path)), overrides)
