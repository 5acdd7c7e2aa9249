"""clouds.yaml entries for the embedded cloud, the way DevStack writes ``devstack``/``devstack-admin``.

Two entries per cloud: ``<name>`` (admin user in project ``admin``: live migration and host
operations need it) and ``<name>-member`` (an ordinary user in project ``novamig``).
Each cloud writes its own file in its work directory; ``novamig cloud up`` also merges the entries
into the user's clouds.yaml (``$OS_CLIENT_CONFIG_FILE`` or ``~/.config/openstack/clouds.yaml``) and
``down`` removes them again. Files are written 0600 (they hold passwords), atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from novamig.embedded.layout import (
    ADMIN_PROJECT,
    ADMIN_USER,
    MEMBER_PROJECT,
    MEMBER_USER,
    REGION,
    CloudLayout,
    Secrets,
)

MARKER = "novamig_embedded_workdir"


def entries(layout: CloudLayout, secret: Secrets) -> dict[str, dict[str, Any]]:
    def entry(user: str, project: str, password: str) -> dict[str, Any]:
        return {
            "auth": {
                "auth_url": layout.keystone_url,
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": REGION,
            "identity_api_version": 3,
            "interface": "public",
            MARKER: str(layout.workdir),
        }

    return {
        layout.cloud_name: entry(ADMIN_USER, ADMIN_PROJECT, secret.admin_password),
        f"{layout.cloud_name}-member": entry(MEMBER_USER, MEMBER_PROJECT, secret.member_password),
    }


def user_clouds_yaml() -> Path:
    """The file openstacksdk reads first: ``$OS_CLIENT_CONFIG_FILE`` or the per-user default."""
    env = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "openstack" / "clouds.yaml"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"clouds": {}}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a clouds.yaml mapping")
    data.setdefault("clouds", {})
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    tmp.replace(path)


def write_own(layout: CloudLayout, secret: Secrets) -> Path:
    _write(layout.clouds_yaml, {"clouds": entries(layout, secret)})
    return layout.clouds_yaml


def merge_into(path: Path, layout: CloudLayout, secret: Secrets) -> None:
    data = _read(path)
    data["clouds"].update(entries(layout, secret))
    _write(path, data)


def remove_from(path: Path, layout: CloudLayout) -> list[str]:
    """Remove this cloud's entries (recognised by the work-directory marker); returns their names."""
    if not path.exists():
        return []
    data = _read(path)
    ours = [
        name
        for name, entry in data["clouds"].items()
        if isinstance(entry, dict) and entry.get(MARKER) == str(layout.workdir)
    ]
    for name in ours:
        del data["clouds"][name]
    if ours:
        _write(path, data)
    return ours
