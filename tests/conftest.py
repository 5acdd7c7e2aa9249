"""Suite-wide guard: whatever the tests start, they end.

Every QEMU process and network namespace that appeared during the session must be gone when it
finishes; a leak fails the run even when every test passed. Processes are recognised by a marker in
their environment that this session sets and every child inherits, so QEMUs of other programs on
the same machine never count.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_MARKER = f"NOVAMIG_TEST_SESSION={uuid.uuid4().hex}".encode()
os.environ["NOVAMIG_TEST_SESSION"] = SESSION_MARKER.split(b"=", 1)[1].decode()


def qemu_pids() -> set[int]:
    """QEMU processes started (directly or not) by this test session."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not (cmdline.startswith(b"qemu-system") or b"/qemu-system" in cmdline.split(b"\0", 1)[0]):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if SESSION_MARKER in environ.split(b"\0"):
            pids.add(int(entry.name))
    return pids


def novamig_netns() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("novamig")}
    except FileNotFoundError:
        return set()


def _orphaned_or_ours(netns: str) -> bool:
    """A namespace is named `novamig-<creator pid>-<random>`. One whose creator is still alive and
    is not this process belongs to a concurrent run (another xdist worker) that will remove it."""
    parts = netns.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return True
    pid = int(parts[1])
    return pid == os.getpid() or not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    netns_before = novamig_netns()
    yield
    leaked_qemu = qemu_pids()
    leaked_netns = {n for n in novamig_netns() - netns_before if _orphaned_or_ours(n)}
    assert not leaked_qemu, f"QEMU processes left running: {sorted(leaked_qemu)}"
    assert not leaked_netns, f"network namespaces left behind: {sorted(leaked_netns)}"
