"""``GET /v2/images`` as Glance answers it: filters, sorting, ``limit``/``marker`` pages, links.

Kept apart from the WSGI application so it can be tested as a function. The semantics follow
Glance's ``images.py`` (``RequestDeserializer.index``, ``ImagesController.index``,
``ResponseSerializer.index``):

- ``limit`` (default 25, at most 1000) and ``marker`` (the id of the last image of the previous page;
  an unknown marker is a 400); a full page carries a ``next`` link holding the same query with the
  last id as marker (python-glanceclient and openstacksdk follow it), and ``first`` is the query
  without the marker;
- sorting by ``sort_key``/``sort_dir`` (repeatable) or ``sort=key:dir,...``, default
  ``created_at`` descending, ``id`` last to break ties;
- ``tag`` (repeatable: every tag must be present), ``visibility`` (``all``; without it community
  images are left out, as for a user who owns none), ``os_hidden`` (default ``false``),
  ``protected``, ``size_min``/``size_max``, and any other key compared with the image's attribute or
  property (``in:a,b`` for any of several values, as Glance accepts for ``id`` and ``name`` and more).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

DEFAULT_LIMIT = 25  # Glance's [DEFAULT] limit_param_default
MAX_LIMIT = 1000  # Glance's [DEFAULT] api_limit_max
SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at")
_VISIBILITY_FILTERS = ("community", "public", "private", "shared", "all")


class BadQuery(ValueError):
    """A query Glance refuses with 400 Bad Request; the message is Glance's."""


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise BadQuery("limit param must be an integer") from None
    if limit < 0:
        raise BadQuery("limit param must be positive")
    return min(limit, MAX_LIMIT)


def _sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise BadQuery(f"Invalid sort key: {key}. It must be one of the following: {', '.join(SORT_KEYS)}.")
    return key


def _sort_dir(direction: str) -> str:
    if direction not in ("asc", "desc"):
        raise BadQuery(f"Invalid sort direction: {direction}")
    return direction


def sorting(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, direction) pairs from either of Glance's two sorting syntaxes."""
    keys = [_sort_key(v.strip()) for k, v in params if k == "sort_key"]
    dirs = [_sort_dir(v.strip()) for k, v in params if k == "sort_dir"]
    new = [v for k, v in params if k == "sort"]
    if new:
        if keys or dirs:
            raise BadQuery("Old and new sorting syntax cannot be combined")
        for item in ",".join(new).split(","):
            key, _sep, direction = item.partition(":")
            keys.append(_sort_key(key.strip()))
            dirs.append(_sort_dir(direction.strip() or "desc"))
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise BadQuery("Number of sort dirs does not match the number of sort keys")
    keys = keys or ["created_at"]
    dirs = dirs or ["desc"]
    if len(dirs) == 1:
        dirs = dirs * len(keys)
    pairs = list(zip(keys, dirs, strict=True))
    if "id" not in keys:
        pairs.append(("id", pairs[-1][1]))
    return pairs


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _matches(image: dict[str, Any], key: str, wanted: str) -> bool:
    if key in ("size_min", "size_max"):
        try:
            bound = int(wanted)
        except ValueError:
            raise BadQuery(f"Unable to filter on a range with a non-numeric value: {wanted}") from None
        size = image.get("size")
        return size is not None and (size >= bound if key == "size_min" else size <= bound)
    options = wanted[3:].split(",") if wanted.startswith("in:") else [wanted]
    return key in image and _text(image[key]) in options


def _check_flags(first: dict[str, str]) -> bool:
    """Validate ``os_hidden`` (case-insensitive, as Glance lowers it) and ``protected``; the first."""
    hidden = first.get("os_hidden", "false").lower()
    for key, value in (("os_hidden", hidden), ("protected", first.get("protected", "false"))):
        if value not in ("true", "false"):
            raise BadQuery(f"Invalid value '{value}' for '{key}' filter. Valid values are 'true' or 'false'.")
    return hidden == "true"


def _filtered(images: Iterable[dict[str, Any]], params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    special = {"limit", "marker", "sort", "sort_key", "sort_dir", "tag", "member_status", "os_hidden"}
    first = dict(params)
    visibility = first.get("visibility")
    if visibility is not None and visibility not in _VISIBILITY_FILTERS:
        raise BadQuery(f"Invalid visibility value: {visibility}")
    if "changes-since" in first:
        raise BadQuery('The "changes-since" filter is no longer available on v2.')
    hidden = _check_flags(first)
    tags = [v.strip() for k, v in params if k == "tag"]
    checks = [(k, v) for k, v in params if k not in special and not (k == "visibility" and v == "all")]
    out = []
    for image in images:
        if visibility is None and image.get("visibility") == "community":
            continue
        if bool(image.get("os_hidden")) != hidden:
            continue
        if not all(t in (image.get("tags") or []) for t in tags):
            continue
        if all(_matches(image, k, v) for k, v in checks):
            out.append(image)
    return out


def _ordered(images: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Sort by several keys with their own directions (stable sorts, last key first); None first."""
    out = list(images)
    for key, direction in reversed(pairs):
        out.sort(
            key=lambda i: (
                i.get(key) is not None,
                i.get(key) or 0 if key == "size" else str(i.get(key) or ""),
            ),
            reverse=direction == "desc",
        )
    return out


def list_images(images: Iterable[dict[str, Any]], params: list[tuple[str, str]]) -> dict[str, Any]:
    """The body of ``GET /v2/images?<params>`` over Glance v2 image representations."""
    limit = _limit(dict(params).get("limit"))
    ordered = _ordered(_filtered(images, params), sorting(params))
    marker = dict(params).get("marker")
    if marker is not None:
        ids = [i["id"] for i in ordered]
        if marker not in ids:
            raise BadQuery(f"No image found with ID {marker}")
        ordered = ordered[ids.index(marker) + 1 :]
    page = ordered[:limit]
    without_marker = [(k, v) for k, v in params if k != "marker"]
    body: dict[str, Any] = {"images": page, "first": "/v2/images", "schema": "/v2/schemas/images"}
    if without_marker:
        body["first"] = f"/v2/images?{urlencode(without_marker)}"
    if page and len(page) == limit:
        body["next"] = f"/v2/images?{urlencode([*without_marker, ('marker', page[-1]['id'])])}"
    return body
