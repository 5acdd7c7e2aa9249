"""Which cloud, and a connection to it — without ever printing a secret.

The cloud is named by, in order: ``--cloud``, the scenario's ``cloud:``, ``OS_CLOUD``. With none,
the caller starts the embedded cloud. A name that no clouds.yaml defines is bad input (exit 2) and
the error lists the names that do exist, so a typo is fixed in one try.

Secrets: only the cloud name, auth URL, region and user/project names are ever shown or logged
(`CloudIdentity`); openstacksdk's own loggers are kept above DEBUG so request bodies carrying
passwords or tokens never reach a log file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from novamig.cloud.errors import CloudConfigInvalid, CloudUnreachable, UnknownCloud

log = logging.getLogger(__name__)

DEFAULT_API_TIMEOUT_S = 30.0
"""Every HTTP call to the cloud gives up after this long (openstacksdk's ``api_timeout``)."""


@dataclass(frozen=True)
class CloudChoice:
    """The cloud a run uses; `name` None means "start the embedded cloud"."""

    name: str | None
    source: str  # "--cloud" | "scenario" | "OS_CLOUD" | "embedded"


def choose_cloud(
    flag: str | None, scenario_cloud: str | None, environ: dict[str, str] | None = None
) -> CloudChoice:
    env = os.environ if environ is None else environ
    if flag:
        return CloudChoice(flag, "--cloud")
    if scenario_cloud:
        return CloudChoice(scenario_cloud, "scenario")
    if env.get("OS_CLOUD"):
        return CloudChoice(env["OS_CLOUD"], "OS_CLOUD")
    return CloudChoice(None, "embedded")


def _config(extra_files: list[str] | None = None) -> Any:
    from openstack import exceptions
    from openstack.config import loader

    try:
        return loader.OpenStackConfig(config_files=(extra_files or []) + loader.CONFIG_FILES)
    except exceptions.ConfigException as exc:
        raise CloudConfigInvalid(f"clouds.yaml cannot be read: {exc}") from None


def known_clouds(extra_files: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(cloud names, clouds.yaml files actually read)."""
    config = _config(extra_files)
    return _names(config), _files(config)


def _files(config: Any) -> list[str]:
    filename = getattr(config, "config_filename", None)
    return [str(filename)] if filename else []


def _names(config: Any) -> list[str]:
    # With no clouds.yaml at all openstacksdk invents a cloud called "defaults": not a real name.
    names = set(config.get_cloud_names())
    if not _files(config):
        names.discard("defaults")
    return sorted(names)


@dataclass(frozen=True)
class CloudIdentity:
    """What may be shown about a cloud: never a password, token or application credential secret."""

    name: str
    auth_url: str | None
    region: str | None
    username: str | None
    project: str | None

    def __str__(self) -> str:
        who = f"{self.username or '?'}@{self.project or '?'}"
        return f"{self.name} ({self.auth_url or 'no auth_url'}, region {self.region or '-'}, {who})"


def resolve(name: str, extra_files: list[str] | None = None) -> tuple[Any, CloudIdentity]:
    """The openstacksdk CloudRegion for `name` and its printable identity; UnknownCloud if absent."""
    from openstack import exceptions

    config = _config(extra_files)
    names = _names(config)
    if name not in names:
        raise UnknownCloud(name, names, _files(config))
    try:
        region = config.get_one(cloud=name, api_timeout=DEFAULT_API_TIMEOUT_S)
    except exceptions.ConfigException as exc:
        raise CloudConfigInvalid(f"cloud {name!r}: {exc}") from None
    auth: dict[str, Any] = dict(region.config.get("auth") or {})
    ident = CloudIdentity(
        name=name,
        auth_url=auth.get("auth_url") or auth.get("endpoint"),
        region=region.region_name or None,
        username=auth.get("username") or auth.get("user_id"),
        project=auth.get("project_name") or auth.get("project_id"),
    )
    return region, ident


EMBEDDED_MARKER = "novamig_embedded_workdir"
"""The key novamig's embedded cloud adds to its clouds.yaml entries: its work directory."""


def embedded_workdir(name: str, extra_files: list[str] | None = None) -> str | None:
    """The work directory of the embedded cloud behind `name`, or None for any other cloud.

    Lets `--cloud novamig-embedded` (a cloud started by ``novamig cloud up``) use the embedded
    cloud's host-policy API and hypervisor figures, exactly like a cloud the run started itself.
    """
    region, _ = resolve(name, extra_files)
    value = region.config.get(EMBEDDED_MARKER)
    return str(value) if value else None


def quiet_sdk_logs() -> None:
    """Keep openstacksdk/keystoneauth below DEBUG: their debug logs carry request bodies."""
    for name in ("openstack", "keystoneauth", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(name: str, extra_files: list[str] | None = None, timeout_s: float = DEFAULT_API_TIMEOUT_S) -> Any:
    """An authenticated openstack.connection.Connection; CloudUnreachable if the cloud does not answer.

    Authenticates at once so an unreachable cloud or a wrong password fails here, before anything
    is created, with one clear line.
    """
    import openstack
    from keystoneauth1 import exceptions as ksa_exc
    from openstack import exceptions

    quiet_sdk_logs()
    region, ident = resolve(name, extra_files)
    region.config["api_timeout"] = timeout_s
    conn = openstack.connection.Connection(config=region)
    try:
        conn.authorize()
    except (ksa_exc.ClientException, exceptions.SDKException) as exc:
        conn.close()
        raise CloudUnreachable(f"cloud {ident}: cannot authenticate: {type(exc).__name__}: {exc}") from None
    log.info("connected to cloud %s", ident)
    return conn
