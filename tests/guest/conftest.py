"""Fixtures for the guest image and agent tests: one booted guest per test module (of the session's
`tiny_image`, tests/conftest.py), and a check that every QEMU these tests started is gone when a
module ends.

Guests run on novamig's hypervisor layer (`QemuMachine`) with user-mode networking
(`UserModeNetwork`): the agent's HTTP port 80 and UDP echo port 7 forwarded to loopback ports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor import GuestSpec, QemuMachine, UserModeNetwork

#: Seconds a booting tiny guest gets to send READY (two shared cores under TCG).
READY_TIMEOUT_S = 90.0

#: The `tiny_guests` fixture:
#: `tiny_guests(name, network, *, source=None, model=..., memory_mib=..., **agent_params)`.
TinyGuestFactory = Callable[..., QemuMachine]


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


def agent_network() -> UserModeNetwork:
    """User-mode networking with the agent's HTTP (TCP 80) and UDP echo (7) ports forwarded."""
    return UserModeNetwork(guest_port=80, udp_guest_port=7)


def tiny_spec(
    image: GuestImage,
    name: str,
    network: UserModeNetwork,
    *,
    model: str = "virtio-net-pci",
    memory_mib: int = 256,
    **agent_params: str | int | float,
) -> GuestSpec:
    """The spec of a tiny guest on `network`; `agent_params` become `novamig.<key>=<value>`."""
    for key, value in agent_params.items():
        if any(c.isspace() for c in f"{key}={value}"):
            raise ValueError(f"kernel argument must not contain whitespace: {key}={value!r}")
    return GuestSpec(
        name=name,
        image=image,
        memory_mib=memory_mib,
        network=network.source_attachment(model),
        kernel_args=(*network.kernel_args(), *(f"novamig.{k}={v}" for k, v in agent_params.items())),
    )


@pytest.fixture
def tiny_guests(tiny_image: GuestImage) -> Iterator[TinyGuestFactory]:
    """Factory of tiny guests, each in its own work directory, all shut down (and their
    directories removed) when the test ends. A guest is booted to READY; with `source=` the
    migration destination of that guest is launched instead (same hardware, `-incoming defer`,
    no forwarded ports, no READY: the guest arrives with the migration)."""
    made: list[QemuMachine] = []
    workdir = Path(tempfile.mkdtemp(prefix="novamig-guest-test-"))

    def make(
        name: str,
        network: UserModeNetwork,
        *,
        source: QemuMachine | None = None,
        model: str = "virtio-net-pci",
        memory_mib: int = 256,
        **agent_params: str | int | float,
    ) -> QemuMachine:
        if source is not None:
            src_nic = source.spec.network
            dst_nic = network.destination_attachment(src_nic.model if src_nic is not None else model)
            spec = source.spec.for_destination(network=dst_nic, name=name)
        else:
            spec = tiny_spec(tiny_image, name, network, model=model, memory_mib=memory_mib, **agent_params)
        vm = QemuMachine(spec, workdir)
        made.append(vm)
        vm.launch()
        if source is None:
            vm.wait_ready(READY_TIMEOUT_S)
        return vm

    try:
        yield make
        for vm in reversed(made):
            vm.shutdown()
            assert vm.poll() is not None, f"QEMU {vm.pid} still running after the test"
    finally:
        for vm in made:
            vm.shutdown(soft=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def agent_net() -> UserModeNetwork:
    """A fresh network with the agent's ports forwarded (for a test's own guests)."""
    return agent_network()


@pytest.fixture(scope="module")
def guest_net() -> UserModeNetwork:
    """The network of the module's `guest` (its forwarded loopback ports)."""
    return agent_network()


@pytest.fixture(scope="module")
def guest(tiny_image: GuestImage, guest_net: UserModeNetwork) -> Iterator[QemuMachine]:
    workdir = Path(tempfile.mkdtemp(prefix="novamig-guest-test-"))
    try:
        with QemuMachine(tiny_spec(tiny_image, "tiny", guest_net, hb_hz=1000), workdir) as vm:
            vm.wait_ready(READY_TIMEOUT_S)
            yield vm
        assert vm.poll() is not None, f"QEMU {vm.pid} still running after the guest fixture"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
