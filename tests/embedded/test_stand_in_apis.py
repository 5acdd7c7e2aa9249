"""The embedded image and network APIs answer as Glance and Neutron do, tested as functions and as
WSGI applications without a cloud: Glance's schemas (and that its images validate against them, as
python-glanceclient's warlock model does), Glance's list semantics and error rendering per
``Accept``, Neutron's ``NeutronError`` and pages, and migration figures within Nova's API schema."""

from __future__ import annotations

import copy
import io
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest
from glanceclient import exc as glance_exc

from novamig.embedded.layout import TINY_IMAGE_ID
from novamig.embedded.service import glance_schemas, image_listing
from novamig.embedded.service.image_api import ImageApi, to_v2
from novamig.embedded.service.migration_monitor import save_progress
from novamig.embedded.service.network_api import NetworkApi
from novamig.embedded.service.stand_ins import tiny_image_meta


class _Store:
    def __init__(self, count: int = 0) -> None:
        self.images = {TINY_IMAGE_ID: tiny_image_meta()}
        for i in range(count):
            meta = copy.deepcopy(tiny_image_meta())
            meta.update(
                id=str(uuid.UUID(int=i + 1)), name=f"img{i:02d}", tags=["even" if i % 2 == 0 else "odd"]
            )
            meta["created_at"] = f"2026-01-01T00:00:{i:02d}Z"
            self.images[meta["id"]] = meta


def _call(
    app: Any, path: str, query: str = "", method: str = "GET", accept: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}
    environ = {
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_METHOD": method,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "CONTENT_LENGTH": "0",
    }
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=dict(headers))

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


# -- Glance ------------------------------------------------------------------------------------------
def test_schemas_have_glances_shape_and_every_image_validates() -> None:
    image = glance_schemas.schema("image")
    assert image is not None and image["name"] == "image"
    assert image["additionalProperties"] == {"type": "string"}  # PermissiveSchema
    assert [link["rel"] for link in image["links"]] == ["self", "enclosure", "describedby"]
    assert image["properties"]["status"]["readOnly"] is True
    assert None in image["properties"]["disk_format"]["enum"]
    images = glance_schemas.schema("images")
    assert images is not None and images["properties"]["images"]["items"] == image
    member = glance_schemas.schema("member")
    assert member is not None and member["additionalProperties"] is False
    assert glance_schemas.schema("members") is not None and glance_schemas.schema("tasks") is None
    jsonschema.Draft4Validator.check_schema(image)
    for record in _Store(3).images.values():
        jsonschema.validate(to_v2(record), image)
    body = image_listing.list_images([to_v2(r) for r in _Store(3).images.values()], [])
    jsonschema.validate(body, images)


def test_schema_endpoints_and_their_methods() -> None:
    app = ImageApi(_Store(), "http://127.0.0.1:1")
    for name in ("image", "images", "member", "members"):
        status, headers, body = _call(app, f"/v2/schemas/{name}")
        assert status.startswith("200") and json.loads(body)["name"] == name
    status, headers, _ = _call(app, "/v2/schemas/image", method="DELETE")
    assert status.startswith("405") and headers["Allow"] == "GET, HEAD"
    assert _call(app, "/v2/schemas/nothing")[0].startswith("404")


def test_list_pages_with_next_links_until_the_last() -> None:
    images = [to_v2(r) for r in _Store(7).images.values()]
    seen: list[str] = []
    params: list[tuple[str, str]] = [("limit", "3"), ("sort_key", "name"), ("sort_dir", "asc")]
    pages = 0
    while True:
        body = image_listing.list_images(images, params)
        pages += 1
        seen += [i["name"] for i in body["images"]]
        assert body["first"] == "/v2/images?limit=3&sort_key=name&sort_dir=asc"
        if "next" not in body:
            break
        params = parse_qsl(urlsplit(body["next"]).query)
    assert seen == sorted(seen) and len(seen) == 8 and pages == 3
    # default order: created_at descending (the tiny image has none: last)
    assert [i["name"] for i in image_listing.list_images(images, [])["images"]][:2] == ["img06", "img05"]


def test_list_filters_as_glance_does() -> None:
    images = [to_v2(r) for r in _Store(6).images.values()]

    def names(*params: tuple[str, str]) -> list[str]:
        return sorted(i["name"] for i in image_listing.list_images(images, list(params))["images"])

    assert names(("name", "img03")) == ["img03"]
    assert names(("name", "in:img01,img02")) == ["img01", "img02"]
    assert names(("tag", "odd")) == ["img01", "img03", "img05"]
    assert names(("tag", "odd"), ("tag", "novamig")) == []
    assert len(names(("status", "active"), ("visibility", "public"))) == 7
    assert names(("os_hidden", "True")) == []  # openstacksdk sends Python's spelling
    assert len(names(("size_min", "1"), ("size_max", str(2 * 1024 * 1024)))) == 7
    for bad, message in (
        (("sort_key", "colour"), "Invalid sort key: colour"),
        (("limit", "-1"), "limit param must be positive"),
        (("visibility", "everyone"), "Invalid visibility value: everyone"),
        (("marker", "nope"), "No image found with ID nope"),
    ):
        with pytest.raises(image_listing.BadQuery, match=message):
            image_listing.list_images(images, [bad])


