"""Building and finding the full guest's two variants: the embedded cloud's (``build_full_image``)
and Glance's (``build_cloud_image``), cached by a digest of every input.

The inputs are the tiny image (kernel, modules, agent), the fixed settings in `layout`, the
Locust version and the guest-side sources shipped with novamig; `variant_key` turns them into the
cache directory's name, so the finders (`find_full_image`, `find_cloud_image`) never build.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from novamig.guest.build import (
    ImageBuildError,
    Progress,
    cached_build,
    init_script,
)
from novamig.guest.full.images import CloudImage, FullImage, load_cached
from novamig.guest.full.layout import (
    BUILD_SCRIPT_VERSION,
    CLOUD_APPEND,
    CLOUD_INIT_CONFIG,
    CLOUD_INIT_STAGES,
    CLOUD_MODULES,
    CLOUD_PACKAGES,
    CLOUD_TOOLS,
    DISK_MODULES,
    DPKG_EXCLUDES,
    GUEST_LIB,
    GUEST_LOCUSTFILES,
    GUEST_PYTHON,
    MERGED_USR_HOOK,
    PACKAGES,
    ROOT_APPEND,
    SUITE,
    TOOLS,
)
from novamig.guest.full.rootfs import FullBuild, syslinux_cfg
from novamig.guest.image import BASE_APPEND, GuestImage, build_tiny_image
from novamig.guest.image import cache_dir as default_cache_dir


def _resource(package: str, name: str) -> bytes:
    return resources.files(package).joinpath(name).read_bytes()


def _guest_sources(cloud: bool = False) -> dict[str, bytes]:
    """Files the image carries from this package, by their path inside the guest."""
    files = {
        "sbin/novamig-init": init_script(_resource("novamig.guest.full", "init.sh")),
        "usr/local/lib/novamig/udhcpc.sh": _resource("novamig.guest.full", "udhcpc.sh"),
        f"{GUEST_LIB.lstrip('/')}/guest_web_app.py": _resource("novamig.workload", "guest_web_app.py"),
        # beside the web app, which loads it next to every locustfile (the per-request records)
        f"{GUEST_LIB.lstrip('/')}/locust_hook.py": _resource("novamig.workload", "locust_hook.py"),
    }
    locustfiles = resources.files("novamig.workload").joinpath("locustfiles")
    for entry in sorted(locustfiles.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py") and entry.is_file():
            files[f"{GUEST_LOCUSTFILES.lstrip('/')}/{entry.name}"] = entry.read_bytes()
    if cloud:
        # run by init.sh in place of four cloud-init commands (one interpreter start, not four)
        files[CLOUD_INIT_STAGES.lstrip("/")] = _resource("novamig.guest.full", "cloud_init_stages.py")
    return files


def _locust_version() -> str:
    """The Locust the runner side has: guest and runner then share one locustfile API."""
    try:
        return importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError as e:
        raise ImageBuildError(
            "find the Locust version", "locust is not installed on the host; pass locust_version="
        ) from e


def _check_host(cloud: bool = False) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            "check privileges", "building the full image needs root (mmdebstrap --mode=root, chroot)"
        )
    tools = {**TOOLS, **(CLOUD_TOOLS if cloud else {})}
    missing = [
        f"{tool} (apt package {pkg})"
        for tool, pkg in tools.items()
        if (not Path(tool).is_file() if tool.startswith("/") else shutil.which(tool) is None)
    ]
    if missing:
        raise ImageBuildError("check build tools", "missing: " + ", ".join(missing))
    if not MERGED_USR_HOOK.is_dir():
        raise ImageBuildError(
            "check build tools",
            f"mmdebstrap's merged-usr hook {MERGED_USR_HOOK} is missing (without it usrmerge pulls in perl)",
        )
    if sys.version_info[:2] != GUEST_PYTHON or platform.machine() != "x86_64":
        raise ImageBuildError(
            "check the host Python",
            f"the guest's Locust wheels are built with this host's pip, which needs CPython "
            f"{GUEST_PYTHON[0]}.{GUEST_PYTHON[1]} on x86_64 (Debian {SUITE}'s python3); this is "
            f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}",
        )


def build_full_image(
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    *,
    locust_version: str | None = None,
) -> FullImage:
    """Build (or find in the cache) the full guest image for the embedded cloud (the module
    docstring says why this form).

    ``locust_version`` defaults to the Locust installed next to novamig. Needs root, network
    access to the Debian mirror and to the host's Python package index, and the tools in
    ``TOOLS``. Raises ImageBuildError naming the failing step (and package or command, with the
    tail of its output). A second call with the same inputs returns the cached image at once.
    """
    image = _build_variant("embedded", cache_dir, force, progress, locust_version)
    assert isinstance(image, FullImage)
    return image


def build_cloud_image(
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    *,
    locust_version: str | None = None,
) -> CloudImage:
    """Build (or find in the cache) the full guest as a qcow2 for Glance (``--format qcow2``):
    the same root filesystem plus cloud-init, on a partitioned disk that boots by itself.

    Layout: an MBR with syslinux's boot code; partition 1 (FAT, 64 MiB, active) holds syslinux,
    Debian's ``vmlinuz`` and the stage-1 initramfs; partition 2 is the ext4 root (``/dev/vda2``).
    Everything is assembled in files (``mkfs.vfat``/``syslinux --install`` work through mtools,
    ``mke2fs -d`` fills the root): no loop device, no mount. At boot, PID 1 takes an address by
    DHCP on the first NIC and runs cloud-init's stages (ConfigDrive, then the OpenStack metadata
    service) without systemd. Upload with the properties in ``CloudImage.properties``.
    """
    image = _build_variant("cloud", cache_dir, force, progress, locust_version)
    assert isinstance(image, CloudImage)
    return image


def _build_variant(
    variant: str,
    cache_dir: Path | None,
    force: bool,
    progress: Progress | None,
    locust_version: str | None,
) -> FullImage | CloudImage:
    say: Progress = progress or (lambda _msg: None)
    root = cache_dir if cache_dir is not None else default_cache_dir()
    t_start = time.monotonic()
    cloud = variant == "cloud"

    say("tiny image (kernel, modules, agent)")
    tiny = build_tiny_image(cache_dir=root, progress=lambda m: say(f"tiny: {m}"))
    key = _variant_key(variant, root, tiny, locust_version)
    version, sources, initrd_init, packages = key.locust_version, key.sources, key.initrd_init, key.packages
    inputs, digest, final = key.inputs, key.digest, key.final

    def build(tmp: Path) -> FullImage | CloudImage:
        return FullBuild(
            tmp=tmp, final=final, root=root, digest=digest, inputs=inputs, tiny_kernel=tiny.kernel,
            tiny_initrd=tiny.initrd, kernel_version=tiny.kernel_version, locust_version=version,
            sources=sources, initrd_init=initrd_init, say=say, t_start=t_start, cloud=cloud,
            packages=packages,
        ).run()  # fmt: skip

    return cached_build(
        "full", final, lambda: load_cached(final, digest), build, force=force, say=say,
        t_start=t_start, check=lambda: _check_host(cloud),
    )  # fmt: skip


@dataclass(frozen=True)
class _VariantKey:
    """What identifies a variant's cache entry: its inputs, their digest and its directory."""

    locust_version: str
    sources: dict[str, bytes]
    initrd_init: bytes
    packages: tuple[str, ...]
    inputs: dict[str, str]
    digest: str
    final: Path


