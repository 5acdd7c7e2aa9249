"""`--set key.path=value` overrides: parsed as YAML, checked against the model, validated like the file."""

from __future__ import annotations

import pytest
from scenario_testlib import SHIPPED, Check

from novamig.scenario import ScenarioInvalid, expand_cases, load_scenario

BASE = "name: a\nfleet: {count: 2}\nmigration:\n  count: 2\n"


def test_values_are_yaml(check: Check) -> None:
    assert check(BASE, ["migration.count=3", "migration.policy.post_copy_after_s=null"]) == ["F: ok"]
    # quoted, it is a string: the value was read as YAML, not guessed
    assert check(BASE, ["migration.count='3'"]) == [
        "<--set>:0:0: migration.count: Input should be a valid integer, got '3'"
    ]


def test_typed_override_reaches_the_scenario() -> None:
    smoke = next(p for p in SHIPPED if p.name == "smoke.yaml")
    s = load_scenario(
        smoke,
        [
            "migration.count=3",
            "migration.policy.post_copy_after_s=7.5",
            "measure.probes=[guest]",
            "cloud=lab",
        ],
    )
    assert s.migration.count == 3
    assert s.migration.policy.post_copy_after_s == 7.5
    assert s.measure.probes == ["guest"]
    assert s.cloud == "lab"
    s = load_scenario(smoke, ["migration.policy.post_copy_after_s=null"])
    assert s.migration.policy.post_copy_after_s is None


def test_override_creates_missing_parents() -> None:
    smoke = next(p for p in SHIPPED if p.name == "smoke.yaml")
    s = load_scenario(smoke, ["host_policy.live_migration_downtime=400"])
    assert s.host_policy is not None and s.host_policy.live_migration_downtime == 400


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("migration.cuont=3", "<--set>:0:0: migration.cuont: unknown key `cuont`; did you mean `count`?"),
        (
            "migration.post_copy_after_s=5",
            "<--set>:0:0: migration.post_copy_after_s: unknown key `post_copy_after_s`; "
            "did you mean `migration.policy.post_copy_after_s`?",
        ),
        ("migration.count=x", "<--set>:0:0: migration.count: Input should be a valid integer, got 'x'"),
        (
            "migration.count=-1",
            "<--set>:0:0: migration.count: Input should be greater than or equal to 0, got -1",
        ),
        ("migration.count", "<--set>:0:0: (--set): expected KEY.PATH=VALUE: `migration.count`"),
        ("=3", "<--set>:0:0: (--set): expected KEY.PATH=VALUE: `=3`"),
        ("migration..count=3", "<--set>:0:0: migration..count: empty key in the path"),
        ("migration.count=[1", "<--set>:0:0: migration.count: cannot read the value as YAML"),
        (
            "migration.count.x=1",
            "<--set>:0:0: migration.count.x: `migration.count` is a single value; it has no key `x`",
        ),
        (
            "fleet.flavor.ram_mb=512",
            "<--set>:0:0: fleet.flavor: `fleet.flavor` is a single value, not a mapping",
        ),
        (
            "matrix.migration.nope=[1]",
            "<--set>:0:0: matrix[migration.nope]: `migration.nope` names no scenario field",
        ),
        (
            "migration.policy.timeout_s=5",
            "F:4:27: migration.policy.abort_after_s: must be below `timeout_s` (5 s)",
        ),
    ],
)
def test_bad_override(check: Check, override: str, expected: str) -> None:
    text = BASE + "  policy: {abort_after_s: 10}\nfleet: {flavor: m1.small}\n"
    text = text.replace("fleet: {count: 2}\n", "")
    lines = check(text, [override])
    assert any(line.startswith(expected) for line in lines), lines


def test_override_error_comes_before_file_errors(check: Check) -> None:
    lines = check("name: a\nrepeat: 0\n", ["migration.count=x"])
    assert lines == [
        "<--set>:0:0: migration.count: Input should be a valid integer, got 'x'",
        "F:2:9: repeat: Input should be greater than or equal to 1, got 0",
    ]


def test_override_fixes_a_file_error(check: Check) -> None:
    assert check("name: a\nrepeat: 0\n", ["repeat=2"]) == ["F: ok"]


def test_rule_about_an_overridden_key_is_reported_at_the_override(check: Check) -> None:
    lines = check("name: a\nfleet: {count: 2}\nmigration: {concurrency: 2}\n", ["migration.concurrency=3"])
    assert lines == [
        "<--set>:0:0: migration.concurrency: cannot exceed `fleet.count` (2): "
        "a server is in at most one migration at a time"
    ]


def test_rule_about_a_written_key_stays_in_the_file(check: Check) -> None:
    lines = check("name: a\nfleet: {count: 2}\nmigration: {concurrency: 2}\n", ["fleet.count=1"])
    assert lines == [
        "F:3:26: migration.concurrency: cannot exceed `fleet.count` (1): "
        "a server is in at most one migration at a time"
    ]


def test_overriding_a_matrix_key_pins_it() -> None:
    path = next(p for p in SHIPPED if p.name == "precopy-vs-postcopy.yaml")
    s = load_scenario(path, ["migration.policy.post_copy_after_s=5"])
    assert list(s.matrix) == ["workload.memory.dirty_rate_mib_s"]
    cases = expand_cases(s)
    assert [c.id for c in cases if c.repetition == 1] == [
        "dirty_rate_mib_s=16#r1",
        "dirty_rate_mib_s=64#r1",
        "dirty_rate_mib_s=200#r1",
    ]
    assert {c.scenario.migration.policy.post_copy_after_s for c in cases} == {5}


def test_matrix_entry_can_be_set_and_cleared() -> None:
    path = next(p for p in SHIPPED if p.name == "precopy-vs-postcopy.yaml")
    s = load_scenario(path, ["matrix.workload.memory.dirty_rate_mib_s=[8, 32]", "repeat=1"])
    assert s.matrix["workload.memory.dirty_rate_mib_s"] == [8, 32]
    assert len(expand_cases(s)) == 4
    s = load_scenario(path, ["matrix={}", "repeat=1"])
    assert [c.id for c in expand_cases(s)] == ["default#r1"]


def test_matrix_value_set_by_override_is_validated(check: Check) -> None:
    lines = check("name: a\n", ["matrix.migration.count=[1, -2]"])
    assert lines == [
        "<--set>:0:0: matrix[migration.count][1]: Input should be greater than or equal to 0, got -2"
    ]


def test_load_scenario_raises_with_issues() -> None:
    path = next(p for p in SHIPPED if p.name == "smoke.yaml")
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenario(path, ["fleet.count=0", "nope=1"])
    assert [str(i) for i in caught.value.issues] == [
        "<--set>:0:0: nope: unknown key `nope`; valid keys: `name`, `description`, `cloud`, `fleet`, "
        "`workload`, `migration`, `host_policy`, `measure`, `sla`, `matrix`, `sla_by_cell`, `repeat`",
        "<--set>:0:0: fleet.count: Input should be greater than or equal to 1, got 0",
    ]
