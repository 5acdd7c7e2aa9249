#!/bin/sh
# novamig full guest: PID 1 on the root filesystem (no systemd).
#
# Why a script: under TCG every second of boot is paid by every test and every migration case,
# and this guest needs exactly four things: its drivers, an address, the novamig agent and the web
# application Locust loads. systemd would add seconds and a second idea of what is running.
#
# It works in both forms of the full image: started by the stage-1 initramfs after switch_root
# (root disk, /proc /sys /dev already mounted, drivers loaded) or as /init of an initramfs that is
# the whole root filesystem (then it mounts and loads everything itself).
#
# Kernel command line (all optional): novamig.ip=ADDR/PREFIX novamig.gw=ADDR novamig.if=IFNAME
# novamig.web_port=PORT (default 8080; the agent serves port 80) novamig.web_mem_mib=MIB (the web
# application's /memory buffer, default 32), novamig.dhcp=1 (no novamig.ip: DHCP on the first
# NIC) and novamig.cloud_init=1 (run cloud-init's stages; both set by the Glance form's boot
# loader), plus the agent's own novamig.* keys (docs/guest-agent.md). User-data: QEMU fw_cfg file
# opt/org.novamig/user-data, run before the agent starts (embedded form; below).

BB=/usr/local/lib/novamig/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

say() { echo "novamig-init: $*"; }

# (busybox-static has no `mountpoint` applet: ask /proc/mounts)
[ -e /proc/mounts ] || $BB mount -t proc proc /proc
mounted() { $BB grep -q "^[^ ]* $1 " /proc/mounts; }
mounted /sys || $BB mount -t sysfs sysfs /sys
mounted /dev || $BB mount -t devtmpfs devtmpfs /dev
$BB mkdir -p /dev/pts /dev/shm
mounted /dev/pts || $BB mount -t devpts devpts /dev/pts
# writable places, whether the root filesystem is read-only (a shared base disk) or not
for d in /run /tmp /var/tmp; do
    mounted "$d" || $BB mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"
done
# Locust wants many sockets; the limit is inherited by the web application and its Locust runs
ulimit -n 65536 2>/dev/null || ulimit -n 10000 2>/dev/null
$BB mkdir -p /run/novamig

# Drivers: what the kernel and the stage-1 initramfs have not loaded yet (one name a line; the
# image build writes the list in dependency order).
if [ -f /lib/modules/novamig/order ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        [ -d "/sys/module/$mod" ] && continue
        $BB insmod "/lib/modules/novamig/$mod.ko" 2>/dev/null || say "could not load module $mod"
    done < /lib/modules/novamig/order
fi

IP=""; GW=""; IFACE=""; WEB_PORT=8080; WEB_MEM=32; DHCP=0; CLOUD_INIT=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        novamig.ip=*) IP="${arg#novamig.ip=}" ;;
        novamig.gw=*) GW="${arg#novamig.gw=}" ;;
        novamig.if=*) IFACE="${arg#novamig.if=}" ;;
        novamig.web_port=*) WEB_PORT="${arg#novamig.web_port=}" ;;
        novamig.web_mem_mib=*) WEB_MEM="${arg#novamig.web_mem_mib=}" ;;
        novamig.dhcp=*) DHCP="${arg#novamig.dhcp=}" ;;
        novamig.cloud_init=*) CLOUD_INIT="${arg#novamig.cloud_init=}" ;;
    esac
done

$BB hostname "$(cat /etc/hostname 2>/dev/null || echo novamig-guest)"
$BB ip link set lo up
if [ -z "$IFACE" ]; then
    for n in /sys/class/net/*; do
        n="${n##*/}"
        [ "$n" = lo ] && continue
        IFACE="$n"
        break
    done
fi
if [ -z "$IP" ] && [ "$DHCP" = 1 ]; then
    if [ -z "$IFACE" ]; then
        say "novamig.dhcp=1 given but the guest has no network interface"
    else
        $BB ip link set "$IFACE" up
        # one lease, then exit: the address stays configured for the guest's (short) life
        $BB udhcpc -i "$IFACE" -s /usr/local/lib/novamig/udhcpc.sh -q -n -t 20 -T 2 -A 5 \
            || say "no DHCP lease on $IFACE"
        IP="dhcp"
    fi
elif [ -n "$IP" ]; then
    if [ -z "$IFACE" ]; then
        say "novamig.ip=$IP given but the guest has no network interface"
    else
        $BB ip addr add "$IP" dev "$IFACE" || say "could not set $IP on $IFACE"
        $BB ip link set "$IFACE" up || say "could not bring $IFACE up"
        if [ -n "$GW" ]; then
            $BB ip route add default via "$GW" || say "could not add default route via $GW"
        fi
    fi
fi

# User-data. The embedded form gets the server's user-data through QEMU's fw_cfg and runs it
# before the agent starts (the function comes from novamig/guest/agent/user-data.sh, inlined here
# by the build). The Glance form (novamig.cloud_init=1) leaves user-data to cloud-init, which gets
# it from the metadata service or config drive and runs it after boot (the script then restarts
# the running agent).
#@include user-data.sh
if [ "$CLOUD_INIT" = 1 ]; then
    say "user-data: left to cloud-init"
else
    run_fw_cfg_user_data
fi

say "up: kernel $(uname -r), ip=${IP:-none} dev=${IFACE:-none}; starting the agent and the web application"

# Each service in its own restart loop: PID 1 must never exit (that would panic the guest).
(
    while true; do
        /usr/local/bin/novamig-agent
        say "agent exited with status $?; restarting in 1 s"
        sleep 1
    done
) &
(
    cd /opt/novamig/lib || exit 1
    while true; do
        # -S: no site module (the app needs only the standard library; saves start-up time
        # under TCG); -B: never write bytecode (the root filesystem may be read-only)
        /usr/bin/python3 -S -B -m guest_web_app --port "$WEB_PORT" \
            --memory-mib "$WEB_MEM" > /dev/console 2>&1 < /dev/null
        say "web application exited with status $?; restarting in 1 s"
        sleep 1
    done
) &

# cloud-init without systemd: its four stages in order (the Glance form; cloud-init reads the
# config drive or the metadata service, then runs user-data). In the background: the agent and
# the web application do not wait for it. One Python process runs the four stages (each start of
# the cloud-init command costs seconds under TCG: cloud_init_stages.py says how many); every stage
# runs even if an earlier one reported an error, as under systemd.
if [ "$CLOUD_INIT" = 1 ] && [ -x /usr/bin/cloud-init ]; then
    (
        status=0
        /usr/bin/python3 /usr/local/lib/novamig/cloud_init_stages.py || status=$?
        say "cloud-init finished (last error status: $status)"
    ) > /dev/console 2>&1 < /dev/null &
fi

# Reap whatever is reparented to PID 1.
while true; do
    wait
    sleep 1
done
