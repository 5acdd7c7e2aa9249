"""One live migration, from request to outcome: request, poll, apply the policy, record.

The poller reads the server and its in-progress migrations every `poll_s` (≤ 0.5 s), faster near
the end (`fast_poll_s`), and the final status from ``/os-migrations`` once the record leaves the
in-progress list. The policy acts through the API only, as an operator would:

* ``post_copy_after_s`` — force-complete once the migration has run that long and Nova's record
  shows the copy has begun (at most `COPY_BEGIN_WAIT_S` later) — post-copy where the hosts permit
  it, pause-and-copy otherwise: Nova's choice, recorded as Nova reports it;
* ``abort_after_s`` — abort: the expected outcome is ``cancelled``;
* ``timeout_s`` — abort and record ``timeout`` (also when Nova never confirms the abort);
* the run being stopped (Ctrl-C) — abort and record what happened.

Policy times count from the live-migrate request. Aborting needs the migration in an abortable
status (running; queued/preparing from 2.65): a refusal is retried on the next poll.

Who reads: `run` polls this one migration itself (the pytest plugin's single migrations, a Nova
older than 2.59); a case's migrations are read instead by the case's one batched poller
(`novamig.runner.poller`), which calls `start`, then `step` with each tick's readings. The policy
above is the same either way: it lives in `step`'s path.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from novamig.cloud.compute import ComputeApiError, MigrationState, ServerState
from novamig.cloud.errors import CloudError, MigrationRequestRefused
from novamig.cloud.microversions import BlockMigration
from novamig.measure.contract import CaseClock
from novamig.results import MigrationRecord, MigrationStatus
from novamig.runner.timeline import Observation, Timeline
from novamig.stats import summarize

log = logging.getLogger(__name__)

POLL_S = 0.25
FAST_POLL_S = 0.1
ABORT_GRACE_S = 60.0
"""After an abort (timeout, Ctrl-C), how long Nova gets to confirm before we stop waiting."""
RECORD_APPEAR_S = 60.0
"""How long after the request a migration record may take to appear before we call it an error."""
POLL_FAILURE_LIMIT_S = 120.0
"""Polls failing this long in a row (cloud gone, API down): the migration is recorded as an error."""
SETTLE_S = 60.0
"""After the record is final, how long the server may take to become ACTIVE again."""
# Nova reports `running` from the start of its migration job, seconds before the hypervisor copies
# anything on a loaded host; Nova's libvirt driver then fails the post-copy switch ("Failed to switch
# to post-copy live migration") and the migration goes on in pre-copy. So force-complete waits for
# the first memory figures (the copy has begun), at most this much longer on a cloud that gives none.
COPY_BEGIN_WAIT_S = 10.0
EARLY_STATUSES = frozenset({"accepted", "queued", "preparing"})
NOVA_IN_PROGRESS = frozenset({"queued", "preparing", "running", "post-migrating"})
"""What ``GET /servers/{id}/migrations`` lists (nova.db migration_get_in_progress_by_instance)."""
SERVER_EVERY_N_EARLY_POLLS = 4


class MigrationApi(Protocol):
    """What the watcher needs from the cloud; `novamig.cloud.compute.Compute` provides it."""

    def server(self, server_id: str) -> ServerState: ...

    def server_migrations(self, server_id: str) -> list[MigrationState]: ...

    def live_migrations_of(self, server_id: str) -> list[MigrationState]: ...

    def live_migrate(self, server_id: str, host: str | None, block_migration: BlockMigration) -> str | None:
        """Request the migration; the API request's id when known (Nova's instance action)."""
        ...

    def force_complete(self, server_id: str, migration_id: int) -> None: ...

    def abort(self, server_id: str, migration_id: int, status: str) -> None: ...


@dataclass(frozen=True)
class Policy:
    post_copy_after_s: float | None = None
    abort_after_s: float | None = None
    timeout_s: float | None = 600.0


@dataclass(frozen=True)
class Progress:
    """What the live view shows about a migration in flight."""

    server: str
    status: str
    percent: float | None
    elapsed_s: float
    source_host: str | None
    dest_host: str | None


@dataclass
class _PollState:
    """What one watch carries from poll to poll."""

    polls: int = 0
    server: ServerState | None = None
    last_status: str | None = None  # the migration record's status at the last poll
    dest_host: str | None = None
    final_status: str | None = None  # the first final status Nova reported, and when
    final_at: float | None = None
    failing_since: float | None = None  # polls failing in a row since then
    failures_noted: bool = False


class MigrationWatcher:
    def __init__(
        self,
        api: MigrationApi,
        clock: CaseClock,
        *,
        server_id: str,
        server_name: str,
        source_host: str | None,
        destination: str | None,
        block_migration: BlockMigration,
        policy: Policy,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        poll_s: float = POLL_S,
        fast_poll_s: float = FAST_POLL_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.clock = clock
        self.server_id = server_id
        self.server_name = server_name
        self.source_host = source_host
        self.destination = destination
        self.block_migration = block_migration
        self.policy = policy
        self.stop = stop
        self.on_progress = on_progress
        self.poll_s = min(poll_s, 0.5)
        self.fast_poll_s = min(fast_poll_s, self.poll_s)
        self.sleep = sleep
        self.migration_id: int | None = None
        self.request_id: str | None = None  # the live-migrate request's, naming Nova's instance action
        self._abort_reason: str | None = None  # "policy" | "timeout" | "interrupted"
        self._abort_sent_at: float | None = None
        self._abort_refusal_noted = False
        self._forced = False
        self._poll_times: list[float] = []
        self._known: set[int] = set()  # the server's earlier migrations, listed before the request
        self._st = _PollState()
        self._timeline = Timeline(0.0, source_host)  # replaced by `start`

    # -- public ------------------------------------------------------------------------------------
    def run(self) -> MigrationRecord:
        """Request the migration and poll it on its own to its end (one watch, or a cloud where
        the case's batched poller cannot read: `novamig.runner.poller`)."""
        refused = self.start()
        if refused is not None:
            return refused
        self._reader = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="novamig-poll")
        try:
            return self._poll()
        finally:
            self._reader.shutdown(wait=True)

    def start(self) -> MigrationRecord | None:
        """Send the live-migrate request; the record (an error) when Nova refuses it."""
        try:
            self._known = {m.id for m in self.api.live_migrations_of(self.server_id)}
        except CloudError as exc:
            log.warning("%s: cannot list earlier migrations: %s", self.server_name, exc)
        requested_at = self.clock.now()
        self._timeline = timeline = Timeline(requested_at, self.source_host)
        target = self.destination or "scheduler's choice"
        timeline.note(requested_at, f"live-migrate requested: {self.source_host or '?'} → {target}")
        try:
            self.request_id = self.api.live_migrate(self.server_id, self.destination, self.block_migration)
        except MigrationRequestRefused as exc:
            timeline.note(self.clock.now(), f"request refused: {exc}")
            return self._record(timeline, "error", self.clock.now(), None, why=f"request refused: {exc}")
        accepted = self.clock.now()
        timeline.note(accepted, f"request accepted by the API after {accepted - requested_at:.3f} s")
        return None

    def step(
        self, server: ServerState | None, migrations: list[MigrationState], t: float
    ) -> MigrationRecord | None:
        """One poll from readings made elsewhere (the case's batched poller): the server as last
        read and the live-migration records of this server it has seen, both as of `t` (when the
        reads finished, on the case clock); the record once the migration has ended."""
        self._st.polls += 1
        if server is not None:
            self._st.server = server
        if self._st.server is None:
            return None
        return self._after_read(self._pick(migrations), t)

    def failed(self, exc: CloudError) -> MigrationRecord | None:
        """A poll whose reads failed (made here or by the batched poller); the record once the
        cloud has not answered for too long."""
        self._st.polls += 1
        return self._poll_failed(self._timeline, self._st, exc)

    @property
    def near_end(self) -> bool:
        """Whether a faster poll pays off now (see `Timeline.near_end`)."""
        return self._timeline.near_end()

    # -- the loop ----------------------------------------------------------------------------------
    def _poll(self) -> MigrationRecord:
        st = self._st
        while True:
            st.polls += 1
            poll_started = self.clock.now()
            try:
                record = self._read(st, self._known)
            except CloudError as exc:
                given_up = self._poll_failed(self._timeline, st, exc)
                if given_up is not None:
                    return given_up
                self.sleep(self.poll_s)
                continue
            # The state is known from now on: stamp the observation when the reads finished.
            ended = self._after_read(record, self.clock.now())
            if ended is not None:
                return ended
            # Poll on a fixed period: the time the reads took counts against it.
            period = self.fast_poll_s if self._timeline.near_end() else self.poll_s
            self.sleep(max(0.0, period - (self.clock.now() - poll_started)))

    def _after_read(self, record: MigrationState | None, t: float) -> MigrationRecord | None:
        """A poll whose reads succeeded, as of `t`: observe, then the outcome or the policy's step."""
        st, timeline = self._st, self._timeline
        st.failing_since, st.failures_noted = None, False
        obs = self._observe(timeline, st, record, t)
        return self._ended(timeline, st, obs, record) or self._policy_step(timeline, st, record, t)

    def _read(self, st: _PollState, known: set[int]) -> MigrationState | None:
        """One poll's reads: the migration record, and the server beside it (raises CloudError)."""
        # Before `running` the server cannot have moved: read it only now and then there.
        early = st.last_status in EARLY_STATUSES
        read_server = st.server is None or not early or st.polls % SERVER_EVERY_N_EARLY_POLLS == 0
        # The two reads run side by side: a busy API answers each slowly, and the poll period is
        # what bounds every time we record.
        pending = self._reader.submit(self.api.server, self.server_id) if read_server else None
        try:
            return self._find_record(known, st.last_status)
        finally:
            if pending is not None:
                st.server = pending.result()

    def _poll_failed(self, timeline: Timeline, st: _PollState, exc: CloudError) -> MigrationRecord | None:
        """A poll whose reads failed: noted when failures start and when they have lasted too long;
        the record (an error) once the cloud has not answered for too long."""
        now = self.clock.now()
        st.failing_since = now if st.failing_since is None else st.failing_since
        if not st.failures_noted or now - st.failing_since >= POLL_FAILURE_LIMIT_S:
            timeline.note(now, f"poll failed: {exc}")
            st.failures_noted = True
        # A cloud that stopped answering must not hold the run (and its cleanup) forever.
        if now - st.failing_since >= POLL_FAILURE_LIMIT_S or (
            self.stop.is_set() and now - st.failing_since >= ABORT_GRACE_S / 4
        ):
            why = f"the cloud did not answer for {now - st.failing_since:.0f} s: {exc}"
            timeline.note(now, f"the cloud did not answer for {now - st.failing_since:.0f} s: giving up")
            return self._record(timeline, "error", now, st.dest_host, why=why)
        return None

    def _observe(
        self, timeline: Timeline, st: _PollState, record: MigrationState | None, t: float
    ) -> Observation:
        """The poll's state into the timeline (transitions logged) and the live view."""
        self._poll_times.append(t)
        server = st.server
        assert server is not None
        if record is not None:
            st.dest_host = record.dest_host or st.dest_host
            st.last_status = record.status
        obs = Observation(
            t=t,
            server_status=server.status,
            task_state=server.task_state,
            host=server.host,
            migration_status=record.status if record is not None else None,
            dest_host=st.dest_host,
            memory_total_bytes=record.memory_total_bytes if record else None,
            memory_processed_bytes=record.memory_processed_bytes if record else None,
            memory_remaining_bytes=record.memory_remaining_bytes if record else None,
        )
        for change in timeline.observe(obs):
            log.info("%s t=%.3f %s", self.server_name, t, change)
        self._report(obs, t - timeline.requested_at)
        return obs

    def _ended(
        self, timeline: Timeline, st: _PollState, obs: Observation, record: MigrationState | None
    ) -> MigrationRecord | None:
        """The outcome, once this poll shows one: arrived, failed, settled after a final status, or
        no record ever appearing."""
        t, server, dest_host = obs.t, st.server, st.dest_host
        assert server is not None
        if obs.arrived():
            return self._record(timeline, "completed", t, dest_host)
        if record is not None and record.final and st.final_status is None:
            st.final_status, st.final_at = record.status, t
        if st.final_status == "completed" and st.final_at is not None:
            why = None
            if server.status == "ERROR":
                why = f"server went to ERROR after the migration: {server.fault or '-'}"
            elif t - st.final_at > SETTLE_S:
                why = (
                    f"migration completed but the server is not ACTIVE on {dest_host} after {SETTLE_S:.0f} s"
                )
            if why is not None:
                timeline.note(t, why)
                return self._record(timeline, "error", t, dest_host, why=why)
        elif st.final_status is not None and st.final_at is not None:
            settled = server.status in ("ACTIVE", "ERROR") and server.task_state is None
            if settled or t - st.final_at > SETTLE_S:
                why = f"Nova ended the migration {st.final_status}; server {server.status} on {server.host}"
                return self._record(timeline, self._outcome(st.final_status), t, dest_host, why=why)
        if record is None and t - timeline.requested_at > RECORD_APPEAR_S and server.task_state is None:
            why = (
                f"no migration record appeared within {RECORD_APPEAR_S:.0f} s; "
                f"server {server.status} on {server.host}"
            )
            timeline.note(t, why)
            return self._record(timeline, "error", t, None, why=why)
        return None

    def _policy_step(
        self, timeline: Timeline, st: _PollState, record: MigrationState | None, t: float
    ) -> MigrationRecord | None:
        """The policy acts while the migration is not final; an abort Nova never confirms ends
        the watch after `ABORT_GRACE_S`."""
        if st.final_status is not None:
            return None
        self._apply_policy(timeline, t, t - timeline.requested_at, record)
        if self._abort_sent_at is not None and t - self._abort_sent_at > ABORT_GRACE_S:
            why = f"Nova did not confirm the abort within {ABORT_GRACE_S:.0f} s"
            timeline.note(t, why)
            outcome: MigrationStatus = "timeout" if self._abort_reason == "timeout" else "error"
            return self._record(timeline, outcome, t, st.dest_host, why=why)
        return None

    def _find_record(self, known: set[int], last_status: str | None) -> MigrationState | None:
        """The migration we asked for: in-progress list first (it has memory figures), then
        ``/os-migrations`` for a record that has left it (final status).

        Nova lists only queued/preparing/running/post-migrating records as in progress: in any
        other status (accepted, post-copy, final) one call to ``/os-migrations`` answers alone.
        """
        if last_status is None or last_status in NOVA_IN_PROGRESS:
            in_progress = [m for m in self.api.server_migrations(self.server_id) if m.id not in known]
        else:
            in_progress = []
        if self.migration_id is not None:
            mine = [m for m in in_progress if m.id == self.migration_id]
            if mine:
                return mine[0]
        elif in_progress:
            record = max(in_progress, key=lambda m: m.id)
            self.migration_id = record.id
            return record
        return self._pick(self.api.live_migrations_of(self.server_id))

    def _pick(self, migrations: list[MigrationState]) -> MigrationState | None:
        """Ours among a server's live-migration records: not one listed before the request, the
        one already followed, else the newest."""
        fresh = [m for m in migrations if m.id not in self._known]
        if self.migration_id is not None:
            fresh = [m for m in fresh if m.id == self.migration_id]
        if not fresh:
            return None
        record = max(fresh, key=lambda m: m.id)
        self.migration_id = record.id
        return record

    def _apply_policy(
        self, timeline: Timeline, t: float, elapsed: float, record: MigrationState | None
    ) -> None:
        p = self.policy
        if self._abort_reason is None:
            if self.stop.is_set():
                self._abort_reason = "interrupted"
            elif p.timeout_s is not None and elapsed >= p.timeout_s:
                self._abort_reason = "timeout"
            elif p.abort_after_s is not None and elapsed >= p.abort_after_s:
                self._abort_reason = "policy"
            if self._abort_reason is not None:
                why = {
                    "interrupted": "run interrupted",
                    "timeout": f"timeout_s={p.timeout_s} reached",
                    "policy": f"abort_after_s={p.abort_after_s} reached",
                }[self._abort_reason]
                timeline.note(t, f"abort wanted: {why}")
        if self._abort_reason is not None and self._abort_sent_at is None and record is not None:
            try:
                self.api.abort(self.server_id, record.id, record.status)
                self._abort_sent_at = t
                timeline.note(t, f"abort sent (migration {record.status})")
            except ComputeApiError as exc:
                if not self._abort_refusal_noted:
                    timeline.note(t, f"abort not possible yet, retrying: {exc}")
                    self._abort_refusal_noted = True
            return
        if (
            self._abort_reason is None
            and not self._forced
            and p.post_copy_after_s is not None
            and elapsed >= p.post_copy_after_s
            and record is not None
            and record.status == "running"
            and (_copy_begun(record) or elapsed >= p.post_copy_after_s + COPY_BEGIN_WAIT_S)
        ):
            late = elapsed - p.post_copy_after_s
            waited = f", {late:.1f} s late: the copy had not begun" if late >= 2 * POLL_S else ""
            try:
                self.api.force_complete(self.server_id, record.id)
                self._forced = True
                timeline.note(t, f"force-complete sent (post_copy_after_s={p.post_copy_after_s}{waited})")
            except ComputeApiError as exc:
                timeline.note(t, f"force-complete refused: {exc}")
                self._forced = True

    def _outcome(self, nova_status: str) -> MigrationStatus:
        if nova_status == "completed":
            return "completed"
        if nova_status == "cancelled":
            return "timeout" if self._abort_reason == "timeout" else "cancelled"
        return "error"

    def _report(self, obs: Observation, elapsed: float) -> None:
        if self.on_progress is None:
            return
        fraction = obs.progress_fraction
        self.on_progress(
            Progress(
                server=self.server_name,
                status=obs.migration_status or f"requested ({obs.server_status})",
                percent=None if fraction is None else round(100 * fraction, 1),
                elapsed_s=elapsed,
                source_host=self.source_host,
                dest_host=obs.dest_host,
            )
        )

    def _record(
        self,
        timeline: Timeline,
        status: MigrationStatus,
        finished_at: float,
        dest_host: str | None,
        *,
        why: str | None = None,
    ) -> MigrationRecord:
        """The migration's record; `why` becomes its `error` when the status is error (Nova's own
        reason is added afterwards, by `novamig.runner.migration_failure`)."""
        poll_period: float | None = None
        periods = summarize([b - a for a, b in itertools.pairwise(self._poll_times)])
        if periods is not None:
            poll_period = round(periods.p50, 6)
            timeline.note(
                finished_at,
                f"polls: {len(self._poll_times)}, period median {periods.p50:.3f} s, "
                f"max {periods.max:.3f} s (the duration's resolution)",
            )
        phases = timeline.phases_s()
        queued = queued_s(timeline)
        if queued is not None:
            phases["queued"] = queued
        if phases:
            timeline.note(finished_at, "phases: " + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items()))
        if self._abort_reason is not None:
            timeline.note(finished_at, f"aborted ({self._abort_reason})")
        duration = timeline.duration_s() if status == "completed" else None
        return MigrationRecord(
            server=self.server_name,
            source_host=self.source_host or "unknown",
            dest_host=dest_host,
            status=status,
            requested_at=timeline.requested_at,
            finished_at=finished_at,
            duration_s=duration,
            progress=timeline.progress,
            events=timeline.events,
            migration_id=self.migration_id,
            phases_s={k: round(v, 6) for k, v in phases.items()},
            poll_period_s=poll_period,
            error=self._timeout_error(why) if status == "timeout" else why if status == "error" else None,
        )

    def _timeout_error(self, why: str | None) -> str:
        """A timed-out migration's one line: the limit that ran out, then what Nova did (a
        timeout is a failure like an error, and the console and report show this line for it)."""
        limit = f"not completed within migration.policy.timeout_s = {self.policy.timeout_s:g} s; aborted"
        return f"{limit} ({why})" if why else limit

    @property
    def aborted_by(self) -> str | None:
        return self._abort_reason


def queued_s(timeline: Timeline) -> float | None:
    """``phases_s.queued``: the live-migrate request → the first poll that sees the record past
    ``accepted``/``queued``/``preparing`` — the wait for the API, the conductor, the scheduler, a
    free slot under the source's ``max_concurrent_live_migrations`` and the destination's
    preparation, before any memory is copied. None when the migration never got that far."""
    started = next(
        (
            o.t
            for o in timeline.observations
            if o.migration_status is not None and o.migration_status not in EARLY_STATUSES
        ),
        None,
    )
    return None if started is None else round(started - timeline.requested_at, 6)


def _copy_begun(record: MigrationState) -> bool:
    """Nova's record shows memory copied: the hypervisor's migration has started."""
    return bool(record.memory_processed_bytes) or (
        record.memory_remaining_bytes is not None
        and record.memory_total_bytes is not None
        and record.memory_remaining_bytes < record.memory_total_bytes
    )
