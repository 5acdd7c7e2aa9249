"""Defaults follow what the scenario says: no refusal for a key the user never wrote.

The downtime SLA's probe defaults to `guest`; a scenario that does not measure the guest must not
be refused because of that default, and whatever error remains must point at a line the user wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scenario_testlib import Check

from novamig.scenario.loader import load_scenario
from novamig.scenario.models import default_downtime_probe


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        ("[hypervisor]", "hypervisor"),
        ("[network]", "network"),
        ("[network, hypervisor]", "network"),
        ("[hypervisor, guest]", "guest"),
        ("[guest]", "guest"),
    ],
)
def test_downtime_probe_follows_measure_probes(tmp_path: Path, probes: str, expected: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: a\nmeasure:\n  probes: {probes}\n", encoding="utf-8")
    assert load_scenario(path).sla.downtime_ms.probe == expected


def test_hypervisor_only_with_a_downtime_limit_is_valid(check: Check) -> None:
    text = "name: a\nmeasure:\n  probes: [hypervisor]\nsla:\n  downtime_ms: {max: 800, p95: 500}\n"
    assert check(text) == ["F: ok"]


def test_default_probe_follows_an_override(check: Check) -> None:
    assert check("name: a\n", ["measure.probes=[hypervisor]"]) == ["F: ok"]


def test_default_probe_follows_each_matrix_cell(check: Check) -> None:
    text = "name: a\nmatrix:\n  measure.probes: [[guest], [hypervisor], [network]]\n"
    assert check(text) == ["F: ok"]


def test_written_probe_is_kept_and_the_error_points_at_it(check: Check) -> None:
    text = "name: a\nmeasure:\n  probes: [hypervisor]\nsla:\n  downtime_ms:\n    probe: network\n"
    [line] = check(text)
    assert line.startswith("F:6:12: sla.downtime_ms.probe: "), line


def test_errors_for_a_defaulted_probe_point_at_written_lines(check: Check) -> None:
    """With a bad probe name, only the written entry is reported: the default adds nothing."""
    lines = check("name: a\nmeasure:\n  probes: [hypervisr]\n")
    assert lines and all(line.startswith("F:3:") for line in lines), lines
    assert not any("sla." in line for line in lines), lines


def test_default_probe_rule() -> None:
    assert default_downtime_probe(["hypervisor", "guest"]) == "guest"
    assert default_downtime_probe(["locust", "network"]) == "locust"
    assert default_downtime_probe([]) == "guest"


def test_a_written_probe_is_not_rederived_in_matrix_cells(check: Check) -> None:
    text = (
        "name: a\nmeasure:\n  probes: [hypervisor]\nsla:\n  downtime_ms: {probe: hypervisor}\n"
        "matrix:\n  measure.probes: [[hypervisor], [guest]]\n"
    )
    [line] = check(text)
    assert line.startswith("F:7:34: matrix[measure.probes][1]: "), line
    assert "`hypervisor` is not among" in line, line
