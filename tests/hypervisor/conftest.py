"""Fixtures for the hypervisor tests: guests of the session's `tiny_image` (tests/conftest.py) that
are always shut down, and a session-wide check that nothing (QEMU process, network namespace,
temporary directory) outlives the tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor import runtime
from novamig.hypervisor.machine import GuestSpec, QemuMachine
from novamig.hypervisor.netns import NETNS_PREFIX, list_novamig_netns


def _alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="session", autouse=True)
def hypervisor_nothing_left_behind() -> Iterator[None]:
    """After the session: every QEMU we spawned is gone, no netns of ours, no temp dir of ours."""
    ours = f"{NETNS_PREFIX}{os.getpid()}-"
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in runtime.spawned_pids()):
        time.sleep(0.1)
    alive = [p for p in runtime.spawned_pids() if _alive(p)]
    netns = [n for n in list_novamig_netns() if n.startswith(ours)]
    dirs = runtime.leaked_temp_dirs()
    assert not alive, f"QEMU processes left running: {alive}"
    assert not netns, f"network namespaces left behind: {netns}"
    assert not dirs, f"temporary directories left behind: {dirs}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


MachineFactory = Callable[..., QemuMachine]


@pytest.fixture
def machines(tiny_image: GuestImage, workdir: Path) -> Iterator[MachineFactory]:
    """Factory of launched guests (`machines("src", memory_mib=256)`), all shut down afterwards."""
    made: list[QemuMachine] = []

    def make(
        name: str = "guest", *, spec: GuestSpec | None = None, ready: bool = True, **kw: object
    ) -> QemuMachine:
        if spec is None:
            kw.setdefault("memory_mib", 192)
            spec = GuestSpec(name=name, image=tiny_image, **kw)  # type: ignore[arg-type]
        vm = QemuMachine(spec, workdir)
        made.append(vm)
        vm.launch()
        if ready and spec.incoming is None:
            vm.wait_ready(60)
        return vm

    yield make
    for vm in reversed(made):
        vm.shutdown()
