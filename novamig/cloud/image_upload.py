"""Putting the Glance form of a guest image into a cloud's Image service (``novamig image upload``).

Why: a DevStack (or any OpenStack) cloud must boot the same guest, with the same workload, as the
embedded cloud, so results compare. The full image's Glance form (``build_cloud_image()``, a
self-booting qcow2 with cloud-init) goes in through openstacksdk, exactly as an operator would
upload it, with properties that say what it is, so a later run (or a human with
``openstack image show``) can tell which build a cloud holds.

Idempotent, so CI jobs can call it on every run: an image of the chosen name whose
``novamig_image_digest`` property is this build's digest (the image cache key: a hash of every
input of the build) and that is ``active`` is left alone. A different image of that name is
replaced only when asked (``replace=True``): the new one is uploaded and checked first, and the
old one deleted only after, so the cloud is never without a bootable image of that name for longer
than the delete takes, and a failed upload leaves the old image in place.

Errors carry the CLI's exit code (README, "Exit codes"): `UploadRefused` is bad input (2: an
image of that name is in the way, a protected image, a visibility the cloud does not allow this
user); `UploadFailed` is infrastructure (3: the upload or a check after it failed).

It lives with the cloud layer because it talks to a cloud through openstacksdk; the guest layer
only builds images and knows nothing of clouds.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openstack import exceptions

from novamig import __version__
from novamig.guest.full import CloudImage

#: Default image name: the name scenarios use (``fleet.image: novamig-full``).
DEFAULT_NAME = "novamig-full"
#: The mark on every image novamig uploads (``novamig cleanup`` style: find what novamig made).
TAG = "novamig"
DIGEST_PROPERTY = "novamig_image_digest"
VERSION_PROPERTY = "novamig_version"
VISIBILITIES = ("private", "shared", "community", "public")
#: Hashing and progress granularity; also the read size the HTTP client gets from the file.
_CHUNK = 1 << 20

#: (bytes sent, total bytes) after each chunk the HTTP client reads.
UploadProgress = Callable[[int, int], None]


class UploadError(Exception):
    """An upload that did not happen; ``exit_code`` is the CLI contract's."""

    exit_code = 3


class UploadRefused(UploadError):
    """Bad input (exit 2): the user must change an argument (``--replace``, ``--name``, ...)."""

    exit_code = 2


class UploadFailed(UploadError):
    """Infrastructure (exit 3): the cloud failed the upload, or the result did not check out."""


@dataclass(frozen=True)
class UploadSource:
    """A disk image file and what to say about it in Glance."""

    path: Path
    digest: str
    properties: dict[str, str] = field(default_factory=dict)
    disk_format: str = "qcow2"
    container_format: str = "bare"
    min_ram_mb: int = 0


@dataclass(frozen=True)
class UploadResult:
    image_id: str
    #: "uploaded" (new), "already uploaded" (left alone), "replaced" (new one, old deleted)
    action: str
    size: int
    replaced: tuple[str, ...] = ()
    seconds: float = 0.0


