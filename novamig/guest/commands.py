"""``novamig image build``: the command-line face of the guest image builders.

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
