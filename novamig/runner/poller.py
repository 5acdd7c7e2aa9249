"""One poller for every migration of a case: batched reads per tick, fanned out to each watch.

A watch per server polling on its own costs two or three API calls per migration per tick, so the
calls per second grow with the concurrency until the cloud saturates and every poll slows down
(measured: a 2.1 s median poll period at 50 concurrent migrations on the embedded cloud, against
0.25 s asked). Here one thread reads, per tick:

* ``GET /servers/detail?changes-since=…&tags=…`` — the servers that changed since the last tick;
* ``GET /os-migrations?migration_type=live-migration&changes-since=…`` — the live-migration records
  that changed (microversion 2.59+, which brought ``changes-since`` to that list);
* ``GET /servers/{id}/migrations`` only where no batch holds the answer: the memory figures of a
  ``running`` migration (``/os-migrations`` does not show them), for at most
  `PROGRESS_READS_PER_TICK` migrations per tick in turn, and given up for a migration whose first
  `PROGRESS_PROBE_READS` reads had no figures (a driver that reports none, such as Nova's fake one);
* ``GET /os-migrations?migration_type=live-migration&limit=…`` only while a watch has not yet seen
  its record: the newest records by creation. Nova creates a live-migration record (status
  ``accepted``) without an ``updated_at``, and ``changes-since`` compares ``updated_at`` only, so
  the changed list first shows a record at its first update (the scheduler's choice of destination,
  or ``queued``): without this read the ``accepted`` phase never showed in ``phases_s``.

So the calls per tick are at most ``3 + PROGRESS_READS_PER_TICK`` whatever the concurrency (one
fewer once every watch has its record). Each watch's state machine (`MigrationWatcher.step`:
policy, abort, force-complete, timeout) then runs on the tick's readings; what a watch records
(``poll_period_s``) is the period this loop achieved.

``changes-since`` compares with the ``updated_at`` each Nova service writes from its own clock, at
one-second resolution: the cursor stays `CURSOR_MARGIN_S` behind the newest time seen, and every
`CATCH_UP_EVERY` ticks the reads go back `CATCH_UP_MARGIN_S`, so a compute whose clock lags the
others by less than that is still read. The margin is what each tick re-reads: every row changed
within it (and the second it rounds to) comes again in every tick's answer, and at 100 concurrent
migrations those answers are what a tick waits for.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Protocol
from urllib.parse import urlencode

from novamig.cloud import microversions as mv
from novamig.cloud.compute import (
    Compute,
    MigrationState,
    ServerState,
    migration_from_json,
    server_from_json,
)
from novamig.cloud.errors import CloudError
from novamig.results import MigrationRecord
from novamig.runner.migration_watcher import MigrationWatcher

log = logging.getLogger(__name__)

PROGRESS_READS_PER_TICK = 2
PROGRESS_PROBE_READS = 3
CURSOR_MARGIN_S = 1.0
"""How far behind the newest ``updated_at`` seen the changed lists read. A row can become visible
after one stamped later: its writer stamped it, then committed after another writer's commit (the
UPDATE is stamped when it is sent; the transaction's other statements and the commit follow). With
stamps to the second as MySQL's DATETIME keeps them (rounded: up to 0.5 s either way), one second
behind still lists a row whose commit came up to half a second after a later-stamped row's; with
sub-second stamps (SQLite, the embedded cloud) up to a second. tests/runner/test_poller.py plays
such commits against the lists. A longer lag (a clock behind, a writer stalled) is read by the
catch-up reads below, later."""
CATCH_UP_EVERY = 20
CATCH_UP_MARGIN_S = 60.0
FIRST_CURSOR_MARGIN_S = 120.0
"""Before any record is seen: how far behind the servers' own newest ``updated`` time to start."""
REQUESTS_IN_FLIGHT = 8
"""Live-migrate requests of a case awaiting their answer at a time; the others are sent as these
are answered. A cloud's API serves requests from a bounded pool of workers in arrival order: 100
sent at once queued there behind each other for longer than the client's 30 s timeout (measured on
the embedded cloud: 12 of 100 requests lost, so 12 migrations recorded as errors). Waiting here does
not count against a request's timeout, and each record's ``requested_at`` is when its request was
sent. The migrations themselves still run at the case's concurrency."""
NEW_RECORDS_SLACK = 10
"""The newest-records read asks for this many more than the watches still waiting for theirs: room
for a few records other clients created meanwhile."""


