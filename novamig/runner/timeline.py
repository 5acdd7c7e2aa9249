"""The status timeline of one live migration and what is computed from it.

The poller records an `Observation` per poll; `Timeline` turns them into transition events
(migration status, server status, task state, host) and memory progress samples, all on the case
clock. From the recorded timeline — not from live state — it computes:

* **duration**: from the live-migrate request to the first observation where the migration is
  ``completed`` *and* the server is ACTIVE on the destination with no task. Nova can show the host
  changed while the record still says ``running``, and ``completed`` while the server is still
  MIGRATING: either alone ends the measurement too early. Its resolution is the poll interval.
* **phases**: the time spent in each migration status (accepted/queued, preparing, running,
  running (post-copy), …), each from its first observation to the first observation of the next
  status, plus ``request`` (request → first record seen) and ``settle`` (migration completed →
  server ACTIVE on the destination).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from novamig.results import Event, ProgressSample

NEAR_END_REMAINING_FRACTION = 0.1


@dataclass(frozen=True)
class Observation:
    t: float
    server_status: str
    task_state: str | None
    host: str | None
    migration_status: str | None  # None until the record has been seen
    dest_host: str | None = None
    memory_total_bytes: int | None = None
    memory_processed_bytes: int | None = None
    memory_remaining_bytes: int | None = None

    def arrived(self) -> bool:
        """Migration completed and the server ACTIVE, idle, on the destination."""
        return (
            self.migration_status == "completed"
            and self.server_status == "ACTIVE"
            and self.task_state is None
            and self.dest_host is not None
            and self.host == self.dest_host
        )

    @property
    def progress_fraction(self) -> float | None:
        total, remaining = self.memory_total_bytes, self.memory_remaining_bytes
        if not total or remaining is None:
            return None
        return max(0.0, min(1.0, 1.0 - remaining / total))


@dataclass
class Timeline:
    requested_at: float
    source_host: str | None
    observations: list[Observation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    progress: list[ProgressSample] = field(default_factory=list)

    def note(self, t: float, what: str) -> None:
        self.events.append(Event(t=t, what=what))

    def observe(self, obs: Observation) -> list[str]:
        """Record one poll; returns the transitions it revealed (also stored as events)."""
        prev = self.observations[-1] if self.observations else None
        changes: list[str] = []

        def changed(label: str, before: str | None, after: str | None) -> None:
            if before != after:
                changes.append(f"{label}: {before or '-'} → {after or '-'}")

        if prev is None:
            changes.append(f"server {obs.server_status} on {obs.host or '-'}, task {obs.task_state or '-'}")
            if obs.migration_status is not None:
                changes.append(f"migration: {obs.migration_status}")
        else:
            changed("migration", prev.migration_status, obs.migration_status)
            changed("server", prev.server_status, obs.server_status)
            changed("task", prev.task_state, obs.task_state)
            changed("host", prev.host, obs.host)
        if obs.arrived() and not any(o.arrived() for o in self.observations):
            changes.append(f"ACTIVE on destination {obs.host}")
        for what in changes:
            self.note(obs.t, what)
        memory_changed = prev is None or (
            (prev.memory_processed_bytes, prev.memory_remaining_bytes, prev.memory_total_bytes)
            != (obs.memory_processed_bytes, obs.memory_remaining_bytes, obs.memory_total_bytes)
        )
        status_changed = prev is None or prev.migration_status != obs.migration_status
        if obs.migration_status is not None and (memory_changed or status_changed):
            self.progress.append(
                ProgressSample(
                    t=obs.t,
                    status=obs.migration_status,
                    memory_total_bytes=obs.memory_total_bytes,
                    memory_processed_bytes=obs.memory_processed_bytes,
                    memory_remaining_bytes=obs.memory_remaining_bytes,
                )
            )
        self.observations.append(obs)
        return changes

    # -- derived figures ---------------------------------------------------------------------------
    def arrived_at(self) -> float | None:
        return next((o.t for o in self.observations if o.arrived()), None)

    def duration_s(self) -> float | None:
        arrived = self.arrived_at()
        return None if arrived is None else round(arrived - self.requested_at, 6)

    def phases_s(self) -> dict[str, float]:
        return phases_from(self.requested_at, self.observations)

    def near_end(self) -> bool:
        """True when a faster poll pays off: little memory left, post-copy, or the host changed."""
        if not self.observations:
            return False
        last = self.observations[-1]
        if last.migration_status in ("running (post-copy)", "post-migrating", "completed"):
            return True
        if self.source_host is not None and last.host is not None and last.host != self.source_host:
            return True
        fraction = last.progress_fraction
        return fraction is not None and fraction >= 1.0 - NEAR_END_REMAINING_FRACTION


def phases_from(requested_at: float, observations: list[Observation]) -> dict[str, float]:
    """Seconds per migration status, plus ``request`` and ``settle`` (see the module docstring)."""
    phases: dict[str, float] = {}
    seen = [o for o in observations if o.migration_status is not None]
    if not seen:
        return phases
    phases["request"] = round(seen[0].t - requested_at, 6)
    current = seen[0].migration_status
    since = seen[0].t
    completed_at: float | None = None
    for obs in seen[1:]:
        if obs.migration_status != current:
            assert current is not None
            phases[current] = round(phases.get(current, 0.0) + obs.t - since, 6)
            current, since = obs.migration_status, obs.t
        if obs.migration_status == "completed" and completed_at is None:
            completed_at = obs.t
    if seen[0].migration_status == "completed":
        completed_at = seen[0].t
    arrived = next((o.t for o in observations if o.arrived()), None)
    if completed_at is not None and arrived is not None:
        phases["settle"] = round(max(0.0, arrived - completed_at), 6)
    return phases
