"""Probes: the vantage points that measure a migration's downtime, plugged into the runner.

A probe starts when a case's servers are up, is told about nothing in between (it watches on its
own: heartbeat receiver, echo prober, Locust), stops after the last migration, and then gives one
`ProbeFigure` per migration — the downtime it saw inside that migration's window, its resolution,
or the reason it has none. The runner writes the figure into ``downtime_ms.<probe>`` and the
reason into the migration's events; it never invents a value.

On the embedded cloud the driver itself records QEMU's figure and the guest heartbeat of every
migration (`EmbeddedMigrationFigures`). The runner-side probes (network echo, Locust, and the guest
heartbeat on other clouds) arrive with the measurement package; until then such a probe is
`Unavailable`: null figures with the reason stated.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from novamig.results import MigrationRecord, ProbeCost
from novamig.runner.clock import CaseClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    id: str
    name: str
    host: str | None
    address: str | None = None  # the fixed IPv4 address probes aim at (None: the server has none)


@dataclass(frozen=True)
class ProbeFigure:
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


class Unavailable:
    """A probe the scenario asks for that this novamig or this cloud cannot run (yet)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        return None

    def stop(self) -> None:
        return None

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        return ProbeFigure(None, None, self.reason)

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        return None

    def cost(self) -> ProbeCost | None:
        return None

    def case_stats(self) -> dict[str, Any] | None:
        return None


def apply_figures(
    record: MigrationRecord, server_id: str, migration_id: int | None, probes: Sequence[Probe]
) -> MigrationRecord:
    """Copy each probe's figure into the record; a missing figure's reason becomes an event."""
    from novamig.results import Event

    for probe in probes:
        if probe.name not in ("guest", "network", "locust", "hypervisor"):
            continue
        try:
            fig = probe.figure(record, server_id, migration_id)
        except Exception as exc:  # a probe's bug costs its figure, never the run's results
            log.exception("probe %s failed on a migration of %s", probe.name, record.server)
            fig = ProbeFigure(None, None, f"the probe failed: {type(exc).__name__}: {exc}")
        setattr(record.downtime_ms, probe.name, fig.downtime_ms)
        setattr(record.resolution_ms, probe.name, fig.resolution_ms)
        setattr(record.brownout_ms, probe.name, fig.brownout_ms)
        if fig.memory_integrity is not None:
            record.memory_integrity = (
                fig.memory_integrity
                if record.memory_integrity is None
                else (record.memory_integrity and fig.memory_integrity)
            )
        if probe.name == "hypervisor" and fig.details is not None:
            record.hypervisor = fig.details
        elif fig.details:
            record.details[probe.name] = fig.details
        if fig.downtime_ms is None and fig.reason:
            t = record.finished_at if record.finished_at is not None else record.requested_at
            record.events.append(Event(t=t, what=f"downtime_ms.{probe.name}: not measured — {fig.reason}"))
    return record


