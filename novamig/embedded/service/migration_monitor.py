"""One live migration as Nova's libvirt driver runs it, over novamig's hypervisor layer.

``run_live_migration`` is what ``NovamigDriver.live_migration`` does on the source host: start the
QMP migration to the destination QEMU (already started by the destination's ``pre_live_migration``),
then, like ``LibvirtDriver._live_migration_monitor``, loop until it ends: write memory_total /
processed / remaining to the migration record (every ``PROGRESS_INTERVAL_S``), apply the completion
timeout and its action, honour force-complete (post-copy if permitted, else pause the guest) and
abort, and finally call Nova's ``post_method`` or ``recover_method`` exactly as libvirt does.

Host policy: the source host's ``[libvirt]`` options (see ``host_policy``). The downtime limit is
raised in steps as libvirt's monitor does (``downtime_steps``, ``DowntimeRamp``): a migration that
converges early does so with a small downtime, one that does not gets a larger limit as time passes.

After a completed migration of a guest that runs an integrity region (agent ``info``:
``integrity=1``) the destination's agent checks it (``integrity-check``) and the result goes into
the per-migration figures file, before Nova is told the migration completed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from novamig.embedded.host_policy import LiveMigrationOptions

LOG = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.4
POLL_S = 0.1


#: How long the destination's agent may take to answer after a completed migration: `info` is
#: instant; a check takes about 25 ms per 16 MiB under TCG, so this bounds regions up to GiBs.
AGENT_INFO_TIMEOUT_S = 10.0
INTEGRITY_CHECK_TIMEOUT_S = 120.0


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


def migration_policy(host: LiveMigrationOptions, downtime_limit_ms: int | None = None) -> Any:
    """nova.conf [libvirt] options → the hypervisor layer's QemuMigrationSettings.

    `downtime_limit_ms`: the limit to start with (the ramp's first step); by default
    ``live_migration_downtime``.
    """
    from novamig.hypervisor.policy import QemuMigrationSettings

    return QemuMigrationSettings(
        downtime_limit_ms=downtime_limit_ms
        if downtime_limit_ms is not None
        else host.live_migration_downtime,
        bandwidth_mib_s=host.live_migration_bandwidth,
        # libvirt enables auto-converge only when post-copy is not permitted.
        auto_converge=host.live_migration_permit_auto_converge and not host.live_migration_permit_post_copy,
        allow_post_copy=host.live_migration_permit_post_copy,
        timeout_s=24 * 3600.0,  # the completion timeout below is Nova's, applied here
        transport="unix",
    )


class ActiveMigration:
    """Requests from Nova's API threads (force-complete, abort) into a running migration."""

    def __init__(self, policy: LiveMigrationOptions) -> None:
        self.policy = policy
        self.job: Any = None
        self.source: Any = None
        self.force_requested = threading.Event()
        self.abort_requested = threading.Event()
        self.paused_for_completion = False

    def force_complete(self) -> None:
        self.force_requested.set()

    def abort(self) -> None:
        self.abort_requested.set()


class ProgressWriter:
    """Keeps the newest QMP sample (written by the QMP loop) for the monitor thread to save."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latest: Any = None

    def __call__(self, sample: Any) -> None:
        with self._lock:
            self.latest = sample

    def take(self) -> Any:
        with self._lock:
            return self.latest


def save_progress(instance: Any, migration: Any, sample: Any) -> None:
    """What nova.virt.libvirt.migration.save_stats does (memory only; no disks are copied)."""
    migration.memory_total = sample.total_bytes
    migration.memory_processed = sample.processed_bytes
    migration.memory_remaining = sample.remaining_bytes
    # No disk is copied; None (not 0) keeps the API response valid under its schema (minimum 1).
    migration.disk_total = migration.disk_processed = migration.disk_remaining = None
    migration.save()
    remaining = round(sample.remaining_bytes * 100 / sample.total_bytes) if sample.total_bytes else 100
    instance.progress = 100 - remaining
    instance.save()


def run_live_migration(
    *,
    context: Any,
    instance: Any,
    dest: str,
    source_machine: Any,
    dest_machine: Any,
    active: ActiveMigration,
    migrate_data: Any,
    block_migration: bool,
    post_method: Callable[..., Any],
    recover_method: Callable[..., Any],
    on_completed: Callable[[Any], None],
    on_failed: Callable[[Any], None],
    record_dir: Path,
) -> None:
    from novamig.hypervisor.migration import start_migration

    policy = active.policy
    data_gb = live_migration_data_gb(int(instance.flavor.memory_mb))
    ramp = DowntimeRamp(downtime_steps(policy, data_gb))
    # Step 0 goes in with the migration's other parameters, before `migrate`: libvirt's monitor
    # sets it on its first pass, within its first half second, so nothing of the migration runs
    # under QEMU's default limit in either case.
    first_at, first_limit = ramp.steps[0]
    mig_policy = migration_policy(policy, first_limit)
    ramp.current = first_limit
    ramp.applied.append(
        {
            "ns": None,
            "step": 0,
            "after_s": first_at,
            "downtime_limit_ms": first_limit,
            "qemu_downtime_limit_ms": None,
        }
    )
    writer = ProgressWriter()
    migration = migrate_data.migration
    completion_timeout = policy.live_migration_completion_timeout * data_gb
    started = time.monotonic()
    last_saved = 0.0
    timeout_fired = False

    job = start_migration(source_machine, dest_machine, mig_policy, progress=writer)
    active.job, active.source = job, source_machine
    while not job.done():
        time.sleep(POLL_S)
        now = time.monotonic()
        sample = writer.take()
        if sample is not None and now - last_saved >= PROGRESS_INTERVAL_S:
            try:
                save_progress(instance, migration, sample)
            except Exception:  # a failed progress write must not kill the migration
                LOG.warning("could not save migration progress", exc_info=True)
            last_saved = now
        step = ramp.due(now - started)
        if step is not None:
            _apply_downtime_step(source_machine, instance, ramp, step)
        if active.abort_requested.is_set():
            job.cancel()
        if completion_timeout and not timeout_fired and now - started > completion_timeout:
            timeout_fired = True
            if policy.live_migration_timeout_action == "force_complete":
                active.force_complete()
            else:
                LOG.warning(
                    "live migration of %s exceeded %.0f s: aborting", instance.uuid, completion_timeout
                )
                job.cancel()
        if active.force_requested.is_set():
            active.force_requested.clear()
            _force(active)

    try:
        result = job.result(timeout=30)
    except Exception as exc:
        LOG.error("live migration of %s failed: %s", instance.uuid, exc)
        _write_record(record_dir, migration, {"status": "failed", "error": str(exc)})
        on_failed(None)
        recover_method(context, instance, dest, migrate_data)
        return
    figures = result.to_dict()
    figures["heartbeat"] = _heartbeat(source_machine, dest_machine, result)
    figures["downtime_steps"] = [list(step) for step in ramp.steps]
    figures["events"] = _with_downtime_steps(figures.get("events") or [], ramp, result.started_ns)
    if result.status == "completed":
        last = result.progress[-1] if result.progress else None
        if last is not None:
            try:
                save_progress(instance, migration, last)
            except Exception:
                LOG.warning("could not save final migration progress", exc_info=True)
        on_completed(figures)  # the destination runs from here on (resumed if it was paused for us)
        _check_guest(dest_machine, figures)
        _write_record(record_dir, migration, figures)
        post_method(context, instance, dest, block_migration, migrate_data)
        return
    _write_record(record_dir, migration, figures)
    on_failed(figures)
    if result.status in ("cancelled", "timeout"):
        # Cancelled by an abort or by the completion timeout: libvirt sees VIR_DOMAIN_JOB_CANCELLED
        # in both cases and Nova records the migration as cancelled.
        recover_method(context, instance, dest, migrate_data, migration_status="cancelled")
    else:
        recover_method(context, instance, dest, migrate_data)


def _apply_downtime_step(
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


def _with_downtime_steps(
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


def _check_guest(dest_machine: Any, figures: dict[str, Any]) -> None:
    """After a completed migration: the guest's heartbeat rate, and its integrity region checked.

    Asks the destination's agent `info`; when it reports ``integrity=1``, runs `integrity-check`
    and adds ``figures["integrity"]``: ``ok``, ``pages``, ``check_ms`` and ``generation``, plus
    the agent's failure fields (``first_bad_page``, ``expected``, ``found``, ``word``,
    ``bad_pages``, ``msg``) when it fails. An agent that does not answer the check counts as a
    failure (``ok`` false, ``error``): memory that cannot be read back is not shown intact. A
    guest that is not running (paused) is not asked, and the key stays absent (= not checked).
    """
    from novamig.hypervisor.errors import AgentError

    try:
        status = dest_machine.command("query-status", timeout=5.0)
        if not isinstance(status, dict) or status.get("status") != "running":
            LOG.info("guest %s not running after migration: integrity not checked", dest_machine.name)
            return
        info = dest_machine.agent.command("info", AGENT_INFO_TIMEOUT_S)
    except Exception as exc:
        LOG.warning("guest %s: agent info after migration failed: %s", dest_machine.name, exc)
        return
    beat = figures.get("heartbeat")
    if isinstance(beat, dict) and info.fields.get("hb_hz", "").isdigit():
        beat["hz"] = int(info.fields["hb_hz"])
    if info.fields.get("integrity") != "1":
        return
    t0 = time.monotonic()
    try:
        reply = dest_machine.agent.command("integrity-check", INTEGRITY_CHECK_TIMEOUT_S, check=False)
    except AgentError as exc:
        figures["integrity"] = {
            "ok": False,
            "error": str(exc),
            "waited_ms": round((time.monotonic() - t0) * 1000),
        }
        return
    out: dict[str, Any] = {"ok": reply.ok}
    for key, value in reply.fields.items():
        if key in ("pages", "generation", "check_ms", "first_bad_page", "word", "bad_pages"):
            try:
                out[key] = int(value, 0)
                continue
            except ValueError:
                pass
        out[key] = value
    figures["integrity"] = out


def _heartbeat(source_machine: Any, dest_machine: Any, result: Any) -> dict[str, Any] | None:
    """The guest's own view of the migration (heartbeat gaps), or None if it cannot be read."""
    try:
        from novamig.hypervisor.heartbeat import HeartbeatCollector

        beat = HeartbeatCollector(source_machine.agent, dest_machine.agent).analyse(result)
    except Exception:
        LOG.warning("heartbeat figures unavailable", exc_info=True)
        return None
    return {
        "switchover_gap_ms": beat.switchover_gap_ms,
        "source_longest_gap_ms": beat.source_longest_gap_ms,
        "destination_longest_gap_ms": beat.destination_longest_gap_ms,
        "guest_downtime_ms": beat.guest_downtime_ms,
        "source_beats": beat.source_beats,
        "destination_beats": beat.destination_beats,
        "noise_floor_ms": beat.noise_floor_ms,
        "brownout_ms": beat.brownout_ms,
        "stalls": beat.stalls,
    }


def _force(active: ActiveMigration) -> None:
    """Nova's force-complete: post-copy when the host permits it, else pause the guest (libvirt)."""
    if active.policy.live_migration_permit_post_copy:
        active.job.switch_to_postcopy()
    elif not active.paused_for_completion:
        active.source.command("stop")
        active.paused_for_completion = True


def _write_record(record_dir: Path, migration: Any, figures: dict[str, Any]) -> None:
    """The hypervisor's figures of one migration, readable by the runner (see README of embedded)."""
    record_dir.mkdir(parents=True, exist_ok=True)
    uuid = getattr(migration, "uuid", None) or str(getattr(migration, "id", "unknown"))
    target = record_dir / f"{uuid}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"migration_uuid": uuid, "migration_id": getattr(migration, "id", None), **figures}, default=str
        )
        + "\n"
    )
    tmp.replace(target)
