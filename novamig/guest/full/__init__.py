"""The full guest image: a small Debian bookworm root filesystem with python3, Locust (from PyPI,
baked into a venv: guests have no internet), the novamig agent and the in-guest web application
Locust loads; booted with no systemd by a shell script as PID 1.

Form (``novamig image build full``, the embedded cloud's image): an ext4 root disk (made with
``mke2fs -d``, no loop device, converted to a compressed qcow2) plus a small stage-1 initramfs that
loads the virtio/ext4 modules and switches to the disk, plus the same uncompressed ``vmlinux`` as
the tiny image (PVH boot). Why this form rather than the whole root filesystem as an initramfs:
the guest then needs about 160 MiB of RAM instead of at least 448 MiB, a live migration sends only
the memory the guest uses (not 150 MB of unpacked initramfs: about half the migration time and a
third of the downtime under Locust load, see FACTS), one read-only base disk backs every guest and
both ends of every migration (the guest mounts it ``ro`` and keeps its writable state in tmpfs),
and the guest never sits in the window where its kernel unpacks a big initramfs (migrating in that
window crashed guests under QEMU 7.2/TCG).

Glance form (``--format qcow2``, ``build_cloud_image()``): the same root filesystem plus cloud-init
on a partitioned disk that boots by itself (syslinux), for DevStack and other OpenStack clouds.

Everything comes from Debian packages (mmdebstrap, from the mirror in the machine's own apt
sources) and from PyPI wheels fetched on the host with its own pip configuration. The result is
cached under ``cache_dir()/images/full-<digest>/`` (``full-cloud-<digest>/``) by a hash of its
inputs: the tiny image (kernel, modules, agent), the Debian suite and package list, the Locust
version, and the guest-side sources. A cached image is not rebuilt when the mirror publishes newer
package versions: pass ``force=True`` for that.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import lzma
import os
import platform
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from novamig.guest.build import (
    ImageBuildError,
    Progress,
    build_cpio,
    cached_build,
    fetch_deb,
    init_script,
    iter_deb_files,
    read_newc,
    remove_tree,
    resolve_debs,
    run_step,
)
from novamig.guest.image import BASE_APPEND, MODULE_ORDER, GuestImage, build_tiny_image
from novamig.guest.image import cache_dir as default_cache_dir

__all__ = [
    "CLOUD_MODULES",
    "CLOUD_PACKAGES",
    "DISK_MODULES",
    "GLANCE_PROPERTIES",
    "PACKAGES",
    "SUITE",
    "WEB_PORT",
    "CloudImage",
    "FullImage",
    "ImageBuildError",
    "build_cloud_image",
    "build_full_image",
    "debian_mirror",
    "find_cloud_image",
    "find_full_image",
]

#: Bump when the build procedure changes in a way the other inputs do not capture.
BUILD_SCRIPT_VERSION = "1"

SUITE = "bookworm"
#: The guest's Python: the wheels fetched on the host must fit it.
GUEST_PYTHON = (3, 11)
#: Debian packages on top of the minbase variant. python3-venv brings ensurepip for the venv.
PACKAGES: tuple[str, ...] = ("python3", "python3-venv")
#: Modules the root disk needs (after the tiny image's virtio/e1000 set), in load order.
#: ext4 needs crc32c_generic loaded explicitly: nothing requests it before the mount does.
DISK_MODULES: tuple[str, ...] = ("crc16", "crc32c_generic", "mbcache", "jbd2", "ext4", "virtio_blk")
#: The in-guest web application's port (the agent's own HTTP endpoint has port 80).
WEB_PORT = 8080
#: Root disk arguments for the stage-1 initramfs.
ROOT_APPEND = "root=/dev/vda rootfstype=ext4 ro"

#: The Glance form adds cloud-init (ConfigDrive and OpenStack metadata datasources).
CLOUD_PACKAGES: tuple[str, ...] = ("cloud-init",)
#: Modules the Glance form loads at boot for a config drive: CD-ROM on IDE/AHCI with iso9660, or
#: a vfat disk. In load order.
CLOUD_MODULES: tuple[str, ...] = (
    "scsi_common", "scsi_mod", "cdrom", "sr_mod", "libata", "libahci", "ahci", "ata_piix",
    "ata_generic", "isofs", "fat", "vfat", "nls_cp437", "nls_ascii", "nls_utf8",
)  # fmt: skip
#: Kernel command line of the Glance form (set in syslinux.cfg): its own root partition,
#: writable (each instance owns its disk), DHCP on the first NIC, cloud-init.
CLOUD_APPEND = (
    "console=tty0 console=ttyS0,115200n8 panic=-1 no_timer_check "
    "root=/dev/vda2 rootfstype=ext4 rw novamig.dhcp=1 novamig.cloud_init=1"
)
#: Image properties to upload the Glance form with.
GLANCE_PROPERTIES: dict[str, str] = {
    "hw_disk_bus": "virtio",
    "hw_vif_model": "virtio",
    "os_type": "linux",
    "os_distro": "debian",
    "os_version": "12",
}
#: cloud-init configuration of the Glance form: novamig's PID 1 configures the network (DHCP)
#: itself, so cloud-init must not try to render a network configuration (no renderer is installed).
#: The image has no SSH server and no locale data (C.UTF-8 is built into glibc): cloud-init
#: must neither generate host keys nor generate a locale.
CLOUD_INIT_CONFIG = """\
# novamig full guest (Glance form)
datasource_list: [ConfigDrive, OpenStack, None]
network: {config: disabled}
locale: C.UTF-8
ssh_genkeytypes: []
ssh_deletekeys: false
"""
BOOT_PART_MIB = 64
_SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"

VENV = "/opt/novamig/venv"
GUEST_LIB = "/opt/novamig/lib"
GUEST_LOCUSTFILES = "/opt/novamig/locustfiles"
AGENT_PATH = "/usr/local/bin/novamig-agent"
BUSYBOX_PATH = "/usr/local/lib/novamig/busybox"
HOSTNAME = "novamig-guest"

_MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/lintian/*",
)
#: Programs the build runs, and the Debian package that provides each.
_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "chroot": "coreutils",
    "gcc": "gcc",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
}
#: Programs only the Glance form needs.
_CLOUD_TOOLS = {
    "mkfs.vfat": "dosfstools",
    "syslinux": "syslinux",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    _SYSLINUX_MBR: "syslinux-common",
}
#: A clean environment for commands inside the chroot: nothing of the host's pip configuration
#: (local indexes, find-links paths) leaks into the guest's pip.
_CHROOT_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "PIP_CONFIG_FILE=/dev/null",
    "PIP_DISABLE_PIP_VERSION_CHECK=1",
    "PIP_NO_INPUT=1",
)


@dataclass(frozen=True)
class FullImage:
    """A bootable full guest.

    Boot it with ``-kernel kernel -initrd initrd -append append`` (PVH, like the tiny image; it
    fits ``novamig.hypervisor.machine.BootImage``) plus the root disk from ``drive_args()``.
    """

    kernel: Path
    initrd: Path
    disk: Path
    append: str
    kernel_version: str
    digest: str
    locust_version: str
    web_port: int = WEB_PORT
    #: Bytes: ``vmlinux``, ``initrd``, ``disk`` (qcow2 file), ``disk_virtual`` (ext4 size),
    #: ``rootfs`` (sum of the root filesystem's files).
    sizes: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    #: Seconds the build took (as recorded when it was built).
    build_seconds: float = field(default=0.0, compare=False)
    #: True when this call found the image in the cache and built nothing.
    cached: bool = field(default=False, compare=False)

    def command_line(self, **params: str | int | float) -> str:
        """``append`` plus ``novamig.<key>=<value>`` for each keyword, e.g.
        ``image.command_line(ip="10.77.0.2/24", gw="10.77.0.1", hb_hz=1000)``."""
        extra = [f"novamig.{key}={value}" for key, value in params.items()]
        for item in extra:
            if any(c.isspace() for c in item):
                raise ValueError(f"kernel argument must not contain whitespace: {item!r}")
        return " ".join([self.append, *extra])

    def drive_args(self, disk: Path | None = None, *, readonly: bool | None = None) -> tuple[str, ...]:
        """QEMU arguments attaching the root disk as virtio-blk (``/dev/vda``).

        Default: the shared base image, read-only, so that any number of guests and both QEMUs
        of a migration can open it at once. Pass an overlay from ``create_overlay()`` as ``disk``
        for a guest that must own its disk (then writable unless ``readonly=True``); the guest
        still mounts its root ``ro`` unless the kernel command line says ``rw``.
        """
        path = disk if disk is not None else self.disk
        ro = readonly if readonly is not None else disk is None
        drive = f"file={path},if=none,id=novamig-root,format=qcow2,cache=writeback,discard=unmap"
        if ro:
            drive += ",readonly=on"
        return ("-drive", drive, "-device", "virtio-blk-pci,drive=novamig-root")

    def create_overlay(self, path: Path) -> Path:
        """A qcow2 overlay at ``path`` backed by the base disk (copy-on-write, a few hundred KiB)."""
        run_step(
            "create a disk overlay (qemu-img create)",
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.disk), str(path)],
        )
        return path


@dataclass(frozen=True)
class CloudImage:
    """The full guest as a self-booting qcow2 for Glance (DevStack and other OpenStack clouds).

    Upload ``disk`` with ``disk_format=qcow2``, ``container_format=bare`` and ``properties``.
    The guest takes its address by DHCP on its first NIC, runs cloud-init (ConfigDrive or the
    metadata service), the novamig agent, and the web application on ``web_port``.
    """

    disk: Path
    kernel_version: str
    digest: str
    locust_version: str
    web_port: int = WEB_PORT
    properties: dict[str, str] = field(default_factory=lambda: dict(GLANCE_PROPERTIES), compare=False)
    sizes: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    build_seconds: float = field(default=0.0, compare=False)
    cached: bool = field(default=False, compare=False)


# ------------------------------------------------------------------------------------------------
# inputs


def debian_mirror(suite: str = SUITE, sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror URL from this machine's apt sources (deb822 ``*.sources`` files and
    one-line ``sources.list`` files), preferring an entry for ``suite`` with component ``main``.

    Why from the machine: the project must work behind whatever mirror or proxy the machine
    already uses, and must never hard-code a mirror host.
    """
    if sources is None:
        d = Path("/etc/apt/sources.list.d")
        sources = [Path("/etc/apt/sources.list")]
        with contextlib.suppress(OSError):
            sources += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    entries: list[tuple[str, list[str], list[str]]] = []  # uri, suites, components
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            entries += _parse_deb822(text)
        else:
            entries += _parse_one_line(text)
    candidates: list[tuple[int, str]] = []
    for uri, suites, components in entries:
        if "main" not in components or not uri.startswith(("http://", "https://", "file:/")):
            continue
        if suite in suites:
            candidates.append((0, uri))
        elif any(s.split("-")[0] == suite and not s.endswith("-security") for s in suites):
            candidates.append((1, uri))
    if not candidates:
        raise ImageBuildError(
            "find the Debian mirror",
            f"no apt source for suite {suite!r} with component 'main' in "
            f"{', '.join(str(p) for p in sources)}; add one (e.g. a deb822 file in /etc/apt/sources.list.d)",
        )
    return sorted(candidates)[0][1].rstrip("/")


