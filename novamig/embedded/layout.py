"""Where an embedded cloud keeps its files, and the facts its processes share.

The launcher (``EmbeddedCloud`` in the caller's process) decides ports, host names and passwords,
writes them here once, and every process of the cloud reads the same ``cloud.json``: nothing is
passed on a command line, so no secret ever shows in ``ps`` or a log. Passwords live apart in
``secrets.json`` (mode 0600) so ``cloud.json`` can be shown in a bug report as it is.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CLOUD_NAME = "novamig-embedded"
DEFAULT_HOSTS = ("compute1", "compute2")
REGION = "RegionOne"
ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
MEMBER_USER = "novamig"
MEMBER_PROJECT = "novamig"
SERVICE_USER = "nova"
SERVICE_PROJECT = "service"
TINY_IMAGE_NAME = "novamig-tiny"
FULL_IMAGE_NAME = "novamig-full"
# Stable image IDs: a user's scenario (or Tempest's config) may name them; the driver boots them by id.
TINY_IMAGE_ID = "6e0fd6b5-6f5e-4a59-9d8e-6e6f7661000a"
FULL_IMAGE_ID = "6e0fd6b5-6f5e-4a59-9d8e-6e6f7661000b"


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it, so parallel clouds differ)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    keystone: int
    placement: int
    compute: int
    image: int
    network: int

    @classmethod
    def pick(cls) -> Ports:
        # Distinct even if the kernel hands back a port just released.
        chosen: list[int] = []
        while len(chosen) < 5:
            port = free_loopback_port()
            if port not in chosen:
                chosen.append(port)
        return cls(*chosen)


@dataclass(frozen=True)
class Secrets:
    """Passwords of the cloud's users; generated per start, never logged."""

    admin_password: str
    member_password: str
    service_password: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(secrets.token_urlsafe(16), secrets.token_urlsafe(16), secrets.token_urlsafe(16))


class _InWorkdir:
    """A file or directory of the work directory, read as an attribute (``layout.logs``).

    Class attributes without annotations, so the dataclass neither stores nor serialises them.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, layout: CloudLayout, owner: type | None = None) -> Path:
        return layout.workdir / self.name


class _Loopback:
    """A service's URL on 127.0.0.1 at its port in ``Ports`` (``layout.keystone_url``)."""

    def __init__(self, service: str, path: str = "") -> None:
        self.service = service
        self.path = path

    def __get__(self, layout: CloudLayout, owner: type | None = None) -> str:
        return f"http://127.0.0.1:{getattr(layout.ports, self.service)}{self.path}"


@dataclass(frozen=True)
class CloudLayout:
    """The shared description of one embedded cloud (serialised as ``cloud.json``)."""

    workdir: Path
    cloud_name: str
    ports: Ports
    hosts: tuple[str, ...] = DEFAULT_HOSTS
    host_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    driver: str = "novamig"

    # -- paths and URLs (read-only attributes, see _InWorkdir and _Loopback) ----------------------
    logs = _InWorkdir("logs")
    keystone_dir = _InWorkdir("keystone")
    nova_dir = _InWorkdir("nova")
    placement_dir = _InWorkdir("placement")
    guests_dir = _InWorkdir("guests")
    pid_file = _InWorkdir("cloud.pid")
    ready_file = _InWorkdir("ready.json")
    failure_file = _InWorkdir("failure.json")
    clouds_yaml = _InWorkdir("clouds.yaml")
    secrets_file = _InWorkdir("secrets.json")
    keystone_url = _Loopback("keystone", "/v3")
    compute_url = _Loopback("compute", "/v2.1")
    image_url = _Loopback("image")
    network_url = _Loopback("network")
    placement_url = _Loopback("placement")

    # -- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        data["hosts"] = list(self.hosts)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CloudLayout:
        return cls(
            workdir=Path(data["workdir"]),
            cloud_name=data["cloud_name"],
            ports=Ports(**data["ports"]),
            hosts=tuple(data["hosts"]),
            host_policies=dict(data.get("host_policies", {})),
            driver=data.get("driver", "novamig"),
        )

    def save(self, secret: Secrets) -> None:
        """Write cloud.json and the 0600 secrets file into a work directory that exists."""
        (self.workdir / "cloud.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(secret), fh)

    @classmethod
    def load(cls, workdir: Path) -> CloudLayout:
        return cls.from_json(json.loads((workdir / "cloud.json").read_text()))

    def load_secrets(self) -> Secrets:
        return Secrets(**json.loads(self.secrets_file.read_text()))
