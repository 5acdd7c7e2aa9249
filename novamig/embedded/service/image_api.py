"""The embedded cloud's Image API (a Glance v2 subset) over the cloud's image store.

openstacksdk's ``conn.image`` finds images through the catalog's ``image`` endpoint, as on DevStack.
This serves what finding, showing and uploading need:

- version discovery, ``GET /v2/schemas/{image,images,member,members}`` (Glance's own schemas,
  ``glance_schemas``: python-glanceclient reads them before any image call), ``GET /v2/images``
  with Glance's filters, sorting and ``limit``/``marker`` pages (``image_listing``),
  ``GET /v2/images/{id}``, ``GET /v2/images/{id}/members`` (none: images are never shared here);
- ``POST /v2/images`` (a ``queued`` record), ``PUT /v2/images/{id}/file`` (the bytes: status
  ``active``, ``size``, ``checksum`` (MD5) and ``os_hash_algo``/``os_hash_value`` (SHA-512), as
  Glance computes them), ``GET /v2/images/{id}/file``, ``PATCH /v2/images/{id}`` (JSON patch of
  properties and tags), ``PUT``/``DELETE /v2/images/{id}/tags/{tag}`` and ``DELETE /v2/images/{id}``:
  exactly what ``conn.image.create_image(..., data=...)`` and ``novamig image upload`` call, so that
  path is tested against real openstacksdk rather than a mock.

Records live in Nova's own image store (``stand_ins.install_glance``), which Nova reads directly:
an uploaded image is seen by ``conn.image.images()`` and Nova's image show alike. Bytes are written
to ``data_dir`` (``<workdir>/images/``), not kept in memory: the full cloud image is 100 MB. The
images novamig registers itself (``novamig-tiny``, ``novamig-full``) cannot be deleted (403, like a
protected image in Glance): the cloud's driver boots them by id. There is no access control beyond
that (any token may publicise an image; real Glance requires admin for ``visibility=public``).

Errors are rendered by webob, as Glance's are (Glance raises ``webob.exc.HTTP*`` with an
``explanation``): HTML when the request's ``Accept`` allows it (python-glanceclient sends requests'
``*/*`` and strips the tags), JSON ``{"message", "code", "title"}`` for ``Accept: application/json``
(openstacksdk), plain text without an ``Accept``; 405 carries ``Allow``. What Glance offers and this
does not (image import, locations, members' changes, tasks, metadefs, stores, cache, deactivation)
is answered 501 Not Implemented in the same format, never with a body a client cannot parse.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import webob.exc  # type: ignore[import-untyped]

from novamig.embedded.service import glance_schemas, image_listing
from novamig.embedded.service.glance_schemas import CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES

StartResponse = Callable[..., Any]

_FIXED = {
    "id",
    "name",
    "status",
    "visibility",
    "container_format",
    "disk_format",
    "size",
    "virtual_size",
    "min_ram",
    "min_disk",
    "protected",
    "tags",
    "created_at",
    "updated_at",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
}
#: Glance's read-only attributes: a create or patch that sets one is refused (403), as Glance does.
_READ_ONLY = {
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
}
#: Settable top-level fields of a record; everything else is an extra property (a string).
_SETTABLE = {
    "name",
    "visibility",
    "container_format",
    "disk_format",
    "min_ram",
    "min_disk",
    "protected",
    "tags",
    "owner",
    "os_hidden",
}
_CHUNK = 1 << 20
#: Reasons of the success statuses; errors are rendered by webob (``error_response``).
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 300: "Multiple Choices"}


#: Top-level paths of Glance's v2 API this stand-in does not serve: answered 501, not 404.
_UNSUPPORTED_ROOTS = {"tasks", "metadefs", "stores", "info", "cache", "discovery"}
#: ``/v2/images/{id}/<x>`` sub-resources of Glance this stand-in does not serve: answered 501.
_UNSUPPORTED_SUBS = {"import", "locations", "stage", "actions", "members", "tasks"}


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def error_response(
    environ: dict[str, Any],
    start_response: StartResponse,
    status: int,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
) -> Iterable[bytes]:
    """Answer an error the way Glance does: a ``webob.exc`` exception rendered per ``Accept``."""
    cls = webob.exc.status_map.get(status, webob.exc.HTTPInternalServerError)
    # HTTPNotImplemented's template names the method and shows only the detail
    text = {"detail": message} if status == 501 else {"explanation": message}
    exc = cls(headers=list(headers), **text)
    body: Iterable[bytes] = exc(environ, start_response)
    return body


def _iso(value: Any) -> Any:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "strftime") else value


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)


def to_v2(image: dict[str, Any]) -> dict[str, Any]:
    """Nova's internal image record → Glance v2 representation (properties flattened)."""
    out: dict[str, Any] = {k: _iso(image.get(k)) for k in _FIXED if k in image}
    out.setdefault("visibility", "public" if image.get("is_public") else "private")
    out.setdefault("tags", [])
    out.setdefault("checksum", None)
    out["os_hidden"] = bool(image.get("os_hidden", False))
    for key, value in (image.get("properties") or {}).items():
        out.setdefault(key, value)
    out["self"] = f"/v2/images/{image['id']}"
    out["file"] = f"/v2/images/{image['id']}/file"
    out["schema"] = "/v2/schemas/image"
    return out


