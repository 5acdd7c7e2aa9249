"""The Tempest plugin object Tempest's plugin manager loads (entry point ``tempest.test_plugins``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oslo_config import cfg
from tempest import config as tempest_config  # type: ignore[import-untyped]
from tempest.test_discover import plugins  # type: ignore[import-untyped]

from novamig.tempest_plugin import config as novamig_config


class NovamigTempestPlugin(plugins.TempestPlugin):  # type: ignore[misc]  # tempest ships no types
    def load_tests(self) -> tuple[str, str]:
        """(the tests' folder, the folder above the package): what Tempest's loader walks."""
        here = Path(__file__).resolve().parent
        return str(here / "tests"), str(here.parent.parent)

    def register_opts(self, conf: cfg.ConfigOpts) -> None:
        tempest_config.register_opt_group(
            conf, tempest_config.service_available_group, [novamig_config.service_option]
        )
        tempest_config.register_opt_group(conf, novamig_config.novamig_group, novamig_config.NovamigGroup)

    def get_opt_lists(self) -> list[tuple[str, list[Any]]]:
        return [
            (novamig_config.novamig_group.name, novamig_config.NovamigGroup),
            ("service_available", [novamig_config.service_option]),
        ]
