"""``novamig image build``: the command-line face of the guest image builders.

Kept apart from the builders so the CLI module stays thin and the builders stay free of printing.
"""

from __future__ import annotations

import sys
import time

from novamig.exitcodes import ExitCode
from novamig.guest.image import ImageBuildError, build_tiny_image

_FORMATS = {"tiny": ("initramfs",), "full": ("qcow2", "initramfs")}


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
    if kind == "full":
        print(
            "novamig image build: the full image is not available yet in this version of novamig; "
            "build the tiny image with `novamig image build tiny`",
            file=sys.stderr,
        )
        return int(ExitCode.BAD_INPUT)

    t0 = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {message}", flush=True)

    try:
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
