"""Fixtures for the measurement tests: the tiny guest image, guests on a fresh guest network, a
loopback echo server that can go dark on demand, and a session-wide check that no echo prober
outlives the tests."""

from __future__ import annotations

import os
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor.machine import GuestSpec, QemuMachine

PROBER_MODULE = b"novamig.measure.echo"


def prober_pids() -> set[int]:
    """Echo prober processes started (directly or not) by this test session."""
    marker = f"NOVAMIG_TEST_SESSION={os.environ.get('NOVAMIG_TEST_SESSION', '')}".encode()
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            with open(entry / "stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if PROBER_MODULE in cmdline and marker in environ and state != "Z":
            pids.add(int(entry.name))
    return pids


@pytest.fixture(scope="session", autouse=True)
def no_prober_left_behind() -> Iterator[None]:
    yield
    left = prober_pids()
    assert not left, f"echo prober processes left running: {sorted(left)}"


@pytest.fixture(scope="session")
def image() -> GuestImage:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    from novamig.guest.image import build_tiny_image

    return build_tiny_image()


MachineFactory = Callable[..., QemuMachine]


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[MachineFactory]:
    """Factory of launched guests (`machines(spec)`), all shut down afterwards."""
    made: list[QemuMachine] = []

    def make(spec: GuestSpec) -> QemuMachine:
        vm = QemuMachine(spec, tmp_path)
        made.append(vm)
        vm.launch()
        if spec.incoming is None:
            vm.wait_ready(60)
        return vm

    yield make
    for vm in reversed(made):
        vm.shutdown()


class LoopbackEcho:
    """A UDP echo server on one loopback address, in a thread, that can stop answering for a while.

    `dark(seconds)` drops every datagram for that long and returns the monotonic interval during
    which it dropped: a known outage, measured on the same clock as the prober's.
    """

    def __init__(self, address: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.address = address
        self.port = port
        self._dark_until = 0
        self._stop = threading.Event()
        self.answered = 0
        self.thread = threading.Thread(target=self._run, name=f"echo-{address}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            data, peer = self.sock.recvfrom(2048)
            if time.monotonic_ns() < self._dark_until:
                continue
            self.sock.sendto(data, peer)
            self.answered += 1

    def dark(self, seconds: float) -> tuple[int, int]:
        start = time.monotonic_ns()
        self._dark_until = start + int(seconds * 1e9)
        time.sleep(seconds)
        return start, self._dark_until

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def loopback_echo() -> Iterator[Callable[[str], LoopbackEcho]]:
    """Factory of loopback echo servers, all on one free port (`loopback_echo("127.0.0.2")`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    made: list[LoopbackEcho] = []

    def make(address: str) -> LoopbackEcho:
        server = LoopbackEcho(address, port)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()
