"""The migration watcher's policy loop, with no cloud and no wall time.

`MigrationWatcher` is driven through its `MigrationApi` protocol by `ScriptedMigrationApi`: a
stand-in that plays one Nova live migration as a function of (fake) time since the request and of
what the watcher asked for (abort, force-complete), answering the way Nova's API does — the
in-progress list holds only queued/preparing/running/post-migrating records, ``/os-migrations``
holds every record, an abort is refused (HTTP 409) outside the abortable statuses, an earlier
migration of the same server is still listed. A scripted stand-in is the input here: the faults
and timings the policy reacts to (a migration that never converges, an abort Nova never confirms,
an API that stops answering) cannot be produced on demand by a real cloud.

The watcher takes its clock (`CaseClock(source=...)`) and its `sleep` as parameters; both come
from one `FakeTime`, so a 10-minute timeout runs in milliseconds and every time is exact.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from novamig.cloud.compute import ComputeApiError, MigrationState, ServerState
from novamig.cloud.errors import CloudError, MigrationRequestRefused
from novamig.cloud.microversions import BlockMigration
from novamig.measure.contract import CaseClock
from novamig.results import MigrationRecord
from novamig.runner.migration_watcher import (
    ABORT_GRACE_S,
    COPY_BEGIN_WAIT_S,
    NOVA_IN_PROGRESS,
    POLL_FAILURE_LIMIT_S,
    MigrationWatcher,
    Policy,
    Progress,
)

POLL_S = 0.25
FAST_POLL_S = 0.125  # exact in binary: fake times add up without rounding
MIB = 1024 * 1024
SERVER = "srv-1"
EARLIER_MIGRATION = 7  # a finished migration of the same server, from before this one


class FakeTime:
    """A monotonic clock that moves only when the watcher sleeps (or a read is scripted to take
    time): the watcher's `clock` source and its `sleep`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        with self._lock:
            self.now += seconds


@dataclass
class Script:
    """One migration's course, in seconds since the live-migrate request."""

    appears_s: float = 0.1  # the record shows up in the API this long after the request
    queued_s: float = 0.5  # queued, then preparing for as long
    preparing_s: float = 0.5
    copy_s: float | None = 4.0  # running until pre-copy converges; None: it never does
    settle_s: float = 0.5  # completed → the server ACTIVE on the destination
    post_copy_s: float = 1.0  # force-complete → completed
    abort_s: float | None = 0.5  # abort → cancelled; None: Nova never confirms
    error_at_s: float | None = None  # the migration fails (status `error`) at this time
    api_down_at_s: float | None = None  # every read fails from then on
    read_latency_s: float = 0.0  # each migration-list read takes this long
    abortable: frozenset[str] = frozenset({"running"})  # Nova before 2.65
    refuse_request: bool = False
    memory_bytes: int = 256 * MIB
    copy_begins_s: float = 0.0  # running, but no memory figures for this long (the copy has not begun)


