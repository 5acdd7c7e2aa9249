"""`novamig validate` warns when a `p95` limit is judged over too few migrations to be a percentile."""

from __future__ import annotations

import io
from pathlib import Path

from novamig.scenario.commands import cmd_validate
from novamig.scenario.loader import load_scenario
from novamig.scenario.models import Scenario
from novamig.scenario.sla_lint import migrations_per_case, p95_warnings

SIX = """name: a
fleet: {count: 2}
migration: {count: 3}
sla: {downtime_ms: {max: 2000, p95: 1000, probe: guest}, duration_s: {p95: 60}}
"""


def _load(tmp_path: Path, text: str, overrides: list[str] | None = None) -> tuple[Path, Scenario]:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path, load_scenario(str(path), overrides or [])


def test_a_p95_over_six_migrations_is_named_as_the_max_it_acts_as(tmp_path: Path) -> None:
    path, scenario = _load(tmp_path, SIX)
    assert migrations_per_case(scenario) == 6
    warnings = p95_warnings(scenario)
    assert len(warnings) == 2
    assert warnings[0].startswith("sla.downtime_ms.p95 is judged over 6 migration(s) per case")
    assert "acts as a max of 1000" in warnings[0] and "acts as a max of 60" in warnings[1]
    out = io.StringIO()
    assert cmd_validate([str(path)], [], out) == 0  # advice, not an error
    assert out.getvalue().splitlines() == [f"{path}: ok", *(f"{path}: warning: {w}" for w in warnings)]


def test_twenty_migrations_a_case_or_no_p95_says_nothing(tmp_path: Path) -> None:
    assert p95_warnings(_load(tmp_path, SIX, ["migration.count=10"])[1]) == []
    no_p95 = ["sla.downtime_ms.p95=null", "sla.duration_s.p95=null"]
    assert p95_warnings(_load(tmp_path, SIX, no_p95)[1]) == []
    # a drain moves each server once: 2 migrations, whatever migration.count says
    drain = _load(tmp_path, SIX, ["migration.target=drain:compute1", "migration.count=50"])[1]
    assert migrations_per_case(drain) == 2 and len(p95_warnings(drain)) == 2


def test_each_case_of_a_matrix_is_counted_on_its_own(tmp_path: Path) -> None:
    text = SIX + "matrix: {migration.count: [3, 10]}\n"
    (warning, _) = p95_warnings(_load(tmp_path, text)[1])
    assert "over 6 migration(s)" in warning  # the count=10 cell has 20: no warning of its own