def _parse_deb822(text: str) -> list[tuple[str, list[str], list[str]]]:
    out: list[tuple[str, list[str], list[str]]] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return out


def _parse_one_line(text: str) -> list[tuple[str, list[str], list[str]]]:
    out: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            out.append((words[1], [words[2]], words[3:]))
    return out


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
    tools = {**_TOOLS, **(_CLOUD_TOOLS if cloud else {})}
    missing = [
        f"{tool} (apt package {pkg})"
        for tool, pkg in tools.items()
        if (not Path(tool).is_file() if tool.startswith("/") else shutil.which(tool) is None)
    ]
    if missing:
        raise ImageBuildError("check build tools", "missing: " + ", ".join(missing))
    if not _MERGED_USR_HOOK.is_dir():
        raise ImageBuildError(
            "check build tools",
            f"mmdebstrap's merged-usr hook {_MERGED_USR_HOOK} is missing (without it usrmerge pulls in perl)",
        )
    if sys.version_info[:2] != GUEST_PYTHON or platform.machine() != "x86_64":
        raise ImageBuildError(
            "check the host Python",
            f"the guest's Locust wheels are built with this host's pip, which needs CPython "
            f"{GUEST_PYTHON[0]}.{GUEST_PYTHON[1]} on x86_64 (Debian {SUITE}'s python3); this is "
            f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}",
        )


