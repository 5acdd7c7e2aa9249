"""`novamig cleanup`: find everything novamig created on a cloud, list it, delete it with --yes.

Found by the marks `resources` puts on: servers tagged ``novamig`` (any project), flavors and
keypairs whose names start with ``novamig-`` and whose description (flavors, 2.55+) says novamig,
security groups and floating IPs tagged ``novamig``. A resource that merely starts with
``novamig-`` but lacks the mark where a mark is possible is left alone.

Each resource also names the run that made it: the ``novamig-run-<id>`` tag (servers, security
groups, floating IPs), the description ``novamig run <id>`` (flavors, security groups, floating
IPs) or the name ``novamig-<id>-…`` (every kind). `select` uses it so that two runs never clean up
each other: a cleanup of one run (``--run``) touches that run's resources only, and a cleanup of
everything asks before it deletes a run that is still going.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from novamig.cloud import microversions as mv
from novamig.cloud.compute import Compute
from novamig.cloud.resources import NAME_PREFIX, TAG, Created, Resources, delete_url, run_tag

log = logging.getLogger(__name__)


#: Network API resources `cleanup` sweeps → the openstacksdk proxy method that deletes one.
_NETWORK_DELETERS = {"security_group": "delete_security_group", "floating_ip": "delete_ip"}


RUN_IN_NAME = re.compile(rf"^{re.escape(NAME_PREFIX)}([0-9a-f]{{6}})-")
"""``resource_name``'s ``novamig-<run id>-…``; run ids are six hex digits (`runner.run.new_run_id`)."""
RUN_IN_DESCRIPTION = re.compile(rf"^{re.escape(TAG)} run ([0-9a-f]+)\b")
RUN_TAG_PREFIX = run_tag("")


def run_of(name: str, tags: Iterable[str] = (), description: str | None = None) -> str | None:
    """The run that made a resource: its run tag, else its description, else its name."""
    for tag in tags:
        if tag.startswith(RUN_TAG_PREFIX) and len(tag) > len(RUN_TAG_PREFIX):
            return tag.removeprefix(RUN_TAG_PREFIX)
    described = RUN_IN_DESCRIPTION.match(description or "")
    if described:
        return described.group(1)
    named = RUN_IN_NAME.match(name)
    return named.group(1) if named else None


@dataclass(frozen=True)
class Found:
    kind: str
    id: str
    name: str
    detail: str = ""
    run_id: str | None = None  # the run that made it (None: unknown)

    def __str__(self) -> str:
        extra = f" — {self.detail}" if self.detail else ""
        run = f" [run {self.run_id}]" if self.run_id else ""
        return f"{self.kind:<14} {self.name} ({self.id}){extra}{run}"


@dataclass
class Selection:
    """What a cleanup deletes, and what it keeps because its run is still going."""

    delete: list[Found] = field(default_factory=list)
    kept: list[Found] = field(default_factory=list)


def select(
    found: list[Found],
    *,
    run: str | None,
    live: Mapping[str, int],
    confirm: Callable[[str, int, list[Found]], bool],
) -> Selection:
    """`run` named: that run's resources only, live or not (the user chose it). Else everything,
    except that the resources of each run in `live` (run id → its process) are deleted only when
    `confirm` says so: a concurrent run's servers deleted under it would fail its migrations and
    its own cleanup."""
    if run is not None:
        return Selection(delete=[f for f in found if f.run_id == run])
    chosen = Selection()
    by_live_run: dict[str, list[Found]] = {}
    for item in found:
        if item.run_id is not None and item.run_id in live:
            by_live_run.setdefault(item.run_id, []).append(item)
        else:
            chosen.delete.append(item)
    for run_id, items in sorted(by_live_run.items()):
        (chosen.delete if confirm(run_id, live[run_id], items) else chosen.kept).extend(items)
    return chosen


def find_tagged(conn: Any, compute: Compute) -> list[Found]:
    found: list[Found] = []
    for server in compute.servers_tagged(TAG):
        found.append(
            Found(
                "server",
                server.id,
                server.name,
                f"{server.status} on {server.host or '-'}",
                run_of(server.name, server.tags),
            )
        )
    flavors = compute.call("GET", "/flavors/detail?is_public=None")["flavors"]
    for flavor in flavors:
        if not str(flavor["name"]).startswith(NAME_PREFIX):
            continue
        if compute.max_version >= mv.FLAVOR_DESCRIPTION and not str(
            flavor.get("description") or ""
        ).startswith(TAG):
            continue
        name = str(flavor["name"])
        found.append(
            Found("flavor", str(flavor["id"]), name, "", run_of(name, (), flavor.get("description")))
        )
    for item in compute.call("GET", "/os-keypairs")["keypairs"]:
        name = item["keypair"]["name"]
        if name.startswith(NAME_PREFIX):
            found.append(Found("keypair", name, name, "", run_of(name)))
    if conn.has_service("network"):
        for group in conn.network.security_groups(tags=TAG):
            run = run_of(str(group.name), group.tags or (), group.description)
            found.append(Found("security_group", group.id, group.name, "", run))
        for fip in conn.network.ips(tags=TAG):
            where = f"on {fip.fixed_ip_address}" if fip.port_id else "not associated"
            run = run_of("", fip.tags or (), fip.description)
            found.append(Found("floating_ip", fip.id, str(fip.floating_ip_address), where, run))
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
