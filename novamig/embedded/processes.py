"""Find and end the embedded cloud's processes by PID and process group, never by name.

The cloud process leads its own process group (Keystone is in it too), so one ``killpg`` reaches
both. QEMU guests run in process groups of their own (so that a Ctrl-C in a terminal does not reach
them mid-migration); the driver records their PIDs in ``guests/*.pid`` and ``stop_guests`` ends them.
A PID is only signalled after checking that it still is the process we started (its command line
names our work directory), so a recycled PID is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from novamig.process_state import alive


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (live ones only)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def cloud_pid(pid_file: Path, workdir: Path) -> int | None:
    """The cloud process of ``workdir`` if it runs, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if alive(pid) and str(workdir) in cmdline(pid):
        return pid
    return None


def stop_group(pgid: int, grace_s: float = 20.0) -> bool:
    """SIGTERM the group, wait for it to empty, SIGKILL what is left. True if nothing remains."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return not group_members(pgid)


def stop_guests(guests_dir: Path) -> list[int]:
    """End QEMU processes recorded by the driver under ``guests_dir``; returns the PIDs signalled."""
    ended = []
    for pid_file in sorted(guests_dir.glob("**/*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if alive(pid) and str(guests_dir) in cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            ended.append(pid)
    deadline = time.monotonic() + 5.0
    while any(alive(p) for p in ended) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ended
