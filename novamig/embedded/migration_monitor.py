"""One live migration as Nova's libvirt driver runs it, over novamig's hypervisor layer.

``run_live_migration`` is what ``NovamigDriver.live_migration`` does on the source host: start the
QMP migration to the destination QEMU (already started by the destination's ``pre_live_migration``),
then, like ``LibvirtDriver._live_migration_monitor``, loop until it ends: write memory_total /
processed / remaining to the migration record (every ``PROGRESS_INTERVAL_S``), apply the completion
timeout and its action, honour force-complete (post-copy if permitted, else pause the guest) and
abort, and finally call Nova's ``post_method`` or ``recover_method`` exactly as libvirt does.

Host policy: the source host's ``[libvirt]`` options (see ``host_policy``). Simplification against
libvirt: the downtime limit is set to ``live_migration_downtime`` at once instead of being raised in
``live_migration_downtime_steps`` steps.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from novamig.embedded.host_policy import HostPolicy

LOG = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.4
POLL_S = 0.1


def migration_policy(host: HostPolicy) -> Any:
    """nova.conf [libvirt] options → the hypervisor layer's MigrationPolicy."""
    from novamig.hypervisor.policy import MigrationPolicy

    return MigrationPolicy(
        downtime_limit_ms=host.live_migration_downtime,
        bandwidth_mib_s=host.live_migration_bandwidth,
        # libvirt enables auto-converge only when post-copy is not permitted.
        auto_converge=host.live_migration_permit_auto_converge and not host.live_migration_permit_post_copy,
        allow_post_copy=host.live_migration_permit_post_copy,
        timeout_s=24 * 3600.0,  # the completion timeout below is Nova's, applied here
        transport="unix",
    )


class ActiveMigration:
    """Requests from Nova's API threads (force-complete, abort) into a running migration."""

    def __init__(self, policy: HostPolicy) -> None:
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
    mig_policy = migration_policy(policy)
    writer = ProgressWriter()
    migration = migrate_data.migration
    data_gb = max(1.0, instance.flavor.memory_mb / 1024.0)
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
    _write_record(record_dir, migration, figures)
    if result.status == "completed":
        last = result.progress[-1] if result.progress else None
        if last is not None:
            try:
                save_progress(instance, migration, last)
            except Exception:
                LOG.warning("could not save final migration progress", exc_info=True)
        on_completed(figures)
        post_method(context, instance, dest, block_migration, migrate_data)
        return
    on_failed(figures)
    if result.status in ("cancelled", "timeout"):
        # Cancelled by an abort or by the completion timeout: libvirt sees VIR_DOMAIN_JOB_CANCELLED
        # in both cases and Nova records the migration as cancelled.
        recover_method(context, instance, dest, migrate_data, migration_status="cancelled")
    else:
        recover_method(context, instance, dest, migrate_data)


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
