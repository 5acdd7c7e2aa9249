"""Loaded into the runner-side Locust process next to the scenario's locustfile
(``locust -f USER_FILE,locust_hook.py``): per-request records on the runner's clock, and users
spread over every guest.

Why a hook and not the locustfile's own records: a user's locustfile knows nothing about novamig,
and the records must be on the runner's CLOCK_MONOTONIC (the case clock's source; ``ip netns exec``
changes the network namespace, not the clock), so they need no mapping. Why here and not in
novamig: this file runs inside Locust's gevent process, which must not import openstacksdk (see
FACTS: gevent's monkey-patching breaks ssl there), so it imports nothing from novamig.

Environment:

* ``NOVAMIG_LOCUST_RUNNER_RECORDS`` — the record file: one line per completed request,
  ``mono_ns,response_time_ms,ok,host,name`` (``mono_ns`` = CLOCK_MONOTONIC at completion).
* ``NOVAMIG_LOCUST_HOSTS`` — base URLs separated by spaces; each new user gets the next one
  (round robin), so one Locust process loads every guest.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from locust import events

RECORDS = os.environ.get("NOVAMIG_LOCUST_RUNNER_RECORDS", "")
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
    """As in builtin:web: Locust arms ``--run-time`` from gevent's cached loop time; refresh it."""
    import importlib

    importlib.import_module("gevent").get_hub().loop.update_now()


_records = _Records(RECORDS)
_hooks: Any = events  # Locust's EventHook carries no type annotations
_hooks.init.add_listener(_spread_users)
_hooks.init.add_listener(_refresh_loop_clock)
_hooks.test_start.add_listener(_records.open)
_hooks.request.add_listener(_records.write)
_hooks.quit.add_listener(_records.close)  # after the users stopped: their last records too
