"""Expanding a scenario's `matrix` and `repeat` into the cases a run executes.

Order is deterministic: the first matrix key varies slowest, values in the order written, and
repetitions are interleaved (every cell once, then every cell again). Interleaving spreads slow drift
of the machine (thermal, caches, a noisy neighbour) over all cells instead of biasing one.

A case id names its cell by the last segment of each matrix key (longer suffixes only where two keys
would read alike) and its repetition: `post_copy_after_s=5,dirty_rate_mib_s=64#r1`. Ids are unique
and safe as file names (only `[A-Za-z0-9._+=,#-]`). A secret never appears in an id or in a case's
recorded `params`: a key that looks like a secret (`workload.script.env.MYSQL_PWD`) or values that
hold one (`--password=…`) are named `v1`, `v2`… in ids, and `Case.params` has them redacted.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from novamig.scenario.cellsla import matching_entries, merge_cell_sla
from novamig.scenario.datapaths import PathConflict, set_path, split_key_path
from novamig.scenario.redaction import path_has_secret, redact, redact_text

if TYPE_CHECKING:
    from novamig.scenario.models import Scenario

#: More cases than this (matrix cells × repeat) is a typo, not an experiment.
MAX_CASES = 1000
#: Longer cell names are replaced by a numbered one.
MAX_CELL_NAME = 100

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Cell:
    """One combination of matrix values: full key path → value, and each value's index in its list."""

    name: str
    params: dict[str, Any]
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class Case:
    """One run of one matrix cell; `scenario` is the scenario with the cell applied (no matrix, repeat 1).

    `params` is what results and reports record: the cell's values with secrets redacted (the real
    values are in `scenario`, which is what runs). `sla_reasons` are the reasons of the
    `sla_by_cell` entries merged into the case's `scenario.sla`, for its results and report."""

    id: str
    params: dict[str, Any]
    repetition: int
    scenario: Scenario = field(repr=False, compare=False)
    sla_reasons: tuple[str, ...] = ()

    @property
    def cell_id(self) -> str:
        """The id without the repetition: what repetitions of one cell share."""
        return self.id.rpartition("#")[0]


def case_count(scenario: Scenario) -> int:
    """Number of cases a scenario expands into."""
    return math.prod(len(v) for v in scenario.matrix.values()) * scenario.repeat


def _labels(keys: list[str]) -> list[str]:
    """Shortest dotted suffix of each key that no other key shares."""
    labels: list[str] = []
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(other != key and (other == label or other.endswith("." + label)) for other in keys):
                break
        labels.append(label)
    return labels


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str) and value:
        return _UNSAFE.sub("_", value)
    return None


def _value_texts(key: str, values: list[Any]) -> list[str]:
    """File-name-safe spelling of each value; `v1`, `v2`… when spellings would be missing or clash,
    or would show a secret (a secret-looking key, or a value with one inside)."""
    if path_has_secret(split_key_path(key)) or redact(values) != values:
        return [f"v{i + 1}" for i in range(len(values))]
    texts = [_scalar_text(v) for v in values]
    if any(t is None for t in texts) or len(set(texts)) != len(texts):
        return [f"v{i + 1}" for i in range(len(values))]
    return [t for t in texts if t is not None]


def cells(scenario: Scenario) -> list[Cell]:
    """Every matrix cell in run order; a scenario without matrix has one cell, `default`."""
    keys = list(scenario.matrix)
    if not keys:
        return [Cell("default", {}, ())]
    labels = _labels(keys)
    texts = [_value_texts(k, scenario.matrix[k]) for k in keys]
    out: list[Cell] = []
    for number, indexes in enumerate(itertools.product(*(range(len(scenario.matrix[k])) for k in keys))):
        name = ",".join(f"{labels[i]}={texts[i][j]}" for i, j in enumerate(indexes))
        if len(name) > MAX_CELL_NAME:
            name = f"cell{number + 1:03d}"
        params = {k: scenario.matrix[k][j] for k, j in zip(keys, indexes, strict=True)}
        out.append(Cell(name, params, tuple(indexes)))
    return out


def cell_data(scenario: Scenario, cell: Cell) -> dict[str, Any]:
    """The scenario's data with a cell's values written in, the `sla` of its `sla_by_cell` entries
    merged over the scenario's, its matrix and `sla_by_cell` emptied and repeat 1.

    Raises `datapaths.PathConflict` when a matrix key goes through a value that is not a mapping.
    """
    data = scenario.model_dump()
    if getattr(scenario, "_downtime_probe_defaulted", False):
        # Unwritten: the cell derives it from its own `measure.probes`, as the scenario did.
        del data["sla"]["downtime_ms"]["probe"]
    data["matrix"] = {}
    data["sla_by_cell"] = []
    data["repeat"] = 1
    for key, value in cell.params.items():
        try:
            set_path(data, split_key_path(key), value)
        except PathConflict as exc:
            raise PathConflict(exc.depth, str(exc), key) from None
    merge_cell_sla(data, scenario, cell.params)
    return data


def cell_sla_reasons(scenario: Scenario, cell: Cell) -> tuple[str, ...]:
    """The reasons of the `sla_by_cell` entries that apply to a cell, in order, each once; free
    text that results record, so redacted like any recorded string (`--password=…`)."""
    reasons = (redact_text(scenario.sla_by_cell[i].reason) for i in matching_entries(scenario, cell.params))
    return tuple(dict.fromkeys(reasons))


def expand_cases(scenario: Scenario) -> list[Case]:
    """Every case of a valid scenario, in run order (repetition outermost, then the matrix).

    Each cell is validated as the scenario's own class (`type(scenario)`): the model's validators
    use this module, so it does not import the model at run time.
    """
    per_cell = [(cell, type(scenario).model_validate(cell_data(scenario, cell))) for cell in cells(scenario)]
    return [
        Case(f"{cell.name}#r{rep}", redact(cell.params), rep, resolved, cell_sla_reasons(scenario, cell))
        for rep in range(1, scenario.repeat + 1)
        for cell, resolved in per_cell
    ]