def _check_field(key: str, value: Any) -> None:
    """Refuse a field Glance's schema refuses (403 read-only, 400 invalid value)."""
    if key in _READ_ONLY:
        raise _HttpError(403, f"Attribute '{key}' is read-only.")
    if key == "visibility" and value not in VISIBILITIES:
        raise _HttpError(400, f"invalid visibility {value!r}")
    if key == "disk_format" and value is not None and value not in DISK_FORMATS:
        raise _HttpError(400, f"invalid disk_format {value!r}")
    if key == "container_format" and value is not None and value not in CONTAINER_FORMATS:
        raise _HttpError(400, f"invalid container_format {value!r}")
    if key in ("min_ram", "min_disk") and (not isinstance(value, int) or value < 0):
        raise _HttpError(400, f"{key} must be a non-negative integer")
    if key == "tags" and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
        raise _HttpError(400, "tags must be a list of strings")


class ImageApi:
    """The WSGI application. ``store`` is Nova's ``GlanceFixture``; ``data_dir`` None = read-only."""

    def __init__(
        self,
        store: Any,
        public_url: str,
        data_dir: Path | None = None,
        *,
        undeletable: Iterable[str] = (),
    ) -> None:
        self._store = store  # nova.tests.fixtures.GlanceFixture
        self._url = public_url
        self._data_dir = data_dir
        self._undeletable = frozenset(undeletable)
        self._lock = threading.Lock()  # cheroot serves from several threads

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            return self._route(environ, start_response, method, path)
        except _HttpError as exc:
            return error_response(environ, start_response, exc.status, exc.message, exc.headers)

    # -- routing -------------------------------------------------------------------------------------
    def _route(
        self, environ: dict[str, Any], start_response: StartResponse, method: str, path: str
    ) -> Iterable[bytes]:
        if path in ("/", "/versions"):
            self._allow(method, "GET", "HEAD")
            return self._reply(start_response, 300 if path == "/" else 200, self._versions())
        parts = [unquote(p) for p in path.split("/")[1:]]  # "/v2/images/ID/file" → [v2, images, ID, file]
        if parts[:2] == ["v2", "schemas"] and len(parts) == 3:
            return self._reply(start_response, 200, self._schema(method, parts[2]))
        if parts[:1] == ["v2"] and len(parts) > 1 and parts[1] in _UNSUPPORTED_ROOTS:
            raise _HttpError(501, f"The embedded cloud's image API does not implement {path}.")
        if parts[:2] != ["v2", "images"]:
            raise _HttpError(404, "The resource could not be found.")
        if len(parts) == 2:
            status, body = self._on_images(environ, method)
            # Glance answers a create with the new image's address in Location
            location = [("Location", f"{self._url}/v2/images/{body['id']}")] if status == 201 else []
            return self._reply(start_response, status, body, location)
        image_id = parts[2]
        rest = parts[3:]
        if rest == ["file"]:
            if method == "PUT":
                self._upload(image_id, environ)
                return self._reply(start_response, 204, None)
            self._allow(method, "GET", "HEAD")
            return self._download(image_id, start_response)
        return self._reply(start_response, *self._on_image(environ, method, image_id, rest, path))

    def _on_images(self, environ: dict[str, Any], method: str) -> tuple[int, Any]:
        """``/v2/images``: create (POST) or list; (status, JSON body)."""
        if method == "POST":
            return 201, to_v2(self._create(self._json(environ)))
        self._allow(method, "GET", "HEAD", "POST")
        return 200, self._list(environ)

    def _on_image(
        self, environ: dict[str, Any], method: str, image_id: str, rest: list[str], path: str
    ) -> tuple[int, Any]:
        """``/v2/images/{id}`` and its ``tags/{tag}``; (status, JSON body)."""
        if not rest:
            if method == "DELETE":
                self._delete(image_id)
                return 204, None
            if method == "PATCH":
                return 200, to_v2(self._patch(image_id, self._json(environ)))
            self._allow(method, "GET", "HEAD", "PATCH", "DELETE")
            return 200, to_v2(self._get(image_id))
        if len(rest) == 2 and rest[0] == "tags":
            self._allow(method, "PUT", "DELETE")
            self._tag(image_id, rest[1], add=method == "PUT")
            return 204, None
        if rest == ["members"] and method in ("GET", "HEAD"):
            return 200, self._members(image_id)
        if rest and rest[0] in _UNSUPPORTED_SUBS:
            raise _HttpError(501, f"The embedded cloud's image API does not implement {path}.")
        raise _HttpError(404, "The resource could not be found.")

    def _allow(self, method: str, *allowed: str) -> None:
        """Glance's router answers a method a path does not take with 405 and ``Allow``."""
        if method not in allowed:
            raise _HttpError(405, "", [("Allow", ", ".join(allowed))])

    def _schema(self, method: str, name: str) -> dict[str, Any]:
        self._allow(method, "GET", "HEAD")
        found = glance_schemas.schema(name)
        if found is None:
            raise _HttpError(404, "The resource could not be found.")
        return found

    def _members(self, image_id: str) -> dict[str, Any]:
        """No image is shared with another project here: Glance's answers for an image's members."""
        image = self._get(image_id)
        if image.get("visibility") != "shared":
            raise _HttpError(403, "Only shared images have members.")
        return {"members": [], "schema": "/v2/schemas/members"}

    def _writable(self) -> Path:
        if self._data_dir is None:
            raise _HttpError(405, "this image API is read-only (no image data directory)")
        return self._data_dir

    def _versions(self) -> dict[str, Any]:
        link = {"rel": "self", "href": f"{self._url}/v2/"}
        return {"versions": [{"id": "v2.16", "status": "CURRENT", "links": [link]}]}

    # -- reads ---------------------------------------------------------------------------------------
    def _list(self, environ: dict[str, Any]) -> dict[str, Any]:
        params = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        images = [to_v2(i) for i in list(self._store.images.values())]
        try:
            return image_listing.list_images(images, params)
        except image_listing.BadQuery as exc:
            raise _HttpError(400, str(exc)) from None

    def _get(self, image_id: str) -> dict[str, Any]:
        image: dict[str, Any] | None = self._store.images.get(image_id)
        if image is None:
            raise _HttpError(404, f"No image found with ID {image_id}")  # Glance's own words
        return image

    def _data_path(self, image_id: str) -> Path:
        return self._writable() / image_id

    def _download(self, image_id: str, start_response: StartResponse) -> Iterable[bytes]:
        image = self._get(image_id)
        path = self._data_dir / image_id if self._data_dir is not None else None
        if image.get("status") != "active" or path is None or not path.is_file():
            return self._reply(start_response, 204, None)  # Glance: no data yet → 204
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(path.stat().st_size)),
        ]
        if image.get("checksum"):
            headers.append(("Content-MD5", str(image["checksum"])))
        start_response("200 OK", headers)
        return _iter_file(path)

    # -- writes --------------------------------------------------------------------------------------
    def _create(self, body: Any) -> dict[str, Any]:
        self._writable()
        if not isinstance(body, dict):
            raise _HttpError(400, "the request body must be a JSON object")
        for key in body:
            if key in _READ_ONLY:
                raise _HttpError(403, f"Attribute '{key}' is read-only.")
        record: dict[str, Any] = {"properties": {}}
        image_id = str(body.get("id") or uuid.uuid4())
        with contextlib.suppress(ValueError):
            image_id = str(uuid.UUID(image_id))
        fields = {k: v for k, v in body.items() if k != "id"}
        self._apply(record, fields)
        now = _now()
        record.update(
            id=image_id,
            status="queued",
            size=None,
            virtual_size=None,
            checksum=None,
            os_hash_algo=None,
            os_hash_value=None,
            created_at=now,
            updated_at=now,
        )
        record.setdefault("visibility", "shared")  # Glance's default for a new image
        record["is_public"] = record["visibility"] == "public"
        record.setdefault("tags", [])
        record.setdefault("min_ram", 0)
        record.setdefault("min_disk", 0)
        record.setdefault("protected", False)
        with self._lock:
            if image_id in self._store.images:
                raise _HttpError(409, f"image {image_id} already exists")
            self._store.images[image_id] = record
        return record

    def _apply(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        """Validate and set top-level fields and extra properties, as Glance's schema does."""
        for key, value in fields.items():
            _check_field(key, value)
            if key == "tags":
                record["tags"] = list(dict.fromkeys(value))
            elif key in _SETTABLE:
                record[key] = value
            elif value is None:
                record["properties"].pop(key, None)
            elif not isinstance(value, str):
                raise _HttpError(400, f"property {key!r} must be a string")
            else:
                record["properties"][key] = value
        if "visibility" in fields:
            record["is_public"] = fields["visibility"] == "public"

    def _patch(self, image_id: str, ops: Any) -> dict[str, Any]:
        self._writable()
        if not isinstance(ops, list):
            raise _HttpError(400, "a JSON patch (a list of operations) is expected")
        with self._lock:
            image = self._get(image_id)
            for op in ops:
                if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
                    raise _HttpError(400, f"unsupported patch operation {op!r}")
                key = str(op.get("path", "")).lstrip("/")
                if not key or "/" in key:  # one level only: a top-level field or a property
                    raise _HttpError(400, f"unsupported patch path {op.get('path')!r}")
                key = key.replace("~1", "/").replace("~0", "~")  # a JSON pointer's escapes
                if op["op"] == "remove":
                    if key in _READ_ONLY or key in _SETTABLE:
                        raise _HttpError(403, f"Attribute '{key}' cannot be removed.")
                    if key not in (image.get("properties") or {}):
                        raise _HttpError(409, f"property {key!r} does not exist")
                    image["properties"].pop(key)
                else:
                    self._apply(image, {key: op.get("value")})
            image["updated_at"] = _now()
            return image

    def _tag(self, image_id: str, tag: str, *, add: bool) -> None:
        self._writable()
        with self._lock:
            image = self._get(image_id)
            tags = list(image.get("tags") or [])
            if add and tag not in tags:
                tags.append(tag)
            elif not add:
                if tag not in tags:
                    raise _HttpError(404, f"image {image_id} has no tag {tag!r}")
                tags.remove(tag)
            image["tags"] = tags
            image["updated_at"] = _now()

    def _upload(self, image_id: str, environ: dict[str, Any]) -> None:
        """Stream the request body to ``data_dir/<id>``, hashing as Glance does; then ``active``."""
        path = self._data_path(image_id)
        with self._lock:
            image = self._get(image_id)
            if image.get("status") != "queued":
                raise _HttpError(409, f"image {image_id} is {image.get('status')}: data can be uploaded once")
            if not image.get("disk_format") or not image.get("container_format"):
                raise _HttpError(400, "set disk_format and container_format before uploading data")
            image["status"] = "saving"
        md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{image_id}.part")
        try:
            with tmp.open("wb") as fh:
                for chunk in _request_body(environ):
                    fh.write(chunk)
                    md5.update(chunk)
                    sha512.update(chunk)
                    size += len(chunk)
            tmp.rename(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            with self._lock:
                if image_id in self._store.images:
                    image["status"] = "queued"
            raise
        with self._lock:
            if image_id not in self._store.images:  # deleted while uploading
                path.unlink(missing_ok=True)
                raise _HttpError(404, f"image {image_id} was deleted during the upload")
            image.update(
                status="active",
                size=size,
                checksum=md5.hexdigest(),
                os_hash_algo="sha512",
                os_hash_value=sha512.hexdigest(),
                updated_at=_now(),
            )

    def _delete(self, image_id: str) -> None:
        self._writable()
        with self._lock:
            image = self._get(image_id)
            if image_id in self._undeletable:
                raise _HttpError(403, f"image {image_id} ({image.get('name')}) belongs to the cloud itself")
            if image.get("protected"):
                raise _HttpError(403, f"image {image_id} is protected")
            self._store.images.pop(image_id, None)
        self._data_path(image_id).unlink(missing_ok=True)

    # -- plumbing ------------------------------------------------------------------------------------
    @staticmethod
    def _json(environ: dict[str, Any]) -> Any:
        raw = b"".join(_request_body(environ))
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise _HttpError(400, "the request body is not JSON") from None

    @staticmethod
    def _reply(
        start_response: StartResponse, status: int, body: Any, extra: list[tuple[str, str]] | None = None
    ) -> Iterable[bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        headers = [("Content-Length", str(len(data))), *(extra or [])]
        if body is not None:
            headers.insert(0, ("Content-Type", "application/json"))
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [data]


def _request_body(environ: dict[str, Any]) -> Iterator[bytes]:
    """The request body in chunks: by Content-Length, else until EOF (chunked transfer)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length_text = environ.get("CONTENT_LENGTH") or ""
    remaining = int(length_text) if length_text.strip().isdigit() else None
    while remaining is None or remaining > 0:
        chunk = stream.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
        if not chunk:
            if remaining:
                raise _HttpError(400, f"request body ended {remaining} bytes early")
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def _iter_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk
