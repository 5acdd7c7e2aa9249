"""`sla_by_cell`: which cells an entry picks, the SLA each case runs with, and every way to get it wrong."""

from __future__ import annotations

from typing import Any

import pytest
from scenario_testlib import SHIPPED, Check

from novamig.scenario import Scenario, expand_cases, load_scenario, scenario_json_schema
from novamig.scenario.cellsla import deep_merge, entry_matches, same_value

RATE = "workload.memory.dirty_rate_mib_s"
SWITCH = "migration.policy.post_copy_after_s"

#: A 3 × 2 sweep like the shipped one, with a scenario SLA the entries are merged over.
SWEEP = f"""
name: sweep
workload: {{kind: memory, memory: {{dirty_rate_mib_s: 16}}}}
sla:
  downtime_ms: {{max: 500, p95: 300}}
  migrations_completed_ratio: 0.5
matrix:
  {RATE}: [16, 64, 200]
  {SWITCH}: [null, 5]
"""


def sweep(*entries: dict[str, Any], **fields: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "sweep",
        "workload": {"kind": "memory", "memory": {"dirty_rate_mib_s": 16}},
        "sla": {"downtime_ms": {"max": 500, "p95": 300}, "migrations_completed_ratio": 0.5},
        "matrix": {RATE: [16, 64, 200], SWITCH: [None, 5]},
        "sla_by_cell": list(entries),
        **fields,
    }
    return Scenario.model_validate(data)


def by_cell(s: Scenario) -> dict[str, Any]:
    """Cell id → (its completed ratio, its downtime max and p95, its reasons), first repetition."""
    return {
        c.cell_id: (
            c.scenario.sla.migrations_completed_ratio,
            c.scenario.sla.downtime_ms.max,
            c.scenario.sla.downtime_ms.p95,
            c.sla_reasons,
        )
        for c in expand_cases(s)
        if c.repetition == 1
    }


def test_an_entry_gives_the_cells_it_matches_their_own_sla_and_reason() -> None:
    s = sweep({"cells": {RATE: 200, SWITCH: None}, "sla": {"migrations_completed_ratio": 0}, "reason": "why"})
    cells = by_cell(s)
    assert cells.pop("dirty_rate_mib_s=200,post_copy_after_s=null") == (0, 500, 300, ("why",))
    assert set(cells.values()) == {(0.5, 500, 300, ())}, "every other cell keeps the scenario's SLA"
    assert len(cells) == 5


def test_a_list_of_values_matches_each_and_unnamed_keys_match_any() -> None:
    s = sweep({"cells": {RATE: [64, 200]}, "sla": {"migrations_completed_ratio": 0.25}, "reason": "fast"})
    cells = by_cell(s)
    own = {cell for cell, (ratio, *_rest) in cells.items() if ratio == 0.25}
    assert own == {
        "dirty_rate_mib_s=64,post_copy_after_s=null",
        "dirty_rate_mib_s=64,post_copy_after_s=5",
        "dirty_rate_mib_s=200,post_copy_after_s=null",
        "dirty_rate_mib_s=200,post_copy_after_s=5",
    }


def test_a_partial_block_is_merged_key_by_key_later_entries_over_earlier() -> None:
    s = sweep(
        {"cells": {RATE: 200}, "sla": {"downtime_ms": {"max": 900}}, "reason": "one"},
        {"cells": {SWITCH: 5}, "sla": {"downtime_ms": {"max": 2000, "p95": 1500}}, "reason": "two"},
    )
    cells = by_cell(s)
    # only `max` written: p95 stays the scenario's 300
    assert cells["dirty_rate_mib_s=200,post_copy_after_s=null"] == (0.5, 900, 300, ("one",))
    # both apply: the later entry's keys win, and both reasons are recorded in order
    assert cells["dirty_rate_mib_s=200,post_copy_after_s=5"] == (0.5, 2000, 1500, ("one", "two"))
    assert cells["dirty_rate_mib_s=16,post_copy_after_s=5"] == (0.5, 2000, 1500, ("two",))
    assert cells["dirty_rate_mib_s=16,post_copy_after_s=null"] == (0.5, 500, 300, ())


