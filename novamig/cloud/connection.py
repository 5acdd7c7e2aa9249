"""Which cloud, from which configuration, and a connection to it — without ever printing a secret.

The cloud is named by, in order: ``--cloud``, the scenario's ``cloud:``, ``OS_CLOUD``. With none,
the caller starts the embedded cloud. `choose_cloud` says which rule decided, in words the runner
prints before it touches any cloud: an ``OS_CLOUD`` left exported in a shell would otherwise send a
run to a real cloud without anyone noticing. A name that no clouds.yaml defines is bad input (exit
2) and the error lists the names that do exist, so a typo is fixed in one try.

Two kinds of configuration, never mixed:

- a cloud the user names is looked up in the user's configuration, exactly as the ``openstack``
  command would: openstacksdk's search path (``$OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``,
  ``~/.config/openstack``, ``/etc/openstack``), ``secure.yaml`` and the ``OS_*`` variables (which
  openstacksdk offers as a cloud called ``envvars``);
- a cloud novamig started itself is reached through its own clouds.yaml handed to openstacksdk as
  the *only* source (`clouds_yaml=`): no search path, no ``secure.yaml``, no ``OS_*`` variable. A
  ``secure.yaml`` entry or an ``OS_CLIENT_CONFIG_FILE`` of the user's can then never replace the
  password or the file of the cloud the run just started. Tests use the same door for the same
  reason: openstacksdk fixes its search path when it is imported, so changing ``HOME`` in a test
  isolates nothing.

Secrets: only the cloud name, auth URL, region and user/project names are ever shown or logged
(`CloudIdentity`); openstacksdk's own loggers are kept above DEBUG so request bodies carrying
passwords or tokens never reach a log file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions
from openstack.config import loader
from openstack.connection import Connection

from novamig.cloud.errors import CloudConfigInvalid, CloudUnreachable, UnknownCloud

log = logging.getLogger(__name__)

DEFAULT_API_TIMEOUT_S = 30.0
"""Every HTTP call to the cloud gives up after this long (openstacksdk's ``api_timeout``)."""

CloudsYamlPath = str | os.PathLike[str]

CREDENTIAL_VARIABLES = (
    "OS_AUTH_URL",
    "OS_AUTH_TYPE",
    "OS_USERNAME",
    "OS_USER_ID",
    "OS_PASSWORD",
    "OS_TOKEN",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "OS_PROJECT_NAME",
    "OS_PROJECT_ID",
)
"""Variables with which openstacksdk builds a cloud of its own (``envvars``) from the shell."""


@dataclass(frozen=True)
class CloudChoice:
    """The cloud a run uses and why; `name` None means "start the embedded cloud".

    `reason` is one line for the user, printed before the cloud is touched.
    """

    name: str | None
    source: str  # "--cloud" | "scenario" | "OS_CLOUD" | "embedded"
    reason: str


def choose_cloud(
    flag: str | None, scenario_cloud: str | None, environ: Mapping[str, str] | None = None
) -> CloudChoice:
    """``--cloud``, else the scenario's ``cloud:``, else ``OS_CLOUD``, else the embedded cloud."""
    env = os.environ if environ is None else environ
    os_cloud = env.get("OS_CLOUD") or None
    if flag:
        return CloudChoice(flag, "--cloud", f"cloud {flag}: named by --cloud{_overrides(os_cloud, flag)}")
    if scenario_cloud:
        return CloudChoice(
            scenario_cloud,
            "scenario",
            f"cloud {scenario_cloud}: named by the scenario's cloud:{_overrides(os_cloud, scenario_cloud)}",
        )
    if os_cloud:
        return CloudChoice(
            os_cloud,
            "OS_CLOUD",
            f"cloud {os_cloud}: from OS_CLOUD in the environment (neither --cloud nor the scenario's "
            "cloud: names one); pass --cloud to choose another, or unset OS_CLOUD for the embedded cloud",
        )
    reason = "no cloud named (no --cloud, no scenario cloud:, OS_CLOUD unset): starting the embedded cloud"
    credentials = [v for v in CREDENTIAL_VARIABLES if env.get(v)]
    if credentials:
        reason += (
            f"; {', '.join(credentials)} in the environment are ignored "
            "(openstacksdk calls that cloud 'envvars': --cloud envvars uses it)"
        )
    return CloudChoice(None, "embedded", reason)


def _overrides(os_cloud: str | None, chosen: str) -> str:
    return f" (OS_CLOUD={os_cloud} ignored)" if os_cloud and os_cloud != chosen else ""


def _config(clouds_yaml: CloudsYamlPath | None = None) -> Any:
    """openstacksdk's configuration: `clouds_yaml` alone, or the user's configuration when None."""
    try:
        if clouds_yaml is None:
            return loader.OpenStackConfig()
        return loader.OpenStackConfig(
            config_files=[os.fspath(clouds_yaml)],
            secure_files=[],
            vendor_files=[],
            load_envvars=False,
        )
    except exceptions.ConfigException as exc:
        raise CloudConfigInvalid(f"clouds.yaml cannot be read: {exc}") from None


def known_clouds(clouds_yaml: CloudsYamlPath | None = None) -> tuple[list[str], list[str]]:
    """(cloud names, clouds.yaml files actually read): `clouds_yaml` alone, or the user's."""
    config = _config(clouds_yaml)
    return _names(config), _files(config)


def _files(config: Any) -> list[str]:
    names = (getattr(config, "config_filename", None), getattr(config, "secure_config_filename", None))
    return [str(name) for name in names if name]


def _names(config: Any) -> list[str]:
    # With no cloud anywhere openstacksdk invents one called "defaults" holding only its defaults:
    # not a name anybody wrote.
    names = set(config.get_cloud_names())
    if names == {"defaults"} and config.cloud_config["clouds"]["defaults"] == config.defaults:
        names.clear()
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


def resolve(name: str, clouds_yaml: CloudsYamlPath | None = None) -> tuple[Any, CloudIdentity]:
    """The openstacksdk CloudRegion for `name` and its printable identity; UnknownCloud if absent.

    `clouds_yaml`: that file alone (a cloud novamig started, a test's own file); None: the user's
    configuration (see the module docstring).
    """
    config = _config(clouds_yaml)
    names = _names(config)
    if name not in names:
        raise UnknownCloud(name, names, _files(config))
    try:
        region = config.get_one(cloud=name, api_timeout=DEFAULT_API_TIMEOUT_S)
    except exceptions.ConfigException as exc:
        raise CloudConfigInvalid(f"cloud {name!r}: {exc}") from None
    except ksa_exc.AuthPluginException as exc:  # no `auth.auth_url`, an unknown `auth_type`…
        raise CloudConfigInvalid(f"cloud {name!r}: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        # openstacksdk assumes the entry's shape (`auth` a mapping…) and fails deep inside on
        # another: say which entry is malformed rather than show its internals.
        raise CloudConfigInvalid(
            f"cloud {name!r}: malformed clouds.yaml entry ({type(exc).__name__}: {exc}); "
            "an entry is a mapping whose `auth` is a mapping (auth_url, username, password…)"
        ) from None
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


def embedded_workdir(name: str, clouds_yaml: CloudsYamlPath | None = None) -> str | None:
    """The work directory of the embedded cloud behind `name`, or None for any other cloud.

    Lets `--cloud novamig-embedded` (a cloud started by ``novamig cloud up``) use the embedded
    cloud's host-policy API and hypervisor figures, exactly like a cloud the run started itself.
    """
    region, _ = resolve(name, clouds_yaml)
    value = region.config.get(EMBEDDED_MARKER)
    return str(value) if value else None


def quiet_sdk_logs() -> None:
    """Keep openstacksdk/keystoneauth below DEBUG: their debug logs carry request bodies."""
    for name in ("openstack", "keystoneauth", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(
    name: str, clouds_yaml: CloudsYamlPath | None = None, timeout_s: float = DEFAULT_API_TIMEOUT_S
) -> Any:
    """An authenticated openstack.connection.Connection; CloudUnreachable if the cloud does not answer.

    `clouds_yaml` as for `resolve`. Authenticates at once so an unreachable cloud or a wrong
    password fails here, before anything is created, with one clear line.
    """
    quiet_sdk_logs()
    region, ident = resolve(name, clouds_yaml)
    region.config["api_timeout"] = timeout_s
    conn = Connection(config=region)
    try:
        conn.authorize()
    except (ksa_exc.ClientException, exceptions.SDKException) as exc:
        conn.close()
        raise CloudUnreachable(f"cloud {ident}: cannot authenticate: {type(exc).__name__}: {exc}") from None
    log.info("connected to cloud %s", ident)
    return conn
