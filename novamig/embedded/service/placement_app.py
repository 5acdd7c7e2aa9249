"""Placement inside the cloud process, with its own oslo.config object (it does not share Nova's).

Placement runs with ``[api] auth_strategy = noauth2``; Nova reaches it with ``admin_token`` and an
endpoint override. Users reach Nova (behind Keystone) and never need Placement directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oslo_config import cfg

from novamig.embedded.service.nova_setup import wal_sqlite


def placement_app(conf_file: Path, db_file: Path) -> Any:
    # Placement registers its options on import; the cloud process imports this module before it
    # has set Nova's threading mode (nova_threading), so Placement comes in here, when called.
    from placement import conf as placement_conf  # noqa: PLC0415 - Placement, see above
    from placement import db_api, deploy  # noqa: PLC0415 - Placement, see above

    wal_sqlite(db_file)
    conf = cfg.ConfigOpts()
    placement_conf.register_opts(conf)
    conf(args=[], project="placement", default_config_files=[str(conf_file)])
    conf.set_override("sync_on_startup", True, group="placement_database")
    db_api.configure(conf)
    return deploy.loadapp(conf)
