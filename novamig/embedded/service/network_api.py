"""A read-only Network API (Neutron v2.0 subset) over the cloud's network stand-in.

Clients find the network and a server's port through the catalog's ``network`` endpoint as on
DevStack (openstacksdk ``conn.network.find_network("novamig-net")``, Tempest's fixed network,
python-neutronclient, ``openstack network list``): version discovery, ``GET
/v2.0/{networks,subnets,ports,security-groups}`` and ``GET /v2.0/<collection>/{id}``, ``GET
/v2.0/extensions``. Nova itself talks to the same store (``stand_ins.install_neutron``), so the
port a server gets here is the one Nova bound.

As Neutron answers them: filters (a repeated key means any of its values), ``fields``, sorting
(``sort_key``/``sort_dir``, repeatable), pages (``limit``, ``marker``, ``page_reverse``) with a
``<collection>_links`` list holding the ``next`` (and, past the first page, ``previous``) link, and
errors as ``{"NeutronError": {"type", "message", "detail"}}`` with Neutron's exception names and
messages (``NetworkNotFound``: "Network X could not be found.", 404). Writes are not served: 501
``NotImplementedError`` in the same format, as Neutron answers a call its plugin does not implement
— except floating IPs: when the cloud has its guest namespace and ``nft``, an external network
(`novamig-ext`) is listed and ``/v2.0/floatingips`` creates, associates, tags and deletes floating
IPs made real by NAT in that namespace (``floating_ips``).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlencode

from novamig.embedded.service import guest_network
from novamig.embedded.service.floating_ips import (
    EXTERNAL_NETWORK_ID,
    EXTERNAL_SUBNET_ID,
    FloatingIpError,
    FloatingIps,
    NamespaceNat,
    external_network,
    external_subnet,
    nft_available,
)
from novamig.embedded.service.stand_ins import SUBNET_CIDR

StartResponse = Callable[..., Any]
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
}
#: collection → (singular, attribute of the store, Neutron's not-found exception and message)
_COLLECTIONS = {
    "networks": ("network", "_networks", "NetworkNotFound", "Network {} could not be found."),
    "subnets": ("subnet", "_subnets", "SubnetNotFound", "Subnet {} could not be found."),
    "ports": ("port", "_ports", "PortNotFound", "Port {} could not be found."),
    "security-groups": (
        "security_group",
        "_security_groups",
        "SecurityGroupNotFound",
        "Security group {} does not exist",
    ),
    "floatingips": ("floatingip", "", "FloatingIPNotFound", "Floating IP {} could not be found"),
}
_PAGING = ("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse")


class NeutronError(Exception):
    """An error Neutron reports: HTTP status, exception name and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"NeutronError": {"type": self.kind, "message": self.message, "detail": ""}}


def _tags_match(item: dict[str, Any], key: str, wanted: list[str]) -> bool:
    """Neutron's tag filters: ``tags``/``not-tags`` all of, ``tags-any``/``not-tags-any`` any of
    (each value a comma-separated list)."""
    have = set(item.get("tags") or ())
    asked = {t for value in wanted for t in value.split(",") if t}
    hit = asked <= have if key in ("tags", "not-tags") else bool(asked & have)
    return hit != key.startswith("not-")


