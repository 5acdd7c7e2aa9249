"""Placement inside the cloud process, with its own oslo.config object (it does not share Nova's).

Placement runs with ``[api] auth_strategy = noauth2``; Nova reaches it with ``admin_token`` and an
endpoint override. Users reach Nova (behind Keystone) and never need Placement directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from novamig.embedded.service.nova_setup import wal_sqlite


def placement_app(conf_file: Path, db_file: Path) -> Any:
    from oslo_config import cfg
    from placement import conf as placement_conf
    from placement import db_api, deploy

    wal_sqlite(db_file)
    conf = cfg.ConfigOpts()
    placement_conf.register_opts(conf)
    conf(args=[], project="placement", default_config_files=[str(conf_file)])
    conf.set_override("sync_on_startup", True, group="placement_database")
    db_api.configure(conf)
    return deploy.loadapp(conf)
