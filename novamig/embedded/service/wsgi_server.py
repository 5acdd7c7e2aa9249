"""Serve a WSGI application on a loopback port from a background thread (cheroot).

DevStack serves Nova, Placement and Keystone with uWSGI; cheroot is the pure-Python equivalent that
runs inside our own processes, so the cloud needs no web server installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cheroot import wsgi

WsgiApp = Callable[..., Any]


class LoopbackServer:
    """One cheroot server bound to 127.0.0.1 only."""

    def __init__(self, name: str, app: WsgiApp, port: int, threads: int = 8) -> None:
        self.name = name
        self.port = port
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
