"""The downtime limit of a live migration raised in steps, as Nova's libvirt driver does it.

``downtime_steps`` and ``DowntimeRamp.due`` are ``downtime_steps`` and ``update_downtime`` of
``nova/virt/libvirt/migration.py`` with the same integer arithmetic: a migration that converges
early does so with a small downtime, one that does not gets a larger limit as time passes. Each
step applied is kept (`DowntimeRamp.applied`) for the migration's figures, as one event per step.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from novamig.embedded.host_policy import LiveMigrationOptions

LOG = logging.getLogger(__name__)


def live_migration_data_gb(memory_mb: int) -> float:
    """GiB to transfer, as the libvirt driver's ``_live_migration_data_gb`` counts it: the flavor's
    RAM, at least 2 (no disk is copied: the tiny guest has none, the full guest's is shared)."""
    return max(2.0, memory_mb / 1024.0)


def downtime_steps(host: LiveMigrationOptions, data_gb: float) -> list[tuple[int, int]]:
    """(seconds after the start, downtime limit ms) pairs: nova.virt.libvirt.migration.downtime_steps.

    A linear ramp from ``downtime / steps`` to ``downtime`` in ``steps`` increments, one every
    ``delay × data_gb`` seconds; the integer truncations are Nova's. (Nova's example: 400 ms,
    10 steps, 30 s, 3 GiB → 40 ms at 0 s, 76 ms at 90 s, … 400 ms at 900 s.)
    """
    downtime = host.live_migration_downtime
    steps = host.live_migration_downtime_steps
    delay = int(host.live_migration_downtime_delay * data_gb)
    base = downtime / steps
    offset = (downtime - base) / steps
    # QEMU needs a limit of at least 1 ms; Nova's minimum downtime (100 ms) never truncates to 0.
    return [(int(delay * i), max(1, int(base + offset * i))) for i in range(steps + 1)]


class DowntimeRamp:
    """Which step is due at a given elapsed time, as ``nova.virt.libvirt.migration.update_downtime``.

    A step applies once ``elapsed`` is strictly past its time, so step 0 applies as soon as the
    migration runs (libvirt's monitor sets it on its first pass); `due` returns a step only when
    it changes the limit. Each applied step is kept in `applied` for the figures' events.
    """

    def __init__(self, steps: list[tuple[int, int]]) -> None:
        self.steps = steps
        self.current: int | None = None
        self.applied: list[dict[str, Any]] = []

    def due(self, elapsed: float) -> tuple[int, int, int] | None:
        """(index, step time s, limit ms) of the step to set now, or None."""
        found: tuple[int, int, int] | None = None
        for index, (at, limit) in enumerate(self.steps):
            if elapsed > at:
                found = (index, at, limit)
        if found is None or found[2] == self.current:
            return None
        return found


def apply_downtime_step(
    source_machine: Any, instance: Any, ramp: DowntimeRamp, step: tuple[int, int, int]
) -> None:
    """Set QEMU's downtime-limit to the step's value and read it back (the figures show both).

    A failure is logged and the step is taken as applied, as libvirt's update_downtime does: the
    migration may just have ended between the check and the command.
    """
    index, at, limit = step
    ramp.current = limit
    ns = time.monotonic_ns()
    readback: int | None = None
    try:
        source_machine.command("migrate-set-parameters", {"downtime-limit": limit}, timeout=5.0)
        params = source_machine.command("query-migrate-parameters", timeout=5.0)
        readback = (
            int(params["downtime-limit"]) if isinstance(params, dict) and "downtime-limit" in params else None
        )
        LOG.info(
            "live migration of %s: downtime limit raised to %d ms (step %d, after %d s)",
            instance.uuid, limit, index, at,
        )  # fmt: skip
    except Exception as exc:
        LOG.warning("live migration of %s: could not set downtime limit %d ms: %s", instance.uuid, limit, exc)
    ramp.applied.append(
        {
            "ns": ns,
            "step": index,
            "after_s": at,
            "downtime_limit_ms": limit,
            "qemu_downtime_limit_ms": readback,
        }
    )


def with_downtime_steps(
    events: list[dict[str, Any]], ramp: DowntimeRamp, started_ns: int
) -> list[dict[str, Any]]:
    """The QMP events plus one ``downtime-step`` event per applied step, in time order."""
    steps = [
        {
            "t": 0.0 if a["ns"] is None else round((a["ns"] - started_ns) / 1e9, 4),
            "side": "source",
            "what": "downtime-step",
            **{k: v for k, v in a.items() if k != "ns"},
        }
        for a in ramp.applied
    ]
    return sorted([*events, *steps], key=lambda e: float(e.get("t") or 0.0))
