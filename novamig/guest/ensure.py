"""The novamig guest images a run's own embedded cloud boots, built before the cloud starts.

The embedded cloud registers ``novamig-full`` only when the full image is already in the image
cache at its start (building it takes minutes, never during start-up), so a first ``novamig run``
of a scenario with ``fleet.image: novamig-full`` used to fail preflight with "image 'novamig-full'
not found" and send the user to ``novamig image build full``. `build_missing_images` makes that
detour part of the run: it builds what is missing, with the builder's progress, and the cloud then
starts with the image registered. ``novamig-tiny`` is built too when absent (the cloud would
otherwise build it in the background, silently, while the first server waits).

Other clouds are never built for: their images come from ``novamig image upload`` (`image_hint`
names the command in the preflight error).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from novamig.guest.full import build_full_image, find_full_image
from novamig.guest.image import build_tiny_image

TINY, FULL = "novamig-tiny", "novamig-full"
"""The names the embedded cloud serves the two guest images under."""


def build_missing_images(images: Iterable[str], say: Callable[[str], None]) -> list[str]:
    """Build every novamig image in `images` that the cache lacks, saying what and each step
    (timed from the start); the names built, in order. Raises `ImageBuildError` naming the step
    that failed. Names that are not novamig's images are left to the cloud's preflight."""
    wanted = set(images)
    built: list[str] = []
    t0 = time.monotonic()

    def step(message: str) -> None:
        if not message.startswith("cache hit"):  # a found image is not news
            say(f"  [{time.monotonic() - t0:5.1f} s] {message}")

    if TINY in wanted or FULL in wanted:  # the full image is built on the tiny one
        tiny = build_tiny_image(progress=step)
        if not tiny.cached:
            built.append(TINY)
    if FULL in wanted and find_full_image() is None:
        say(f"image {FULL!r} is not in the image cache: building it now (minutes, once; root and network)")
        build_full_image(progress=step)
        built.append(FULL)
    return built


def image_hint(problem: str, cloud_name: str, *, embedded: bool) -> str | None:
    """The command that fixes a preflight problem about a missing novamig image (None: the problem
    is not one): uploading it to a named cloud; on an embedded cloud started earlier (``novamig
    cloud up``, which registers the images it finds when it starts), building it and restarting."""
    if f"image {FULL!r} not found" in problem:
        if embedded:  # its registered images are found once, at its start
            return "build it (novamig image build full), then restart the cloud (novamig cloud down, up)"
        return f"upload it: novamig image upload full --cloud {cloud_name}"
    if f"image {TINY!r} not found" in problem and not embedded:
        return (
            f"{TINY} exists only on the embedded cloud (a kernel and initramfs no other Nova boots): "
            f"use fleet.image: {FULL} after novamig image upload full --cloud {cloud_name}"
        )
    return None