# ------------------------------------------------------------------------------------------------
# the build


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
    ``_TOOLS``. Raises ImageBuildError naming the failing step (and package or command, with the
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
        return _Build(
            tmp=tmp, final=final, root=root, digest=digest, inputs=inputs, tiny_kernel=tiny.kernel,
            tiny_initrd=tiny.initrd, kernel_version=tiny.kernel_version, locust_version=version,
            sources=sources, initrd_init=initrd_init, say=say, t_start=t_start, cloud=cloud,
            packages=packages,
        ).run()  # fmt: skip

    return cached_build(
        "full", final, lambda: _load_cached(final, digest), build, force=force, say=say,
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
        "dpkg_excludes": " ".join(_DPKG_EXCLUDES),
        "disk_modules": " ".join(DISK_MODULES),
        "cloud_modules": " ".join(CLOUD_MODULES) if cloud else "",
        "cloud_config": hashlib.sha256((CLOUD_INIT_CONFIG + _syslinux_cfg()).encode()).hexdigest()
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
    image = _load_cached(key.final, key.digest)
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
    image = _load_cached(key.final, key.digest)
    return image if isinstance(image, CloudImage) else None


def _load_cached(final: Path, digest: str) -> FullImage | CloudImage | None:
    try:
        meta = json.loads((final / "manifest.json").read_text())
        if meta.get("digest") != digest:
            return None
        disk = final / "disk.qcow2"
        kernel_version, locust_version = str(meta["kernel_version"]), str(meta["locust_version"])
        web_port, build_seconds = int(meta["web_port"]), float(meta.get("build_seconds", 0.0))
        sizes = {str(k): int(v) for k, v in meta["sizes"].items()}
        if meta.get("variant") == "cloud":
            if not disk.is_file():
                return None
            return CloudImage(
                disk=disk, kernel_version=kernel_version, digest=digest, locust_version=locust_version,
                web_port=web_port, properties={str(k): str(v) for k, v in meta["properties"].items()},
                sizes=sizes, build_seconds=build_seconds, cached=True,
            )  # fmt: skip
        kernel, initrd = final / "vmlinux", final / "initrd.img"
        if not (kernel.is_file() and initrd.is_file() and disk.is_file()):
            return None
        return FullImage(
            kernel=kernel, initrd=initrd, disk=disk, append=str(meta["append"]),
            kernel_version=kernel_version, digest=digest, locust_version=locust_version,
            web_port=web_port, sizes=sizes, build_seconds=build_seconds, cached=True,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class _Build:
    tmp: Path
    final: Path
    root: Path
    digest: str
    inputs: dict[str, str]
    tiny_kernel: Path
    tiny_initrd: Path
    kernel_version: str
    locust_version: str
    sources: dict[str, bytes]
    initrd_init: bytes
    say: Progress
    t_start: float
    cloud: bool
    packages: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    vmlinuz: bytes = b""

    @property
    def rootfs(self) -> Path:
        return self.tmp / "rootfs"

    @property
    def module_names(self) -> tuple[str, ...]:
        return (*MODULE_ORDER, *DISK_MODULES, *(CLOUD_MODULES if self.cloud else ()))

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 2)

    def run(self) -> FullImage | CloudImage:
        agent, busybox = self.tiny_binaries()
        modules = self.kernel_modules()
        wheels = self.locust_wheels()
        self.debootstrap()
        self.install_locust(wheels)
        self.install_novamig(agent, busybox, modules)
        packages = self.finish_rootfs()
        rootfs_bytes = _tree_bytes(self.rootfs)
        # the stage-1 initramfs needs only what mounts the root disk
        stage1 = [m for m in (*MODULE_ORDER, *DISK_MODULES) if m in modules]
        initrd = self.make_initrd(busybox, modules, stage1)
        sizes = {"initrd": len(initrd), "rootfs": rootfs_bytes}
        if self.cloud:
            sizes["disk_virtual"] = self.make_cloud_disk(rootfs_bytes)
            sizes["vmlinuz"] = len(self.vmlinuz)
            append = CLOUD_APPEND
        else:
            sizes["disk_virtual"] = self.make_disk(rootfs_bytes)
            self.link_kernel()
            sizes["vmlinux"] = (self.tmp / "vmlinux").stat().st_size
            append = f"{BASE_APPEND} {ROOT_APPEND}"
        remove_tree(self.rootfs)
        sizes["disk"] = (self.tmp / "disk.qcow2").stat().st_size

        build_seconds = round(time.monotonic() - self.t_start, 2)
        manifest = {
            "digest": self.digest,
            "variant": "cloud" if self.cloud else "embedded",
            "kernel_version": self.kernel_version,
            "append": append,
            "locust_version": self.locust_version,
            "web_port": WEB_PORT,
            "modules": [m for m in self.module_names if m in modules],
            "properties": GLANCE_PROPERTIES if self.cloud else {},
            "inputs": self.inputs,
            "sizes": sizes,
            "timings_s": self.timings,
            "packages": packages,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": build_seconds,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        f = self.final  # where cached_build() renames tmp to
        if self.cloud:
            return CloudImage(
                disk=f / "disk.qcow2", kernel_version=self.kernel_version, digest=self.digest,
                locust_version=self.locust_version, properties=dict(GLANCE_PROPERTIES), sizes=sizes,
                build_seconds=build_seconds,
            )  # fmt: skip
        return FullImage(
            kernel=f / "vmlinux", initrd=f / "initrd.img", disk=f / "disk.qcow2", append=append,
            kernel_version=self.kernel_version, digest=self.digest, locust_version=self.locust_version,
            sizes=sizes, build_seconds=build_seconds,
        )  # fmt: skip

    # -------------------------------------------------------------------------- steps

    def tiny_binaries(self) -> tuple[bytes, bytes]:
        """The agent and busybox exactly as the tiny image carries them (one agent binary)."""
        step = f"read the agent and busybox from the tiny image {self.tiny_initrd}"
        try:
            members = read_newc(self.tiny_initrd.read_bytes())
        except (OSError, ValueError) as e:
            raise ImageBuildError(step, str(e)) from e
        try:
            return members["bin/novamig-agent"][1], members["bin/busybox"][1]
        except KeyError as e:
            raise ImageBuildError(step, f"{e.args[0]} is not in the tiny initramfs") from e

    def kernel_modules(self) -> dict[str, bytes]:
        """The tiny image's module set plus the root disk's, from the same kernel package."""
        t0 = time.monotonic()
        package = f"linux-image-{self.kernel_version}"
        (deb,) = resolve_debs([package])
        path = fetch_deb(deb, self.root / "downloads", self.say)
        step = f"extract modules from {package}"
        self.say(f"extracting modules from {path.name}")
        wanted = set(self.module_names)
        modules: dict[str, bytes] = {}
        for member, tar in iter_deb_files(path, step):
            if self.cloud and member.isfile() and re.fullmatch(r"\.?/?boot/vmlinuz-.+", member.name):
                f = tar.extractfile(member)
                assert f is not None
                self.vmlinuz = f.read()
                continue
            m = re.fullmatch(r"\.?/?(?:usr/)?lib/modules/[^/]+/kernel/.*/([^/]+)\.ko(\.xz)?", member.name)
            if m and member.isfile() and m.group(1) in wanted:
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
                modules[m.group(1)] = lzma.decompress(data) if m.group(2) else data
        missing = [
            mod for mod in (*DISK_MODULES, *(CLOUD_MODULES if self.cloud else ())) if mod not in modules
        ]
        if self.cloud and not self.vmlinuz:
            missing.append("boot/vmlinuz-*")
        if missing:
            raise ImageBuildError(step, f"modules not found in {path.name}: {', '.join(missing)}")
        self._timed("modules", t0)
        return modules

    def locust_wheels(self) -> Path:
        """Locust and its dependencies as wheels, built or fetched by the host's pip (its index
        and certificate configuration apply), kept in the download cache for the next build."""
        t0 = time.monotonic()
        tag = f"cp{GUEST_PYTHON[0]}{GUEST_PYTHON[1]}"
        target = self.root / "downloads" / f"wheels-locust-{self.locust_version}-{tag}"
        if (target / ".complete").is_file():
            self.say(f"Locust wheels: cached {target}")
            return target
        self.say(f"fetching Locust {self.locust_version} and its dependencies as wheels (host pip)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".wheels-", dir=target.parent))
        try:
            run_step(
                f"fetch Python package locust=={self.locust_version} and its dependencies (pip wheel)",
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(staging),
                 f"locust=={self.locust_version}"],
                timeout=1200,
            )  # fmt: skip
            names = sorted(p.name for p in staging.glob("*.whl"))
            (staging / ".complete").write_text("".join(f"{n}\n" for n in names))
            if target.exists():
                remove_tree(target)
            os.rename(staging, target)
        finally:
            remove_tree(staging)
        self._timed("wheels", t0)
        return target

    def debootstrap(self) -> None:
        t0 = time.monotonic()
        mirror = debian_mirror()
        self.say(f"mmdebstrap {SUITE} (minbase + {', '.join(self.packages)}) from {mirror}")
        cmd = [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            f"--include={','.join(self.packages)}", f"--hook-dir={_MERGED_USR_HOOK}",
            *(f"--dpkgopt={opt}" for opt in _DPKG_EXCLUDES),
            "--aptopt=Acquire::Retries \"3\"",
            SUITE, str(self.rootfs), f"deb {mirror} {SUITE} main",
        ]  # fmt: skip
        step = f"create the Debian {SUITE} root filesystem (mmdebstrap; packages {', '.join(self.packages)})"
        run_step(step, cmd, timeout=1800)
        self._timed("mmdebstrap", t0)

    def chroot(self, step: str, *argv: str, timeout: float = 600) -> str:
        return run_step(step, ["env", "-i", *_CHROOT_ENV, "chroot", str(self.rootfs), *argv], timeout=timeout)

    def install_locust(self, wheels: Path) -> None:
        t0 = time.monotonic()
        self.say(f"installing Locust {self.locust_version} into {VENV} (offline, from the wheels)")
        inside = "/tmp/novamig-wheels"
        shutil.copytree(wheels, self.rootfs / inside.lstrip("/"))
        self.chroot(f"create the guest venv {VENV} (python3 -m venv)", "python3", "-m", "venv", VENV)
        pip = f"{VENV}/bin/pip"
        self.chroot(
            f"install Python package locust=={self.locust_version} into the guest venv (pip)",
            pip, "install", "--quiet", "--no-index", "--find-links", inside, f"locust=={self.locust_version}",
        )  # fmt: skip
        # pip and setuptools are not needed at run time (and no index is reachable from a guest)
        self.chroot("remove pip and setuptools from the guest venv", pip, "uninstall", "--quiet", "--yes",
                    "setuptools", "pip")  # fmt: skip
        site = next((self.rootfs / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
        for tests in sorted(site.glob("*/tests")) + sorted(site.glob("*/*/tests")):
            remove_tree(tests)
        remove_tree(self.rootfs / inside.lstrip("/"))
        step = "check Locust in the guest venv (locust --version)"
        out = self.chroot(step, f"{VENV}/bin/locust", "--version")
        if self.locust_version not in out:
            raise ImageBuildError(step, f"unexpected version output: {out.strip()}")
        self._timed("locust", t0)

    def install_novamig(self, agent: bytes, busybox: bytes, modules: dict[str, bytes]) -> None:
        rootfs = self.rootfs
        self.say("installing the agent, busybox, modules, init and the web application")

        def put(path: str, data: bytes, mode: int = 0o644) -> None:
            target = rootfs / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)

        put(AGENT_PATH, agent, 0o755)
        put(BUSYBOX_PATH, busybox, 0o755)
        for name, data in self.sources.items():
            put(name, data, 0o755 if name.endswith(".sh") or name.startswith("sbin/") else 0o644)
        order = [m for m in self.module_names if m in modules]
        for name in order:
            put(f"/lib/modules/novamig/{name}.ko", modules[name])
        put("/lib/modules/novamig/order", "".join(f"{m}\n" for m in order).encode())
        if self.cloud:
            put("/etc/cloud/cloud.cfg.d/90_novamig.cfg", CLOUD_INIT_CONFIG.encode())
        put("/etc/hostname", f"{HOSTNAME}\n".encode())
        put("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n".encode())
        # The whole root filesystem as an initramfs starts /init.
        with contextlib.suppress(FileNotFoundError):
            (rootfs / "init").unlink()
        (rootfs / "init").symlink_to("sbin/novamig-init")
        # Precompiled bytecode: Python imports under TCG are slow enough that compiling at first
        # start costs tens of seconds (the stdlib and the venv are compiled by dpkg and pip).
        self.chroot("precompile the web application and locustfiles (compileall)", "python3", "-m",
                    "compileall", "-q", GUEST_LIB, GUEST_LOCUSTFILES)  # fmt: skip

    def finish_rootfs(self) -> list[str]:
        """Record the package versions, then remove what a guest never reads."""
        out = self.chroot("list the guest's packages (dpkg-query)", "dpkg-query", "-W",
                          "-f=${Package} ${Version}\\n")  # fmt: skip
        packages = sorted(line for line in out.splitlines() if line.strip())
        rootfs = self.rootfs
        for pattern in ("var/cache/apt/*", "var/lib/apt/lists/*", "var/log/*", "tmp/*", "var/tmp/*",
                        "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "root/.cache"):  # fmt: skip
            for p in rootfs.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    remove_tree(p)
                else:
                    p.unlink(missing_ok=True)
        return packages

    def make_ext4(self, rootfs_bytes: int, raw: Path) -> int:
        """ext4 from the directory (``mke2fs -d``: no loop device, no mount), checked; returns
        its size."""
        t0 = time.monotonic()
        size_mib = ((rootfs_bytes * 5 // 4) >> 20) + 96
        self.say(f"making the ext4 root filesystem ({size_mib} MiB, mke2fs -d)")
        mke2fs = ["mke2fs", "-F", "-q", "-t", "ext4", "-L", "novamig-root", "-m", "0", "-i", "8192",
                  "-E", "root_owner=0:0", "-d", str(self.rootfs), str(raw), f"{size_mib}M"]  # fmt: skip
        run_step("make the ext4 root filesystem (mke2fs -d)", mke2fs, timeout=900)
        run_step("check the ext4 root filesystem (e2fsck -fn)", ["e2fsck", "-fn", str(raw)])
        self._timed("ext4", t0)
        return size_mib << 20

    def to_qcow2(self, raw: Path) -> None:
        t0 = time.monotonic()
        self.say("converting the disk to qcow2 (compressed)")
        qcow2 = self.tmp / "disk.qcow2"
        convert = ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)]
        run_step("convert the disk to qcow2 (qemu-img convert -c)", convert, timeout=900)
        raw.unlink()
        self._timed("qcow2", t0)

    def make_disk(self, rootfs_bytes: int) -> int:
        """The embedded cloud's root disk: the bare ext4 filesystem (no partition table: the
        kernel and initramfs come from outside), as a compressed qcow2."""
        raw = self.tmp / "disk.raw"
        size = self.make_ext4(rootfs_bytes, raw)
        self.to_qcow2(raw)
        return size

    def make_cloud_disk(self, rootfs_bytes: int) -> int:
        """MBR (syslinux) + FAT boot partition (syslinux, vmlinuz, initramfs) + ext4 root."""
        t0 = time.monotonic()
        root_raw = self.tmp / "root.raw"
        root_size = self.make_ext4(rootfs_bytes, root_raw)
        boot = self.tmp / "boot.img"
        self.say("making the boot partition (FAT, syslinux)")
        boot.unlink(missing_ok=True)
        mkfs = ["mkfs.vfat", "-F", "32", "-n", "NOVAMIGBOOT", "-C", str(boot), str(BOOT_PART_MIB * 1024)]
        run_step("make the boot partition (mkfs.vfat)", mkfs)
        run_step("install the boot loader (syslinux --install)", ["syslinux", "--install", str(boot)])
        staged = self.tmp / "boot"
        staged.mkdir()
        (staged / "vmlinuz").write_bytes(self.vmlinuz)
        (staged / "initrd.img").write_bytes((self.tmp / "initrd.img").read_bytes())
        (staged / "syslinux.cfg").write_text(_syslinux_cfg())
        run_step("copy the kernel and initramfs to the boot partition (mcopy)",
             ["mcopy", "-i", str(boot), *(str(staged / n) for n in ("vmlinuz", "initrd.img", "syslinux.cfg")),
              "::/"])  # fmt: skip
        remove_tree(staged)
        (self.tmp / "initrd.img").unlink()

        raw = self.tmp / "disk.raw"
        boot_start, root_start = 1 << 20, (1 + BOOT_PART_MIB) << 20
        total = root_start + root_size
        with raw.open("wb") as f:
            f.truncate(total)
        table = (
            "label: dos\n"
            f"start={boot_start // 512}, size={(BOOT_PART_MIB << 20) // 512}, type=c, bootable\n"
            f"start={root_start // 512}, type=83\n"
        )
        sfdisk = ["sfdisk", "--quiet", str(raw)]
        run_step("write the partition table (sfdisk)", sfdisk, timeout=120, stdin=table)
        mbr = Path(_SYSLINUX_MBR).read_bytes()[:440]
        with raw.open("r+b") as f:
            f.write(mbr)  # boot code only: the partition table after byte 440 stays
            for offset, part in ((boot_start, boot), (root_start, root_raw)):
                f.seek(offset)
                with part.open("rb") as src:
                    shutil.copyfileobj(src, f, 4 << 20)
        boot.unlink()
        root_raw.unlink()
        self._timed("cloud_disk", t0)
        self.to_qcow2(raw)
        return total

    def make_initrd(self, busybox: bytes, modules: dict[str, bytes], order: list[str]) -> bytes:
        """The stage-1 initramfs: busybox, the modules and a script that mounts the root disk."""
        cpio = build_cpio(
            dirs=["bin", "dev", "etc", "etc/novamig", "lib", "lib/modules", "newroot", "proc", "sys", "run"],
            files={
                "init": (self.initrd_init, 0o755),
                "bin/busybox": (busybox, 0o755),
                "etc/novamig/modules": ("".join(f"{m}\n" for m in order).encode(), 0o644),
                **{f"lib/modules/{m}.ko": (modules[m], 0o644) for m in order},
            },
            symlinks={"bin/sh": "busybox"},
            nodes={"dev/console": (stat.S_IFCHR, 5, 1), "dev/null": (stat.S_IFCHR, 1, 3)},
        )
        (self.tmp / "initrd.img").write_bytes(cpio)
        return cpio

    def link_kernel(self) -> None:
        """The tiny image's vmlinux (hard link: same kernel, no second copy on disk)."""
        target = self.tmp / "vmlinux"
        try:
            os.link(self.tiny_kernel, target)
        except OSError:
            shutil.copy2(self.tiny_kernel, target)


def _syslinux_cfg() -> str:
    return (
        "# novamig full guest (Glance form)\nDEFAULT novamig\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL novamig\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {CLOUD_APPEND}\n"
    )


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
