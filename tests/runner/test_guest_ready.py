"""The runner's wait for the guests to answer before a case's noise window (`wait_guests_answer`),
against a real UDP echo server on loopback standing in for the guest agent's echo."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from novamig.cloud.errors import CloudError
from novamig.measure.contract import ServerInfo
from novamig.runner.fleet import wait_guests_answer
from novamig.runner.signals import StopRequest


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A UDP echo on 127.0.0.1 (what the agent's port 7 does), on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    done.set()
    thread.join(5)
    sock.close()


def test_returns_once_every_guest_answers(echo_port: int) -> None:
    servers = [ServerInfo("id-1", "s0", "h", "127.0.0.1"), ServerInfo("id-2", "s1", "h", None)]
    started = time.monotonic()
    wait_guests_answer(servers, None, 10.0, StopRequest(), port=echo_port)
    assert time.monotonic() - started < 5.0  # the answer ends the wait, not the timeout


def test_names_every_guest_that_did_not_answer(echo_port: int) -> None:
    servers = [ServerInfo("id-1", "s0", "h", "127.0.0.1"), ServerInfo("id-2", "s1", "h", "127.0.0.2")]
    started = time.monotonic()
    with pytest.raises(CloudError) as caught:
        wait_guests_answer(servers, None, 1.5, StopRequest(), port=echo_port)
    assert time.monotonic() - started >= 1.5
    message = str(caught.value)
    assert "s1 (id-2) at 127.0.0.2" in message and "s0" not in message
    assert f"UDP echo on port {echo_port} within 1.5 s" in message
    assert message.endswith("raise `fleet.ready_timeout_s` (e.g. `--set fleet.ready_timeout_s=4.5`)")


def test_a_stop_request_ends_the_wait() -> None:
    stop = StopRequest()
    stop.event.set()
    started = time.monotonic()
    wait_guests_answer([ServerInfo("id-1", "s0", "h", "127.0.0.2")], None, 60.0, stop, port=9)
    assert time.monotonic() - started < 5.0
