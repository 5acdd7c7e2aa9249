"""The case poller's batched reads, standalone: the calls it makes, counted in a request log.

`CasePoller` and `ComputeBatches` run as in a case, over `NovaLists`: a stand-in for Nova's compute
API that plays many live migrations on one timeline and records every request it is sent, as
Nova's request log does (time, method, path). It answers the way Nova 34 does where the poller
depends on it: ``changes-since`` keeps the rows whose ``updated_at`` is at or after it, and a
live-migration record is created (``accepted``) with no ``updated_at`` at all; a paged
``/os-migrations`` (``limit``) lists records newest-created first; ``/servers/{id}/migrations`` holds
only in-progress records, with no memory figures (as Nova's fake driver). A stand-in because 50
migrations with exact times, a request answered after its migration ended, and a record that stays
``accepted`` for a known time cannot be had on demand from a real cloud in the fast tier; the same
counts are checked on the embedded cloud's fake driver in tests/embedded/test_fake_mode.py.

Time is fake (`FakeTime`): it moves when the poller waits between ticks, so a tick is exactly
`POLL_S` (or `FAST_POLL_S` near an end) and the run takes milliseconds.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from novamig.cloud import microversions as mv
from novamig.cloud.compute import Compute
from novamig.measure.contract import CaseClock
from novamig.results import MigrationRecord
from novamig.runner import poller as poller_module
from novamig.runner.migration_watcher import MigrationWatcher, Policy
from novamig.runner.poller import (
    CATCH_UP_EVERY,
    CURSOR_MARGIN_S,
    NEW_RECORDS_SLACK,
    PROGRESS_PROBE_READS,
    PROGRESS_READS_PER_TICK,
    REQUESTS_IN_FLIGHT,
    CasePoller,
    ComputeBatches,
)

POLL_S = 0.25
FAST_POLL_S = 0.125
TAG = "novamig"
EPOCH = datetime(2026, 12, 6, 1, 0, 0, tzinfo=UTC)
COURSE = (  # a migration's statuses, in seconds since its request (record created at the first)
    (0.25, "accepted"),  # created: no updated_at
    (1.0, "accepted"),  # the scheduler chose the destination: first update
    (1.25, "queued"),
    (1.5, "preparing"),
    (2.0, "running"),
    (4.0, "completed"),
)
SETTLE_S = 0.25  # completed → the server ACTIVE on the destination


class FakeTime:
    """Monotonic seconds that move only when the poller waits between ticks."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._moved = threading.Condition()

    def monotonic(self) -> float:
        with self._moved:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._moved:
            self.now += seconds
            self._moved.notify_all()

    def wait_until(self, t: float) -> None:
        with self._moved:
            self._moved.wait_for(lambda: self.now >= t, timeout=30)
            assert self.now >= t, "fake time stopped: the poller no longer ticks"

    def wall(self, t: float) -> datetime:
        """Nova's time stamps for fake time `t` (0.0: long before the run)."""
        return EPOCH + timedelta(seconds=t - 1000.0)


@dataclass(frozen=True)
class Request:
    t: float
    method: str
    path: str


@dataclass
class _Server:
    id: str
    source: str = "compute1"
    dest: str = "compute2"
    stretch: float = 1.0  # its course takes this many times `COURSE`'s
    answer_after_s: float = 0.0  # the live-migrate request is answered this long after it was sent
    lag_s: float = 0.0
    """Its rows' changes are stamped (``updated_at``) this long before a list can see them: the
    writer stamps the row, then commits; another server's writer may commit at once."""
    requested: float | None = None

    def at(self, since_request: float) -> float:
        assert self.requested is not None
        return self.requested + self.stretch * since_request


