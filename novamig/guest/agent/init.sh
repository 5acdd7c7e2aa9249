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

# User-data. On the embedded cloud the server's user-data reaches the guest through QEMU's fw_cfg
# (no metadata service, no cloud-init in this image): copy it to /run/novamig/user-data and, if it
# is a script, run it now, before the agent starts, so that the settings it writes
# (/run/novamig/agent.conf, see novamig.workload.userdata) are in effect from the agent's start.
# Bounded: a user-data script that hangs must not keep the guest from ever starting its agent.
USER_DATA_FW=/sys/firmware/qemu_fw_cfg/by_name/opt/org.novamig/user-data/raw
USER_DATA_TIMEOUT_S=30
mkdir -p /run/novamig
if [ -r "$USER_DATA_FW" ]; then
    if cat "$USER_DATA_FW" > /run/novamig/user-data; then
        size=$(wc -c < /run/novamig/user-data)
        if [ "$(head -c 2 /run/novamig/user-data)" = "#!" ]; then
            chmod 0700 /run/novamig/user-data
            say "user-data: running /run/novamig/user-data ($size bytes, at most $USER_DATA_TIMEOUT_S s)"
            timeout "$USER_DATA_TIMEOUT_S" /run/novamig/user-data < /dev/null
            rc=$?
            if [ "$rc" = 0 ]; then
                say "user-data: done"
            else
                say "user-data: exited with status $rc (143: ended after $USER_DATA_TIMEOUT_S s)"
            fi
        else
            say "user-data: $size bytes, not a script (no #!): kept in /run/novamig/user-data, not run"
        fi
    else
        say "user-data: could not read $USER_DATA_FW"
    fi
else
    say "user-data: none (no fw_cfg opt/org.novamig/user-data)"
fi

say "up: kernel $(uname -r), ip=${IP:-none} dev=${IFACE:-none}; starting the agent"
# PID 1 never exits (that would panic the guest): keep the agent running.
while true; do
    /bin/novamig-agent
    say "agent exited with status $?; restarting in 1 s"
    sleep 1
done
