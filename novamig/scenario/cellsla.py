"""`sla_by_cell`: an SLA of its own for some matrix cells, and the reason it differs.

A matrix is a cross product, so every cell inherits the scenario's `sla`. A sweep's cells are not
alike, though: pre-copy at a dirty rate above the bandwidth is expected not to converge, and that is
the sweep's finding, not a failure of the run. An entry picks cells by their matrix values and
merges a partial `sla` block over the scenario's for them; its `reason` goes into each such case's
results and the report, so the different limit is never silent.

Matching: `cells` maps matrix keys (as written in `matrix`) to one value or a list of values; a cell
matches when its value of every key is one of them (`cells: {}` matches every cell: what a `--set`
that pins every key an entry names leaves of it). A value that is itself one of the key's matrix
values is one value even when it is a list (a matrix over `measure.probes`). Numbers match by value
(`200.0` is `200`), never a boolean a number. Entries apply in order, later ones over earlier ones.

This module sits below the models like `rules`: it reaches models only through the instances it is
given, so the models (through `rules` and `matrix`) can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from novamig.scenario.datapaths import split_key_path, written_at
from novamig.scenario.errors import describe_value
from novamig.scenario.fieldpaths import did_you_mean
from novamig.scenario.issues import KeyPath, format_key_path
from novamig.scenario.problems import Problem
from novamig.scenario.redaction import path_has_secret

if TYPE_CHECKING:
    from novamig.scenario.models import CellSla, Scenario

KEY = "sla_by_cell"


def same_value(a: Any, b: Any) -> bool:
    """Equal as a matrix value: numbers by value (`200.0` is `200`), otherwise of the same type.

    `True == 1` in Python; a scenario value `true` is never the number 1, so booleans match only
    booleans.
    """
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return bool(a == b)
    return type(a) is type(b) and a == b


def _is_listed(value: Any, matrix_values: Sequence[Any]) -> bool:
    """Whether an entry's value for a key is a list of values rather than one (list-valued) value."""
    return isinstance(value, list) and not any(same_value(value, m) for m in matrix_values)


def wanted_values(value: Any, matrix_values: Sequence[Any]) -> list[Any]:
    """The values an entry accepts for one key: the list it gives, or its one value."""
    return list(value) if _is_listed(value, matrix_values) else [value]


def entry_matches(cells: dict[str, Any], params: dict[str, Any], matrix: dict[str, list[Any]]) -> bool:
    """Whether a cell (`params`: matrix key → its value) has one of the wanted values of every key."""
    for key, value in cells.items():
        if key not in params:
            return False
        if not any(same_value(params[key], v) for v in wanted_values(value, matrix.get(key, []))):
            return False
    return True