def _matches(item: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, wanted in filters.items():
        if key in _PAGING:
            continue
        if key in ("tags", "tags-any", "not-tags", "not-tags-any"):
            if not _tags_match(item, key, wanted):
                return False
            continue
        value = item.get(key)
        as_text = str(value).lower() if isinstance(value, bool) else str(value)
        if as_text not in wanted:
            return False
    return True


def _sorted(items: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    keys = query.get("sort_key") or ["id"]
    dirs = query.get("sort_dir") or ["asc"] * len(keys)
    if len(dirs) != len(keys) or any(d not in ("asc", "desc") for d in dirs):
        raise NeutronError(400, "BadRequest", "The number of sort_keys and sort_dirs must be same")
    out = list(items)
    for key, direction in reversed(list(zip(keys, dirs, strict=True))):
        out.sort(key=lambda i: str(i.get(key) or ""), reverse=direction == "desc")
    return out


def paginate(
    items: list[dict[str, Any]],
    query: dict[str, list[str]],
    url: str,
    missing: Callable[[str], NeutronError],
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """One page of sorted ``items`` and Neutron's ``<collection>_links`` for it. An unknown marker is
    the collection's not-found error (``missing(marker)``), as Neutron looks the marker up first."""
    items = _sorted(items, query)
    reverse = (query.get("page_reverse") or ["False"])[0].lower() == "true"
    if reverse:
        items.reverse()
    marker = next(iter(query.get("marker") or []), None)
    if marker is not None:
        ids = [i.get("id") for i in items]
        if marker not in ids:
            raise missing(marker)
        items = items[ids.index(marker) + 1 :]
    limit_text = (query.get("limit") or ["0"])[0]
    if not limit_text.isdigit():
        raise NeutronError(
            400, "BadRequest", f"Invalid input for limit. Reason: '{limit_text}' is not an integer."
        )
    limit = int(limit_text)
    page = items[:limit] if limit else items
    if reverse:
        page.reverse()
    links: list[dict[str, str]] = []
    base = [(k, v) for k, vs in query.items() if k not in ("marker", "page_reverse") for v in vs]
    if limit and len(page) == limit:
        edge = page[0] if reverse else page[-1]
        extra = [("page_reverse", "True")] if reverse else []
        links.append(
            {
                "rel": "previous" if reverse else "next",
                "href": f"{url}?{urlencode([*base, ('marker', edge['id']), *extra])}",
            }
        )
    if limit and marker is not None and page:
        edge = page[-1] if reverse else page[0]
        extra = [] if reverse else [("page_reverse", "True")]
        links.append(
            {
                "rel": "next" if reverse else "previous",
                "href": f"{url}?{urlencode([*base, ('marker', edge['id']), *extra])}",
            }
        )
    return page, links


def _only(item: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in fields} if fields else item


class NetworkApi:
    def __init__(self, store: Any, public_url: str) -> None:
        self._store = store  # the NeutronFixture subclass of stand_ins
        self._url = public_url
        self._floating_ips: FloatingIps | None = None
        self._floating_lock = threading.Lock()  # requests are served by several threads

    def _floating(self) -> FloatingIps | None:
        """The floating IPs, from the first request that finds the guest namespace and ``nft``.

        Looked up per request until then (never cached as absent): the namespace is created while
        the cloud starts, possibly after this API already answers.
        """
        with self._floating_lock:
            if self._floating_ips is None:
                network = guest_network.current()
                netns = network.netns if network is not None else None
                if netns is None or nft_available() is not None:
                    return None
                nat = NamespaceNat(netns, SUBNET_CIDR)
                try:
                    nat.start()
                except FloatingIpError as exc:
                    raise NeutronError(exc.status, exc.kind, exc.message) from None
                self._floating_ips = FloatingIps(self._store._ports, nat)
            return self._floating_ips

    def _items(self, collection: str) -> dict[str, Any]:
        """A collection's items by id: the store's, plus the external network when it exists."""
        if collection == "floatingips":
            floating = self._floating()
            return {k: floating.view(v) for k, v in floating.items.items()} if floating else {}
        items: dict[str, Any] = getattr(self._store, _COLLECTIONS[collection][1], {})
        if collection in ("networks", "subnets") and self._floating() is not None:
            extra = (
                {EXTERNAL_NETWORK_ID: external_network()}
                if collection == "networks"
                else {EXTERNAL_SUBNET_ID: external_subnet()}
            )
            items = {**items, **extra}
        return items

    def _port_view(self, port: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(port)
        bindings = getattr(self._store, "_port_bindings", {}).get(port["id"], {})
        active = next((host for host, b in bindings.items() if b.get("status") == "ACTIVE"), None)
        if active is not None:
            view["binding:host_id"] = active
        view.setdefault("device_owner", "compute:nova" if view.get("device_id") else "")
        return view

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method not in ("GET", "HEAD") and path.startswith("/v2.0/floatingips"):
                return self._floating_write(method, path, environ, start_response)
            if method not in ("GET", "HEAD"):
                raise NeutronError(
                    501,
                    "NotImplementedError",
                    f"The embedded cloud's network API is read-only: {method} {path} is not implemented.",
                )
            if path == "/":
                link = {"rel": "self", "href": f"{self._url}/v2.0/"}
                return self._reply(
                    start_response, 200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [link]}]}
                )
            return self._reply(start_response, 200, self._v2(path, environ.get("QUERY_STRING", "")))
        except NeutronError as exc:
            return self._reply(start_response, exc.status, exc.body())

    def _v2(self, path: str, query: str) -> Any:
        """The JSON body of a ``/v2.0/...`` read: extensions, a collection or one item."""
        parts = path.strip("/").split("/")
        if parts[0] != "v2.0" or len(parts) < 2:
            raise NeutronError(404, "HTTPNotFound", "The resource could not be found.")
        if parts[1] == "extensions" and len(parts) == 2:
            return self._store.list_extensions()
        if parts[1] not in _COLLECTIONS or len(parts) > 3:
            raise NeutronError(404, "HTTPNotFound", "The resource could not be found.")
        singular, _, not_found, message = _COLLECTIONS[parts[1]]
        items = self._items(parts[1])
        view = self._port_view if parts[1] == "ports" else copy.deepcopy
        filters = parse_qs(query)
        fields = filters.get("fields", [])
        if len(parts) == 3:
            item = items.get(parts[2])
            if item is None:
                raise NeutronError(404, not_found, message.format(parts[2]))
            return {singular: _only(view(item), fields)}
        found = [view(i) for i in list(items.values()) if _matches(view(i), filters)]
        page, links = paginate(
            found,
            filters,
            f"{self._url}/v2.0/{parts[1]}",
            lambda key: NeutronError(404, not_found, message.format(key)),
        )
        collection = parts[1].replace("-", "_")
        body: dict[str, Any] = {collection: [_only(i, fields) for i in page]}
        if links:
            body[f"{collection}_links"] = links
        return body

    def _floating_write(
        self, method: str, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """POST a floating IP, PUT one (association, description) or its tags, DELETE one."""
        floating = self._floating()
        if floating is None:
            raise NeutronError(
                501,
                "NotImplementedError",
                "The embedded cloud has no floating IPs here: they need its guest network "
                "namespace (root) and the `nft` command (nftables).",
            )
        parts = path.strip("/").split("/")
        body = _json_body(environ)
        try:
            if method == "POST" and len(parts) == 2:
                created = floating.create(_member(body, "floatingip"))
                return self._reply(start_response, 201, {"floatingip": created})
            if method == "PUT" and len(parts) == 3:
                updated = floating.update(parts[2], _member(body, "floatingip"))
                return self._reply(start_response, 200, {"floatingip": updated})
            if method == "PUT" and len(parts) == 4 and parts[3] == "tags":
                tags = body.get("tags") if isinstance(body, dict) else None
                if not isinstance(tags, list):
                    raise NeutronError(400, "BadRequest", "Invalid input: tags must be a list.")
                return self._reply(start_response, 200, {"tags": floating.set_tags(parts[2], tags)})
            if method == "DELETE" and len(parts) == 3:
                floating.delete(parts[2])
                return self._reply(start_response, 204, None)
        except FloatingIpError as exc:
            raise NeutronError(exc.status, exc.kind, exc.message) from None
        raise NeutronError(404, "HTTPNotFound", "The resource could not be found.")

    @staticmethod
    def _reply(start_response: StartResponse, status: int, body: Any) -> Iterable[bytes]:
        data = b"" if body is None else json.dumps(body, default=str).encode()
        start_response(
            f"{status} {_REASONS[status]}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]


def _json_body(environ: dict[str, Any]) -> Any:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise NeutronError(400, "BadRequest", "Malformed JSON in request body.") from None


def _member(body: Any, key: str) -> dict[str, Any]:
    """``body[key]`` as a mapping, or Neutron's 400 for a body without it."""
    member = body.get(key) if isinstance(body, dict) else None
    if not isinstance(member, dict):
        raise NeutronError(400, "BadRequest", f"Resource body required: {key}")
    return member
