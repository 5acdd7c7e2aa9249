"""The Tempest plugin as Tempest finds it: through its own plugin manager and test loader."""

from __future__ import annotations

import unittest
from pathlib import Path

from oslo_config import cfg
from tempest.test_discover.plugins import TempestTestPluginManager

from novamig.tempest_plugin.config import scenario_overrides


def test_tempest_s_plugin_manager_loads_it_and_its_tests_are_found() -> None:
    manager = TempestTestPluginManager()
    test_dir, top = manager.get_plugin_load_tests_tuple()["novamig"]
    assert Path(test_dir).is_dir()
    found = unittest.TestLoader().discover(test_dir, top_level_dir=top)
    ids = [t.id() for suite in found for case in suite for t in case]  # type: ignore[union-attr]
    assert "novamig.tempest_plugin.tests.test_live_migration.NovamigLiveMigrationTest.test_scenarios" in ids


def test_the_novamig_group_and_service_flag_register_with_defaults() -> None:
    conf = cfg.ConfigOpts()
    TempestTestPluginManager().register_plugin_opts(conf)
    conf([], default_config_files=[])
    assert conf.novamig.image == "novamig-full"
    assert conf.novamig.scenarios == []
    assert conf.novamig.heartbeat_collector is None
    assert conf.service_available.novamig is True
    listed = dict(TempestTestPluginManager().get_plugin_options_list())
    assert {o.name for o in listed["novamig"]} >= {"scenarios", "overrides", "image", "heartbeat_collector"}


def test_tempest_conf_becomes_the_scenario_settings_operators_win() -> None:
    conf = cfg.ConfigOpts()
    TempestTestPluginManager().register_plugin_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("heartbeat_collector", "172.24.4.1:47100", "novamig")
    conf.set_override("overrides", ["sla.downtime_ms.max=800", "fleet.image=mine"], "novamig")
    sets = scenario_overrides(conf.novamig, block_migration=True)
    assert sets == [
        "fleet.image=novamig-full",
        "measure.heartbeat_collector=172.24.4.1:47100",
        "migration.block_migration=true",
        "sla.downtime_ms.max=800",
        "fleet.image=mine",
    ]
