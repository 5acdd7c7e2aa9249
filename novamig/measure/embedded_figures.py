"""The embedded cloud's figures: what its virt driver records of every live migration, read back.

The embedded cloud's driver owns QEMU and the guest agent's heartbeat channel, so it measures each
migration itself and writes one JSON file per migration, ``<workdir>/migrations/<migration
uuid>.json`` (novamig/embedded/README.md, "Hypervisor figures of each migration"). This probe runs
nothing of its own: it finds the file by Nova's migration id and turns it into the ``hypervisor``
and ``guest`` figures.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from novamig.measure.contract import CaseClock, PassiveProbe, ProbeFigure, ServerInfo
from novamig.results import MigrationRecord


class EmbeddedMigrationFigures(PassiveProbe):
    """The ``hypervisor`` or the ``guest`` figure (`name`) from the driver's per-migration files:

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
        self._clock: CaseClock | None = None

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        """Keep the case clock: the driver stamps QEMU's migrate command with the host's monotonic
        clock, which this turns into case seconds so the throttle and dirty-rate series line up
        with the runner's progress samples."""
        self._clock = clock

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
            return self._guest_figure(data, migration, server_id)
        return hypervisor_figure(data, self._clock)

    def _guest_figure(self, data: dict[str, Any], migration: MigrationRecord, server_id: str) -> ProbeFigure:
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


def hypervisor_figure(data: dict[str, Any], clock: CaseClock | None = None) -> ProbeFigure:
    """The ``hypervisor`` figure of one migration's file: QEMU's downtime, every figure as details
    with the sampled series thinned (`thin_series`), the brownout QEMU's samples give and the
    integrity check. With the case `clock`, ``migrate_at_s`` places the series on the case clock."""
    details = {k: v for k, v in data.items() if k not in _DROPPED}
    details.update(series_summary(data))
    details.update(kept_series(data))
    started = data.get(MIGRATE_MONOTONIC_KEY)
    if clock is not None and isinstance(started, int | float) and not isinstance(started, bool):
        details["migrate_at_s"] = round(clock.at(float(started)), 3)
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
    """The peak auto-converge throttle and the peak dirty-page rate of QEMU's sampled series:
    exact even where `thin_series` had to drop points."""
    out: dict[str, Any] = {}
    pairs = (("throttle_series", "throttle_max_percent"), ("dirty_rate_series", "dirty_pages_rate_max"))
    for key, name in pairs:
        series = figures.get(key)
        if isinstance(series, list):
            values = [v for _, v in series if isinstance(v, int | float)]
            out[name] = max(values) if values else None
    return out


def kept_series(figures: dict[str, Any]) -> dict[str, list[list[float]]]:
    """QEMU's throttle and dirty-rate series as results keep them (`thin_series`), so the report
    can draw them beside memory remaining; absent where the file has none."""
    out: dict[str, list[list[float]]] = {}
    for key in ("throttle_series", "dirty_rate_series"):
        series = figures.get(key)
        if isinstance(series, list):
            out[key] = thin_series(series)
    return out


def thin_series(series: Sequence[Any], most: int = 0) -> list[list[float]]:
    """QEMU's ``[[t, value], ...]`` samples cut to what a chart needs.

    The driver samples `query-migrate` every 100 ms or so, but QEMU moves both figures only once
    per dirty-sync round, so most samples repeat the one before: keep the first, every change,
    and the last (a step chart drawn from these is the same). A long migration with many rounds
    may still change more often than a chart can show: beyond `most` points (default
    `MAX_SERIES_POINTS`) the points are cut into that many runs and each run keeps its highest
    value — so a peak is never averaged away. Malformed pairs are skipped.
    """
    most = most or MAX_SERIES_POINTS
    points = [
        [float(p[0]), p[1]]
        for p in series
        if isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
    ]
    kept = [p for i, p in enumerate(points) if i in (0, len(points) - 1) or p[1] != points[i - 1][1]]
    if len(kept) <= most:
        return kept
    runs = [kept[i * len(kept) // most : (i + 1) * len(kept) // most] for i in range(most)]
    return [max(run, key=lambda p: p[1]) for run in runs if run]


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


#: The driver file's key for the host's monotonic time (s) of QEMU's migrate command.
MIGRATE_MONOTONIC_KEY = "migrate_monotonic_s"
#: Most points `thin_series` keeps of one series: a timeline is 680 px wide.
MAX_SERIES_POINTS = 200
# Not copied as they are: QEMU's own progress (the runner samples Nova's) and events (the runner
# keeps Nova's); the two series go through `thin_series`; the monotonic stamp becomes migrate_at_s.
_DROPPED = frozenset({"progress", "dirty_rate_series", "throttle_series", "events", MIGRATE_MONOTONIC_KEY})
