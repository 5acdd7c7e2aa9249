#!/bin/sh
# novamig tiny guest: PID 1 (busybox sh).
#
# Why a script and not systemd: the tiny guest exists to boot in a few seconds under TCG and to
# carry nothing but what the measurement needs: the virtio/e1000 drivers, an address, and the
# novamig agent (heartbeat, memory dirtier, integrity region, UDP echo, HTTP).
#
# Kernel command line (all optional): novamig.ip=ADDR/PREFIX novamig.gw=ADDR novamig.if=IFNAME
# plus the agent's own novamig.* keys (docs/guest-agent.md). User-data: QEMU fw_cfg file
# opt/org.novamig/user-data, run before the agent starts (below).

/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "novamig-init: $*"; }
BB=""  # busybox's applets are on PATH (user-data.sh prefixes its commands with $BB)

# Modules, in the order that works for virtio-net, virtio-serial and e1000 (one name a line; the
# image build writes the list, leaving out what the kernel has built in).
if [ -f /etc/novamig/modules ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        insmod "/lib/modules/$mod.ko" 2>/dev/null || say "could not load module $mod"
    done < /etc/novamig/modules
fi

IP=""; GW=""; IFACE=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        novamig.ip=*) IP="${arg#novamig.ip=}" ;;
        novamig.gw=*) GW="${arg#novamig.gw=}" ;;
        novamig.if=*) IFACE="${arg#novamig.if=}" ;;
    esac
done

ip link set lo up
if [ -n "$IP" ]; then
    if [ -z "$IFACE" ]; then
        for n in /sys/class/net/*; do
            n="${n##*/}"
            [ "$n" = lo ] && continue
            IFACE="$n"
            break
        done
    fi
    if [ -z "$IFACE" ]; then
        say "novamig.ip=$IP given but the guest has no network interface"
    else
        ip addr add "$IP" dev "$IFACE" || say "could not set $IP on $IFACE"
        ip link set "$IFACE" up || say "could not bring $IFACE up"
        if [ -n "$GW" ]; then
            ip route add default via "$GW" || say "could not add default route via $GW"
        fi
    fi
fi

# User-data from QEMU fw_cfg (no metadata service, no cloud-init in this image), run before the
# agent starts; the function comes from novamig/guest/agent/user-data.sh, inlined here by the build.
#@include user-data.sh
run_fw_cfg_user_data

say "up: kernel $(uname -r), ip=${IP:-none} dev=${IFACE:-none}; starting the agent"
# PID 1 never exits (that would panic the guest): keep the agent running.
while true; do
    /bin/novamig-agent
    say "agent exited with status $?; restarting in 1 s"
    sleep 1
done