def _variant_key(variant: str, root: Path, tiny: GuestImage, locust_version: str | None) -> _VariantKey:
    cloud = variant == "cloud"
    version = locust_version or _locust_version()
    sources = _guest_sources(cloud)
    initrd_init = _resource("novamig.guest.full", "initrd-init.sh")
    packages = (*PACKAGES, *CLOUD_PACKAGES) if cloud else PACKAGES
    inputs = {
        "build_script_version": BUILD_SCRIPT_VERSION,
        "variant": variant,
        "tiny_digest": tiny.digest,
        "suite": SUITE,
        "packages": " ".join(packages),
        "dpkg_excludes": " ".join(DPKG_EXCLUDES),
        "disk_modules": " ".join(DISK_MODULES),
        "cloud_modules": " ".join(CLOUD_MODULES) if cloud else "",
        "cloud_config": hashlib.sha256((CLOUD_INIT_CONFIG + syslinux_cfg()).encode()).hexdigest()
        if cloud
        else "",
        "locust": version,
        "append": CLOUD_APPEND if cloud else f"{BASE_APPEND} {ROOT_APPEND}",
        "initrd_init": hashlib.sha256(initrd_init).hexdigest(),
        **{f"file:{name}": hashlib.sha256(data).hexdigest() for name, data in sources.items()},
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    final = root / "images" / (f"full-cloud-{digest}" if cloud else f"full-{digest}")
    return _VariantKey(version, sources, initrd_init, packages, inputs, digest, final)


def find_full_image(cache_dir: Path | None = None, *, tiny: GuestImage | None = None) -> FullImage | None:
    """The full image if it is already built in the cache (same inputs as ``build_full_image()``
    with the default Locust version), else None. Never builds the full image: for callers that
    must not wait minutes (the embedded cloud's start-up).

    ``tiny`` is the tiny image the full one is built on; by default it is looked up with
    ``build_tiny_image()`` (a cache hit in milliseconds), and only when the cache holds some full
    image at all.
    """
    root = cache_dir if cache_dir is not None else default_cache_dir()
    if not any((root / "images").glob("full-*/manifest.json")):
        return None
    try:
        if tiny is None:
            tiny = build_tiny_image(cache_dir=root)
        key = _variant_key("embedded", root, tiny, None)
    except ImageBuildError:
        return None
    image = load_cached(key.final, key.digest)
    return image if isinstance(image, FullImage) else None


def find_cloud_image(cache_dir: Path | None = None) -> CloudImage | None:
    """The Glance form (``--format qcow2``) if it is already in the cache, else None; never builds
    (``novamig image upload`` and tests that must not wait minutes)."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    if not any((root / "images").glob("full-cloud-*/manifest.json")):
        return None
    try:
        key = _variant_key("cloud", root, build_tiny_image(cache_dir=root), None)
    except ImageBuildError:
        return None
    image = load_cached(key.final, key.digest)
    return image if isinstance(image, CloudImage) else None
