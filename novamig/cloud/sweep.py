"""`novamig cleanup`: find everything novamig created on a cloud, list it, delete it with --yes.

Found by the marks `resources` puts on: servers tagged ``novamig`` (any project), flavors and
keypairs whose names start with ``novamig-`` and whose description (flavors, 2.55+) says novamig,
security groups and floating IPs tagged ``novamig``. A resource that merely starts with
``novamig-`` but lacks the mark where a mark is possible is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from novamig.cloud import microversions as mv
from novamig.cloud.compute import Compute
from novamig.cloud.resources import NAME_PREFIX, TAG, Created, Resources, delete_url

log = logging.getLogger(__name__)


#: Network API resources `cleanup` sweeps → the openstacksdk proxy method that deletes one.
_NETWORK_DELETERS = {"security_group": "delete_security_group", "floating_ip": "delete_ip"}


@dataclass(frozen=True)
class Found:
    kind: str
    id: str
    name: str
    detail: str = ""

    def __str__(self) -> str:
        extra = f" — {self.detail}" if self.detail else ""
        return f"{self.kind:<14} {self.name} ({self.id}){extra}"


def find_tagged(conn: Any, compute: Compute) -> list[Found]:
    found: list[Found] = []
    for server in compute.servers_tagged(TAG):
        found.append(Found("server", server.id, server.name, f"{server.status} on {server.host or '-'}"))
    flavors = compute.call("GET", "/flavors/detail?is_public=None")["flavors"]
    for flavor in flavors:
        if not str(flavor["name"]).startswith(NAME_PREFIX):
            continue
        if compute.max_version >= mv.FLAVOR_DESCRIPTION and not str(
            flavor.get("description") or ""
        ).startswith(TAG):
            continue
        found.append(Found("flavor", str(flavor["id"]), flavor["name"]))
    for item in compute.call("GET", "/os-keypairs")["keypairs"]:
        name = item["keypair"]["name"]
        if name.startswith(NAME_PREFIX):
            found.append(Found("keypair", name, name))
    if conn.has_service("network"):
        for group in conn.network.security_groups(tags=TAG):
            found.append(Found("security_group", group.id, group.name))
        for fip in conn.network.ips(tags=TAG):
            where = f"on {fip.fixed_ip_address}" if fip.port_id else "not associated"
            found.append(Found("floating_ip", fip.id, str(fip.floating_ip_address), where))
    return found


def delete_found(conn: Any, compute: Compute, found: list[Found]) -> list[str]:
    """Delete what `find_tagged` listed (servers first); returns what could not be deleted."""
    res = Resources(compute, run_id="cleanup", label="cleanup")
    urls = {"server": "/servers/{}", "flavor": "/flavors/{}", "keypair": "/os-keypairs/{}"}
    # Resources deletes newest first: add non-servers first so servers go before their flavors.
    for item in sorted(found, key=lambda f: f.kind == "server"):
        if item.kind in _NETWORK_DELETERS:
            deleter = getattr(conn.network, _NETWORK_DELETERS[item.kind])

            def delete_network_item(item_id: str = item.id, deleter: Any = deleter) -> None:
                deleter(item_id, ignore_missing=True)

            res.created.append(Created(item.kind, item.id, item.name, delete_network_item))
            continue
        url = urls[item.kind].format(item.id)

        def delete(url: str = url) -> None:
            delete_url(compute, url)

        res.created.append(Created(item.kind, item.id, item.name, delete))
    res.delete_all()
    return res.leftovers