def test_errors_are_rendered_as_glance_renders_them_per_accept() -> None:
    app = ImageApi(_Store(), "http://127.0.0.1:1")
    status, headers, body = _call(app, "/v2/images/nope", accept="*/*")  # python-glanceclient (requests)
    assert status == "404 Not Found" and headers["Content-Type"].startswith("text/html")
    assert b"<title>404 Not Found</title>" in body and b"No image found with ID nope" in body
    status, headers, body = _call(app, "/v2/images/nope", accept="application/json")  # openstacksdk
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "code": "404 Not Found",
        "title": "Not Found",
        "message": "No image found with ID nope<br /><br />\n\n\n",
    }
    status, headers, body = _call(app, "/v2/images", "limit=x")  # no Accept at all: plain text
    assert status.startswith("400") and headers["Content-Type"].startswith("text/plain")
    assert "limit param must be an integer" in body.decode()
    status, _, body = _call(app, "/v2/tasks")
    assert status.startswith("501") and b"does not implement /v2/tasks" in body
    assert _call(app, f"/v2/images/{TINY_IMAGE_ID}/members")[0].startswith("403")  # public image


def test_python_glanceclient_parses_each_error_body() -> None:
    """glanceclient's own parser (``exc.from_response``) turns each into its exception class."""
    app = ImageApi(_Store(), "http://127.0.0.1:1")

    @dataclass
    class Response:
        status_code: int
        headers: dict[str, str]
        content: bytes

        @property
        def text(self) -> str:
            return self.content.decode()

        def json(self) -> Any:
            return json.loads(self.content)

    for path, query, cls, words in (
        ("/v2/images/nope", "", glance_exc.HTTPNotFound, "No image found with ID nope"),
        ("/v2/images", "sort_dir=up", glance_exc.HTTPBadRequest, "Invalid sort direction: up"),
        ("/v2/tasks", "", glance_exc.HTTPNotImplemented, "does not implement"),
    ):
        status, headers, body = _call(app, path, query)
        error = glance_exc.from_response(
            Response(int(status.split()[0]), {"content-type": headers["Content-Type"]}, body), body
        )
        assert isinstance(error, cls) and words in str(error)


def test_create_answers_201_with_location(tmp_path: Any) -> None:
    app = ImageApi(_Store(), "http://127.0.0.1:1", tmp_path)
    seen: dict[str, Any] = {}
    payload = b'{"name": "x", "disk_format": "raw", "container_format": "bare"}'
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v2/images", "CONTENT_LENGTH": str(len(payload))}
    environ["wsgi.input"] = io.BytesIO(payload)
    body = json.loads(b"".join(app(environ, lambda s, h: seen.update(status=s, headers=dict(h)))))
    assert seen["status"].startswith("201")
    assert seen["headers"]["Location"] == f"http://127.0.0.1:1/v2/images/{body['id']}"


# -- Neutron -----------------------------------------------------------------------------------------
class _Neutron:
    def __init__(self) -> None:
        self._networks = {f"n{i}": {"id": f"n{i}", "name": f"net{i}", "shared": i == 0} for i in range(5)}
        self._subnets: dict[str, Any] = {}
        self._ports: dict[str, Any] = {}

    def list_extensions(self) -> dict[str, Any]:
        return {"extensions": []}


def test_neutron_errors_and_pages() -> None:
    app = NetworkApi(_Neutron(), "http://127.0.0.1:1")
    status, _, body = _call(app, "/v2.0/networks/nope")
    assert status.startswith("404")
    assert json.loads(body) == {
        "NeutronError": {
            "type": "NetworkNotFound",
            "message": "Network nope could not be found.",
            "detail": "",
        }
    }
    assert json.loads(_call(app, "/v2.0/ports/p9")[2])["NeutronError"]["type"] == "PortNotFound"
    assert json.loads(_call(app, "/v2.0/routers")[2])["NeutronError"]["type"] == "HTTPNotFound"
    status, _, body = _call(app, "/v2.0/networks", method="POST")
    assert status.startswith("501") and json.loads(body)["NeutronError"]["type"] == "NotImplementedError"
    ids, query = [], "limit=2"
    while True:
        page = json.loads(_call(app, "/v2.0/networks", query)[2])
        ids += [n["id"] for n in page["networks"]]
        nxt = [link for link in page.get("networks_links", []) if link["rel"] == "next"]
        if not nxt:
            break
        query = urlsplit(nxt[0]["href"]).query
        assert re.search(r"marker=n\d", query)
    assert ids == ["n0", "n1", "n2", "n3", "n4"]
    fields = json.loads(_call(app, "/v2.0/networks", "fields=id&sort_key=name&sort_dir=desc")[2])["networks"]
    assert fields[0] == {"id": "n4"}
    status, _, body = _call(app, "/v2.0/networks", "marker=gone")
    assert status.startswith("404") and b"Network gone could not be found." in body


# -- Nova's migration schema -------------------------------------------------------------------------
class _Saved:
    def save(self) -> None:
        pass


@dataclass
class _Sample:
    total_bytes: int
    processed_bytes: int
    remaining_bytes: int


@pytest.mark.parametrize("sample", [_Sample(0, 0, 0), _Sample(300, 300, 0), _Sample(300, 100, 200)])
def test_migration_figures_stay_within_novas_schema(sample: _Sample) -> None:
    """``GET /servers/{id}/migrations`` (2.23+) allows each figure null or at least 1."""
    migration, instance = _Saved(), _Saved()
    save_progress(instance, migration, sample)
    for name in ("memory_total", "memory_processed", "memory_remaining", "disk_total"):
        value = getattr(migration, name)
        assert value is None or value >= 1, name
    assert migration.memory_remaining == (sample.remaining_bytes or None)  # type: ignore[attr-defined]
