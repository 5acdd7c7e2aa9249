#!/bin/sh
# novamig full guest, stage 1: the initramfs that mounts the root disk (busybox sh, PID 1).
#
# Why a stage 1 at all: Debian's kernel has virtio-blk and ext4 as modules, so something must load
# them before the root filesystem can be mounted. This does only that (no udev, no initramfs-tools:
# a few hundred milliseconds under TCG instead of seconds), then hands PID 1 to the root disk's
# /sbin/novamig-init with switch_root.
#
# Kernel command line: root=DEVICE (default /dev/vda) rootfstype=TYPE (default ext4), ro or rw
# (default ro: one base image can then back many guests and both ends of a migration).

/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "novamig-initrd: $*"; }
die() {
    say "$*"
    say "cannot continue: powering off"
    sleep 1
    poweroff -f
}

if [ -f /etc/novamig/modules ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        [ -d "/sys/module/$mod" ] && continue
        insmod "/lib/modules/$mod.ko" 2>/dev/null || say "could not load module $mod"
    done < /etc/novamig/modules
fi

ROOT=/dev/vda; FSTYPE=ext4; MODE=ro
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) ROOT="${arg#root=}" ;;
        rootfstype=*) FSTYPE="${arg#rootfstype=}" ;;
        ro) MODE=ro ;;
        rw) MODE=rw ;;
    esac
done

# the disk appears once virtio-blk has probed it: wait up to about 10 s
i=0
while [ ! -b "$ROOT" ]; do
    i=$((i + 1))
    [ "$i" -le 200 ] || die "root device $ROOT did not appear (is the disk attached as virtio-blk?)"
    sleep 0.05
done
mount -t "$FSTYPE" -o "$MODE" "$ROOT" /newroot || die "could not mount $ROOT ($FSTYPE, $MODE)"
[ -x /newroot/sbin/novamig-init ] || die "$ROOT has no /sbin/novamig-init: not a novamig full image"

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/novamig-init
