"""Serve a WSGI application on a loopback port from a background thread (cheroot).

DevStack serves Nova, Placement and Keystone with uWSGI; cheroot is the pure-Python equivalent that
runs inside our own processes, so the cloud needs no web server installed.

Reads first (the compute API): cheroot hands connections to its worker threads in arrival order, so
a burst of writes fills every worker and a read waits behind all of them. On the embedded cloud (one
process, one interpreter lock, SQLite with one writer at a time) a live-migrate request takes 0.3-6
s to answer while the conductor and the computes work on the earlier ones, so 100 sent at once kept
the runner's poll reads waiting 9-23 s (measured: poll periods up to 24 s at 100 concurrent
migrations). So the compute API's server (`WRITES_IN_TURN`) has enough workers for a burst of
writes plus reads, and `WritesInTurn` runs the writes as many at a time as the workers did before
(8): the others wait their turn asleep (taking no interpreter time), and a read starts at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import wsgi

WsgiApp = Callable[..., Any]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITES_IN_TURN = {"nova-api": 8}
"""Servers (by name) whose write requests run this many at a time; the others serve in arrival order."""
WRITE_BURST = 160
"""Writes that can wait their turn at once without taking a read's worker: above the bench's 100
concurrent live-migrate requests (plus the boots' and deletes' own)."""


class WritesInTurn:
    """WSGI middleware: at most `limit` write requests run at a time, reads are never held.

    The turn is held until the response body has been produced (Nova's bodies are lists built in
    the call), so the writes' database work never overlaps beyond `limit`."""

    def __init__(self, app: WsgiApp, limit: int) -> None:
        self.app = app
        self._turns = threading.BoundedSemaphore(limit)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") in READ_METHODS:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        with self._turns:
            body = self.app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()


class LoopbackServer:
    """One cheroot server bound to 127.0.0.1 only; reads first where `WRITES_IN_TURN` says so."""

    def __init__(self, name: str, app: WsgiApp, port: int, threads: int = 8) -> None:
        self.name = name
        self.port = port
        writes = WRITES_IN_TURN.get(name)
        if writes is not None:
            app, threads = WritesInTurn(app, writes), threads + WRITE_BURST
        self._server = wsgi.Server(("127.0.0.1", port), app, numthreads=threads, server_name=name)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind now (so a port clash fails here, naming the service) and serve in a thread."""
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name=f"wsgi-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
