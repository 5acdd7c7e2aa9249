"""A read-only Image API (Glance v2 subset) over the cloud's image store.

openstacksdk's ``conn.image`` finds images through the catalog's ``image`` endpoint, as on DevStack.
This serves what finding and showing need: version discovery, ``GET /v2/images`` (with ``name``,
``status``, ``visibility`` filters) and ``GET /v2/images/{id}``. Nova itself reads the same store
directly (``stand_ins.install_glance``), so both views always agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]

_FIXED = {
    "id",
    "name",
    "status",
    "visibility",
    "container_format",
    "disk_format",
    "size",
    "min_ram",
    "min_disk",
    "protected",
    "tags",
    "created_at",
    "updated_at",
    "checksum",
    "owner",
}


def _iso(value: Any) -> Any:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "strftime") else value


def to_v2(image: dict[str, Any]) -> dict[str, Any]:
    """Nova's internal image record → Glance v2 representation (properties flattened)."""
    out: dict[str, Any] = {k: _iso(image.get(k)) for k in _FIXED if k in image}
    out.setdefault("visibility", "public" if image.get("is_public") else "private")
    out.setdefault("tags", [])
    out.setdefault("checksum", None)
    out["os_hidden"] = False
    for key, value in (image.get("properties") or {}).items():
        out.setdefault(key, value)
    out["self"] = f"/v2/images/{image['id']}"
    out["file"] = f"/v2/images/{image['id']}/file"
    out["schema"] = "/v2/schemas/image"
    return out


class ImageApi:
    def __init__(self, store: Any, public_url: str) -> None:
        self._store = store  # nova.tests.fixtures.GlanceFixture
        self._url = public_url

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._reply(start_response, 405, {"error": "the embedded image API is read-only"})
        if path in ("/", "/versions"):
            status = 300 if path == "/" else 200
            return self._reply(
                start_response,
                status,
                {
                    "versions": [
                        {
                            "id": "v2.16",
                            "status": "CURRENT",
                            "links": [{"rel": "self", "href": f"{self._url}/v2/"}],
                        },
                    ]
                },
            )
        if path == "/v2/images":
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            images = [to_v2(i) for i in self._store.images.values()]
            for key in ("name", "status", "visibility", "id"):
                if key in query:
                    images = [i for i in images if str(i.get(key)) == query[key]]
            images.sort(key=lambda i: str(i.get("name")))
            return self._reply(
                start_response, 200, {"images": images, "schema": "/v2/schemas/images", "first": "/v2/images"}
            )
        if path.startswith("/v2/images/"):
            image_id = path.split("/")[3]
            image = self._store.images.get(image_id)
            if image is None or path.count("/") > 3:
                return self._reply(start_response, 404, {"error": f"no image {image_id}"})
            return self._reply(start_response, 200, to_v2(image))
        return self._reply(start_response, 404, {"error": f"not found: {path}"})

    @staticmethod
    def _reply(start_response: StartResponse, status: int, body: Any) -> Iterable[bytes]:
        data = json.dumps(body).encode()
        reason = {200: "OK", 300: "Multiple Choices", 404: "Not Found", 405: "Method Not Allowed"}[status]
        start_response(
            f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]
