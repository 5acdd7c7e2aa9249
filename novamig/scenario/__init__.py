"""Scenario files: the model, loading with positions, validation, matrix expansion and JSON Schema.

A scenario is YAML; `load_scenario` turns a file (plus `--set` overrides) into a validated, frozen
`Scenario` or raises `ScenarioInvalid` whose `.issues` point at the offending keys and values.
`expand_cases` turns a scenario into the cases a run executes.
"""

from __future__ import annotations

from novamig.scenario.issues import Issue, ScenarioInvalid
from novamig.scenario.loader import load_scenario
from novamig.scenario.matrix import Case, case_count, expand_cases
from novamig.scenario.models import Scenario
from novamig.scenario.redaction import redacted_dict
from novamig.scenario.schema import scenario_json_schema

__all__ = [
    "Case",
    "Issue",
    "Scenario",
    "ScenarioInvalid",
    "case_count",
    "expand_cases",
    "load_scenario",
    "redacted_dict",
    "scenario_json_schema",
]
