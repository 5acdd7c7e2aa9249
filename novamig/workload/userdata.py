"""The server's user-data: how a case's workload settings reach the guest agent.

Why user-data: it is the one channel every Nova cloud offers from the API into a guest, so the
same scenario loads a guest the same way on DevStack (cloud-init runs it on the Glance image) and
on the embedded cloud (novamig's own guest init reads it from QEMU's fw_cfg and runs it before the
agent starts). No agent command has to be sent after boot, so the load is on from the guest's first
second and survives an agent restart.

`render_user_data(setup)` returns a POSIX ``#!/bin/sh`` script that writes the agent's settings file
``/run/novamig/agent.conf``: whitespace-separated ``novamig.<key>=<value>`` tokens, the keys the
agent reads from the kernel command line (docs/guest-agent.md); the file's keys override the
command line. Every key is always written (zero meaning "off"), so the file alone says what the
case asked for, whatever the image's command line holds. When an agent is already running (on a
cloud-init guest user-data runs after boot) the script ends it; the guest's init restarts it after
1 s and the new agent reads the file.

The path prefix is ``$NOVAMIG_USERDATA_ROOT`` (empty in a guest): tests run the script against a
temporary directory with it.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from novamig.scenario.models import Measure, Workload


@dataclass(frozen=True)
class GuestSetup:
    """What of a case the guests are told at boot: all the user-data is made from. The runner
    fills it from its case plan (`CasePlan.guest_setup`); this package never sees the plan."""

    case_id: str
    workload: Workload = field(default_factory=Workload)
    measure: Measure = field(default_factory=Measure)
    memory_integrity: bool = False  # the SLA asks for it: the agent keeps an integrity region
    #: "ip:port" of a runner-side UDP heartbeat collector (`novamig.measure.heartbeat_udp`): the agent
    #: also sends every beat there (``novamig.hb_udp``). None: not written, beats stay on virtio-serial.
    heartbeat_udp: str | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_udp is not None:
            _check_ipv4_port(self.heartbeat_udp)


#: Size of the integrity region when the SLA asks for memory integrity, MiB. 16 MiB fits the
#: smallest flavor (m1.nano, 128 MiB: the tiny guest uses about 40 MiB and the agent keeps 24 MiB
#: free) next to a modest dirtier working set, is 4096 pages for a lost page to land in, and its
#: check takes about 25 ms under TCG, so checking after every migration costs little.
INTEGRITY_MIB = 16

#: Where the agent reads its settings and records its PID (docs/guest-agent.md).
CONF_PATH = "/run/novamig/agent.conf"
PID_PATH = "/run/novamig/agent.pid"
#: Environment variable that prefixes every path the script writes (tests only).
ROOT_ENV = "NOVAMIG_USERDATA_ROOT"


def agent_settings(setup: GuestSetup) -> dict[str, str]:
    """The agent's settings for this case, key (without ``novamig.``) → value, in a fixed order."""
    workload = setup.workload
    memory = workload.memory
    dirty = workload.kind == "memory" or (workload.kind == "locust" and memory.dirty_rate_mib_s > 0)
    rate = memory.dirty_rate_mib_s if dirty else 0
    settings = {
        "hb_hz": str(setup.measure.heartbeat_hz),
        "dirty_mib_s": f"{rate:g}",
        "wset_mib": str(memory.working_set_mib if rate > 0 else 0),
        "integrity_mib": str(INTEGRITY_MIB if setup.memory_integrity else 0),
    }
    # Written only when asked for (unlike the keys above): a case without it renders as before.
    if setup.heartbeat_udp is not None:
        settings["hb_udp"] = setup.heartbeat_udp
    return settings


def _check_ipv4_port(text: str) -> None:
    """`text` must be ``<dotted IPv4>:<port 1-65535>``, what the agent's ``novamig.hb_udp`` accepts."""
    host, sep, port = text.rpartition(":")
    try:
        ok = bool(sep) and port.isdigit() and 0 < int(port) <= 65535
        ok = ok and isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"heartbeat_udp must be <ipv4>:<port>, got {text!r}")


def render_user_data(setup: GuestSetup) -> str:
    """The user-data script for every server of the case (see the module docstring)."""
    settings = " ".join(f"novamig.{key}={value}" for key, value in agent_settings(setup).items())
    # Values are numbers and keys fixed names: nothing in `settings` needs shell quoting beyond
    # the single quotes below (asserted so that a future key cannot break the script).
    assert "'" not in settings
    return f"""#!/bin/sh
# novamig user-data (case {_comment(setup.case_id)}): settings of the novamig guest agent.
# Written by novamig.workload.userdata; format and keys: docs/guest-agent.md.
root="${{{ROOT_ENV}:-}}"
conf="$root{CONF_PATH}"
pidfile="$root{PID_PATH}"
settings='{settings}'
mkdir -p "${{conf%/*}}" || exit 1
# write then rename: an agent starting meanwhile reads the old file or the new one, never half
printf '%s\\n' "$settings" > "$conf.tmp.$$" && mv -f "$conf.tmp.$$" "$conf" || exit 1
echo "novamig-userdata: wrote $conf: $settings"
# An agent already running (cloud-init runs user-data after boot) is ended; the guest's init
# restarts it after 1 s and the new one reads the file. Only a process that is the agent is signalled.
pid=""
[ -r "$pidfile" ] && read -r pid < "$pidfile"
case "$pid" in
    ""|*[!0-9]*) echo "novamig-userdata: no agent running yet; it will read the settings when it starts" ;;
    *)
        comm=""
        [ -r "/proc/$pid/comm" ] && read -r comm < "/proc/$pid/comm"
        if [ "$comm" = novamig-agent ] && kill "$pid" 2>/dev/null; then
            echo "novamig-userdata: restarting the running agent (pid $pid) to apply the settings"
        else
            echo "novamig-userdata: no agent running yet; it will read the settings when it starts"
        fi
        ;;
esac
{_script_block(setup)}exit 0
"""


#: Where a `script` workload's command is written and its output goes (inside the guest).
SCRIPT_PATH = "/run/novamig/workload.sh"
SCRIPT_LOG = "/run/novamig/workload.log"


def _script_block(setup: GuestSetup) -> str:
    """`workload.kind: script`: the user's command, started once in the background for the case.

    The command and its environment are written to a file with a quoted here-document and every
    value quoted by `shlex.quote`, so nothing in them is expanded while user-data runs; the command
    itself then runs under ``sh`` as the user wrote it. Its output goes to a log file in the guest,
    not the console (environment values may be secrets: the console reaches Nova's console log).
    """
    workload = setup.workload
    if workload.kind != "script" or workload.script is None:
        return ""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(workload.script.env.items()))
    body = exports + workload.script.command + "\n"
    marker = "NOVAMIG_WORKLOAD_EOF"
    while marker in body:
        marker += "_"
    return f"""# workload.kind script: the user's command, in the background for the whole case
script="$root{SCRIPT_PATH}"
cat > "$script" <<'{marker}'
{body}{marker}
chmod 0700 "$script"
( cd / && exec sh "$script" ) > "$root{SCRIPT_LOG}" 2>&1 < /dev/null &
echo "novamig-userdata: started the workload script (pid $!; output in {SCRIPT_LOG})"
"""


def _comment(text: str) -> str:
    """`text` made safe for one shell comment line."""
    return " ".join(text.split())
