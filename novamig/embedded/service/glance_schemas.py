"""Glance's JSON schemas for images and image members, as ``GET /v2/schemas/...`` serves them.

python-glanceclient fetches ``/v2/schemas/image`` (or ``images``) before any image call and builds
its image model from it (warlock): without the schema it cannot list, show or find an image by name.
These are Glance's own schemas, copied in shape and wording from openstack/glance master at
33.0.0.0b2 (the 2026.2 cycle; commit c76abb08e): ``glance/api/v2/images.py``
``get_base_properties``/``_get_base_links``/``get_schema``/``get_collection_schema``,
``glance/api/v2/image_members.py`` ``_MEMBER_SCHEMA``/``get_schema``, and ``glance/schema.py``
(``Schema.raw``, ``PermissiveSchema.raw``: extra properties are strings, ``CollectionSchema.raw``).
Formats are Glance's defaults (``[image_format] disk_formats``/``container_formats``). No
``schema-image.json`` custom properties are loaded (a Glance without that file serves the same).
"""

from __future__ import annotations

import copy
from typing import Any

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("community", "public", "private", "shared")
IMAGE_STATUSES = (
    "queued",
    "saving",
    "active",
    "killed",
    "deleted",
    "uploading",
    "importing",
    "pending_delete",
    "deactivated",
)
_UUID_PATTERN = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"


def _string(description: str, *, read_only: bool = False, nullable: bool = False, **extra: Any) -> Any:
    prop: dict[str, Any] = {"type": ["null", "string"] if nullable else "string"}
    if read_only:
        prop["readOnly"] = True
    prop["description"] = description
    prop.update(extra)
    return prop


def _locations() -> dict[str, Any]:
    validation_data = {
        "description": "Values to be used to populate the corresponding image properties. If the "
        "image status is not 'queued', values must exactly match those already contained in the "
        "image properties.",
        "type": "object",
        "writeOnly": True,
        "additionalProperties": False,
        "properties": {
            "checksum": {"type": "string", "minLength": 32, "maxLength": 32},
            "os_hash_algo": {"type": "string", "maxLength": 64},
            "os_hash_value": {"type": "string", "maxLength": 128},
        },
        "required": ["os_hash_algo", "os_hash_value"],
    }
    return {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "maxLength": 255},
                "metadata": {"type": "object"},
                "validation_data": validation_data,
            },
            "required": ["url", "metadata"],
        },
        "description": "A set of URLs to access the image file kept in external store",
    }


def image_properties() -> dict[str, Any]:
    """Glance's ``get_base_properties()``."""
    return {
        "id": _string("An identifier for the image", pattern=_UUID_PATTERN),
        "name": _string("Descriptive name for the image", nullable=True, maxLength=255),
        "status": _string("Status of the image", read_only=True, enum=list(IMAGE_STATUSES)),
        "visibility": _string("Scope of image accessibility", enum=list(VISIBILITIES)),
        "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
        "os_hidden": {
            "type": "boolean",
            "description": "If true, image will not appear in default image list response.",
        },
        "checksum": _string("md5 hash of image contents.", read_only=True, nullable=True, maxLength=32),
        "os_hash_algo": _string(
            "Algorithm to calculate the os_hash_value", read_only=True, nullable=True, maxLength=64
        ),
        "os_hash_value": _string(
            "Hexdigest of the image contents using the algorithm specified by the os_hash_algo",
            read_only=True,
            nullable=True,
            maxLength=128,
        ),
        "owner": _string("Owner of the image", nullable=True, maxLength=255),
        "size": {"type": ["null", "integer"], "readOnly": True, "description": "Size of image file in bytes"},
        "virtual_size": {
            "type": ["null", "integer"],
            "readOnly": True,
            "description": "Virtual size of image in bytes",
        },
        "container_format": _string(
            "Format of the container", nullable=True, enum=[None, *CONTAINER_FORMATS]
        ),
        "disk_format": _string("Format of the disk", nullable=True, enum=[None, *DISK_FORMATS]),
        "created_at": _string("Date and time of image registration", read_only=True),
        "updated_at": _string("Date and time of the last image modification", read_only=True),
        "tags": {
            "type": "array",
            "description": "List of strings related to the image",
            "items": {"type": "string", "maxLength": 255},
        },
        "direct_url": _string("URL to access the image file kept in external store", read_only=True),
        "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
        "min_disk": {
            "type": "integer",
            "description": "Amount of disk space (in GB) required to boot image.",
        },
        "self": _string("An image self url", read_only=True),
        "file": _string("An image file url", read_only=True),
        "stores": _string(
            "Store in which image data resides.  Only present when the operator has enabled multiple "
            "stores.  May be a comma-separated list of store identifiers.",
            read_only=True,
        ),
        "schema": _string("An image schema url", read_only=True),
        "locations": _locations(),
    }


def image_schema() -> dict[str, Any]:
    """``GET /v2/schemas/image``: a permissive schema (extra properties must be strings)."""
    return {
        "name": "image",
        "properties": image_properties(),
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def member_schema() -> dict[str, Any]:
    """``GET /v2/schemas/member``: Glance's ``_MEMBER_SCHEMA`` (a strict schema, no links)."""
    return {
        "name": "member",
        "properties": {
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "image_id": {
                "type": "string",
                "description": "An identifier for the image",
                "pattern": _UUID_PATTERN,
            },
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "updated_at": {
                "type": "string",
                "description": "Date and time of last modification of image member",
            },
            "status": {
                "type": "string",
                "description": "The status of this image member",
                "enum": ["pending", "accepted", "rejected"],
            },
            "schema": {"readOnly": True, "type": "string"},
        },
        "additionalProperties": False,
    }


def collection_schema(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """Glance's ``CollectionSchema(name, item).raw()``."""
    return {
        "name": name,
        "properties": {
            name: {"type": "array", "items": copy.deepcopy(item)},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def schema(name: str) -> dict[str, Any] | None:
    """The schema ``GET /v2/schemas/<name>`` answers, or None (Glance: 404) for another name."""
    if name == "image":
        return image_schema()
    if name == "images":
        return collection_schema("images", image_schema())
    if name == "member":
        return member_schema()
    if name == "members":
        return collection_schema("members", member_schema())
    return None
