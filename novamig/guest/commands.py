"""``novamig image build`` and ``prune``: the command-line face of the guest image builders and of
the cache's clean-up (``novamig.guest.prune``).

Kept apart from the builders so the CLI module stays thin and the builders stay free of printing.
``novamig image upload`` talks to a cloud, so it lives with the cloud layer
(``novamig.cloud.image_commands``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from novamig.exitcodes import ExitCode
from novamig.guest.build import lock_busy
from novamig.guest.full import build_cloud_image, build_full_image
from novamig.guest.image import ImageBuildError, build_tiny_image, cache_dir
from novamig.guest.prune import KINDS, prune

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


def cmd_image_prune(keep: int, dry_run: bool) -> int:
    """Remove old builds from the image cache (``novamig.guest.prune``), saying what goes and what
    stays. Exit status: 0 done (also when there was nothing to remove); 2 a negative --keep."""
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
