"""The embedded cloud's HTTP servers: on the compute API's, reads are served while writes wait.

A real cheroot server on a loopback port, with an application whose writes block until the test
lets them go: a burst of writes larger than the server's old worker pool must neither hold a read
nor run more than `WRITES_IN_TURN` at a time.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from web_app_client import free_port

from novamig.embedded.service.wsgi_server import WRITES_IN_TURN, LoopbackServer

BURST = 20


class HeldWrites:
    """A WSGI app: GET answers at once; a write waits for `release` and counts how many wait."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self.changed = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "GET":
            with self.changed:
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
                self.changed.notify_all()
            self.release.wait(30)
            with self.changed:
                self.inside -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["REQUEST_METHOD"].encode()]


@pytest.fixture
def served() -> Iterator[tuple[HeldWrites, str]]:
    app = HeldWrites()
    port = free_port()
    server = LoopbackServer("nova-api", app, port)
    server.start()
    try:
        yield app, f"http://127.0.0.1:{port}/"
    finally:
        app.release.set()
        server.stop()


def _send(url: str, method: str, answers: list[bytes]) -> None:
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=30) as resp:
        answers.append(resp.read())


def test_a_read_is_served_while_a_burst_of_writes_waits(served: tuple[HeldWrites, str]) -> None:
    app, url = served
    limit = WRITES_IN_TURN["nova-api"]
    answers: list[bytes] = []
    writers = [threading.Thread(target=_send, args=(url, "POST", answers)) for _ in range(BURST)]
    for th in writers:
        th.start()
    with app.changed:
        assert app.changed.wait_for(lambda: app.inside == limit, timeout=10), app.inside
    read: list[bytes] = []
    _send(url, "GET", read)  # answered now, with every write still held
    assert read == [b"GET"] and answers == []
    assert app.inside == limit
    app.release.set()
    for th in writers:
        th.join(timeout=30)
    assert answers == [b"POST"] * BURST
    assert app.most_inside == limit
