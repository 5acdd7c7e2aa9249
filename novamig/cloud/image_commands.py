"""``novamig image upload``: build the full guest's Glance form (cached) and upload it to a cloud.

It combines the guest layer (the build) with the cloud layer (the connection and the upload), so
it lives here, above both, rather than beside ``novamig image build`` in ``novamig.guest.commands``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from novamig.cloud.connection import connect, known_clouds, resolve
from novamig.cloud.errors import CloudError
from novamig.cloud.image_upload import (
    DEFAULT_NAME,
    UploadError,
    UploadResult,
    check_name,
    format_progress,
    source_from_cloud_image,
    upload_image,
)
from novamig.exitcodes import ExitCode
from novamig.guest.build import ImageBuildError
from novamig.guest.full import build_cloud_image

_TINY_HAS_NO_GLANCE_FORM = (
    "the tiny image has no Glance form: it is a kernel and an initramfs that only novamig's "
    "own hypervisor layer boots (the embedded cloud serves it as novamig-tiny); a cloud's "
    "Nova could not boot it. Upload the full image: novamig image upload full --cloud NAME"
)


def _err(message: str) -> None:
    print(f"novamig image upload: {message}", file=sys.stderr)


def cmd_image_upload(
    kind: str,
    cloud: str | None,
    *,
    name: str | None = None,
    visibility: str = "private",
    replace: bool = False,
    force: bool = False,
) -> int:
    """Upload the Glance form of a guest image to a cloud's Image service (built first, cached).

    The cloud is ``--cloud`` or else ``OS_CLOUD``; an upload is never aimed at a cloud by default.
    The cloud is checked (name, then authentication) before anything is built, so a typo or a
    cloud that is down costs no build. Progress (build steps, then bytes sent of the total) goes
    to stderr; stdout gets one result line.

    Exit status: 0 uploaded, replaced or already there; 2 bad input (the tiny image, which has no
    Glance form; unknown cloud, with the known names; an image of that name in the way without
    ``--replace``; a visibility the cloud refuses this user); 3 the build, the cloud or the upload
    failed.
    """
    if kind != "full":
        _err(_TINY_HAS_NO_GLANCE_FORM if kind == "tiny" else f"unknown image kind {kind!r} (choose: full)")
        return int(ExitCode.BAD_INPUT)
    cloud_name = cloud or os.environ.get("OS_CLOUD")
    try:
        if not cloud_name:
            names, _ = known_clouds()
            _err(f"name a cloud with --cloud or OS_CLOUD; known clouds: {', '.join(names) or 'none'}")
            return int(ExitCode.BAD_INPUT)
        resolve(cloud_name)  # unknown name: exit 2 with the known names
    except CloudError as exc:
        _err(str(exc))
        return exc.exit_code

    t0 = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        conn = connect(cloud_name)  # an unreachable cloud fails now, not after a build
    except CloudError as exc:
        _err(str(exc))
        return exc.exit_code
    try:
        return _build_and_upload(
            conn, cloud_name, name or DEFAULT_NAME, visibility=visibility, replace=replace, force=force,
            progress=progress,
        )  # fmt: skip
    finally:
        conn.close()


def _build_and_upload(
    conn: Any,
    cloud_name: str,
    image_name: str,
    *,
    visibility: str,
    replace: bool,
    force: bool,
    progress: Callable[[str], None],
) -> int:
    """Check the name, build (or find) the image, upload it and print the one result line."""
    try:
        check_name(conn, image_name, replace=replace)  # what no build changes: refused before one
        try:
            image = build_cloud_image(force=force, progress=lambda m: progress(f"build: {m}"))
        except ImageBuildError as exc:
            _err(f"building the full image (--format qcow2) failed: {exc}")
            return int(ExitCode.INFRASTRUCTURE)
        source = source_from_cloud_image(image)
        result = upload_image(
            conn,
            source,
            name=image_name,
            visibility=visibility,
            replace=replace,
            progress=_ByteProgress(progress),
            say=progress,
        )
    except UploadError as exc:
        _err(str(exc))
        return exc.exit_code
    print(_result_line(result, cloud_name, source.digest))
    return int(ExitCode.OK)


def _result_line(result: UploadResult, cloud_name: str, digest: str) -> str:
    where = f"(cloud {cloud_name}, digest {digest})"
    if result.action == "already uploaded":
        return f"already uploaded: {result.image_id} {where}"
    if result.action == "replaced":
        return f"replaced {', '.join(result.replaced)} with: {result.image_id} {where}"
    return f"uploaded: {result.image_id} {where}"


class _ByteProgress:
    """Bytes sent of the total, on stderr: at most every 2 s (and at the end), so a CI log stays
    short; a terminal gets the same lines."""

    def __init__(self, say: Callable[[str], None], every_s: float = 2.0) -> None:
        self._say = say
        self._every_s = every_s
        self._t0: float | None = None
        self._last = float("-inf")

    def __call__(self, sent: int, total: int) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if sent >= total or now - self._last >= self._every_s:
            self._last = now
            self._say(format_progress(sent, total, now - self._t0))
