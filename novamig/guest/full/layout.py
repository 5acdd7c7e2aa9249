"""The full guest's fixed inputs: Debian suite and packages, kernel modules, guest paths, the
Glance form's boot and cloud-init settings, and the host tools a build needs.

Every value here is part of the image's cache key (`variants.variant_key`): changing one
rebuilds the image.
"""

from __future__ import annotations

from pathlib import Path

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
#: writable (each instance owns its disk), DHCP on the first NIC, cloud-init. The speed settings
#: are the embedded form's (`novamig.guest.image.BASE_APPEND`): a cloud's compute may run it under
#: TCG too (DevStack's nested jobs, the embedded cloud's libvirt mode), where the kernel's Spectre
#: mitigations (retpolines, RSB filling) slow every system call and switch of a test guest that
#: guards nothing.
CLOUD_APPEND = (
    "console=tty0 console=ttyS0,115200n8 panic=-1 mitigations=off no_timer_check tsc=reliable "
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
#: cloud-init configuration of the Glance form (``/etc/cloud/cloud.cfg.d/90_novamig.cfg``; its
#: module lists replace Debian's ``cloud.cfg`` ones). Why each part:
#:
#: - only the datasources Nova offers: a config drive (the embedded cloud's libvirt mode forces
#:   one), else the metadata service (DevStack's Neutron); no other datasource is probed;
#: - novamig's PID 1 configures the network (DHCP) itself, so cloud-init must not try to render a
#:   network configuration (no renderer is installed);
#: - only the modules a novamig guest can use. Measured under TCG (``cloud-init analyze``, idle
#:   2-core host) Debian's lists cost 4.5 s of module time, with ``grub_dpkg`` (0.56 s: the image
#:   boots by syslinux), ``locale`` (0.51 s: C.UTF-8 is built into glibc, no locale data is
#:   installed), ``users_groups`` (0.27 s) and ``apt_configure`` (0.13 s) the largest. Dropped:
#:   everything that needs software the image does not have (no SSH server or client, so no default
#:   user, authorized keys, host keys or passwords; no apt access from a guest, so no package
#:   updates; no snap, lxd, puppet, chef, salt, landscape, fan, NTP client, rsyslog, byobu,
#:   keyboard), ``growpart``/``resizefs``/``disk_setup``/``mounts`` (the guest writes only to tmpfs
#:   and never uses an ephemeral disk or swap), ``phone_home`` and ``power_state_change``. Kept:
#:   the random seed and hostname from the metadata, ``bootcmd``, ``write_files``, ``runcmd`` and
#:   the ``scripts_*`` modules (a shell-script user-data, novamig's among them, runs through
#:   ``scripts_user``), and the final message on the console.
CLOUD_INIT_CONFIG = """\
# novamig full guest (Glance form): see novamig/guest/full/layout.py for why each line
datasource_list: [ConfigDrive, OpenStack, None]
network: {config: disabled}
cloud_init_modules:
 - seed_random
 - bootcmd
 - write_files
 - set_hostname
 - update_hostname
 - update_etc_hosts
cloud_config_modules:
 - runcmd
cloud_final_modules:
 - write_files_deferred
 - scripts_vendor
 - scripts_per_once
 - scripts_per_boot
 - scripts_per_instance
 - scripts_user
 - final_message
"""
#: Where the Glance form carries `novamig.guest.full.cloud_init_stages` (init.sh runs it).
CLOUD_INIT_STAGES = "/usr/local/lib/novamig/cloud_init_stages.py"
BOOT_PART_MIB = 64
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"

VENV = "/opt/novamig/venv"
GUEST_LIB = "/opt/novamig/lib"
GUEST_LOCUSTFILES = "/opt/novamig/locustfiles"
AGENT_PATH = "/usr/local/bin/novamig-agent"
BUSYBOX_PATH = "/usr/local/lib/novamig/busybox"
HOSTNAME = "novamig-guest"

MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/lintian/*",
)
#: Programs the build runs, and the Debian package that provides each.
TOOLS = {
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
CLOUD_TOOLS = {
    "mkfs.vfat": "dosfstools",
    "syslinux": "syslinux",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    SYSLINUX_MBR: "syslinux-common",
}
#: A clean environment for commands inside the chroot: nothing of the host's pip configuration
#: (local indexes, find-links paths) leaks into the guest's pip.
CHROOT_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "PIP_CONFIG_FILE=/dev/null",
    "PIP_DISABLE_PIP_VERSION_CHECK=1",
    "PIP_NO_INPUT=1",
)
