"""Suite-wide guard: whatever the tests start, they end.

Every QEMU process and network namespace that appeared during the session must be gone when it
finishes; a leak fails the run even when every test passed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def qemu_pids() -> set[int]:
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"qemu-system") or b"/qemu-system" in cmdline.split(b"\0", 1)[0]:
            pids.add(int(entry.name))
    return pids


def novamig_netns() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("novamig")}
    except FileNotFoundError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    qemu_before, netns_before = qemu_pids(), novamig_netns()
    yield
    leaked_qemu = qemu_pids() - qemu_before
    leaked_netns = novamig_netns() - netns_before
    assert not leaked_qemu, f"QEMU processes left running: {sorted(leaked_qemu)}"
    assert not leaked_netns, f"network namespaces left behind: {sorted(leaked_netns)}"
