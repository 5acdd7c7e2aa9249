"""Matrix and repeat expansion: how many cases, their names, their order, and what each one runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from scenario_testlib import SHIPPED

from novamig.scenario import Scenario, case_count, expand_cases, load_scenario

SAFE_ID = re.compile(r"^[A-Za-z0-9._+=,-]+#r[0-9]+$")


def scenario(**fields: Any) -> Scenario:
    data: dict[str, Any] = {"name": "m", **fields}
    return Scenario.model_validate(data)


def test_no_matrix_is_one_case_per_repetition() -> None:
    cases = expand_cases(scenario(repeat=3))
    assert [(c.id, c.params, c.repetition) for c in cases] == [
        ("default#r1", {}, 1),
        ("default#r2", {}, 2),
        ("default#r3", {}, 3),
    ]


def test_count_is_product_times_repeat() -> None:
    s = scenario(
        matrix={"migration.count": [1, 2, 3], "migration.interval_s": [0, 1], "fleet.count": [1, 2]},
        repeat=2,
    )
    cases = expand_cases(s)
    assert len(cases) == case_count(s) == 3 * 2 * 2 * 2
    assert len({c.id for c in cases}) == len(cases)


def test_names_and_order() -> None:
    s = scenario(
        workload={"kind": "memory", "memory": {"dirty_rate_mib_s": 8}},
        matrix={
            "migration.policy.post_copy_after_s": [None, 5],
            "workload.memory.dirty_rate_mib_s": [0.5, 64],
        },
        repeat=2,
    )
    assert [c.id for c in expand_cases(s)] == [
        "post_copy_after_s=null,dirty_rate_mib_s=0.5#r1",
        "post_copy_after_s=null,dirty_rate_mib_s=64#r1",
        "post_copy_after_s=5,dirty_rate_mib_s=0.5#r1",
        "post_copy_after_s=5,dirty_rate_mib_s=64#r1",
        "post_copy_after_s=null,dirty_rate_mib_s=0.5#r2",
        "post_copy_after_s=null,dirty_rate_mib_s=64#r2",
        "post_copy_after_s=5,dirty_rate_mib_s=0.5#r2",
        "post_copy_after_s=5,dirty_rate_mib_s=64#r2",
    ]


def test_case_carries_its_cell() -> None:
    s = scenario(
        workload={"kind": "memory", "memory": {"dirty_rate_mib_s": 8}},
        matrix={
            "migration.policy.post_copy_after_s": [None, 5],
            "workload.memory.dirty_rate_mib_s": [16, 64],
        },
    )
    case = expand_cases(s)[3]
    assert case.id == "post_copy_after_s=5,dirty_rate_mib_s=64#r1"
    assert case.cell_id == "post_copy_after_s=5,dirty_rate_mib_s=64"
    assert case.params == {"migration.policy.post_copy_after_s": 5, "workload.memory.dirty_rate_mib_s": 64}
    assert case.repetition == 1
    assert case.scenario.migration.policy.post_copy_after_s == 5
    assert case.scenario.workload.memory.dirty_rate_mib_s == 64
    assert case.scenario.matrix == {} and case.scenario.repeat == 1
    assert case.scenario.name == "m"
    # the source scenario is untouched
    assert s.workload.memory.dirty_rate_mib_s == 8


def test_labels_lengthen_only_where_keys_clash() -> None:
    s = scenario(matrix={"fleet.count": [2], "migration.count": [1], "migration.interval_s": [3]})
    assert expand_cases(s)[0].id == "fleet.count=2,migration.count=1,interval_s=3#r1"


def test_values_that_cannot_name_a_file_are_numbered() -> None:
    s = scenario(
        matrix={
            "fleet.flavor": [{"vcpus": 1, "ram_mb": 256}, "m1.small", "m1.large"],
            "migration.block_migration": ["auto", True, False],
        }
    )
    ids = [c.id for c in expand_cases(s)]
    assert ids[:4] == [
        "flavor=v1,block_migration=auto#r1",
        "flavor=v1,block_migration=true#r1",
        "flavor=v1,block_migration=false#r1",
        "flavor=v2,block_migration=auto#r1",
    ]
    assert expand_cases(s)[0].scenario.fleet.flavor.ram_mb == 256  # type: ignore[union-attr]
    assert expand_cases(s)[3].scenario.fleet.flavor == "m1.small"


def test_unsafe_characters_are_replaced() -> None:
    s = scenario(matrix={"workload.locust.locustfile": ["load/web.py", "load/api v2.py"]})
    assert [c.id for c in expand_cases(s)] == ["locustfile=load_web.py#r1", "locustfile=load_api_v2.py#r1"]


def test_values_that_would_read_alike_are_numbered() -> None:
    s = scenario(matrix={"workload.locust.locustfile": ["a/b.py", "a_b.py"]})
    assert [c.id for c in expand_cases(s)] == ["locustfile=v1#r1", "locustfile=v2#r1"]


def test_long_cell_names_are_numbered() -> None:
    s = scenario(matrix={"fleet.image": ["a" * 120, "b"]})
    assert [c.id for c in expand_cases(s)] == ["cell001#r1", "image=b#r1"]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_ids_are_unique_and_file_safe(path: Path) -> None:
    cases = expand_cases(load_scenario(path))
    assert cases
    assert len({c.id for c in cases}) == len(cases)
    assert all(SAFE_ID.match(c.id) for c in cases), [c.id for c in cases]


def test_shipped_precopy_matrix() -> None:
    path = next(p for p in SHIPPED if p.name == "precopy-vs-postcopy.yaml")
    raw = yaml.safe_load(path.read_text())
    cases = expand_cases(load_scenario(path))
    cells = 1
    for values in raw["matrix"].values():
        cells *= len(values)
    assert len(cases) == cells * raw["repeat"]
    assert cases[1].id == "dirty_rate_mib_s=16,post_copy_after_s=5#r1"


def test_expansion_is_deterministic() -> None:
    path = next(p for p in SHIPPED if p.name == "precopy-vs-postcopy.yaml")
    assert [c.id for c in expand_cases(load_scenario(path))] == [
        c.id for c in expand_cases(load_scenario(path))
    ]
