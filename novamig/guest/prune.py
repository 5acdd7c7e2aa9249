"""``novamig image prune``: free the image cache of builds that are no longer used.

Why it is needed: every change to an image's inputs (a novamig upgrade, a new Debian kernel, a new
Locust) makes a new cache directory named by the new digest and leaves the old one behind — 70 MB
(tiny) to 140 MB (full) each. Nothing else ever removes them.

What is kept, per kind (``tiny``, ``full``, ``full-cloud``): the ``keep`` most recently built
images (by their manifest's ``built_at``), and any image whose files a running process has open (a
QEMU booted from it; read from ``/proc/*/fd``, so as root it sees every process). While it looks
and deletes it holds each kind's build lock, so it never races a build; leftovers of killed builds
(``.KIND-build-*``, ``.old-*``) go too, as no build is running then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from novamig.guest.build import locked, remove_tree

KINDS = ("tiny", "full", "full-cloud")


@dataclass(frozen=True)
class CachedImage:
    kind: str
    path: Path
    built_at: str  # ISO time from the manifest ("" when it has none: oldest)
    size_bytes: int


@dataclass
class PruneOutcome:
    removed: list[CachedImage] = field(default_factory=list)
    kept: list[CachedImage] = field(default_factory=list)
    in_use: list[CachedImage] = field(default_factory=list)  # would go, but a process has it open
    leftovers: list[Path] = field(default_factory=list)  # killed builds' directories

    @property
    def freed_bytes(self) -> int:
        return sum(i.size_bytes for i in self.removed)


def _kind_of(name: str) -> str | None:
    """``full-cloud-<digest>`` → ``full-cloud``; None for anything not a cached image."""
    stem, _, digest = name.rpartition("-")
    return stem if stem in KINDS and digest.isalnum() and len(digest) >= 8 else None


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def cached_images(images_dir: Path) -> list[CachedImage]:
    """Every complete image in the cache (a directory with a manifest), any kind."""
    out: list[CachedImage] = []
    if not images_dir.is_dir():
        return out
    for entry in sorted(images_dir.iterdir()):
        kind = _kind_of(entry.name)
        manifest = entry / "manifest.json"
        if kind is None or not entry.is_dir() or not manifest.is_file():
            continue
        try:
            built_at = str(json.loads(manifest.read_text()).get("built_at") or "")
        except (OSError, ValueError):
            built_at = ""
        out.append(CachedImage(kind, entry, built_at, _size(entry)))
    return out


def _open_files() -> Iterator[Path]:
    """Paths some process has open (those this process may read)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("/"):
                yield Path(target)


def _in_use(images: list[CachedImage]) -> set[Path]:
    roots = {i.path.resolve(): i.path for i in images}
    used: set[Path] = set()
    for path in _open_files():
        for parent in path.parents:
            if parent in roots:
                used.add(roots[parent])
                break
    return used


def prune(images_dir: Path, keep: int = 1, *, dry_run: bool = False) -> PruneOutcome:
    """Remove all but the `keep` newest images of each kind, sparing those in use."""
    if keep < 0:
        raise ValueError(f"keep must be ≥ 0, got {keep}")
    outcome = PruneOutcome()
    if not images_dir.is_dir():
        return outcome
    with ExitStack() as stack:
        for kind in KINDS:  # no build of any kind runs while we look and delete
            stack.enter_context(locked(images_dir / f".{kind}.lock"))
        images = cached_images(images_dir)
        used = _in_use(images)
        for kind in KINDS:
            of_kind = sorted((i for i in images if i.kind == kind), key=lambda i: i.built_at, reverse=True)
            outcome.kept += of_kind[:keep]
            for image in of_kind[keep:]:
                (outcome.in_use if image.path in used else outcome.removed).append(image)
        outcome.leftovers = sorted(
            p
            for p in images_dir.iterdir()
            if p.is_dir() and (p.name.startswith(".old-") or "-build-" in p.name)
        )
        if not dry_run:
            for image in outcome.removed:
                remove_tree(image.path)
            for path in outcome.leftovers:
                remove_tree(path)
    return outcome
