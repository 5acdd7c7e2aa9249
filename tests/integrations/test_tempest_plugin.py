"""The Tempest plugin as Tempest finds it: through its own plugin manager and test loader."""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg
from tempest.test_discover.plugins import TempestTestPluginManager
from tempest_runner import run_tempest_tests

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.tempest_conf import write_tempest_conf
from novamig.scenario.loader import load_scenario
from novamig.tempest_plugin.config import scenario_overrides

TEMPEST_TEST = "novamig.tempest_plugin.tests.test_live_migration.NovamigLiveMigrationTest.test_scenarios"


def test_tempest_s_plugin_manager_loads_it_and_its_tests_are_found() -> None:
    manager = TempestTestPluginManager()
    test_dir, top = manager.get_plugin_load_tests_tuple()["novamig"]
    assert Path(test_dir).is_dir()
    found = unittest.TestLoader().discover(test_dir, top_level_dir=top)
    ids = [t.id() for suite in found for case in suite for t in case]  # type: ignore[union-attr]
    assert TEMPEST_TEST in ids


def test_the_novamig_group_and_service_flag_register_with_defaults() -> None:
    conf = cfg.ConfigOpts()
    TempestTestPluginManager().register_plugin_opts(conf)
    conf([], default_config_files=[])
    assert conf.novamig.image == "novamig-full"
    assert conf.novamig.scenarios == []
    # unset, so neither forces a value: the scenario's own, or novamig's discovery from the route
    assert conf.novamig.heartbeat_collector is None
    assert conf.novamig.floating_ip_network is None
    assert scenario_overrides(conf.novamig, block_migration=False) == ["fleet.image=novamig-full"]
    assert conf.service_available.novamig is True
    listed = dict(TempestTestPluginManager().get_plugin_options_list())
    assert {o.name for o in listed["novamig"]} >= {
        "scenarios",
        "overrides",
        "image",
        "heartbeat_collector",
        "floating_ip_network",
    }


def test_tempest_conf_becomes_the_scenario_settings_operators_win(tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    TempestTestPluginManager().register_plugin_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("heartbeat_collector", "172.24.4.1:47100", "novamig")
    conf.set_override("floating_ip_network", "auto", "novamig")
    conf.set_override("overrides", ["sla.downtime_ms.max=800", "fleet.image=mine"], "novamig")
    sets = scenario_overrides(conf.novamig, block_migration=True)
    assert sets == [
        "fleet.image=novamig-full",
        "measure.heartbeat_collector=172.24.4.1:47100",
        "fleet.floating_ip_network=auto",
        "migration.block_migration=true",
        "sla.downtime_ms.max=800",
        "fleet.image=mine",
    ]
    # the names are the scenario's: a scenario without floating IPs gets them from tempest.conf
    plain = tmp_path / "plain.yaml"
    plain.write_text(TEMPEST_SCENARIO % 120)
    scenario = load_scenario(plain, sets)
    assert scenario.fleet.floating_ip_network == "auto"
    assert scenario.sla.downtime_ms.max == 800 and scenario.fleet.image == "mine"


# A scenario the embedded cloud passes when reached only through Tempest's credentials, as a
# foreign cloud: novamig cannot read its hosts then, so only Nova's own figures are judged.
TEMPEST_SCENARIO = """\
name: tempest-tiny
fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: idle}
migration: {count: 1, concurrency: 1, target: auto, interval_s: 0.5, policy: {timeout_s: 120}}
measure: {probes: [hypervisor], noise_floor_s: 0}
sla:
  downtime_ms: {probe: hypervisor}
  duration_s: {max: %s}
  migrations_completed_ratio: 1.0
"""


@pytest.mark.slow
@pytest.mark.qemu
def test_the_tempest_test_runs_a_scenario_on_the_embedded_cloud(
    embedded_cloud: EmbeddedCloud, tmp_path: Path
) -> None:
    """With the tempest.conf novamig generates for the embedded cloud plus a [novamig] group, the
    test passes a scenario whose SLA holds and fails one whose SLA cannot, with the numbers."""
    met = tmp_path / "met.yaml"
    met.write_text(TEMPEST_SCENARIO % 120)
    missed = tmp_path / "missed.yaml"
    missed.write_text(TEMPEST_SCENARIO % 0.001)
    conf = write_tempest_conf(embedded_cloud, tmp_path / "tempest")
    generated = conf.read_text()

    def run(scenario: Path) -> dict[str, Any]:
        novamig = f"[novamig]\nscenarios = {scenario}\nimage = novamig-tiny\nout_dir = {tmp_path / 'out'}\n"
        conf.write_text(f"{generated}\n{novamig}")
        result = run_tempest_tests(conf, [TEMPEST_TEST], timeout_s=600)
        assert result["run"] == 1 and not result["skipped"], result
        return result

    passed = run(met)
    assert not passed["failures"], passed["failures"]
    assert (tmp_path / "out" / "met" / "results.json").exists()
    failed = run(missed)
    assert len(failed["failures"]) == 1
    assert "missed.yaml: SLA missed" in failed["failures"][0][1]
    assert "duration_s.max = " in failed["failures"][0][1] and "(limit 0.001)" in failed["failures"][0][1]
