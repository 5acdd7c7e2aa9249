"""The scenario JSON Schema, for editors (YAML language servers) and other tools.

It is generated from the models, so it cannot drift from what `novamig validate` accepts; it cannot
express the cross-field rules, which only `novamig validate` checks.
"""

from __future__ import annotations

from typing import Any

from novamig.scenario.models import Scenario

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario file."""
    schema = Scenario.model_json_schema(mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "novamig scenario",
        **{k: v for k, v in schema.items() if k != "title"},
    }
