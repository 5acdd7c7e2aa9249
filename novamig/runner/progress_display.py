"""The live terminal view: one line per server — case, migration status, progress %, elapsed.

Backed by a plain thread-safe table that watchers update; `rich.live.Live` redraws it on a TTY,
and elsewhere (CI logs) each status change is printed as one line, plus a progress line per server
at most every `LOG_PROGRESS_EVERY_S` while its status stays the same (a long pre-copy would
otherwise show "running 6 %" once and then nothing for minutes), so a log is never flooded.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from novamig.runner.migration_watcher import Progress

LOG_PROGRESS_EVERY_S = 10.0


@dataclass
class Row:
    case: str
    server: str
    status: str
    percent: float | None = None
    elapsed_s: float | None = None
    route: str = ""
    done: int = 0
    total: int = 0
    said_at: float = 0.0  # monotonic time this row was last printed (non-interactive)


class LiveView:
    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (monotonic seconds) paces the plain stream's repeated progress lines; a test
        hands in its own to step through `LOG_PROGRESS_EVERY_S` without waiting for it."""
        self.stream = stream or sys.stderr
        self._clock = clock
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.rows: dict[str, Row] = {}
        self.case = ""
        self.headline = ""
        self._lock = threading.Lock()
        self._live: Any = None
        self._started = clock()

    # -- updates (any thread) ----------------------------------------------------------------------
    def start_case(self, case_id: str, index: int, total: int) -> None:
        with self._lock:
            self.case = case_id
            self.rows.clear()
            self.headline = f"case {index}/{total}: {case_id}"
        self._say(self.headline)

    def message(self, text: str) -> None:
        with self._lock:
            self.headline = f"{self.case}: {text}" if self.case else text
        self._say(self.headline)

    def server(self, name: str, status: str, done: int = 0, total: int = 0) -> None:
        with self._lock:
            row = self.rows.setdefault(name, Row(self.case, name, ""))
            changed = row.status != status
            row.status, row.percent, row.elapsed_s = status, None, None
            row.done, row.total = done, total
        if changed:
            self._say(f"  {name}: {status}")

    def progress(self, p: Progress) -> None:
        now = self._clock()
        with self._lock:
            row = self.rows.setdefault(p.server, Row(self.case, p.server, ""))
            changed = row.status != p.status or now - row.said_at >= LOG_PROGRESS_EVERY_S
            row.status, row.percent, row.elapsed_s = p.status, p.percent, p.elapsed_s
            row.route = f"{p.source_host or '?'} → {p.dest_host or '?'}"
            if changed:
                row.said_at = now
        if changed:
            pct = "" if p.percent is None else f" {p.percent:.0f}%"
            self._say(f"  {p.server}: {p.status}{pct} ({p.elapsed_s:.1f} s) {row.route}")

    # -- rendering ---------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        if not self.interactive:
            print(line, file=self.stream, flush=True)

    def render(self) -> Any:
        table = Table(title=self.headline or "novamig", expand=False)
        for col in ("server", "migration", "status", "progress", "elapsed", "route"):
            table.add_column(col, no_wrap=True)
        with self._lock:
            rows = list(self.rows.values())
        for r in rows:
            table.add_row(
                r.server,
                f"{r.done}/{r.total}" if r.total else "",
                r.status,
                "" if r.percent is None else f"{r.percent:5.1f} %",
                "" if r.elapsed_s is None else f"{r.elapsed_s:6.1f} s",
                r.route,
            )
        return table

    def __enter__(self) -> LiveView:
        if self.interactive:
            self._live = Live(
                get_renderable=self.render,
                console=Console(file=self.stream),
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