def matching_entries(scenario: Scenario, params: dict[str, Any]) -> list[int]:
    """Indexes of the `sla_by_cell` entries that apply to the cell with `params`, in order."""
    return [
        i
        for i, entry in enumerate(scenario.sla_by_cell)
        if entry_matches(entry.cells, params, scenario.matrix)
    ]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` written in: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        out[key] = deep_merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def written_sla(entry: CellSla) -> dict[str, Any]:
    """The keys an entry's `sla` block writes (its defaults are not part of it)."""
    return entry.sla.model_dump(exclude_unset=True)


def merge_cell_sla(data: dict[str, Any], scenario: Scenario, params: dict[str, Any]) -> None:
    """Merge, into a cell's data, the `sla` of every entry that applies to it, in order."""
    for index in matching_entries(scenario, params):
        data["sla"] = deep_merge(data.get("sla") or {}, written_sla(scenario.sla_by_cell[index]))


def _values_text(key: str, values: Sequence[Any]) -> str:
    if path_has_secret(split_key_path(key)):
        return "values not shown: the key looks like a secret"
    return ", ".join(describe_value(v) for v in values)


def _key_problems(s: Scenario, index: int, key: str, value: Any) -> Iterator[Problem]:
    at = (KEY, index, "cells", key)
    if key not in s.matrix:
        hint = did_you_mean(key, list(s.matrix))
        yield Problem(at, f"`{key}` is not a `matrix` key{hint}", at_key=True)
        return
    matrix_values = s.matrix[key]
    listed = _is_listed(value, matrix_values)
    for j, wanted in enumerate(wanted_values(value, matrix_values)):
        if any(same_value(wanted, m) for m in matrix_values):
            continue
        shown = "a value" if path_has_secret(split_key_path(key)) else describe_value(wanted)
        yield Problem(
            (*at, j) if listed else at,
            f"{shown} is not among the matrix values of `{key}` ({_values_text(key, matrix_values)})",
        )


def entry_problems(s: Scenario) -> Iterator[Problem]:
    """What is wrong with the entries themselves: keys not in `matrix`, values not among a key's
    matrix values, entries that match no cell.

    The matrix is a cross product, so once every key and value is one of the matrix's an entry
    matches some cell unless it lists no value for a key: that is the one way to match none.
    """
    if not s.sla_by_cell:
        return
    if not s.matrix and any(entry.cells for entry in s.sla_by_cell):
        yield Problem((KEY,), "needs a `matrix`: its entries pick matrix cells by their values", at_key=True)
        return
    for index, entry in enumerate(s.sla_by_cell):
        for key, value in entry.cells.items():
            yield from _key_problems(s, index, key, value)
            if value == [] and key in s.matrix:
                yield Problem(
                    (KEY, index, "cells", key),
                    "an empty list of values: the entry matches no matrix cell",
                )


def entry_problem(
    problem: Problem, cell_name: str, scenario: Scenario, entry_indexes: Sequence[int]
) -> Problem | None:
    """A cell's problem with its merged `sla`, reported at the entry that made it: the last of the
    cell's entries that writes the key the problem is about (or one of the other keys it names),
    the message naming the cell. None when no entry of the cell writes any of them: the problem
    comes from the scenario or its matrix, and is reported as any cell's problem is."""
    paths = [p[1:] for p in (problem.path, *problem.alt_paths) if p[:1] == ("sla",)]
    for index in reversed(entry_indexes):
        written = written_sla(scenario.sla_by_cell[index])
        found = [p for p in paths if written_at(written, p)]
        if found:
            prefix: KeyPath = (KEY, index, "sla")
            message = (
                f"in case `{cell_name}`, once merged over the scenario's `sla`: "
                f"{format_key_path(problem.path)}: {problem.message}"
            )
            return Problem((*prefix, *found[0]), message, alt_paths=(prefix,))
    return None


def restrict_entries(
    data: dict[str, Any], key: str, allowed: Sequence[Any], old_values: Sequence[Any]
) -> bool:
    """Keep `sla_by_cell` (plain data) in step with a `--set` that changes the matrix key `key`.

    `allowed` is what the key may now be: the one value a `--set key=value` pins (the matrix entry
    is gone, so the key is dropped from the entries that accept the value), or the new list of a
    `--set matrix.key=[...]` (each entry keeps the values still listed). An entry that accepts none
    of them applies to no cell any more and is dropped. Returns True when one was dropped: the
    entries after it moved, so their positions in the file no longer hold.
    """
    entries = data.get(KEY)
    if not isinstance(entries, list):
        return False
    pinned = key not in (data.get("matrix") or {})
    kept: list[Any] = []
    for entry in entries:
        cells = entry.get("cells") if isinstance(entry, dict) else None
        if not isinstance(cells, dict) or key not in cells:
            kept.append(entry)
            continue
        listed = _is_listed(cells[key], old_values)
        still = [v for v in wanted_values(cells[key], old_values) if any(same_value(v, a) for a in allowed)]
        if not still:
            continue
        if pinned:
            narrowed = {k: v for k, v in cells.items() if k != key}
        else:
            narrowed = {**cells, key: still if listed else still[0]}
        kept.append({**entry, "cells": narrowed})
    data[KEY] = kept
    return len(kept) < len(entries)
