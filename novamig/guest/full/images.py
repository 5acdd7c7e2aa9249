"""The built full guest in its two forms, and reading one back from the image cache.

`FullImage` is the embedded cloud's form (PVH kernel, stage-1 initramfs, shared read-only root
disk); `CloudImage` is the self-booting qcow2 for Glance. A build writes ``manifest.json`` beside
the files; `load_cached` trusts a cache entry only when its manifest names the expected digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from novamig.guest.build import (
    run_step,
)
from novamig.guest.full.layout import (
    GLANCE_PROPERTIES,
    WEB_PORT,
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


def load_cached(final: Path, digest: str) -> FullImage | CloudImage | None:
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
