"""``builtin:web``: Locust users against novamig's in-guest web application
(``novamig/workload/guest_web_app.py``, port 8080 of every full guest).

Why FastHttpUser: under TCG it sustains about three times the request rate of HttpUser, and it
keeps connections alive, so a migration shows up as a stall on a live connection.

Environment (all optional):

* ``NOVAMIG_WEB_WAIT_S`` — wait between tasks per user, seconds (default 0: as fast as possible).
* ``NOVAMIG_WEB_MEMORY_KIB`` — memory the ``/memory`` task touches per request (default 256).
* ``NOVAMIG_LOCUST_RECORDS`` — a file that receives one CSV line per completed request:
  ``guest_mono_ns,wall_time,response_time_ms,ok,name`` where ``guest_mono_ns`` is
  CLOCK_MONOTONIC of the machine Locust runs on when the request completed (inside a guest: the
  same clock as the agent's heartbeats) and ``wall_time`` its Unix time. The longest span without
  a successful request is the "locust" downtime figure.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import IO, Any

from locust import FastHttpUser, constant, events, task

WAIT_S = float(os.environ.get("NOVAMIG_WEB_WAIT_S", "0") or 0)
MEMORY_KIB = int(os.environ.get("NOVAMIG_WEB_MEMORY_KIB", "256") or 256)
RECORDS = os.environ.get("NOVAMIG_LOCUST_RECORDS", "")


class _Records:
    """The per-request record file, open from test start to quitting (line-buffered: a record
    is on disk as soon as its request completes, even if Locust is killed)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def open(self, **_kwargs: Any) -> None:
        if self.path and self.file is None:
            self.file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(
        self, request_type: str, name: str, response_time: float, exception: BaseException | None,
        **_kwargs: Any,
    ) -> None:  # fmt: skip
        if self.file is not None:
            ok = 0 if exception is not None else 1
            self.file.write(
                f"{time.monotonic_ns()},{time.time():.6f},{response_time:.3f},{ok},{request_type} {name}\n"
            )

    def close(self, **_kwargs: Any) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _refresh_loop_clock(**_kwargs: Any) -> None:
    """Locust arms its ``--run-time`` timer from gevent's cached loop time, which is only updated
    when the hub runs: under TCG, Locust's start-up takes 15-20 s before the hub first runs, so
    the timer would fire at once and a 10 s run would last a fraction of a second. Refresh the
    clock when Locust is initialised, just before it arms the timer."""
    gevent = importlib.import_module("gevent")  # (no type stubs for gevent)
    gevent.get_hub().loop.update_now()


_records = _Records(RECORDS)
_hooks: Any = events  # Locust's EventHook.add_listener carries no type annotations
_hooks.init.add_listener(_refresh_loop_clock)
_hooks.test_start.add_listener(_records.open)
_hooks.request.add_listener(_records.write)
_hooks.quitting.add_listener(_records.close)


class WebUser(FastHttpUser):
    """A mix of cheap pages, JSON, a little CPU and a little memory, like a small web service."""

    wait_time = constant(WAIT_S)

    @task(5)
    def index(self) -> None:
        self.client.get("/")

    @task(3)
    def items(self) -> None:
        self.client.get("/api/items?n=20", name="/api/items")

    @task(1)
    def compute(self) -> None:
        self.client.get("/api/compute?n=2000", name="/api/compute")

    @task(1)
    def memory(self) -> None:
        self.client.get(f"/memory?kib={MEMORY_KIB}", name="/memory")

    @task(1)
    def echo(self) -> None:
        self.client.post("/echo", data="novamig" * 16)

    @task(1)
    def health(self) -> None:
        self.client.get("/health")
