"""Fixtures for the measurement tests: guests on a fresh guest network, a loopback echo server
that can go dark on demand, a session-wide check that no echo prober outlives the tests, and the
helpers the probe tests share."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from novamig.hypervisor.machine import GuestSpec, QemuMachine
from novamig.measure.contract import CaseClock
from novamig.measure.echo import read_records as read_replies
from novamig.measure.heartbeat_udp_collector import read_records as read_beats
from novamig.measure.network import NetworkProbe
from novamig.measure.spawned_probe import SpawnedProbe
from novamig.results import MigrationRecord
from novamig.stats import longest_gap

PROBER_MODULE = b"novamig.measure.echo"
#: The `wait_until(predicate, timeout, what)` fixture (tests/conftest.py).
WaitUntil = Callable[[Callable[[], bool], float, str], None]


class HostLoad(Protocol):
    """The `scheduling_jitter` fixture (tests/conftest.py): the worst stall (ms) of a thread that
    asks for a 1 ms wake-up, measured since the test started."""

    worst_ms: float


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an ended child nobody has waited for yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def probe_pids(module: bytes) -> set[int]:
    """Live processes running ``python -m MODULE`` started (directly or not) by this test session
    (found by the session marker in their environment): probe processes that outlived their test."""
    marker = f"NOVAMIG_TEST_SESSION={os.environ.get('NOVAMIG_TEST_SESSION', '')}".encode()
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if module in cmdline and marker in environ and alive(int(entry.name)):
            pids.add(int(entry.name))
    return pids


def prober_pids() -> set[int]:
    """Echo prober processes started (directly or not) by this test session."""
    return probe_pids(PROBER_MODULE)


def latest_arrivals(probe: SpawnedProbe[Any, Any, Any]) -> dict[Any, int]:
    """The newest arrival stamp (monotonic ns) per target in the probe process's record file, as far
    as it has flushed it (every 0.25 s): the data the probe's figures will be computed from."""
    found = sorted(probe.dir.glob("*.bin")) if probe.dir is not None else []
    if not found:
        return {}
    reader = read_replies if isinstance(probe, NetworkProbe) else read_beats
    try:
        records: dict[Any, Any] = reader(found[0])
    except (OSError, ValueError):  # not written yet
        return {}
    return {key: r.recv_ns[-1] for key, r in records.items() if r.recv_ns}


def recorded_past(probe: SpawnedProbe[Any, Any, Any], t_ns: int, *targets: Any) -> bool:
    """The probe process has recorded an arrival later than `t_ns` from each of `targets` (echo
    target indices, heartbeat sender addresses; none named: every target that has any)."""
    latest = latest_arrivals(probe)
    keys = targets or tuple(latest)
    return bool(keys) and all(latest.get(k, 0) > t_ns for k in keys)


def migration_record(clock: CaseClock, start_ns: int, end_ns: int | None) -> MigrationRecord:
    """A completed migration requested at `start_ns` and finished at `end_ns` (monotonic ns; None:
    not finished), in `clock`'s case seconds: the input of a probe's `figure`."""
    return MigrationRecord(
        server="s",
        source_host="a",
        status="completed",
        requested_at=clock.at(start_ns / 1e9),
        finished_at=None if end_ns is None else clock.at(end_ns / 1e9),
    )


def gap_over(arrivals_ns: Sequence[int], clock: CaseClock, details: dict[str, Any]) -> float | None:
    """The longest gap (ms) of `arrivals_ns` (monotonic ns) overlapping a figure's gap
    (``details["gap_from_s"]`` to ``details["gap_to_s"]``, case seconds on `clock`): the same
    silence seen through another channel, such as the guest's virtio-serial heartbeat."""
    start_ns = round((float(details["gap_from_s"]) + clock.origin) * 1e9)
    end_ns = round((float(details["gap_to_s"]) + clock.origin) * 1e9)
    gap = longest_gap(arrivals_ns, start_ns, end_ns)
    return None if gap is None else gap.ms


@pytest.fixture(scope="session", autouse=True)
def no_prober_left_behind() -> Iterator[None]:
    yield
    left = prober_pids()
    assert not left, f"echo prober processes left running: {sorted(left)}"


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
    which it dropped: a known outage, measured on the same clock as the prober's. It returns once
    the server has answered again after the outage (not after a sleep of that length), so the
    outage is over as the prober sees it, however late this thread ran.
    """

    def __init__(self, address: str, port: int, wait_until: WaitUntil) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.address = address
        self.port = port
        self._dark_until = 0
        self._stop = threading.Event()
        self.answers_ns: list[int] = []  # when each answer went out: the truth a prober is held to
        self._wait_until = wait_until
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
            self.answers_ns.append(time.monotonic_ns())

    def dark(self, seconds: float) -> tuple[int, int]:
        start = time.monotonic_ns()
        until = self._dark_until = start + int(seconds * 1e9)
        self._wait_until(
            lambda: bool(self.answers_ns) and self.answers_ns[-1] > until,
            seconds + 10.0,
            f"{self.address} to answer again after its outage",
        )
        return start, until

    def wait_answers(self, count: int, timeout: float = 10.0) -> None:
        """Until this server has answered `count` datagrams more than it had (a prober at work)."""
        target = len(self.answers_ns) + count
        self._wait_until(
            lambda: len(self.answers_ns) >= target, timeout, f"{count} answers from {self.address}"
        )

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def loopback_echo(wait_until: WaitUntil) -> Iterator[Callable[[str], LoopbackEcho]]:
    """Factory of loopback echo servers, all on one free port (`loopback_echo("127.0.0.2")`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    made: list[LoopbackEcho] = []

    def make(address: str) -> LoopbackEcho:
        server = LoopbackEcho(address, port, wait_until)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()