def test_matching_rules() -> None:
    matrix = {RATE: [16, 64, 200], "measure.probes": [["guest"], ["guest", "network"]]}
    assert entry_matches({RATE: 200.0}, {RATE: 200}, matrix), "numbers match by value"
    assert not entry_matches({"x": True}, {"x": 1}, {"x": [1]}), "a boolean is not the number 1"
    # a list that is itself one of the key's matrix values is that value, not a list of values
    assert entry_matches({"measure.probes": ["guest"]}, {"measure.probes": ["guest"]}, matrix)
    assert not entry_matches({"measure.probes": ["guest"]}, {"measure.probes": ["guest", "network"]}, matrix)
    assert entry_matches({}, {RATE: 16}, matrix), "no key named: every cell"
    assert same_value(None, None) and not same_value(None, 0)
    merged = deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 9}, "d": {"e": 1}})
    assert merged == {"a": {"b": 9, "c": 2}, "d": {"e": 1}}


def test_the_recorded_scenario_holds_only_what_an_entry_writes() -> None:
    s = sweep({"cells": {RATE: 200}, "sla": {"migrations_completed_ratio": 0}, "reason": "r"})
    assert s.model_dump()["sla_by_cell"] == [
        {"cells": {RATE: 200}, "sla": {"migrations_completed_ratio": 0.0}, "reason": "r"}
    ]


def test_the_shipped_sweep_expects_only_pre_copy_at_200_not_to_converge() -> None:
    path = next(p for p in SHIPPED if p.name == "precopy-vs-postcopy.yaml")
    s = load_scenario(path)
    assert s.sla.migrations_completed_ratio == 0.5
    own = {c.id: c for c in expand_cases(s) if c.sla_reasons}
    assert sorted(own) == [
        "dirty_rate_mib_s=200,post_copy_after_s=null#r1",
        "dirty_rate_mib_s=200,post_copy_after_s=null#r2",
    ]
    for case in own.values():
        assert case.scenario.sla.migrations_completed_ratio == 0
        assert case.scenario.sla.memory_integrity, "the rest of the scenario's SLA still applies"
        assert "128 MiB/s" in case.sla_reasons[0]


def test_errors_in_entries_are_positioned(check: Check) -> None:
    lines = check(
        SWEEP
        + f"""sla_by_cell:
  - cells: {{{RATE}: 65, migration.policy.post_copy_afte_s: null}}
    sla: {{migrations_completed_ratio: 0}}
    reason: a
  - cells: {{{RATE}: [16, 99], {SWITCH}: []}}
    sla: {{migrations_completed_ratio: 0}}
    reason: b
"""
    )
    assert lines == [
        f"F:10:47: sla_by_cell[0].cells[{RATE}]: 65 is not among the matrix values of `{RATE}` (16, 64, 200)",
        "F:10:51: sla_by_cell[0].cells[migration.policy.post_copy_afte_s]: "
        f"`migration.policy.post_copy_afte_s` is not a `matrix` key; did you mean `{SWITCH}`?",
        f"F:13:52: sla_by_cell[1].cells[{RATE}][1]: 99 is not among the matrix values of `{RATE}` "
        "(16, 64, 200)",
        f"F:13:93: sla_by_cell[1].cells[{SWITCH}]: an empty list of values: the entry matches no matrix cell",
    ]


def test_an_sla_invalid_once_merged_names_the_cell_at_the_entry(check: Check) -> None:
    lines = check(
        SWEEP
        + f"""sla_by_cell:
  - cells: {{{RATE}: 200}}
    sla: {{downtime_ms: {{max: 100}}}}
    reason: a
"""
    )
    assert lines == [
        "F:11:30: sla_by_cell[0].sla.downtime_ms.max: in case `dirty_rate_mib_s=200,post_copy_after_s=null`, "
        "once merged over the scenario's `sla`: sla.downtime_ms.p95: the 95th percentile cannot exceed "
        "`max` (100 ms)"
    ], "one line, although the entry picks two cells"


def test_the_entry_itself_is_validated_as_an_sla_block(check: Check) -> None:
    lines = check(
        SWEEP
        + f"""sla_by_cell:
  - cells: {{{RATE}: 200}}
    sla: {{migrations_completed_ratoi: 0}}
    reason: "  "
"""
    )
    assert lines == [
        "F:11:11: sla_by_cell[0].sla.migrations_completed_ratoi: unknown key `migrations_completed_ratoi`; "
        "did you mean `migrations_completed_ratio`?",
        "F:12:13: sla_by_cell[0].reason: must say why these cells have their own SLA (it is blank), got '  '",
    ]


