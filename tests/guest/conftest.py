"""Fixtures for the guest image and agent tests: one image per session (from the user's cache,
so repeated runs do not rebuild), one booted guest per test module, and a check that every QEMU
these tests started is gone when a module ends."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from guestvm import Guest, boot_guest

from novamig.guest.image import GuestImage, build_tiny_image


def _qemu_children() -> list[int]:
    """QEMU processes whose parent is this test process (the ones these tests start)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm.startswith("qemu-system"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module", autouse=True)
def no_qemu_left_behind() -> Iterator[None]:
    yield
    left = _qemu_children()
    assert not left, f"QEMU processes still running after the module: {left}"


@pytest.fixture(scope="session")
def tiny_image() -> GuestImage:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    return build_tiny_image()


@pytest.fixture(scope="module")
def guest(tiny_image: GuestImage) -> Iterator[Guest]:
    workdir = Path(tempfile.mkdtemp(prefix="novamig-guest-test-"))
    try:
        with boot_guest(tiny_image, workdir, hb_hz=1000) as g:
            yield g
        assert g.proc.poll() is not None, f"QEMU {g.proc.pid} still running after the guest fixture"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
