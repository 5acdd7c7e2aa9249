# User-data from QEMU fw_cfg: one copy for both guest images. The image build puts this file in
# place of the line "#@include user-data.sh" in each image's init (novamig.guest.build.init_script),
# so the init inside a guest is one self-contained script.
#
# On the embedded cloud the server's user-data reaches the guest through QEMU's fw_cfg (no metadata
# service): copy it to /run/novamig/user-data and, if it is a script, run it now, before the agent
# starts, so that the settings it writes (/run/novamig/agent.conf, see novamig.workload.userdata)
# are in effect from the agent's start. Bounded: a user-data script that hangs must not keep the
# guest from ever starting its agent. Needs say() and BB (busybox's path, or empty when busybox's
# applets are on PATH).
USER_DATA_FW=/sys/firmware/qemu_fw_cfg/by_name/opt/org.novamig/user-data/raw
USER_DATA_TIMEOUT_S=30
run_fw_cfg_user_data() {
    $BB mkdir -p /run/novamig
    if [ ! -r "$USER_DATA_FW" ]; then
        say "user-data: none (no fw_cfg opt/org.novamig/user-data)"
        return 0
    fi
    if ! $BB cat "$USER_DATA_FW" > /run/novamig/user-data; then
        say "user-data: could not read $USER_DATA_FW"
        return 0
    fi
    size=$($BB wc -c < /run/novamig/user-data)
    if [ "$($BB head -c 2 /run/novamig/user-data)" != "#!" ]; then
        say "user-data: $size bytes, not a script (no #!): kept in /run/novamig/user-data, not run"
        return 0
    fi
    $BB chmod 0700 /run/novamig/user-data
    say "user-data: running /run/novamig/user-data ($size bytes, at most $USER_DATA_TIMEOUT_S s)"
    $BB timeout "$USER_DATA_TIMEOUT_S" /run/novamig/user-data < /dev/null
    rc=$?
    if [ "$rc" = 0 ]; then
        say "user-data: done"
    else
        say "user-data: exited with status $rc (143: ended after $USER_DATA_TIMEOUT_S s)"
    fi
}
