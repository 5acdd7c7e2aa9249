"""An in-memory Nova for the runner's unit tests: real objects playing the cloud's part.

It implements the runner's own protocols (`watch.MigrationApi`, `case.Fleet`) — not openstacksdk —
with live migrations that move through Nova's observed statuses on a wall-clock schedule:
accepted → preparing → running (memory shrinking) → host switched while still ``running`` (the
trap Nova really shows) → completed with the server ACTIVE on the destination.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from novamig.cloud.compute import ComputeApiError, MigrationState, ServerState
from novamig.cloud.errors import BootFailure, MigrationRequestRefused
from novamig.runner.plan import CasePlan
from novamig.runner.probes import ServerInfo
from novamig.runner.signals import StopRequest

MEMORY = 256 * 1024 * 1024
# What Nova lists under /servers/{id}/migrations (db: migration_get_in_progress_by_instance).
IN_PROGRESS = ("queued", "preparing", "running", "post-migrating")


@dataclass
class FakeMigration:
    id: int
    server: str
    source: str
    dest: str
    created: float
    status: str = "accepted"
    aborted_at: float | None = None
    forced_at: float | None = None
    final: bool = False


@dataclass
class FakeServer:
    id: str
    name: str
    host: str
    status: str = "ACTIVE"
    task: str | None = None
    deleted: bool = False


@dataclass
class FakeNova:
    hosts: tuple[str, ...] = ("compute1", "compute2")
    phase_s: float = 0.02
    running_s: float = 0.08
    stuck: bool = False  # migrations never converge (until forced or aborted)
    fail: bool = False  # migrations end in error
    refuse: bool = False  # live-migrate requests are refused
    boot_fails: bool = False
    servers: dict[str, FakeServer] = field(default_factory=dict)
    migrations: list[FakeMigration] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    force_completes: list[int] = field(default_factory=list)
    aborts: list[int] = field(default_factory=list)
    max_in_flight: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- the simulated clock -------------------------------------------------------------------------
    def _advance(self) -> None:
        now = time.monotonic()
        for m in self.migrations:
            if m.final:
                continue
            srv = self.servers[m.server]
            t = now - m.created
            p, r = self.phase_s, self.running_s
            if m.aborted_at is not None:
                if now - m.aborted_at >= p:
                    m.status, m.final = "cancelled", True
                    srv.status, srv.task, srv.host = "ACTIVE", None, m.source
                else:
                    m.status = "cancelling"
                continue
            if m.forced_at is not None:
                if now - m.forced_at < p:
                    m.status = "running (post-copy)"
                    continue
                t = max(t, 2 * p + r)  # forced: jump to the switchover
            if t < p:
                m.status = "accepted"
            elif t < 2 * p:
                m.status = "preparing"
            elif (self.stuck and m.forced_at is None) or t < 2 * p + r:
                m.status = "running"
            elif self.fail:
                m.status, m.final = "error", True
                srv.status, srv.task = "ACTIVE", None
            elif t < 3 * p + r:
                m.status = "running"
                srv.host = m.dest  # host changed, record still running: wait for `completed`
            else:
                m.status, m.final = "completed", True
                srv.status, srv.task, srv.host = "ACTIVE", None, m.dest

    def in_flight(self) -> int:
        return sum(1 for m in self.migrations if not m.final)

    def _remaining(self, m: FakeMigration) -> int | None:
        if m.status != "running":
            return None
        t = time.monotonic() - m.created - 2 * self.phase_s
        done = 0.5 if self.stuck else min(1.0, max(0.0, t / self.running_s))
        return int(MEMORY * (1 - done))

    def _state(self, m: FakeMigration) -> MigrationState:
        remaining = self._remaining(m)
        return MigrationState(
            id=m.id,
            status=m.status,
            source_host=m.source,
            dest_host=m.dest,
            memory_total_bytes=MEMORY if remaining is not None else None,
            memory_processed_bytes=MEMORY - remaining if remaining is not None else None,
            memory_remaining_bytes=remaining,
            migration_type="live-migration",
        )

    # -- MigrationApi ---------------------------------------------------------------------------------
    def server(self, server_id: str) -> ServerState:
        with self._lock:
            self._advance()
            s = self.servers[server_id]
            return ServerState(s.id, s.name, s.status, s.task, s.host)

    def server_migrations(self, server_id: str) -> list[MigrationState]:
        with self._lock:
            self._advance()
            return [
                self._state(m)
                for m in self.migrations
                if m.server == server_id
                and m.status in ("queued", "preparing", "running", "running (post-copy)")
            ]

    def live_migrations_of(self, server_id: str) -> list[MigrationState]:
        with self._lock:
            self._advance()
            return [self._state(m) for m in self.migrations if m.server == server_id]

    def live_migrate(self, server_id: str, host: str | None, block_migration: object) -> None:
        with self._lock:
            self._advance()
            self.requests.append((server_id, host))
            if self.refuse:
                raise MigrationRequestRefused("HTTP 400: No valid host was found")
            srv = self.servers[server_id]
            if srv.task is not None:
                raise MigrationRequestRefused("HTTP 409: server is busy")
            dest = host or next(h for h in self.hosts if h != srv.host)
            srv.status, srv.task = "MIGRATING", "migrating"
            self.migrations.append(
                FakeMigration(next(self._ids), server_id, srv.host, dest, time.monotonic())
            )
            self.max_in_flight = max(self.max_in_flight, self.in_flight())

    def force_complete(self, server_id: str, migration_id: int) -> None:
        with self._lock:
            m = next(m for m in self.migrations if m.id == migration_id)
            if m.status != "running":
                raise ComputeApiError("POST", "force_complete", 409, f"migration is {m.status}")
            m.forced_at = time.monotonic()
            self.force_completes.append(migration_id)

    def abort(self, server_id: str, migration_id: int, status: str) -> None:
        with self._lock:
            self._advance()
            m = next(m for m in self.migrations if m.id == migration_id)
            if m.status not in ("running", "queued", "preparing"):
                raise ComputeApiError("DELETE", "migration", 400, f"migration is {m.status}")
            m.aborted_at = time.monotonic()
            self.aborts.append(migration_id)

    # -- Fleet -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def provision(
        self, plan: CasePlan, case_index: int, boot_host: str | None, stop: StopRequest
    ) -> Iterator[list[ServerInfo]]:
        created: list[FakeServer] = []
        try:
            for i in range(plan.servers):
                if self.boot_fails:
                    raise BootFailure("server went to ERROR: No valid host was found")
                host = boot_host or self.hosts[i % len(self.hosts)]
                srv = FakeServer(f"id-{case_index}-{i}", f"novamig-test-c{case_index}-s{i}", host)
                with self._lock:
                    self.servers[srv.id] = srv
                created.append(srv)
            yield [ServerInfo(s.id, s.name, s.host) for s in created]
        finally:
            for srv in created:
                srv.deleted = True

    def live_servers(self) -> list[str]:
        return [s.name for s in self.servers.values() if not s.deleted]
