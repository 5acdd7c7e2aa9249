"""The probe contract: what every vantage point is given and what it hands back.

A probe starts when a case's servers are up (it is given their `ServerInfo` and the `CaseClock`),
is told about nothing in between (it watches on its own: heartbeat receiver, echo prober, Locust),
stops after the last migration, and then gives one `ProbeFigure` per migration — the downtime it
saw inside that migration's window, its resolution, or the reason it has none. The runner writes
the figure into ``downtime_ms.<probe>`` and the reason into the migration's events; it never
invents a value. A probe a case asks for that cannot run on this cloud is `Unavailable`: null
figures with the reason stated.

This module is a leaf of `novamig.measure`: it imports nothing of novamig but `novamig.results`,
so every probe, the registry that picks them and the runner that drives them share one definition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from novamig.results import MigrationRecord, ProbeCost


class CaseClock:
    """One monotonic clock per case: every time inside a case is seconds since the case started.

    Wall clocks jump (NTP); results need differences, so every time is taken from
    `time.monotonic()` (CLOCK_MONOTONIC, the clock the probe processes stamp with too) and made
    relative to one origin.
    """

    def __init__(self, source: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self.origin = source()

    def now(self) -> float:
        return round(self._source() - self.origin, 6)

    def at(self, monotonic_time: float) -> float:
        """A monotonic time taken elsewhere (a probe), as case seconds."""
        return round(monotonic_time - self.origin, 6)


@dataclass(frozen=True)
class ServerInfo:
    """One server of the case as the probes need it (the runner's fleet describes each so)."""

    id: str
    name: str
    host: str | None
    address: str | None = None  # the fixed IPv4 address probes aim at (None: the server has none)


@dataclass(frozen=True)
class ProbeFigure:
    """What one probe saw of one migration; ``downtime_ms`` None always comes with its ``reason``."""

    downtime_ms: float | None
    resolution_ms: float | None = None
    reason: str | None = None  # why downtime_ms is None
    details: dict[str, Any] | None = None  # further figures (the hypervisor's: bytes, STOP→RESUME …)
    brownout_ms: float | None = None  # degraded-not-dark time in the window (results brownout_ms)
    memory_integrity: bool | None = None  # the guest's integrity region after the migration, if checked


class Probe(Protocol):
    """One vantage point. Calls come in this order: start → (noise window) → migrations → 1 s →
    stop → noise_floor → figure (each migration) → noise_floor again if it was None → cost →
    case_stats. A probe never raises out of the last four: what it could not measure is a None
    with a reason."""

    name: str  # "guest" | "network" | "locust" | "hypervisor": the results key it fills

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None: ...

    def stop(self) -> None: ...

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure: ...

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        """The longest gap (ms) this probe saw in [start_s, end_s) (case seconds) with no migration."""
        ...

    def cost(self) -> ProbeCost | None:
        """CPU the probe used, when it runs its own process or thread; None for free figures."""
        ...

    def case_stats(self) -> dict[str, Any] | None:
        """Case-level statistics for results (the Locust probe's `locust`); None for others."""
        ...


@runtime_checkable
class CapturesEachMigration(Protocol):
    """A probe whose source forgets: it must read each migration as soon as it ends (libvirt keeps
    a domain's completed-job statistics only until its next job). The runner calls `capture` right
    after every migration, before the server's next one; it never raises."""

    def capture(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> None: ...


class PassiveProbe:
    """The do-nothing half of `Probe` for a probe that runs nothing of its own — it reads figures
    something else recorded (the embedded driver's files, libvirt) or has none: nothing to start
    or stop, no noise floor, no CPU cost, no case statistics. A subclass sets `name` and gives
    `figure`, and overrides whatever of the rest it does have."""

    name: str

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        return None

    def stop(self) -> None:
        return None

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        return None

    def cost(self) -> ProbeCost | None:
        return None

    def case_stats(self) -> dict[str, Any] | None:
        return None


class Unavailable(PassiveProbe):
    """A probe the scenario asks for that this novamig or this cloud cannot run: every figure is
    null with `reason`, so the results say why instead of leaving a silent gap."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        return ProbeFigure(None, None, self.reason)


def not_measured_event(figure: str, reason: str) -> str:
    """How a migration's events say that `figure` has no value, and why (the runner writes it)."""
    return f"{_NOT_MEASURED.format(figure=figure)}{reason}"


def not_measured_reason(migration: MigrationRecord, figure: str) -> str | None:
    """The reason `migration`'s events give for `figure` having no value (None: they give none)."""
    prefix = _NOT_MEASURED.format(figure=figure)
    for event in migration.events:
        if event.what.startswith(prefix):
            return event.what.removeprefix(prefix)
    return None


_NOT_MEASURED = "downtime_ms.{figure}: not measured — "
