"""`fleet.floating_ip_network`: what it accepts, how `none` reads, and where a bad value is reported."""

from __future__ import annotations

import pytest
from scenario_testlib import Check

from novamig.scenario.models import Scenario


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (None, None),
        ("none", None),
        ("auto", "auto"),
        ("public", "public"),
        ("8e7b4a1c-0f64-4e55-9a8a-6a1a2f0c9d31", "8e7b4a1c-0f64-4e55-9a8a-6a1a2f0c9d31"),
    ],
)
def test_floating_ip_network_values(written: str | None, read: str | None) -> None:
    fleet = {} if written is None else {"floating_ip_network": written}
    scenario = Scenario.model_validate({"name": "a", "fleet": fleet})
    assert scenario.fleet.floating_ip_network == read


def test_unset_means_no_floating_ips() -> None:
    assert Scenario.model_validate({"name": "a"}).fleet.floating_ip_network is None


def test_a_name_with_a_space_is_pointed_at(check: Check) -> None:
    lines = check("name: a\nfleet:\n  floating_ip_network: my public\n")
    assert len(lines) == 1, lines
    assert lines[0].startswith("F:3:24: fleet.floating_ip_network: "), lines
    assert "should be `auto`, `none` or an external network's name or id" in lines[0]
    assert "'my public'" in lines[0]


def test_a_non_string_is_refused(check: Check) -> None:
    lines = check("name: a\nfleet: {floating_ip_network: true}\n")
    assert len(lines) == 1 and lines[0].startswith("F:2:30: fleet.floating_ip_network: "), lines
    assert "valid string" in lines[0]


def test_a_misspelt_key_is_suggested(check: Check) -> None:
    lines = check("name: a\nfleet: {floating_network: auto}\n")
    assert any("did you mean `floating_ip_network`?" in line for line in lines), lines


def test_the_override_is_validated_like_the_file(check: Check) -> None:
    lines = check("name: a\n", overrides=["fleet.floating_ip_network=no such net"])
    assert any("fleet.floating_ip_network" in line and "should be `auto`" in line for line in lines), lines
    assert check("name: a\n", overrides=["fleet.floating_ip_network=auto"]) == ["F: ok"]
