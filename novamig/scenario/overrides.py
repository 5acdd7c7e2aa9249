"""`--set key.path=value` overrides, applied to a scenario's data before validation.

The value is read as YAML, so `--set migration.count=3` is the number 3,
`--set migration.policy.post_copy_after_s=null` is null and `--set 'measure.probes=[guest]'` a list.
Everything after `matrix.` is one matrix key: `--set 'matrix.migration.count=[1, 2]'`.

Setting a key the matrix varies pins it: the matrix entry is dropped, so every case uses the value
given on the command line (the command line wins over the file). `sla_by_cell` follows: an entry
that picks the pinned value no longer names the key, one that picks other values is dropped; new
matrix values (`--set matrix.KEY=[...]`) likewise narrow the values the entries pick.

Problems with an override are reported as `<--set>:0:0: key.path: message`: an override has no
place in the file, and `<--set>` cannot be mistaken for a file name.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from novamig.scenario.cellsla import KEY as SLA_BY_CELL
from novamig.scenario.cellsla import restrict_entries
from novamig.scenario.datapaths import PathConflict, set_path, split_key_path, written_at
from novamig.scenario.fieldpaths import check_matrix_key, check_path
from novamig.scenario.issues import OVERRIDE_FILE, OVERRIDE_PATH, Issue, KeyPath, format_key_path
from novamig.scenario.models import Scenario
from novamig.scenario.redaction import path_has_secret


@dataclass
class Applied:
    """Data with the overrides written in, the paths they set, and the overrides that were refused."""

    data: dict[str, Any]
    paths: list[KeyPath] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def _issue(path: str, message: str) -> Issue:
    return Issue(OVERRIDE_FILE, 0, 0, path, message)


def _parse_value(text: str) -> Any:
    """The YAML value of an override's right-hand side (raises yaml.YAMLError)."""
    return yaml.safe_load(text) if text.strip() else None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> Applied:
    """Apply each `key.path=value` to a copy of `data`; refused overrides become issues."""
    result = Applied(copy.deepcopy(data))
    for override in overrides:
        key_text, sep, value_text = override.partition("=")
        key_text = key_text.strip()
        if not sep or not key_text:
            shown = "" if path_has_secret([override]) else f": `{override}`"
            result.issues.append(_issue(OVERRIDE_PATH, f"expected KEY.PATH=VALUE{shown}"))
            continue
        keys = split_key_path(key_text)
        if any(not k for k in keys):
            result.issues.append(_issue(key_text, "empty key in the path (two dots, or a dot at an end)"))
            continue
        error = check_path(Scenario, keys) if keys[0] != "matrix" or len(keys) == 1 else None
        if error is not None:
            result.issues.append(_issue(format_key_path(keys[: error.depth + 1]), error.message))
            continue
        if keys[0] == "matrix" and len(keys) == 2:
            message = check_matrix_key(Scenario, keys[1])
            if message is not None:
                result.issues.append(_issue(format_key_path(keys), message))
                continue
        try:
            value = _parse_value(value_text)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "invalid YAML"
            result.issues.append(_issue(format_key_path(keys), f"cannot read the value as YAML: {problem}"))
            continue
        before = _matrix(result.data)
        try:
            set_path(result.data, keys, value)
        except PathConflict as exc:
            result.issues.append(_issue(format_key_path(keys[: exc.depth]), str(exc)))
            continue
        result.paths.append(keys)
        matrix = result.data.get("matrix")
        if keys[0] != "matrix" and isinstance(matrix, dict):
            matrix.pop(key_text, None)
        _follow_matrix(result, before)
    return result


def _matrix(data: dict[str, Any]) -> dict[str, Any]:
    matrix = data.get("matrix")
    return dict(matrix) if isinstance(matrix, dict) else {}


def _follow_matrix(result: Applied, before: dict[str, Any]) -> None:
    """Keep `sla_by_cell` in step with an override that changed what the matrix varies: a key pinned
    to one value, given new values, or no longer varied (`--set matrix={}`: it keeps the value the
    file writes; an entry picking it by a value the file does not write is dropped). Once an entry
    is dropped, the later ones' places in the file no longer hold, so their problems are reported
    at `<--set>`."""
    after = _matrix(result.data)
    dropped = False
    for key, old_values in before.items():
        if (key in after and after[key] is old_values) or not isinstance(old_values, list):
            continue
        new_values = after.get(key)
        allowed = new_values if isinstance(new_values, list) else written_at(result.data, split_key_path(key))
        dropped |= restrict_entries(result.data, key, allowed, old_values)
    if dropped:
        result.paths.append((SLA_BY_CELL,))