@dataclass(frozen=True)
class Batch:
    """One tick's reads: the servers and live-migration records that changed, keyed by server."""

    servers: dict[str, ServerState] = field(default_factory=dict)
    migrations: dict[str, list[MigrationState]] = field(default_factory=dict)
    created: dict[str, list[MigrationState]] = field(default_factory=dict)
    """The newest records by creation (read while a watch awaits its record): they fill in records
    not seen yet and never replace a known one, whose changes the changed list brings."""


class BatchSource(Protocol):
    """The batched reads the poller makes; `ComputeBatches` reads them from Nova."""

    def changed(self, catch_up: bool, awaiting: int) -> Batch: ...

    def server(self, server_id: str) -> ServerState: ...

    def in_progress(self, server_id: str) -> list[MigrationState]: ...

    def close(self) -> None: ...


def _parse_time(text: object) -> datetime | None:
    """Nova's timestamps: ``2026-12-06T01:10:00Z`` (servers), ``2026-12-06T01:10:00.000000``
    (migrations); both UTC."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _since(cursor: datetime) -> str:
    return cursor.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ComputeBatches:
    """`BatchSource` over Nova's compute API, keeping the ``changes-since`` cursors."""

    def __init__(self, compute: Compute, tag: str | None) -> None:
        self.compute = compute
        self.tag = tag
        self._server_cursor: datetime | None = None
        self._migration_cursor: datetime | None = None
        self._start: datetime | None = None  # the first cursor: catch-up reads never go before it
        self._side = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="novamig-batch")

    @staticmethod
    def supported(compute: Compute) -> bool:
        """``changes-since`` on ``/os-migrations`` needs microversion 2.59."""
        return compute.max_version >= mv.MIGRATIONS_UUID_AND_PAGING

    def changed(self, catch_up: bool, awaiting: int) -> Batch:
        """The changed lists, and the newest records while `awaiting` watches have not seen theirs;
        side by side once the migrations' first cursor is known (a busy API answers each slowly,
        and the tick lasts as long as the slowest)."""
        newest = self._side.submit(self._created, awaiting) if awaiting else None
        try:
            if self._migration_cursor is None:
                servers = self._servers(catch_up)
                migrations = self._migrations(catch_up)
            else:
                pending = self._side.submit(self._servers, catch_up)
                try:
                    migrations = self._migrations(catch_up)
                finally:
                    servers = pending.result()
        finally:
            created = newest.result() if newest is not None else {}
        return Batch(servers=servers, migrations=migrations, created=created)

    def close(self) -> None:
        self._side.shutdown(wait=True)

    def _servers(self, catch_up: bool) -> dict[str, ServerState]:
        query: dict[str, str] = {"all_tenants": "1"}
        if self.tag:
            query["tags"] = self.tag
        if self._server_cursor is not None:
            query["changes-since"] = _since(self._cursor(self._server_cursor, catch_up))
        data = self.compute.call("GET", "/servers/detail?" + urlencode(query))
        out: dict[str, ServerState] = {}
        newest: datetime | None = None
        for raw in data.get("servers", []):
            out[str(raw["id"])] = server_from_json(raw)
            updated = _parse_time(raw.get("updated"))
            newest = updated if newest is None or (updated and updated > newest) else newest
        if newest is not None:
            self._advance_servers(newest)
        return out

    def _advance_servers(self, newest: datetime) -> None:
        if self._server_cursor is None or newest > self._server_cursor:
            self._server_cursor = newest
        if self._migration_cursor is None:
            # No record seen yet: start from the cloud's own clock (the servers' newest update),
            # not ours, so a skewed client clock loses nothing.
            self._migration_cursor = newest - timedelta(seconds=FIRST_CURSOR_MARGIN_S - CURSOR_MARGIN_S)
            self._start = self._migration_cursor - timedelta(seconds=CURSOR_MARGIN_S)

    def _migrations(self, catch_up: bool) -> dict[str, list[MigrationState]]:
        query = {"migration_type": "live-migration"}
        if self._migration_cursor is not None:
            query["changes-since"] = _since(self._cursor(self._migration_cursor, catch_up))
        version = max(self.compute.version, mv.MIGRATIONS_UUID_AND_PAGING)
        data = self.compute.call("GET", "/os-migrations?" + urlencode(query), version=version)
        out: dict[str, list[MigrationState]] = {}
        for raw in data.get("migrations", []):
            out.setdefault(str(raw.get("instance_uuid")), []).append(migration_from_json(raw))
            updated = _parse_time(raw.get("updated_at"))
            if updated is not None and (self._migration_cursor is None or updated > self._migration_cursor):
                self._migration_cursor = updated
        return out

    def _created(self, awaiting: int) -> dict[str, list[MigrationState]]:
        """The newest live-migration records by creation (Nova sorts a paged list by
        ``created_at``, newest first). The cursor does not move: this list is not every change."""
        query = {"migration_type": "live-migration", "limit": str(awaiting + NEW_RECORDS_SLACK)}
        version = max(self.compute.version, mv.MIGRATIONS_UUID_AND_PAGING)
        data = self.compute.call("GET", "/os-migrations?" + urlencode(query), version=version)
        out: dict[str, list[MigrationState]] = {}
        for raw in data.get("migrations", []):
            out.setdefault(str(raw.get("instance_uuid")), []).append(migration_from_json(raw))
        return out

    def _cursor(self, newest: datetime, catch_up: bool) -> datetime:
        margin = CATCH_UP_MARGIN_S if catch_up else CURSOR_MARGIN_S
        cursor = newest - timedelta(seconds=margin)
        return max(cursor, self._start) if self._start is not None else cursor

    def server(self, server_id: str) -> ServerState:
        return self.compute.server(server_id)

    def in_progress(self, server_id: str) -> list[MigrationState]:
        return self.compute.server_migrations(server_id)