@dataclass
class ScriptedMigrationApi:
    """`MigrationApi` playing one scripted live migration of `SERVER` from compute1 to compute2."""

    time: FakeTime
    script: Script = field(default_factory=Script)
    source: str = "compute1"
    dest: str = "compute2"
    calls: list[tuple[float, str]] = field(default_factory=list)
    _requested: float | None = None
    _aborted: float | None = None
    _forced: float | None = None

    # -- the script, as of now ---------------------------------------------------------------------
    def _elapsed(self) -> float | None:
        return None if self._requested is None else self.time.monotonic() - self._requested

    def _running_from(self) -> float:
        return self.script.appears_s + self.script.queued_s + self.script.preparing_s

    def _completed_at(self) -> float | None:
        """When the migration completes (seconds since the request) as things stand now; None when
        it will not (never converging, aborted or failed first)."""
        s = self.script
        if self._forced is not None:
            done = self._forced + s.post_copy_s
        elif s.copy_s is not None:
            done = self._running_from() + s.copy_s
        else:
            return None
        if (self._aborted is not None and self._aborted < done) or (
            s.error_at_s is not None and s.error_at_s <= done
        ):
            return None
        return done

    def _status(self, e: float) -> str:
        s = self.script
        done = self._completed_at()
        if done is not None and e >= done:
            return "completed"
        if s.error_at_s is not None and e >= s.error_at_s:
            return "error"
        if self._aborted is not None and s.abort_s is not None and e >= self._aborted + s.abort_s:
            return "cancelled"
        if self._forced is not None:
            return "running (post-copy)"
        if e >= self._running_from():
            return "running"
        return "preparing" if e >= s.appears_s + s.queued_s else "queued"

    def _record(self) -> MigrationState | None:
        e = self._elapsed()
        if e is None or e < self.script.appears_s:
            return None
        status = self._status(e)
        remaining: int | None = None
        if status == "running" and e < self._running_from() + self.script.copy_begins_s:
            return MigrationState(
                id=EARLIER_MIGRATION + 1, status=status, source_host=self.source, dest_host=self.dest
            )
        if status == "running":
            total = self.script.memory_bytes
            ran = e - self._running_from()
            copy = self.script.copy_s
            # converging: down to nothing over copy_s; never converging: a dirty set that moves
            remaining = int(total * (1 - ran / copy)) if copy else total // 2 - int(ran * 1000)
        return MigrationState(
            id=EARLIER_MIGRATION + 1,
            status=status,
            source_host=self.source,
            dest_host=self.dest,
            memory_total_bytes=self.script.memory_bytes,
            memory_processed_bytes=None if remaining is None else self.script.memory_bytes - remaining,
            memory_remaining_bytes=remaining,
        )

    def _read(self) -> None:
        e = self._elapsed()
        if self.script.api_down_at_s is not None and e is not None and e >= self.script.api_down_at_s:
            raise CloudError("compute API: connection refused")

    # -- MigrationApi ------------------------------------------------------------------------------
    def server(self, server_id: str) -> ServerState:
        assert server_id == SERVER
        self._read()
        record = self._record()
        e = self._elapsed()
        if record is None or e is None:
            moving = self._requested is not None
            return ServerState(
                SERVER,
                "one",
                "MIGRATING" if moving else "ACTIVE",
                "migrating" if moving else None,
                self.source,
            )
        if record.status == "completed":
            done = self._completed_at()
            assert done is not None
            if e >= done + self.script.settle_s:
                return ServerState(SERVER, "one", "ACTIVE", None, self.dest)
            return ServerState(SERVER, "one", "MIGRATING", "migrating", self.dest)
        if record.final:
            return ServerState(SERVER, "one", "ACTIVE", None, self.source)
        return ServerState(SERVER, "one", "MIGRATING", "migrating", self.source)

    def _earlier(self) -> MigrationState:
        return MigrationState(EARLIER_MIGRATION, "completed", self.dest, self.source)

    def server_migrations(self, server_id: str) -> list[MigrationState]:
        assert server_id == SERVER
        self._read()
        self.time.sleep(self.script.read_latency_s)
        record = self._record()
        return [record] if record is not None and record.status in NOVA_IN_PROGRESS else []

    def live_migrations_of(self, server_id: str) -> list[MigrationState]:
        assert server_id == SERVER
        self._read()
        self.time.sleep(self.script.read_latency_s)
        record = self._record()
        return [self._earlier()] + ([record] if record is not None else [])

    def live_migrate(self, server_id: str, host: str | None, block_migration: BlockMigration) -> None:
        assert (server_id, host) == (SERVER, self.dest)
        if self.script.refuse_request:
            raise MigrationRequestRefused("No valid host was found")
        self._requested = self.time.monotonic()
        self.calls.append((0.0, "live_migrate"))

    def force_complete(self, server_id: str, migration_id: int) -> None:
        e = self._elapsed()
        assert e is not None and migration_id == EARLIER_MIGRATION + 1
        self.calls.append((e, "force_complete"))
        if self._status(e) != "running":
            raise ComputeApiError("POST", "action", 409, f"migration is {self._status(e)}")
        self._forced = e

    def abort(self, server_id: str, migration_id: int, status: str) -> None:
        e = self._elapsed()
        assert e is not None and migration_id == EARLIER_MIGRATION + 1
        self.calls.append((e, f"abort ({status})"))
        if status not in self.script.abortable or self._status(e) not in self.script.abortable:
            raise ComputeApiError("DELETE", "migration", 409, f"cannot abort a migration in status {status}")
        self._aborted = e