@dataclass
class NovaLists(Compute):
    """Nova's compute API as the poller and the watches read it, for `count` servers each
    migrating once from compute1 to compute2 along `COURSE`; every request goes into `log`.
    `Compute`'s own methods build the requests; only the HTTP answer is played here."""

    time: FakeTime
    count: int
    log: list[Request] = field(default_factory=list)
    servers: dict[str, _Server] = field(default_factory=dict)
    answered: int = 0  # live-migrate requests answered
    hold_requests: bool = False  # each request waits for as many in flight as the poller may send
    in_flight: int = 0
    most_in_flight: int = 0
    whole_seconds: bool = False
    """``updated_at`` rounded to the second, as MySQL's DATETIME stores it: a row can carry a
    stamp up to 0.5 s later than the one of a row written after it."""
    listed_rows: int = 0  # rows the changed lists returned, every tick's counted

    def __post_init__(self) -> None:
        self.max_version = self.version = mv.Microversion(2, 80)
        self._lock = threading.Lock()
        self._flight = threading.Condition()
        for i in range(self.count):
            sid = f"00000000-0000-4000-8000-{i:012d}"
            self.servers[sid] = _Server(sid)

    # -- the state, as of a time ---------------------------------------------------------------------
    def _record(self, s: _Server, t: float) -> dict[str, Any] | None:
        t -= s.lag_s  # what a reader sees at t: the changes committed by then
        if s.requested is None or t < s.at(COURSE[0][0]):
            return None
        passed = [(at, status) for at, status in COURSE if t >= s.at(at)]
        updated = s.at(passed[-1][0]) if len(passed) > 1 else None  # created: no updated_at
        return {
            "id": int(s.id[-6:]) + 1,
            "uuid": "11111111" + s.id[8:],
            "instance_uuid": s.id,
            "status": passed[-1][1],
            "migration_type": "live-migration",
            "source_compute": s.source,
            "dest_compute": s.dest,
            "created_at": self._stamp(s.at(COURSE[0][0])),
            "updated_at": None if updated is None else self._stamp(updated),
        }

    def _server(self, s: _Server, t: float) -> dict[str, Any]:
        t -= s.lag_s
        if s.requested is None or t < s.requested:
            status, task, host, updated = "ACTIVE", None, s.source, 0.0
        elif t >= (arrived := s.at(COURSE[-1][0] + SETTLE_S)):
            status, task, host, updated = "ACTIVE", None, s.dest, arrived
        else:
            status, task, host, updated = "MIGRATING", "migrating", s.source, s.requested
        return {
            "id": s.id,
            "name": s.id[-3:],
            "status": status,
            "OS-EXT-STS:task_state": task,
            "OS-EXT-SRV-ATTR:host": host,
            "updated": self._stamp(updated)[:19] + "Z",  # Nova's server view: to the second
            "tags": [TAG],
        }

    def _stamp(self, t: float) -> str:
        if self.whole_seconds:
            t = 1000.0 + round(t - 1000.0)  # fake time 1000.0 is a whole second of Nova's clock
        return self.time.wall(t).strftime("%Y-%m-%dT%H:%M:%S.%f")

    # -- the API ---------------------------------------------------------------------------------------
    def call(self, method: str, url: str, **_: Any) -> Any:
        t = self.time.monotonic()
        with self._lock:
            self.log.append(Request(t, method, url))
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        since = _time(query["changes-since"]) if "changes-since" in query else None
        path = parts.path.split("/")
        if parts.path == "/servers/detail":
            rows = [self._server(s, t) for s in self.servers.values()]
            rows = [r for r in rows if since is None or _time(r["updated"]) >= since]
            self.listed_rows += len(rows) if since is not None else 0
            return {"servers": rows}
        if path[1] == "servers":
            if len(path) == 3:
                return {"server": self._server(self.servers[path[2]], t)}
            mine = self._record(self.servers[path[2]], t)
            in_progress = mine is not None and mine["status"] in ("queued", "preparing", "running")
            return {"migrations": [mine] if in_progress else []}
        assert parts.path == "/os-migrations", url
        rows = [m for s in self.servers.values() if (m := self._record(s, t)) is not None]
        if since is not None:  # Nova: updated_at >= changes-since; a NULL updated_at never matches
            rows = [m for m in rows if m["updated_at"] is not None and _time(m["updated_at"]) >= since]
            self.listed_rows += len(rows)
        if "instance_uuid" in query:
            rows = [m for m in rows if m["instance_uuid"] == query["instance_uuid"]]
        if "limit" in query:  # paged: newest created first
            rows = sorted(rows, key=lambda m: (m["created_at"], m["id"]), reverse=True)[: int(query["limit"])]
        return {"migrations": rows}

    def live_migrate(
        self, server_id: str, host: str | None, block_migration: mv.BlockMigration
    ) -> str | None:
        s = self.servers[server_id]
        t = self.time.monotonic()
        with self._lock:
            self.log.append(Request(t, "POST", f"/servers/{server_id}/action"))
            s.requested = t
        with self._flight:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._flight.notify_all()
            if self.hold_requests:
                # answered once one request more than the poller may send is in flight, or after
                # 0.2 s: a poller that sends too many shows it in `most_in_flight`
                unanswered = self.count - self.answered
                self._flight.wait_for(lambda: self.in_flight > min(REQUESTS_IN_FLIGHT, unanswered - 1), 0.2)
        if s.answer_after_s:
            self.time.wait_until(t + s.answer_after_s)
        with self._flight:
            self.in_flight -= 1
            self.answered += 1
        return None