def source_from_cloud_image(image: CloudImage) -> UploadSource:
    """The upload of the full guest's Glance form, with properties that say what it is.

    ``hw_rng_model=virtio`` and ``hw_qemu_guest_agent=yes`` change what Nova gives the guest (a
    virtio-rng device; a guest-agent channel that Nova then trusts for quiesced snapshots), so
    they are set only when the build's manifest shows the guest can use them: the ``virtio_rng``
    module, the ``qemu-guest-agent`` package. Today's build has neither, so neither is set.
    """
    manifest = _manifest(image.disk.parent / "manifest.json")
    modules = {str(m) for m in manifest.get("modules") or []}
    packages = set(str((manifest.get("inputs") or {}).get("packages", "")).split())
    props = dict(image.properties)
    props.update(
        {
            VERSION_PROPERTY: __version__,
            DIGEST_PROPERTY: str(image.digest),
            "novamig_guest": "full",
            "novamig_form": "cloud-init qcow2",
            "novamig_web_port": str(image.web_port),
            "novamig_locust_version": str(image.locust_version),
            "novamig_kernel_version": str(image.kernel_version),
            "architecture": "x86_64",
        }
    )
    if "virtio_rng" in modules:
        props["hw_rng_model"] = "virtio"
    if "qemu-guest-agent" in packages:
        props["hw_qemu_guest_agent"] = "yes"
    return UploadSource(path=image.disk, digest=str(image.digest), properties=props)


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_hashes(path: Path) -> tuple[str, str]:
    """(MD5, SHA-256) of a file: MD5 is what Glance reports as ``checksum``, SHA-256 what
    openstacksdk records as ``owner_specified.openstack.sha256``."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


class ProgressReader(io.RawIOBase):
    """A read-only file that reports each read: what the HTTP client sends is what is counted.

    Seekable, so openstacksdk and requests size it (``Content-Length``) without reading it.
    """

    def __init__(self, path: Path, progress: UploadProgress | None) -> None:
        super().__init__()
        self._fh = path.open("rb")
        self.total = path.stat().st_size
        self._progress = progress

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        if n and self._progress is not None:
            self._progress(self._fh.tell(), self.total)
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _prop(image: Any, key: str) -> Any:
    """An extra property of an openstacksdk Image (kept in ``properties``), or None."""
    props = getattr(image, "properties", None) or {}
    return props.get(key) if key in props else getattr(image, key, None)


def _describe(image: Any) -> str:
    digest = _prop(image, DIGEST_PROPERTY)
    what = f"digest {digest}" if digest else "not uploaded by novamig"
    return f"{image.id} ({what}, status {image.status})"


def check_name(conn: Any, name: str, *, replace: bool) -> None:
    """Refuse early (before a build of minutes) what no build could change: an image of that name
    that novamig did not upload (it carries no digest, so it can never match) without ``replace``,
    or a protected one with it. `upload_image` makes the full decision once the digest is known.
    """
    try:
        existing = list(conn.image.images(name=name))
    except exceptions.SDKException as exc:
        raise UploadFailed(f"cannot list images named {name!r}: {_short(exc)}") from None
    foreign = [i for i in existing if not _prop(i, DIGEST_PROPERTY)]
    if foreign and not replace:
        raise UploadRefused(
            f"image {name!r} already exists: {', '.join(_describe(i) for i in foreign)}. Add --replace "
            "to upload novamig's image and delete it, or choose another --name"
        )
    protected = [i for i in foreign if getattr(i, "is_protected", False)]
    if protected and replace:
        raise UploadRefused(_protected_message(name, protected))


def _protected_message(name: str, protected: list[Any]) -> str:
    ids = ", ".join(str(i.id) for i in protected)
    return (
        f"image {name!r} cannot be replaced: {ids} is protected (the cloud refuses to delete it); "
        "choose another --name"
    )


def upload_image(
    conn: Any,
    source: UploadSource,
    *,
    name: str = DEFAULT_NAME,
    visibility: str = "private",
    replace: bool = False,
    progress: UploadProgress | None = None,
    say: Callable[[str], None] | None = None,
) -> UploadResult:
    """Upload ``source`` as image ``name`` through ``conn`` (an openstacksdk Connection).

    Every HTTP call is bounded by the connection's ``api_timeout`` (``novamig.cloud.connection``).
    Raises `UploadRefused` (exit 2) or `UploadFailed` (exit 3); returns what was done.
    """
    tell = say or (lambda _msg: None)
    if visibility not in VISIBILITIES:
        raise UploadRefused(f"visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}")
    if not source.path.is_file():
        raise UploadFailed(f"image file {source.path} does not exist")
    t0 = time.monotonic()
    try:
        existing = list(conn.image.images(name=name))
    except exceptions.SDKException as exc:
        raise UploadFailed(f"cannot list images named {name!r}: {_short(exc)}") from None
    there = _already_there(existing, source, name, replace=replace)
    if there is not None:
        return there

    tell(f"hashing {source.path}")
    md5, sha256 = file_hashes(source.path)
    reader = ProgressReader(source.path, progress)
    size = reader.total
    tell(f"uploading {size} bytes as {name!r} ({source.disk_format}/{source.container_format}, {visibility})")
    new_id = _create(
        conn, source, reader, name=name, visibility=visibility, hashes=(md5, sha256), existing=existing
    )
    _check_uploaded(conn, new_id, size, md5)
    replaced = _delete_replaced(conn, existing, name, new_id)
    action = "replaced" if replaced else "uploaded"
    return UploadResult(new_id, action, size, tuple(replaced), round(time.monotonic() - t0, 1))


def _already_there(
    existing: list[Any], source: UploadSource, name: str, *, replace: bool
) -> UploadResult | None:
    """The result when this build is already active under `name`; refuses what must not be replaced."""
    for image in existing:
        if _prop(image, DIGEST_PROPERTY) == source.digest and image.status == "active":
            return UploadResult(str(image.id), "already uploaded", int(image.size or 0))
    if existing and not replace:
        raise UploadRefused(
            f"image {name!r} already exists: {', '.join(_describe(i) for i in existing)}; this build is "
            f"digest {source.digest}. Add --replace to upload it and delete the old one, or choose "
            "another --name"
        )
    protected = [i for i in existing if getattr(i, "is_protected", False)]
    if protected:
        raise UploadRefused(_protected_message(name, protected))
    return None


def _create(
    conn: Any,
    source: UploadSource,
    reader: ProgressReader,
    *,
    name: str,
    visibility: str,
    hashes: tuple[str, str],
    existing: list[Any],
) -> str:
    """Send the image; its new id. Ctrl-C mid-upload removes the half-uploaded image."""
    md5, sha256 = hashes
    before = {str(i.id) for i in existing}
    try:
        image = conn.image.create_image(
            name,
            data=reader,
            size=reader.total,
            md5=md5,
            sha256=sha256,
            disk_format=source.disk_format,
            container_format=source.container_format,
            tags=[TAG],
            visibility=visibility,
            min_ram=source.min_ram_mb,
            allow_duplicates=True,  # idempotency is decided before, by digest
            **source.properties,
        )
    except exceptions.ForbiddenException as exc:
        hint = " (making an image public needs the admin role)" if visibility == "public" else ""
        raise UploadRefused(f"the cloud refused the image{hint}: {_short(exc)}") from None
    except exceptions.SDKException as exc:
        raise UploadFailed(f"upload of {name!r} failed: {_short(exc)}") from None
    except KeyboardInterrupt:
        _remove_partial(conn, name, source.digest, before)
        raise
    finally:
        reader.close()
    return str(image.id)


def _delete_replaced(conn: Any, existing: list[Any], name: str, new_id: str) -> list[str]:
    """Delete the images the new one replaces (only once it checked out); their ids."""
    replaced: list[str] = []
    failures: list[str] = []
    for old in existing:
        try:
            conn.image.delete_image(old.id, ignore_missing=True)
            replaced.append(str(old.id))
        except exceptions.SDKException as exc:
            failures.append(f"{old.id}: {_short(exc)}")
    if failures:
        raise UploadFailed(
            f"uploaded {name!r} as {new_id}, but could not delete the image(s) it replaces: "
            + "; ".join(failures)
        )
    return replaced


def _check_uploaded(conn: Any, image_id: str, size: int, md5: str) -> None:
    """The cloud has all the bytes, unchanged; else the new image is deleted and UploadFailed."""
    try:
        image = conn.image.get_image(image_id)
    except exceptions.SDKException as exc:
        raise UploadFailed(f"uploaded image {image_id} cannot be read back: {_short(exc)}") from None
    problems = []
    if image.status != "active":
        problems.append(f"status {image.status}, not active")
    if image.size is not None and int(image.size) != size:
        problems.append(f"size {image.size}, sent {size}")
    if image.checksum and image.checksum != md5:
        problems.append(f"checksum {image.checksum}, sent {md5}")
    if problems:
        try:
            conn.image.delete_image(image_id, ignore_missing=True)
        except exceptions.SDKException:
            problems.append("and it could not be deleted")
        raise UploadFailed(f"uploaded image {image_id} is wrong: {'; '.join(problems)}")


def _remove_partial(conn: Any, name: str, digest: str, before: set[str]) -> None:
    """After Ctrl-C mid-upload: delete the half-uploaded image this call created (best effort)."""
    try:
        for image in conn.image.images(name=name):
            ours = str(image.id) not in before and _prop(image, DIGEST_PROPERTY) == digest
            if ours and image.status != "active":
                conn.image.delete_image(image.id, ignore_missing=True)
    except Exception:  # interrupted already: the interruption is what the user must see
        pass


def _short(exc: BaseException) -> str:
    """One line of an openstacksdk error; never a request body (which could carry a token)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def format_progress(sent: int, total: int, elapsed_s: float) -> str:
    mib = 1024 * 1024
    rate = sent / mib / elapsed_s if elapsed_s > 0 else 0.0
    pct = 100.0 * sent / total if total else 100.0
    return f"upload: {sent / mib:.1f} / {total / mib:.1f} MiB ({pct:3.0f} %), {rate:.1f} MiB/s"