class EmbeddedMigrationFigures:
    """Figures the embedded cloud's driver writes for every live migration, one file each:
    ``<workdir>/migrations/<migration uuid>.json`` (novamig/embedded/README.md, "Hypervisor figures
    of each migration"), found by Nova's migration id.

    * ``hypervisor`` — QEMU's own ``downtime`` (``qemu_downtime_ms``; QEMU counts whole ms);
    * ``guest`` — the guest agent's heartbeat as the host received it (``heartbeat.guest_downtime_ms``:
      the worst of the switchover gap and the longest stall on either side). Its resolution is one
      beat period: the agent beats at ``heartbeat.hz`` when the file says so, else at its default
      1000 Hz (docs/guest-agent.md), since the embedded driver does not change it.
    """

    WAIT_S = 5.0  # the driver writes the file just before Nova marks the migration completed
    AGENT_DEFAULT_HZ = 1000.0

    def __init__(self, workdir: Path, name: str = "hypervisor") -> None:
        if name not in ("hypervisor", "guest"):
            raise ValueError(f"the embedded cloud has no {name!r} figure")
        self.name = name
        self.dir = Path(workdir) / "migrations"
        self._first_noise: dict[str, float | None] = {}  # server → noise before its first migration
        self._first_at: dict[str, float] = {}

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        return None

    def stop(self) -> None:
        return None

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        """Guest: the driver owns the heartbeat stream and measures the longest gap in the 2 s
        before each migration starts (``heartbeat.noise_floor_ms``). A server's first migration
        follows the case's no-migration window, so the largest of those first-migration figures
        is the guest probe's noise floor. The hypervisor figure has none (QEMU reports whole
        milliseconds of a stop it makes itself)."""
        if self.name != "guest":
            return None
        floors = [v for v in self._first_noise.values() if v is not None]
        return round(max(floors), 3) if floors else None

    def cost(self) -> ProbeCost | None:
        return None  # read from files the cloud writes anyway

    def case_stats(self) -> dict[str, Any] | None:
        return None

    def _find(self, migration_id: int) -> dict[str, Any] | None:
        if not self.dir.is_dir():
            return None
        for path in self.dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("migration_id") == migration_id:
                return data
        return None

    def _load(self, migration: MigrationRecord, migration_id: int) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.WAIT_S
        data = self._find(migration_id)
        while data is None and migration.status == "completed" and time.monotonic() < deadline:
            time.sleep(0.1)
            data = self._find(migration_id)
        return data

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        if migration_id is None:
            return ProbeFigure(None, None, "no Nova migration record was seen")
        data = self._load(migration, migration_id)
        if data is None:
            return ProbeFigure(
                None, None, f"the embedded cloud wrote no figures for migration {migration_id}"
            )
        if self.name == "guest":
            beat = data.get("heartbeat")
            if not isinstance(beat, dict):
                return ProbeFigure(None, None, "the embedded cloud could not read the guest heartbeat")
            noise = beat.get("noise_floor_ms")
            if server_id not in self._first_at or migration.requested_at < self._first_at[server_id]:
                self._first_at[server_id] = migration.requested_at
                self._first_noise[server_id] = float(noise) if isinstance(noise, int | float) else None
            value = beat.get("guest_downtime_ms")
            if not isinstance(value, int | float):
                return ProbeFigure(None, None, f"no heartbeat gap measured ({beat})")
            given = beat.get("hz")
            hz = float(given) if isinstance(given, int | float) and given > 0 else self.AGENT_DEFAULT_HZ
            brownout = beat.get("brownout_ms")
            return ProbeFigure(
                round(float(value), 3),
                round(1000.0 / hz, 3),
                None,
                brownout_ms=float(brownout) if isinstance(brownout, int | float) else None,
            )
        details = {k: v for k, v in data.items() if k not in _SERIES}
        details.update(series_summary(data))
        integrity = data.get("integrity")
        ok = integrity.get("ok") if isinstance(integrity, dict) else None
        intact = ok if isinstance(ok, bool) else None
        downtime = data.get("qemu_downtime_ms")
        if not isinstance(downtime, int | float):
            why = f"QEMU reported no downtime (hypervisor status {data.get('status')!r})"
            return ProbeFigure(None, None, why, details, memory_integrity=intact)
        return ProbeFigure(
            float(downtime),
            1.0,
            None,
            details,
            brownout_ms=hypervisor_brownout_ms(data),
            memory_integrity=intact,
        )


def series_summary(figures: dict[str, Any]) -> dict[str, Any]:
    """What results keep of QEMU's sampled series (the series themselves are too long for every
    migration of every case): the peak auto-converge throttle and the peak dirty-page rate."""
    out: dict[str, Any] = {}
    pairs = (("throttle_series", "throttle_max_percent"), ("dirty_rate_series", "dirty_pages_rate_max"))
    for key, name in pairs:
        series = figures.get(key)
        if isinstance(series, list):
            values = [v for _, v in series if isinstance(v, int | float)]
            out[name] = max(values) if values else None
    return out


def hypervisor_brownout_ms(figures: dict[str, Any]) -> float | None:
    """The hypervisor's view of the guest slowed but running: CPU time taken by auto-converge's
    throttle (∑ throttle % × interval over QEMU's samples) plus the time vCPUs sat blocked on
    post-copy page faults (QEMU's ``postcopy-blocktime``). None when QEMU gave neither."""
    total: float | None = None
    series = figures.get("throttle_series")
    if isinstance(series, list) and len(series) > 1:
        total = 0.0
        for (t0, pct), (t1, _) in itertools.pairwise(series):
            if isinstance(pct, int | float) and pct > 0:
                total += pct / 100.0 * (float(t1) - float(t0)) * 1000.0
    block = figures.get("postcopy_blocktime_ms")
    if isinstance(block, int | float):
        total = (total or 0.0) + float(block)
    return round(total, 3) if total is not None else None


_SERIES = frozenset({"progress", "dirty_rate_series", "throttle_series", "events"})
