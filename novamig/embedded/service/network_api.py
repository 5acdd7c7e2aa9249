"""A read-only Network API (Neutron v2.0 subset) over the cloud's network stand-in.

Clients find the network and a server's port through the catalog's ``network`` endpoint as on
DevStack (openstacksdk ``conn.network.find_network("novamig-net")``, Tempest's fixed network):
version discovery, ``GET /v2.0/{networks,subnets,ports,security-groups}`` with Neutron's filters
(repeated keys mean any of the values) and ``GET /v2.0/<collection>/{id}``, ``GET
/v2.0/extensions``. Nova itself talks to the same store (``stand_ins.install_neutron``), so the
port a server gets here is the one Nova bound.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}
_COLLECTIONS = {
    "networks": ("network", "_networks"),
    "subnets": ("subnet", "_subnets"),
    "ports": ("port", "_ports"),
    "security-groups": ("security_group", "_security_groups"),
}


def _matches(item: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, wanted in filters.items():
        if key in ("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"):
            continue
        value = item.get(key)
        as_text = str(value).lower() if isinstance(value, bool) else str(value)
        if as_text not in wanted:
            return False
    return True


class NetworkApi:
    def __init__(self, store: Any, public_url: str) -> None:
        self._store = store  # the NeutronFixture subclass of stand_ins
        self._url = public_url

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
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return self._reply(start_response, 405, {"NeutronError": {"message": "read-only"}})
        if path == "/":
            return self._reply(
                start_response,
                200,
                {
                    "versions": [
                        {
                            "id": "v2.0",
                            "status": "CURRENT",
                            "links": [{"rel": "self", "href": f"{self._url}/v2.0/"}],
                        },
                    ]
                },
            )
        return self._reply(start_response, *self._v2(path, environ.get("QUERY_STRING", "")))

    def _v2(self, path: str, query: str) -> tuple[int, Any]:
        """(status, JSON body) of a ``/v2.0/...`` read: extensions, a collection or one item."""
        parts = path.strip("/").split("/")
        if parts[0] != "v2.0" or len(parts) < 2:
            return 404, {"NeutronError": {"message": f"not found: {path}"}}
        if parts[1] == "extensions" and len(parts) == 2:
            return 200, self._store.list_extensions()
        if parts[1] not in _COLLECTIONS or len(parts) > 3:
            return 404, {"NeutronError": {"message": f"not found: {path}"}}
        singular, attr = _COLLECTIONS[parts[1]]
        items: dict[str, Any] = getattr(self._store, attr, {})
        view = self._port_view if parts[1] == "ports" else copy.deepcopy
        if len(parts) == 3:
            item = items.get(parts[2])
            if item is None:
                return 404, {"NeutronError": {"message": f"no {singular} {parts[2]}"}}
            return 200, {singular: view(item)}
        filters = parse_qs(query)
        found = [view(i) for i in list(items.values()) if _matches(view(i), filters)]
        return 200, {parts[1].replace("-", "_"): found}

    @staticmethod
    def _reply(start_response: StartResponse, status: int, body: Any) -> Iterable[bytes]:
        data = json.dumps(body, default=str).encode()
        start_response(
            f"{status} {_REASONS[status]}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]
