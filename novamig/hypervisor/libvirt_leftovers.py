"""Leftovers of libvirt hosts whose creator died without closing them (`LibvirtHostPair`).

The daemons die with their creator (``PR_SET_PDEATHSIG``), but guests' QEMU processes do not
(libvirt daemonises them), and nothing removes the namespaces or the run directory of a process
killed hard. `find_leftovers` finds them by the run directory's name (it carries the creator's
PID) and `remove_leftovers` removes them; ``EmbeddedCloud.stop`` does both for a libvirt-mode cloud
process that died.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from novamig.hypervisor.libvirt_hosts import RUN_DIR_PREFIX, kill_pid, run_command
from novamig.hypervisor.netns import NETNS_PREFIX, list_novamig_netns


@dataclass(frozen=True)
class Leftover:
    """What a libvirt host pair whose creator died without closing it left behind."""

    run_dir: Path
    creator_pid: int
    pids: tuple[int, ...]  # daemons and guests still running, from the pid files in the run dir
    netns: tuple[str, ...]  # the creator's namespaces (``novamig-<creator pid>-…``)


_OUR_PROGRAMS = ("libvirtd", "virtlogd", "qemu-system-x86_64")


def _program_of(pid: int) -> str | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return None


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: its creator has not reaped it yet, but it left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def find_leftovers(tmp_dir: Path | None = None) -> list[Leftover]:
    """Run directories of creators that are gone, with what still runs from them. The daemons
    die with their creator (``PR_SET_PDEATHSIG``), but guests' QEMU processes do not (libvirt
    daemonises them), and nothing removes namespaces or directories of a process killed hard. A
    PID counts only while it is still one of libvirtd, virtlogd or QEMU (PIDs are reused)."""
    base = tmp_dir or Path(tempfile.gettempdir())
    found = []
    for run_dir in sorted(base.glob(f"{RUN_DIR_PREFIX}*-*")):
        creator = run_dir.name.removeprefix(RUN_DIR_PREFIX).split("-", 1)[0]
        if not creator.isdigit() or _running(int(creator)):
            continue
        pidfiles = [*run_dir.glob("*/libvirtd.pid"), *run_dir.glob("*/virtlogd.pid")]
        pidfiles += [p for p in run_dir.glob("*/run/qemu/*.pid") if p.name != "driver.pid"]
        pids = set()
        for pidfile in pidfiles:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                if _program_of(pid) in _OUR_PROGRAMS:
                    pids.add(pid)
        netns = tuple(n for n in list_novamig_netns() if n.startswith(f"{NETNS_PREFIX}{creator}-"))
        found.append(Leftover(run_dir, int(creator), tuple(sorted(pids)), netns))
    return found


def remove_leftovers(leftovers: list[Leftover]) -> None:
    """Kill the processes, delete the namespaces and the run directories `find_leftovers` found."""
    for left in leftovers:
        for pid in left.pids:
            if _program_of(pid) in _OUR_PROGRAMS:
                kill_pid(pid)
        for name in left.netns:
            run_command(["ip", "netns", "del", name], check=False)
        shutil.rmtree(left.run_dir, ignore_errors=True)