@dataclass
class _Watch:
    watcher: MigrationWatcher
    done: cf.Future[MigrationRecord] = field(default_factory=cf.Future)
    server: ServerState | None = None
    migrations: dict[int, MigrationState] = field(default_factory=dict)
    progress_reads: int = 0  # in-progress reads of a running migration, and whether any had figures
    progress_seen: bool = False


class CasePoller:
    """The one polling thread of a case; `watch` runs a migration through it (blocking its caller).

    Used as a context manager around the case's migrations: the thread starts on entry and is
    joined on exit, after the last watch has ended."""

    def __init__(
        self,
        source: BatchSource,
        *,
        poll_s: float,
        fast_poll_s: float,
        now: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        """`wait` sleeps between ticks: not the run's stop event, since after a stop the watches
        still poll until Nova confirms their aborts."""
        self.source = source
        self.poll_s = min(poll_s, 0.5)
        self.fast_poll_s = min(fast_poll_s, self.poll_s)
        self._now = now
        self._wait = wait
        self._lock = threading.Lock()
        self._requests = threading.BoundedSemaphore(REQUESTS_IN_FLIGHT)
        self._watches: dict[str, _Watch] = {}  # by server id: a server is in one migration at a time
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="novamig-poller", daemon=True)
        self._side = cf.ThreadPoolExecutor(PROGRESS_READS_PER_TICK, thread_name_prefix="novamig-progress")
        self._progress_turn = 0
        self._servers: dict[str, ServerState] = {}  # the latest listed, by server id
        self._records: dict[str, dict[int, MigrationState]] = {}  # by server id, then migration id
        self.ticks = 0

    def __enter__(self) -> CasePoller:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._closing = True
        self._wake.set()
        self._thread.join()
        self._side.shutdown(wait=True)
        self.source.close()

    def watching(self) -> int:
        """How many migrations the poller follows now (requested, not yet ended)."""
        with self._lock:
            return len(self._watches)

    def watch(self, watcher: MigrationWatcher) -> MigrationRecord:
        """Request the migration (in the caller's thread: requests go out side by side, at most
        `REQUESTS_IN_FLIGHT` at a time), then wait for the poller to see it to its end; returns
        `MigrationWatcher.step`'s record."""
        with self._requests:
            refused = watcher.start()
        if refused is not None:
            return refused
        entry = _Watch(watcher)
        with self._lock:
            self._watches[watcher.server_id] = entry
        self._wake.set()
        return entry.done.result()

    # -- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                watches = list(self._watches.values())
                if not watches and self._closing:
                    return
            if not watches:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            started = self._now()
            self._tick(watches)
            near_end = any(w.watcher.near_end for w in watches)
            period = self.fast_poll_s if near_end else self.poll_s
            self._wait(max(0.0, period - (self._now() - started)))

    def _tick(self, watches: Sequence[_Watch]) -> None:
        self.ticks += 1
        try:
            # The memory-figure reads go out beside the batch (chosen from the last tick's state),
            # so the tick lasts as long as its slowest call, not their sum.
            reading = self.source.in_progress
            progress = [
                (w, self._side.submit(reading, w.watcher.server_id)) for w in self._progress_turns(watches)
            ]
            try:
                awaiting = sum(1 for w in watches if w.watcher.migration_id is None)
                batch = self.source.changed(self.ticks % CATCH_UP_EVERY == 0, awaiting)
            finally:
                read = [(w, pending.result()) for w, pending in progress]
            self._remember(batch)
            for w in watches:
                self._merge(w)
            for w, records in read:
                self._merge_progress(w, records)
        except CloudError as exc:
            for w in watches:
                self._finish_if(w, w.watcher.failed(exc))
            return
        except Exception as exc:  # a bug here must end the watches, not hang the case
            log.exception("poller tick failed")
            for w in watches:
                self._fail(w, exc)
            return
        t = self._now()  # one time for every watch: the state all of them were read in
        for w in watches:
            try:
                self._finish_if(w, w.watcher.step(w.server, list(w.migrations.values()), t))
            except Exception as exc:
                log.exception("watch of %s failed", w.watcher.server_name)
                self._fail(w, exc)

    def _remember(self, batch: Batch) -> None:
        """Every server and record the tick listed, watched or not yet: a live-migrate request can
        take longer to answer than the migration takes (a saturated API), and by the time its
        watch begins, the cursor has passed all of its record's changes."""
        self._servers.update(batch.servers)
        for sid, records in batch.migrations.items():
            known = self._records.setdefault(sid, {})
            for m in records:
                known[m.id] = m
        for sid, records in batch.created.items():
            known = self._records.setdefault(sid, {})
            for m in records:
                known.setdefault(m.id, m)

    def _merge(self, w: _Watch) -> None:
        sid = w.watcher.server_id
        w.migrations = self._records.setdefault(sid, {})
        server = self._servers.get(sid)
        if server is None:  # not in the listings (not tagged, or another project)
            server = self._servers[sid] = self.source.server(sid)
        w.server = server

    def _progress_turns(self, watches: Sequence[_Watch]) -> list[_Watch]:
        """The running migrations whose memory figures this tick reads: a few, in turn."""
        wanting = [w for w in watches if self._wants_progress(w)]
        if not wanting:
            return []
        start = self._progress_turn % len(wanting)
        chosen = (wanting[start:] + wanting[:start])[:PROGRESS_READS_PER_TICK]
        self._progress_turn += len(chosen)
        for w in chosen:
            w.progress_reads += 1
        return chosen

    @staticmethod
    def _merge_progress(w: _Watch, records: list[MigrationState]) -> None:
        """A record from the in-progress list replaces the batch's only in the same status (the
        two reads ran side by side: the batch's may be the newer)."""
        for m in records:
            known = w.migrations.get(m.id)
            if known is not None and known.status == m.status:
                w.migrations[m.id] = m
                w.progress_seen = w.progress_seen or m.memory_total_bytes is not None

    @staticmethod
    def _wants_progress(w: _Watch) -> bool:
        mid = w.watcher.migration_id
        current = w.migrations.get(mid) if mid is not None else None
        if current is None or current.status != "running":
            return False
        return w.progress_seen or w.progress_reads < PROGRESS_PROBE_READS

    def _finish_if(self, w: _Watch, record: MigrationRecord | None) -> None:
        if record is None:
            return
        with self._lock:
            self._watches.pop(w.watcher.server_id, None)
        w.done.set_result(record)

    def _fail(self, w: _Watch, exc: BaseException) -> None:
        with self._lock:
            self._watches.pop(w.watcher.server_id, None)
        w.done.set_exception(exc)