def _time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _migrate_all(nova: NovaLists) -> tuple[list[MigrationRecord], CasePoller]:
    """Every server migrated at once through one `CasePoller`, as a case does."""
    clock = CaseClock(source=nova.time.monotonic)
    records: dict[str, MigrationRecord] = {}

    def between_ticks(seconds: float) -> None:
        """Fake time moves on only once every request was sent and every answered one's watch is
        in the poller: they come from their own threads, in real time."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            any(s.requested is None for s in nova.servers.values())
            or poller.watching() + len(records) < nova.answered
        ):
            time.sleep(0.001)
        nova.time.sleep(seconds)

    poller = CasePoller(
        ComputeBatches(nova, TAG), poll_s=POLL_S, fast_poll_s=FAST_POLL_S, now=clock.now, wait=between_ticks
    )

    def one(s: _Server) -> None:
        watcher = MigrationWatcher(
            nova,
            clock,
            server_id=s.id,
            server_name=s.id[-3:],
            source_host=s.source,
            destination=s.dest,
            block_migration="auto",
            policy=Policy(timeout_s=None),
            stop=threading.Event(),
            poll_s=POLL_S,
            fast_poll_s=FAST_POLL_S,
        )
        records[s.id] = poller.watch(watcher)

    with poller:
        threads = [threading.Thread(target=one, args=(s,)) for s in nova.servers.values()]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
    assert len(records) == nova.count
    return list(records.values()), poller


def _polling(log: list[Request]) -> list[Request]:
    """The poller's own reads: its list calls and the per-server in-progress reads."""
    return [
        r
        for r in log
        if r.path.startswith("/servers/detail")
        or "changes-since=" in r.path
        or "limit=" in r.path
        or r.path.endswith("/migrations")
    ]


def test_the_calls_per_tick_do_not_grow_with_the_migrations() -> None:
    """50 migrations at once cost the poller the same calls per tick as 5: two changed lists, the
    newest records while a watch has not seen its own, and a few in-progress reads."""
    per_tick: dict[int, float] = {}
    for n in (5, 50):
        nova = NovaLists(FakeTime(), n)
        records, poller = _migrate_all(nova)
        assert all(r.status == "completed" for r in records), [(r.server, r.status) for r in records]
        polling = _polling(nova.log)
        calls = Counter(r.path.split("?")[0] + ("?limit" if "limit=" in r.path else "") for r in polling)
        ticks = sum(1 for r in polling if r.path.startswith("/os-migrations?") and "changes-since=" in r.path)
        assert calls["/servers/detail"] == ticks == poller.ticks
        in_progress = sum(v for k, v in calls.items() if k.endswith("/migrations"))
        # no memory figures (Nova's fake driver): each running migration read a few times, then not
        assert in_progress <= PROGRESS_PROBE_READS * n
        assert len(polling) <= ticks * (3 + PROGRESS_READS_PER_TICK)
        # the newest-records read only until every watch has its record (0.25 s after the request)
        assert 1 <= calls["/os-migrations?limit"] <= 3
        per_tick[n] = (len(polling) - in_progress) / ticks
        # each request once, each server's earlier migrations listed once before it
        assert Counter(r.method for r in nova.log)["POST"] == n
        assert sum(1 for r in nova.log if "instance_uuid=" in r.path) == n
    assert per_tick[50] <= per_tick[5] + 0.2, per_tick


def test_the_newest_records_read_asks_for_the_waiting_watches_and_a_margin() -> None:
    """As many of the newest records as watches wait for theirs, and `NEW_RECORDS_SLACK` more
    (records other clients create meanwhile); no such read once every watch has its record."""
    nova = NovaLists(FakeTime(), 12)
    _migrate_all(nova)
    limits = [int(parse_qs(urlsplit(r.path).query)["limit"][0]) for r in nova.log if "limit=" in r.path]
    # the first tick comes with the first watch (the others join it as their requests are answered);
    # at 0.25 s every record exists and that tick's read, the last, finds all 12
    assert NEW_RECORDS_SLACK + 12 in limits and limits[-1] == 12 + NEW_RECORDS_SLACK, limits
    assert all(NEW_RECORDS_SLACK < x <= 12 + NEW_RECORDS_SLACK for x in limits)


def test_the_accepted_phase_is_seen_though_nova_gives_it_no_update_time() -> None:
    """A record is ``accepted`` from 0.25 s to 1.25 s after the request, updated only at 1.0 s: the
    changed list alone would see it 0.25 s before it leaves that status."""
    nova = NovaLists(FakeTime(), 20)
    records, _ = _migrate_all(nova)
    for r in records:
        assert r.phases_s["request"] <= 0.25 + POLL_S, r.phases_s
        assert 1.0 - POLL_S <= r.phases_s["accepted"] <= 1.0 + POLL_S, r.phases_s
        assert r.poll_period_s is not None and FAST_POLL_S <= r.poll_period_s <= POLL_S


