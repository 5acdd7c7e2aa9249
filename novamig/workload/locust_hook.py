"""Loaded into every Locust process novamig starts, next to the scenario's locustfile
(``locust -f LOCUSTFILE,locust_hook.py``): on the runner and inside the full guest, where the image
carries it beside the web application. It writes one record per completed request and, on the
runner, spreads users over the guests.

Why a hook and not the locustfile's own records: a user's locustfile knows nothing about novamig,
so the same records come from builtin and user locustfiles alike. The record's clock is the
CLOCK_MONOTONIC of the machine Locust runs on: on the runner the case clock's source (``ip netns
exec`` changes the network namespace, not the clock), in a guest the clock of the agent's
heartbeats, which the runner maps to its own. This file runs inside Locust's gevent process, which
must not import openstacksdk (gevent in a process that has imported openstacksdk breaks ssl: a
RecursionError), and inside the guest, which has no novamig package: it imports nothing from novamig.

Environment:

* ``NOVAMIG_LOCUST_RECORDS`` — the record file: one line per completed request,
  ``mono_ns,response_time_ms,ok,host,name`` (``mono_ns`` = CLOCK_MONOTONIC at completion; ``host``
  the request URL's host, empty when Locust gives no URL; commas in the name become ``;``).
* ``NOVAMIG_LOCUST_HOSTS`` — base URLs separated by spaces; each new user gets the next one
  (round robin), so one Locust process loads every guest. Unset: Locust's ``--host``.
"""

from __future__ import annotations

import importlib
import itertools
import os
import time
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from locust import events

RECORDS = os.environ.get("NOVAMIG_LOCUST_RECORDS", "")
HOSTS = os.environ.get("NOVAMIG_LOCUST_HOSTS", "").split()


class _Records:
    """Line-buffered: a record is on disk as soon as its request completes, even if Locust is
    killed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def open(self, **_kwargs: Any) -> None:
        if self.path and self.file is None:
            self.file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(
        self, request_type: str, name: str, response_time: float | None, exception: BaseException | None,
        url: str | None = None, **_kwargs: Any,
    ) -> None:  # fmt: skip
        if self.file is None:
            return
        host = (urlsplit(url).hostname or "") if url else ""
        ok = 0 if exception is not None else 1
        latency = float(response_time or 0.0)
        label = f"{request_type} {name}".replace(",", ";").replace("\n", " ")
        self.file.write(f"{time.monotonic_ns()},{latency:.3f},{ok},{host},{label}\n")

    def close(self, **_kwargs: Any) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _spread_users(environment: Any, **_kwargs: Any) -> None:
    """Give each new user instance the next guest's URL before its client is built (the client
    reads ``self.host`` in ``__init__``)."""
    if not HOSTS:
        return
    hosts: Iterator[str] = itertools.cycle(HOSTS)
    for cls in environment.user_classes:
        if cls.__dict__.get("_novamig_spread"):
            continue
        original = cls.__init__

        def init(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            if not getattr(self, "_novamig_host_set", False):
                self.host = next(hosts)
                self._novamig_host_set = True
            __original(self, *args, **kwargs)

        cls.__init__ = init
        cls._novamig_spread = True


def _refresh_loop_clock(**_kwargs: Any) -> None:
    """Locust arms its ``--run-time`` timer from gevent's cached loop time, which is only updated
    when the hub runs: under TCG, Locust's start-up takes 15-20 s before the hub first runs, so
    the timer would fire at once and a 10 s run would last a fraction of a second. Refresh the
    clock when Locust is initialised, just before it arms the timer."""
    importlib.import_module("gevent").get_hub().loop.update_now()  # (no type stubs for gevent)


_records = _Records(RECORDS)
_hooks: Any = events  # Locust's EventHook carries no type annotations
_hooks.init.add_listener(_spread_users)
_hooks.init.add_listener(_refresh_loop_clock)
_hooks.test_start.add_listener(_records.open)
_hooks.request.add_listener(_records.write)
_hooks.quit.add_listener(_records.close)  # after the users stopped: their last records too
