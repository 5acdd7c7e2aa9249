"""The full guest image: a small Debian bookworm root filesystem with python3, Locust (from PyPI,
baked into a venv: guests have no internet), the novamig agent and the in-guest web application
Locust loads; booted with no systemd by a shell script as PID 1.

Form (``novamig image build full``, the embedded cloud's image): an ext4 root disk (made with
``mke2fs -d``, no loop device, converted to a compressed qcow2) plus a small stage-1 initramfs that
loads the virtio/ext4 modules and switches to the disk, plus the same uncompressed ``vmlinux`` as
the tiny image (PVH boot). Why this form rather than the whole root filesystem as an initramfs:
the guest then needs about 160 MiB of RAM instead of at least 448 MiB, a live migration sends only
the memory the guest uses (not 150 MB of unpacked initramfs: about half the migration time and a
third of the downtime under Locust load, measured: 1.2 s and 20 ms against 2.4 s and 65-92 ms),
one read-only base disk backs every guest and both ends of every migration (the guest mounts it
``ro`` and keeps its writable state in tmpfs), and the guest never sits in the window where its
kernel unpacks a big initramfs (migrating in that window crashed guests under QEMU 7.2/TCG).

Glance form (``--format qcow2``, ``build_cloud_image()``): the same root filesystem plus cloud-init
on a partitioned disk that boots by itself (syslinux), for DevStack and other OpenStack clouds.

Everything comes from Debian packages (mmdebstrap, from the mirror in the machine's own apt
sources) and from PyPI wheels fetched on the host with its own pip configuration. The result is
cached under ``cache_dir()/images/full-<digest>/`` (``full-cloud-<digest>/``) by a hash of its
inputs: the tiny image (kernel, modules, agent), the Debian suite and package list, the Locust
version, and the guest-side sources. A cached image is not rebuilt when the mirror publishes newer
package versions: pass ``force=True`` for that.

Modules: `layout` (fixed inputs), `images` (the two forms), `mirror` (the Debian mirror),
`rootfs` (one build, step by step), `variants` (cache keys, build and lookup), and
`cloud_init_stages` (not used on the host: the Glance form's PID 1 runs it in the guest to run
cloud-init's four stages in one process). This package only re-exports their public names; none
of them imports the package itself.
"""

from __future__ import annotations

from novamig.guest.build import ImageBuildError
from novamig.guest.full.images import CloudImage, FullImage
from novamig.guest.full.layout import (
    CLOUD_MODULES,
    CLOUD_PACKAGES,
    DISK_MODULES,
    GLANCE_PROPERTIES,
    PACKAGES,
    SUITE,
    WEB_PORT,
)
from novamig.guest.full.mirror import debian_mirror
from novamig.guest.full.variants import build_cloud_image, build_full_image, find_cloud_image, find_full_image

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