def test_cells_need_a_matrix(check: Check) -> None:
    lines = check(
        """
        name: a
        sla_by_cell:
          - {cells: {migration.count: 1}, sla: {migrations_completed_ratio: 0}, reason: r}
        """
    )
    assert lines == ["F:2:1: sla_by_cell: needs a `matrix`: its entries pick matrix cells by their values"]


def test_sla_by_cell_cannot_vary_in_a_matrix(check: Check) -> None:
    lines = check("name: a\nmatrix: {sla_by_cell: [[]]}\n")
    assert lines == ["F:2:10: matrix.sla_by_cell: `sla_by_cell` cannot vary in a matrix"]


@pytest.mark.parametrize(
    ("overrides", "own"),
    [
        # pinned to the entry's value: the entry no longer names the key and applies to the one cell
        ([f"{RATE}=200"], ["post_copy_after_s=null#r1"]),
        # pinned to another value: the entry applies to no cell and is dropped
        ([f"{RATE}=64"], []),
        # new matrix values keep the entry's that are still listed
        ([f"matrix.{RATE}=[64, 200]"], ["dirty_rate_mib_s=200,post_copy_after_s=null#r1"]),
        ([f"matrix.{RATE}=[16]"], []),
        # the matrix cleared: the file's value of the key (16 here) decides
        (["matrix={}"], []),
    ],
)
def test_overrides_of_matrix_keys_keep_the_entries_in_step(overrides: list[str], own: list[str]) -> None:
    path = next(p for p in SHIPPED if p.name == "precopy-vs-postcopy.yaml")
    s = load_scenario(path, [*overrides, "repeat=1"])
    assert [c.id for c in expand_cases(s) if c.sla_reasons] == own
    assert all(
        c.scenario.sla.migrations_completed_ratio == (0 if c.sla_reasons else 0.5) for c in expand_cases(s)
    )


def test_a_pinned_matrix_key_whose_entries_all_go_leaves_problems_at_set(check: Check) -> None:
    text = (
        SWEEP
        + f"""sla_by_cell:
  - {{cells: {{{RATE}: 64}}, sla: {{migrations_completed_ratio: 0}}, reason: a}}
  - {{cells: {{{SWITCH}: 7}}, sla: {{migrations_completed_ratio: 0}}, reason: b}}
"""
    )
    # in the file, the second entry's bad value is pointed at
    assert check(text)[0].startswith("F:11:")
    # once --set drops the first, the second is no longer the file's entry [1]
    lines = check(text, [f"{RATE}=16"])
    assert lines == [
        f"<--set>:0:0: sla_by_cell[0].cells[{SWITCH}]: 7 is not among the matrix values of `{SWITCH}` "
        "(null, 5)"
    ]


def test_the_json_schema_describes_the_key() -> None:
    schema = scenario_json_schema()
    assert schema["properties"]["sla_by_cell"]["items"] == {"$ref": "#/$defs/CellSla"}
    entry = schema["$defs"]["CellSla"]
    assert entry["required"] == ["cells", "sla", "reason"]
    assert entry["properties"]["sla"]["$ref"] == "#/$defs/Sla"
    fleet = schema["$defs"]["Fleet"]["properties"]
    assert fleet["ready_timeout_s"]["default"] == 300 and fleet["ready_timeout_s"]["maximum"] == 86_400
    assert fleet["boot_timeout_s"]["default"] == 600 and fleet["boot_timeout_s"]["exclusiveMinimum"] == 0


def test_fleet_timeouts_are_bounded(check: Check) -> None:
    assert check("name: a\nfleet: {ready_timeout_s: 900, boot_timeout_s: 1200}\n") == ["F: ok"]
    assert check("name: a\nfleet: {ready_timeout_s: 0}\n") == [
        "F:2:26: fleet.ready_timeout_s: Input should be greater than 0, got 0"
    ]
    assert check("name: a\nfleet: {boot_timeout_s: 90000}\n") == [
        "F:2:25: fleet.boot_timeout_s: Input should be less than or equal to 86400, got 90000"
    ]


def test_a_reason_is_recorded_with_secrets_redacted() -> None:
    s = sweep({"cells": {RATE: 16}, "sla": {}, "reason": "measured with --password=hunter2 on the host"})
    reasons = {c.sla_reasons for c in expand_cases(s) if c.sla_reasons}
    assert reasons == {("measured with --password=<redacted> on the host",)}