@dataclass
class Watched:
    record: MigrationRecord
    api: ScriptedMigrationApi
    progress: list[Progress]

    def events(self) -> list[tuple[float, str]]:
        """(seconds since the request, what) of every event the watcher recorded."""
        return [(round(ev.t - self.record.requested_at, 6), ev.what) for ev in self.record.events]

    def times_of(self, prefix: str) -> list[float]:
        """When (since the request) each event starting with `prefix` was recorded."""
        return [t for t, what in self.events() if what.startswith(prefix)]

    def event_at(self, prefix: str) -> float:
        """When (since the request) the one event starting with `prefix` was recorded."""
        found = self.times_of(prefix)
        assert len(found) == 1, (prefix, self.events())
        return found[0]


def watch(
    script: Script,
    policy: Policy,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Watched:
    fake = FakeTime()
    api = ScriptedMigrationApi(fake, script)
    seen: list[Progress] = []

    def progress(p: Progress) -> None:
        seen.append(p)
        if on_progress is not None:
            on_progress(p)

    watcher = MigrationWatcher(
        api,
        CaseClock(source=fake.monotonic),
        server_id=SERVER,
        server_name="one",
        source_host=api.source,
        destination=api.dest,
        block_migration="auto",
        policy=policy,
        stop=stop or threading.Event(),
        on_progress=progress,
        poll_s=POLL_S,
        fast_poll_s=FAST_POLL_S,
        sleep=fake.sleep,
    )
    return Watched(watcher.run(), api, seen)


NO_POLICY = Policy(timeout_s=None)


# -- outcomes without a policy -----------------------------------------------------------------------


def test_completion_is_timed_to_the_server_active_on_the_destination() -> None:
    s = Script()
    w = watch(s, NO_POLICY)
    m = w.record
    completed = s.appears_s + s.queued_s + s.preparing_s + (s.copy_s or 0)
    arrived = completed + s.settle_s
    assert m.status == "completed", w.events()
    assert (m.source_host, m.dest_host, m.migration_id) == ("compute1", "compute2", EARLIER_MIGRATION + 1)
    # The duration ends at the first poll that sees the server ACTIVE on the destination: no
    # earlier (completed alone is not arrived), at most one (fast) poll later.
    assert m.duration_s is not None and arrived <= m.duration_s < arrived + FAST_POLL_S, m.duration_s
    assert m.finished_at == pytest.approx(m.requested_at + m.duration_s)
    assert w.event_at("migration: running → completed") == pytest.approx(completed, abs=FAST_POLL_S)
    assert w.event_at("ACTIVE on destination compute2") == pytest.approx(m.duration_s)
    # every status the migration left, plus request and settle (completed is left by arriving)
    assert set(m.phases_s) == {"request", "queued", "preparing", "running", "settle"}
    assert m.phases_s["running"] == pytest.approx(s.copy_s, abs=POLL_S)
    # the earlier migration of the server was never taken for this one, nothing was sent
    assert [c for _, c in w.api.calls] == ["live_migrate"]
    assert not any("abort" in what or "force" in what for _, what in w.events())


def test_an_error_of_the_migration_is_recorded_as_error() -> None:
    w = watch(Script(copy_s=None, error_at_s=2.0), NO_POLICY)
    assert w.record.status == "error", w.events()
    assert w.record.duration_s is None
    assert 2.0 <= w.event_at("migration: running → error") < 2.0 + POLL_S
    assert w.record.finished_at is not None
    assert w.record.finished_at - w.record.requested_at < 2.0 + 2 * POLL_S  # settled: no waiting


def test_a_refused_request_is_an_error_with_no_poll() -> None:
    w = watch(Script(refuse_request=True), NO_POLICY)
    assert w.record.status == "error"
    assert w.event_at("request refused: No valid host was found") == 0.0
    assert w.progress == [] and w.record.poll_period_s is None


def test_an_api_that_stops_answering_ends_the_watch_as_an_error() -> None:
    w = watch(Script(copy_s=None, api_down_at_s=3.0), NO_POLICY)
    assert w.record.status == "error", w.events()
    # noted when the failures start and again when they have lasted too long, not at every poll
    first, last = w.times_of("poll failed: compute API: connection refused")
    gave_up = w.event_at("the cloud did not answer for")
    assert 3.0 <= first < 3.0 + POLL_S
    assert last == gave_up
    assert 3.0 + POLL_FAILURE_LIMIT_S <= gave_up < 3.0 + POLL_FAILURE_LIMIT_S + 2 * POLL_S


# -- the policy ----------------------------------------------------------------------------------------


def test_abort_after_s_aborts_at_the_first_poll_past_it_and_ends_cancelled() -> None:
    s = Script(copy_s=None)
    w = watch(s, Policy(abort_after_s=2.0, timeout_s=None))
    assert w.record.status == "cancelled", w.events()
    wanted = w.event_at("abort wanted: abort_after_s=2.0 reached")
    assert 2.0 <= wanted < 2.0 + POLL_S
    assert w.event_at("abort sent (migration running)") == wanted
    assert [c for c in w.api.calls if c[1].startswith("abort")] == [(wanted, "abort (running)")]
    assert w.event_at("migration: running → cancelled") == pytest.approx(
        wanted + (s.abort_s or 0), abs=POLL_S
    )
    assert w.event_at("aborted (policy)") > wanted
    assert w.record.duration_s is None


def test_an_abort_refused_before_running_is_retried_until_nova_takes_it() -> None:
    """Before 2.65 Nova aborts only a running migration: the abort wanted while the migration is
    queued is refused (noted once), then sent at the first poll that sees it running."""
    s = Script(queued_s=1.0, preparing_s=1.0)
    w = watch(s, Policy(abort_after_s=0.5, timeout_s=None))
    assert w.record.status == "cancelled", w.events()
    assert 0.5 <= w.event_at("abort wanted: abort_after_s=0.5 reached") < 0.5 + POLL_S
    assert w.event_at("abort not possible yet, retrying") == w.event_at("abort wanted")
    running = s.appears_s + s.queued_s + s.preparing_s
    sent = w.event_at("abort sent (migration running)")
    assert running <= sent < running + POLL_S
    refused = [t for t, call in w.api.calls if call in ("abort (queued)", "abort (preparing)")]
    assert len(refused) >= 2 and all(t < running for t in refused)  # retried on later polls


def test_post_copy_after_s_forces_completion_and_the_migration_completes() -> None:
    s = Script(copy_s=None)
    w = watch(s, Policy(post_copy_after_s=3.0, timeout_s=None))
    assert w.record.status == "completed", w.events()
    forced = w.event_at("force-complete sent (post_copy_after_s=3.0)")
    assert 3.0 <= forced < 3.0 + POLL_S
    assert [c for c in w.api.calls if c[1] == "force_complete"] == [(forced, "force_complete")]
    assert w.event_at("migration: running → running (post-copy)") == pytest.approx(forced, abs=POLL_S)
    arrived = forced + s.post_copy_s + s.settle_s
    assert w.record.duration_s is not None
    assert arrived <= w.record.duration_s < arrived + FAST_POLL_S
    assert "running (post-copy)" in w.record.phases_s
    assert not any("abort" in what for _, what in w.events())


def test_force_complete_is_sent_once_even_when_nova_refuses_it() -> None:
    """A refusal (the migration already past running when the request lands) is recorded and not
    repeated: the migration goes on and completes by itself."""
    s = Script(copy_s=3.0)
    w = watch(s, Policy(post_copy_after_s=1.0, timeout_s=None))
    # Policy time reached while the migration is still preparing: nothing is sent until running.
    running = s.appears_s + s.queued_s + s.preparing_s
    forced = w.event_at("force-complete sent")
    assert running <= forced < running + POLL_S
    assert len([c for c in w.api.calls if c[1] == "force_complete"]) == 1
    assert w.record.status == "completed"


def test_force_complete_waits_until_nova_shows_the_copy_begun() -> None:
    """Nova says `running` before the hypervisor copies anything; a post-copy switch then fails in
    Nova's libvirt driver, so the request waits for the first memory figures."""
    s = Script(copy_s=None, copy_begins_s=4.0)
    w = watch(s, Policy(post_copy_after_s=1.0, timeout_s=None))
    begun = s.appears_s + s.queued_s + s.preparing_s + s.copy_begins_s
    forced = w.event_at("force-complete sent (post_copy_after_s=1.0, ")
    assert begun <= forced < begun + POLL_S
    assert w.record.status == "completed"


def test_force_complete_without_memory_figures_is_sent_after_the_longest_wait() -> None:
    s = Script(copy_s=None, copy_begins_s=math.inf)
    w = watch(s, Policy(post_copy_after_s=1.0, timeout_s=None))
    forced = w.event_at("force-complete sent")
    assert 1.0 + COPY_BEGIN_WAIT_S <= forced < 1.0 + COPY_BEGIN_WAIT_S + POLL_S
    assert w.record.status == "completed"


def test_timeout_aborts_and_records_timeout_not_cancelled() -> None:
    w = watch(Script(copy_s=None), Policy(abort_after_s=None, timeout_s=600.0))
    assert w.record.status == "timeout", w.events()
    wanted = w.event_at("abort wanted: timeout_s=600.0 reached")
    assert 600.0 <= wanted < 600.0 + POLL_S
    assert w.event_at("abort sent (migration running)") == wanted
    assert w.event_at("aborted (timeout)") > wanted
    assert w.record.error is not None
    assert w.record.error.startswith("not completed within migration.policy.timeout_s = 600 s; aborted (")


def test_timeout_takes_precedence_over_a_later_abort_after_s() -> None:
    w = watch(Script(copy_s=None), Policy(abort_after_s=5.0, timeout_s=2.0))
    assert w.record.status == "timeout"
    assert 2.0 <= w.event_at("abort wanted: timeout_s=2.0 reached") < 2.0 + POLL_S


def test_an_abort_nova_never_confirms_ends_after_the_grace_period() -> None:
    w = watch(Script(copy_s=None, abort_s=None), Policy(timeout_s=10.0))
    assert w.record.status == "timeout", w.events()
    sent = w.event_at("abort sent (migration running)")
    gave_up = w.event_at(f"Nova did not confirm the abort within {ABORT_GRACE_S:.0f} s")
    assert sent + ABORT_GRACE_S < gave_up <= sent + ABORT_GRACE_S + POLL_S
    assert len([c for c in w.api.calls if c[1].startswith("abort")]) == 1  # sent once
    assert w.record.error == (
        "not completed within migration.policy.timeout_s = 10 s; aborted "
        f"(Nova did not confirm the abort within {ABORT_GRACE_S:.0f} s)"
    )


def test_a_stopped_run_aborts_the_migration_and_says_why() -> None:
    stop = threading.Event()

    def stop_at_two_seconds(p: Progress) -> None:
        if p.elapsed_s >= 2.0:
            stop.set()

    w = watch(Script(copy_s=None), Policy(timeout_s=None), stop=stop, on_progress=stop_at_two_seconds)
    assert w.record.status == "cancelled", w.events()
    assert 2.0 <= w.event_at("abort wanted: run interrupted") < 2.0 + POLL_S
    assert w.event_at("aborted (interrupted)") > 2.0


# -- sampling ------------------------------------------------------------------------------------------


def test_progress_is_sampled_every_poll_and_faster_near_the_end() -> None:
    """Memory figures change at every read: one progress sample per poll, `poll_s` apart while
    much memory remains and `fast_poll_s` apart over the last 10 % (where the end is decided)."""
    s = Script(copy_s=10.0)
    w = watch(s, NO_POLICY)
    assert w.record.status == "completed"
    running = [p for p in w.record.progress if p.status == "running"]
    assert len(running) > 30
    # (gap to the next sample, memory remaining at the sample before it)
    gaps = [(round(b.t - a.t, 6), a.memory_remaining_bytes or 0) for a, b in itertools.pairwise(running)]
    early = [g for g, remaining in gaps if remaining > 0.2 * s.memory_bytes]
    late = [g for g, remaining in gaps if remaining < 0.09 * s.memory_bytes]
    assert early and set(early) == {POLL_S}, early
    assert late and set(late) == {FAST_POLL_S}, late
    # the live view got one update per poll, with the percentage the memory figures give
    assert len(w.progress) >= len(running)
    assert [p.percent for p in w.progress if p.percent is not None] == sorted(
        p.percent for p in w.progress if p.percent is not None
    )
    assert w.record.poll_period_s == POLL_S  # the median period, stated in the record
    [polls] = [what for _, what in w.events() if what.startswith("polls: ")]
    assert "period median 0.250 s" in polls, polls


def test_the_time_reads_take_counts_against_the_poll_period() -> None:
    """A slow API (each list read 1/16 s) does not stretch the period: the sleep is what is left."""
    w = watch(Script(copy_s=None, read_latency_s=0.0625), Policy(abort_after_s=5.0, timeout_s=None))
    assert w.record.poll_period_s == POLL_S, w.record.poll_period_s
    assert 5.0 <= w.event_at("abort wanted") < 5.0 + POLL_S
