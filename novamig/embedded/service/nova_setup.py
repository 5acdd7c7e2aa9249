"""Nova's start-up, the way DevStack's ``nova-manage`` steps and service binaries do it, in one process.

The cloud process imports this module before it sets Nova's threading mode (``nova_threading``),
so Nova itself is imported inside each function, which runs after.

``configure`` parses the rendered nova.conf; ``create_databases`` does ``api_db sync``,
``cell_v2 map_cell0``, ``db sync`` and ``cell_v2 create_cell``; ``start_services`` starts conductor,
scheduler and the computes (one after another, each under its own host name) and then runs
``cell_v2 discover_hosts``. The services talk over oslo.messaging's in-process ``fake:/`` transport.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import dogpile.cache
from oslo_log import log as logging
from paste import deploy  # type: ignore[import-untyped]

from novamig.embedded.layout import CloudLayout
from novamig.embedded.service import api_faults

CELL1 = "cell1"

# Flavors a fresh cloud offers (DevStack offers m1.*; ours are sized for tiny TCG guests).
FLAVORS: tuple[tuple[str, str, int, int, int], ...] = (
    # flavor id, name, RAM MiB, vCPUs, disk GiB
    ("42", "m1.nano", 128, 1, 1),
    ("84", "m1.micro", 192, 1, 1),
    ("1", "m1.tiny", 256, 1, 1),
    ("2", "m1.small", 512, 1, 1),
    ("3", "m1.medium", 1024, 1, 1),
)


def wal_sqlite(path: Path) -> None:
    """Create an SQLite file in WAL mode, so that reads never wait on a writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def configure(conf_file: Path) -> Any:
    """Parse nova.conf (not our command line), set up Nova's logging and objects."""
    import nova.conf  # noqa: PLC0415 - Nova only after nova_threading.prepare()
    from nova import config, objects  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    config.parse_args(["novamig-cloud", "--config-file", str(conf_file)])
    # Nova's caches (oslo_cache.dict while [cache] is off) by name: otherwise dogpile finds the
    # backend by loading every cache entry point with stevedore, which logs an ERROR for
    # oslo_cache.memcache_pool (no memcache module here; a real deployment has it).
    dogpile.cache.register_backend(  # type: ignore[no-untyped-call]
        "oslo_cache.dict", "oslo_cache.backends.dictionary", "DictCacheBackend"
    )
    logging.setup(nova.conf.CONF, "nova")
    objects.register_all()
    return nova.conf.CONF


def create_databases(layout: CloudLayout, conf: Any) -> None:
    from nova import context, objects  # noqa: PLC0415 - Nova only after nova_threading.prepare()
    from nova.db import migration  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    ndir = layout.nova_dir
    cell0_path = ndir / "nova_cell0.sqlite"
    for name in ("nova_api.sqlite", "nova_cell1.sqlite", "nova_cell0.sqlite"):
        wal_sqlite(ndir / name)

    migration.db_sync(database="api")
    ctxt = context.get_admin_context()
    cell0 = objects.CellMapping(
        ctxt,
        uuid=objects.CellMapping.CELL0_UUID,
        name="cell0",
        transport_url="none:///",
        database_connection=f"sqlite:///{cell0_path}",
    )
    cell0.create()
    cell1 = objects.CellMapping(
        ctxt,
        uuid="0c4c2f5d-8ae0-4b0c-9a0a-6e6d1c1d0001",
        name=CELL1,
        transport_url=conf.transport_url,
        database_connection=conf.database.connection,
    )
    cell1.create()
    migration.db_sync(database="main")
    with context.target_cell(ctxt, cell0) as cctxt:
        migration.db_sync(database="main", context=cctxt)


def create_flavors() -> None:
    from nova import context, objects  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    ctxt = context.get_admin_context()
    for flavorid, name, ram, vcpus, disk in FLAVORS:
        objects.Flavor(
            context=ctxt,
            flavorid=flavorid,
            name=name,
            memory_mb=ram,
            vcpus=vcpus,
            root_gb=disk,
            ephemeral_gb=0,
            swap=0,
            rxtx_factor=1.0,
            is_public=True,
            disabled=False,
        ).create()


def start_service(binary: str, host: str, conf: Any) -> Any:
    """Create and start one Nova service under ``host`` (what ``nova-<binary>`` does)."""
    from nova import service  # noqa: PLC0415 - Nova only after nova_threading.prepare()
    from nova.compute import rpcapi as compute_rpcapi  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    conf.set_override("host", host)
    kwargs: dict[str, Any] = {"host": host, "binary": f"nova-{binary}", "topic": binary}
    if binary == "compute":
        kwargs["topic"] = compute_rpcapi.RPC_TOPIC
        kwargs["topic_alt"] = compute_rpcapi.RPC_TOPIC_ALT
    svc = service.Service.create(**kwargs)
    svc.start()
    return svc


def discover_hosts() -> list[str]:
    from nova import context, objects  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    mappings = objects.host_mapping.discover_hosts(context.get_admin_context())
    return [m.host for m in mappings]


def compute_api_app(layout: CloudLayout) -> Any:
    """The osapi_compute WSGI application, behind keystonemiddleware's auth_token (as on DevStack)."""
    paste_ini = layout.nova_dir / "api-paste.ini"
    paste_ini.write_text(API_PASTE_INI)
    # Tests may put injected faults in front of it (api_faults; only when they set its variable).
    return api_faults.wrap_if_asked(deploy.loadapp(f"config:{paste_ini}", name="osapi_compute"))


# The osapi_compute part of Nova's own etc/nova/api-paste.ini (keystone pipeline), kept here so the
# cloud does not depend on where pip put Nova's data files.
API_PASTE_INI = """\
[composite:osapi_compute]
use = call:nova.api.openstack.urlmap:urlmap_factory
/: oscomputeversions
/v2.1: oscomputeversion_v2
/v2.1/+: openstack_compute_api_v21

[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit authtoken keystonecontext
  osapi_compute_app_v21

[filter:request_log]
paste.filter_factory = nova.api.openstack.requestlog:RequestLog.factory

[filter:compute_req_id]
paste.filter_factory = nova.api.compute_req_id:ComputeReqIdMiddleware.factory

[filter:faultwrap]
paste.filter_factory = nova.api.openstack:FaultWrapper.factory

[filter:sizelimit]
paste.filter_factory = oslo_middleware:RequestBodySizeLimiter.factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory

[app:osapi_compute_app_v21]
paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory

[pipeline:oscomputeversions]
pipeline = cors faultwrap request_log http_proxy_to_wsgi oscomputeversionapp

[pipeline:oscomputeversion_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi oscomputeversionapp_v2

[app:oscomputeversionapp]
paste.app_factory = nova.api.openstack.compute.versions:Versions.factory

[app:oscomputeversionapp_v2]
paste.app_factory = nova.api.openstack.compute.versions:VersionsV2.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = nova

[filter:keystonecontext]
paste.filter_factory = nova.api.auth:NovaKeystoneContext.factory

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
"""