def test_a_request_answered_after_its_migration_ended_still_finds_its_record() -> None:
    """A saturated API can answer a live-migrate request after the migration is over: the poller
    kept every record its lists returned, so the watch that starts then sees it completed."""
    nova = NovaLists(FakeTime(), 4)
    late, *others = nova.servers.values()
    late.answer_after_s = COURSE[-1][0] + SETTLE_S + 4 * POLL_S
    for s in others:  # they keep the poller ticking (fake time moves only then) meanwhile
        s.stretch = 3.0
    records, _ = _migrate_all(nova)
    by_id = {r.server: r for r in records}
    record = by_id[late.id[-3:]]
    assert record.status == "completed" and record.dest_host == "compute2", record.events
    assert record.migration_id == int(late.id[-6:]) + 1
    assert all(r.status == "completed" for r in records)


def test_at_most_a_few_requests_await_their_answer_at_a_time() -> None:
    """A case's live-migrate requests go out as earlier ones are answered, `REQUESTS_IN_FLIGHT`
    at a time (an API's worker pool serves them in turn: sent all at once, the last waited past the
    client's timeout); the migrations themselves still overlap."""
    nova = NovaLists(FakeTime(), 3 * REQUESTS_IN_FLIGHT, hold_requests=True)
    records, _ = _migrate_all(nova)
    assert nova.most_in_flight == REQUESTS_IN_FLIGHT
    assert all(r.status == "completed" for r in records)
    assert max(r.requested_at for r in records) < min(r.finished_at for r in records)


def _lagging_nova(n: int) -> NovaLists:
    """`n` servers whose courses interleave (stretched 1× to 1.9×), every other one's changes
    committed `LAG_S` after they were stamped, stamps to the whole second (MySQL's DATETIME)."""
    nova = NovaLists(FakeTime(), n, whole_seconds=True)
    for i, s in enumerate(nova.servers.values()):
        s.stretch = 1.0 + (i % 10) / 10
        s.lag_s = LAG_S if i % 2 else 0.0
    return nova


LAG_S = 0.45
"""Below half a second: a stamp rounded to the second (0.5 s either way) then stays within one
second of a row stamped later and committed first, which `CURSOR_MARGIN_S` covers."""


def _phases_seen(records: list[MigrationRecord], nova: NovaLists) -> list[str]:
    """What the poller did not see of each migration: a status change missing from its events
    (a list missed it, and the next status was seen instead), or a status not seen for as long as
    it lasted, within a tick (``phases_s``; its ``queued`` is the queueing time, not the status)."""
    wrong = []
    by_name = {s.id[-3:]: s for s in nova.servers.values()}
    statuses = [status for _, status in COURSE[1:]]
    for r in records:
        s = by_name[r.server]
        for before, after in itertools.pairwise(dict.fromkeys(statuses)):
            if f"migration: {before} → {after}" not in {e.what for e in r.events}:
                wrong.append(f"{r.server}: {before} → {after} not seen")
        for (at, status), (until, _) in itertools.pairwise(COURSE[3:]):  # preparing, running
            expected = s.stretch * (until - at)
            seen = r.phases_s.get(status)
            if seen is None or abs(seen - expected) > POLL_S + 1e-6:
                wrong.append(f"{r.server} {status}: {seen} s, lasted {expected:g} s")
    return wrong


def test_the_cursor_margin_misses_no_change_committed_after_a_later_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lists read `CURSOR_MARGIN_S` behind the newest stamp seen: a change stamped before that
    one but committed after it (a writer slower to commit) is still listed, and every status of
    every migration is seen for as long as it lasted. Without the margin some are lost: the test
    can tell."""
    nova = _lagging_nova(40)
    records, poller = _migrate_all(nova)
    assert _phases_seen(records, nova) == []
    assert all(r.status == "completed" for r in records)
    # what the ticks re-read: each change is listed again by the ticks within the margin and the
    # second its stamp rounds to (ticks mostly `POLL_S` apart here), and by the catch-up reads
    changes = 40 * (len(COURSE) - 1 + 2)  # the record's updates, the server's two
    catch_up_rows = (poller.ticks // CATCH_UP_EVERY) * 40 * 2
    assert nova.listed_rows <= changes * ((CURSOR_MARGIN_S + 1.0) / POLL_S + 1) + catch_up_rows

    monkeypatch.setattr(poller_module, "CURSOR_MARGIN_S", 0.0)
    nova = _lagging_nova(40)
    records, _ = _migrate_all(nova)
    assert _phases_seen(records, nova) != []
