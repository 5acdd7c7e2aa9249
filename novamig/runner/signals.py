"""SIGINT/SIGTERM: ask the run to stop, never kill it mid-cleanup.

The first signal sets the stop event: no new case, server or migration starts, running migrations
are aborted, everything is deleted and what was measured is written (exit 130). Later signals only
say that cleanup is in progress — a second Ctrl-C that killed the process would leave servers and
QEMU processes behind, which is exactly what the harness promises not to do.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class StopRequest:
    """A stop event plus which signal asked for it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        self.count = 0

    def is_set(self) -> bool:
        return self.event.is_set()

    def request(self, name: str) -> None:
        self.count += 1
        if not self.event.is_set():
            self.signal_name = name
            self.event.set()
            print(
                f"\nnovamig: {name}: stopping — aborting running migrations, deleting resources, "
                "writing results …",
                file=sys.stderr,
            )
            log.warning("%s received: stopping", name)
        else:
            print(f"novamig: {name}: cleanup in progress, please wait", file=sys.stderr)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[StopRequest]:
    """Install SIGINT/SIGTERM handlers for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.request(signal.Signals(signum).name)

    for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
