"""``novamig image build``, ``upload`` and ``prune``: the command-line face of the guest image
builders, of the upload to a cloud's Image service (``novamig.guest.upload``) and of the cache's
clean-up (``novamig.guest.prune``).

Kept apart from the builders so the CLI module stays thin and the builders stay free of printing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from novamig.exitcodes import ExitCode
from novamig.guest.image import ImageBuildError, build_tiny_image

# tiny: kernel + initramfs. full: without --format, the embedded cloud's form (kernel, module
# initramfs, read-only ext4 root as qcow2); with --format qcow2, the bootable cloud-init disk that
# goes into Glance on DevStack.
_FORMATS = {"tiny": ("initramfs",), "full": ("qcow2",)}


def cmd_image_build(kind: str, fmt: str | None, force: bool) -> int:
    """Build a guest image (cached), printing each step and the resulting paths.

    Exit status: 0 built or found in the cache; 2 bad input (unknown kind or format, or an image
    kind this version cannot build yet); 3 the build failed (the message names the step).
    """
    if kind not in _FORMATS:
        print(f"novamig image build: unknown image kind {kind!r} (choose: tiny, full)", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    if fmt is not None and fmt not in _FORMATS[kind]:
        allowed = ", ".join(_FORMATS[kind])
        print(
            f"novamig image build: format {fmt!r} is not available for the {kind} image (choose: {allowed})",
            file=sys.stderr,
        )
        return int(ExitCode.BAD_INPUT)
    t0 = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {message}", flush=True)

    try:
        if kind == "full":
            return _build_full(fmt, force, progress)
        image = build_tiny_image(force=force, progress=progress)
    except ImageBuildError as e:
        print(f"novamig image build: {e}", file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    print(f"image:          tiny ({'from cache' if image.cached else 'built'})")
    print(f"kernel:         {image.kernel}")
    print(f"initrd:         {image.initrd}")
    print(f"kernel version: {image.kernel_version}")
    print(f"append:         {image.append}")
    print(f"digest:         {image.digest}")
    return int(ExitCode.OK)


def _build_full(fmt: str | None, force: bool, progress: Callable[[str], None]) -> int:
    from novamig.guest.full import build_cloud_image, build_full_image

    if fmt == "qcow2":
        cloud = build_cloud_image(force=force, progress=progress)
        print(
            f"image:          full, cloud-init qcow2 for Glance ({'from cache' if cloud.cached else 'built'})"
        )
        print(f"disk:           {cloud.disk}")
        print("properties:     " + " ".join(f"{k}={v}" for k, v in sorted(cloud.properties.items())))
        print(f"locust:         {cloud.locust_version}")
        print(f"digest:         {cloud.digest}")
        return int(ExitCode.OK)
    full = build_full_image(force=force, progress=progress)
    print(f"image:          full ({'from cache' if full.cached else 'built'})")
    print(f"kernel:         {full.kernel}")
    print(f"initrd:         {full.initrd}")
    print(f"disk:           {full.disk}")
    print(f"append:         {full.append}")
    print(f"locust:         {full.locust_version}")
    print(f"digest:         {full.digest}")
    return int(ExitCode.OK)


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
    import os

    from novamig.cloud.connection import connect, known_clouds, resolve
    from novamig.cloud.errors import CloudError
    from novamig.guest.upload import DEFAULT_NAME, UploadError, check_name, upload_image

    def err(message: str) -> None:
        print(f"novamig image upload: {message}", file=sys.stderr)

    if kind == "tiny":
        err(
            "the tiny image has no Glance form: it is a kernel and an initramfs that only novamig's "
            "own hypervisor layer boots (the embedded cloud serves it as novamig-tiny); a cloud's "
            "Nova could not boot it. Upload the full image: novamig image upload full --cloud NAME"
        )
        return int(ExitCode.BAD_INPUT)
    if kind != "full":
        err(f"unknown image kind {kind!r} (choose: full)")
        return int(ExitCode.BAD_INPUT)
    cloud_name = cloud or os.environ.get("OS_CLOUD")
    try:
        if not cloud_name:
            names, _ = known_clouds()
            err(f"name a cloud with --cloud or OS_CLOUD; known clouds: {', '.join(names) or 'none'}")
            return int(ExitCode.BAD_INPUT)
        resolve(cloud_name)  # unknown name: exit 2 with the known names
    except CloudError as exc:
        err(str(exc))
        return exc.exit_code

    t0 = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {message}", file=sys.stderr, flush=True)

    from novamig.guest.full import build_cloud_image
    from novamig.guest.upload import source_from_cloud_image

    try:
        conn = connect(cloud_name)  # an unreachable cloud fails now, not after a build
    except CloudError as exc:
        err(str(exc))
        return exc.exit_code
    image_name = name or DEFAULT_NAME
    try:
        check_name(conn, image_name, replace=replace)  # what no build changes: refused before one
        try:
            image = build_cloud_image(force=force, progress=lambda m: progress(f"build: {m}"))
        except ImageBuildError as exc:
            err(f"building the full image (--format qcow2) failed: {exc}")
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
        err(str(exc))
        return exc.exit_code
    finally:
        conn.close()
    if result.action == "already uploaded":
        print(f"already uploaded: {result.image_id} (cloud {cloud_name}, digest {source.digest})")
    elif result.action == "replaced":
        old = ", ".join(result.replaced)
        print(f"replaced {old} with: {result.image_id} (cloud {cloud_name}, digest {source.digest})")
    else:
        print(f"uploaded: {result.image_id} (cloud {cloud_name}, digest {source.digest})")
    return int(ExitCode.OK)


def cmd_image_prune(keep: int, dry_run: bool) -> int:
    """Remove old builds from the image cache (``novamig.guest.prune``), saying what goes and what
    stays. Exit status: 0 done (also when there was nothing to remove); 2 a negative --keep."""
    from novamig.guest.build import lock_busy
    from novamig.guest.image import cache_dir
    from novamig.guest.prune import KINDS, prune

    if keep < 0:
        print(f"novamig image prune: --keep must be 0 or more, got {keep}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    images = cache_dir() / "images"
    if any(lock_busy(images / f".{kind}.lock") for kind in KINDS):
        print("novamig image prune: waiting for a running image build to finish", file=sys.stderr)
    outcome = prune(images, keep, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for image in outcome.removed:
        print(f"{verb}: {image.path} ({image.kind}, built {image.built_at or 'at an unknown time'}, "
              f"{image.size_bytes / 2**20:.0f} MiB)")  # fmt: skip
    for path in outcome.leftovers:
        print(f"{verb}: {path} (left by an interrupted build)")
    for image in outcome.in_use:
        print(f"kept, in use by a running process: {image.path}")
    for image in outcome.kept:
        print(f"kept: {image.path} ({image.kind}, newest {keep})")
    print(f"{verb} {len(outcome.removed)} image(s), {outcome.freed_bytes / 2**20:.0f} MiB, from {images}")
    return int(ExitCode.OK)


class _ByteProgress:
    """Bytes sent of the total, on stderr: at most every 2 s (and at the end), so a CI log stays
    short; a terminal gets the same lines."""

    def __init__(self, say: Callable[[str], None], every_s: float = 2.0) -> None:
        self._say = say
        self._every_s = every_s
        self._t0: float | None = None
        self._last = float("-inf")

    def __call__(self, sent: int, total: int) -> None:
        from novamig.guest.upload import format_progress

        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if sent >= total or now - self._last >= self._every_s:
            self._last = now
            self._say(format_progress(sent, total, now - self._t0))
