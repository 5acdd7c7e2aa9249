"""The cloud's Keystone, in a process of its own: ``python -m novamig.embedded.service.keystone_process``.

Keystone and Nova both keep their settings in a process-global oslo.config object, so Keystone gets
a process of its own. Start-up does what ``keystone-manage db_sync / fernet_setup / credential_setup
/ bootstrap`` do on DevStack, in one interpreter (one import of Keystone instead of four), then adds
the users, projects and catalog a DevStack-like cloud has, and serves the identity API with cheroot.
When it serves, it writes ``keystone.ready`` into the work directory.

Keystone is imported inside the functions that run in Keystone's own process: the cloud process
imports this module too (for ``READY_NAME``), and must not load Keystone's process-global settings.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import dogpile.cache

from novamig.embedded import lifeline
from novamig.embedded.layout import (
    ADMIN_PROJECT,
    ADMIN_USER,
    MEMBER_PROJECT,
    MEMBER_USER,
    REGION,
    SERVICE_PROJECT,
    SERVICE_USER,
    CloudLayout,
    Secrets,
)
from novamig.embedded.service.wsgi_server import LoopbackServer

READY_NAME = "keystone.ready"


def _prepare_database(db_path: Path) -> None:
    """Create the SQLite file in WAL mode so readers never wait on the writer."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _setup_keys(conf: Any) -> None:
    from keystone.common import fernet_utils  # noqa: PLC0415 - Keystone, see the module docstring
    from keystone.credential.providers import fernet as credential_fernet  # noqa: PLC0415 - Keystone, see the module docstring

    for group, max_keys in (
        ("fernet_tokens", conf.fernet_tokens.max_active_keys),
        ("credential", credential_fernet.MAX_ACTIVE_KEYS),
    ):
        futils = fernet_utils.FernetUtils(getattr(conf, group).key_repository, max_keys, group)
        futils.create_key_directory(None, None)
        if futils.validate_key_repository(requires_write=True):
            futils.initialize_key_repository(None, None)


def _catalog_entries(layout: CloudLayout) -> list[tuple[str, str, str]]:
    """(service type, service name, URL) of every service the cloud offers besides identity."""
    return [
        ("compute", "nova", layout.compute_url),
        ("placement", "placement", layout.placement_url),
        ("image", "glance", layout.image_url),
        ("network", "neutron", layout.network_url),
    ]


def _bootstrap(layout: CloudLayout, secret: Secrets) -> None:
    """What ``keystone-manage bootstrap`` does, plus the member and service accounts and catalog."""
    from keystone.cmd import bootstrap  # noqa: PLC0415 - Keystone, see the module docstring
    from keystone.common import provider_api  # noqa: PLC0415 - Keystone, see the module docstring

    providers: Any = provider_api.ProviderAPIs
    boot = bootstrap.Bootstrapper()
    boot.admin_password = secret.admin_password
    boot.admin_username = ADMIN_USER
    boot.project_name = ADMIN_PROJECT
    boot.admin_role_name = "admin"
    boot.service_name = "keystone"
    boot.service_id = None
    boot.admin_url = boot.public_url = boot.internal_url = layout.keystone_url
    boot.region_id = REGION
    boot.immutable_roles = True
    boot.bootstrap()

    domain = boot.default_domain_id

    def project(name: str) -> str:
        pid = uuid.uuid4().hex
        providers.resource_api.create_project(
            pid,
            {
                "id": pid,
                "name": name,
                "domain_id": domain,
                "enabled": True,
                "parent_id": domain,
                "is_domain": False,
                "description": f"novamig embedded cloud: {name}",
            },
        )
        return pid

    def user(name: str, password: str) -> str:
        ref = providers.identity_api.create_user(
            {"name": name, "enabled": True, "domain_id": domain, "password": password}
        )
        return str(ref["id"])

    def grant(user_id: str, project_id: str, role_id: str) -> None:
        providers.assignment_api.add_role_to_user_and_project(
            user_id=user_id, project_id=project_id, role_id=role_id
        )

    member_project = project(MEMBER_PROJECT)
    member = user(MEMBER_USER, secret.member_password)
    grant(member, member_project, boot.member_role_id)

    service_project = project(SERVICE_PROJECT)
    service = user(SERVICE_USER, secret.service_password)
    grant(service, service_project, boot.admin_role_id)
    grant(service, service_project, boot.service_role_id)

    for stype, sname, url in _catalog_entries(layout):
        sid = uuid.uuid4().hex
        providers.catalog_api.create_service(sid, {"id": sid, "type": stype, "name": sname, "enabled": True})
        for interface in ("public", "internal", "admin"):
            eid = uuid.uuid4().hex
            providers.catalog_api.create_endpoint(
                eid,
                {
                    "id": eid,
                    "service_id": sid,
                    "interface": interface,
                    "url": url,
                    "region_id": REGION,
                    "enabled": True,
                },
            )


def serve(workdir: Path) -> None:
    lifeline.arm()
    layout = CloudLayout.load(workdir)
    secret = layout.load_secrets()
    conf_file = layout.keystone_dir / "keystone.conf"
    _prepare_database(layout.keystone_dir / "keystone.sqlite")
    # Keystone's cache ([cache] backend) by name: otherwise dogpile finds it by loading every cache
    # entry point with stevedore, which logs an ERROR for oslo_cache.memcache_pool (no memcache
    # module here; a real deployment has it).
    dogpile.cache.register_backend(  # type: ignore[no-untyped-call]
        "oslo_cache.dict", "oslo_cache.backends.dictionary", "DictCacheBackend"
    )

    import keystone.conf  # noqa: PLC0415 - Keystone, see the module docstring
    from keystone.common import sql  # noqa: PLC0415 - Keystone, see the module docstring
    from keystone.common.sql import upgrades  # noqa: PLC0415 - Keystone, see the module docstring
    from keystone.server.flask import application  # noqa: PLC0415 - Keystone, see the module docstring
    from keystone.server.flask import core as flask_core  # noqa: PLC0415 - Keystone, see the module docstring

    # keystone.server.configure() without reading our command line (oslo.config would parse argv).
    keystone.conf.configure()
    sql.initialize()
    keystone.conf.set_config_defaults()
    conf = keystone.conf.CONF
    conf(args=[], project="keystone", default_config_files=[str(conf_file)])
    keystone.conf.setup_logging()
    upgrades.offline_sync_database_to_version()
    _setup_keys(conf)
    _bootstrap(layout, secret)  # loads the backends (Bootstrapper does), as keystone-manage would
    app = application.application_factory("public")
    wsgi_app = flask_core.setup_app_middleware(app)

    server = LoopbackServer("keystone", wsgi_app, layout.ports.keystone, threads=8)
    server.start()
    (workdir / READY_NAME).write_text(str(os.getpid()))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m novamig.embedded.service.keystone_process WORKDIR", file=sys.stderr)
        return 2
    serve(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
