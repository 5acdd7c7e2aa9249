"""One live migration as Nova's libvirt driver runs it, over novamig's hypervisor layer.

``run_live_migration`` is what ``NovamigDriver.live_migration`` does on the source host: start the
QMP migration to the destination QEMU (already started by the destination's ``pre_live_migration``),
then, like ``LibvirtDriver._live_migration_monitor``, loop until it ends: write memory_total /
processed / remaining to the migration record (every ``PROGRESS_INTERVAL_S``), apply the completion
timeout and its action, honour force-complete (post-copy if permitted, else pause the guest) and
abort, and finally call Nova's ``post_method`` or ``recover_method`` exactly as libvirt does.

Host policy: the source host's ``[libvirt]`` options (see ``host_policy``). The downtime limit is
raised in steps as libvirt's monitor does (``downtime_ramp``).

After a completed migration of a guest that runs an integrity region (agent ``info``:
``integrity=1``) the destination's agent checks it (``integrity-check``) and the result goes into
the per-migration figures file, before Nova is told the migration completed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novamig.embedded.host_policy import LiveMigrationOptions
from novamig.embedded.service.downtime_ramp import (
    DowntimeRamp,
    apply_downtime_step,
    downtime_steps,
    live_migration_data_gb,
    with_downtime_steps,
)
from novamig.hypervisor.errors import AgentError
from novamig.hypervisor.heartbeat import HeartbeatCollector
from novamig.hypervisor.migration import start_migration
from novamig.hypervisor.policy import QemuMigrationSettings

LOG = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.4
POLL_S = 0.1


#: How long the destination's agent may take to answer after a completed migration: `info` is
#: instant; a check takes about 25 ms per 16 MiB under TCG, so this bounds regions up to GiBs.
AGENT_INFO_TIMEOUT_S = 10.0
INTEGRITY_CHECK_TIMEOUT_S = 120.0
INTEGRITY_CHECK_ENV = "NOVAMIG_EMBEDDED_INTEGRITY_CHECK"
"""Set to ``off`` in the environment the embedded cloud starts in, its driver does not check the
guest's integrity region: ``memory_integrity`` then comes from the guest's own verdict alone
(novamig.measure.guest_integrity), as on a libvirt cloud — how tests prove that verdict passes an
SLA by itself."""


def migration_policy(host: LiveMigrationOptions, downtime_limit_ms: int | None = None) -> Any:
    """nova.conf [libvirt] options → the hypervisor layer's QemuMigrationSettings.

    `downtime_limit_ms`: the limit to start with (the ramp's first step); by default
    ``live_migration_downtime``.
    """
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
    """What nova.virt.libvirt.migration.save_stats does (memory only; no disks are copied).

    A figure QEMU reports as 0 (nothing known yet while the job sets up, nothing left once it has
    completed) is saved as None: the API's migration schema (2.23 on) allows null or at least 1, and
    a 0 makes every ``GET /servers/{id}/migrations`` log "Schema failed to validate" with a traceback.
    Nova's libvirt driver never meets it there: it saves figures only while libvirt's job runs.
    No disk is copied: None (not 0), for the same schema."""
    migration.memory_total = sample.total_bytes or None
    migration.memory_processed = sample.processed_bytes or None
    migration.memory_remaining = sample.remaining_bytes or None
    migration.disk_total = migration.disk_processed = migration.disk_remaining = None
    migration.save()
    remaining = round(sample.remaining_bytes * 100 / sample.total_bytes) if sample.total_bytes else 100
    instance.progress = 100 - remaining
    instance.save()


@dataclass
class _Monitor:
    """The loop of ``LibvirtDriver._live_migration_monitor``, one pass every ``POLL_S`` until the
    migration job ends: progress saved, downtime steps, abort, completion timeout, force-complete."""

    job: Any
    active: ActiveMigration
    instance: Any
    migration: Any
    source_machine: Any
    ramp: DowntimeRamp
    writer: ProgressWriter
    completion_timeout: float
    started: float
    last_saved: float = 0.0
    timeout_fired: bool = False

    def run(self) -> None:
        while not self.job.done():
            time.sleep(POLL_S)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        sample = self.writer.take()
        if sample is not None and now - self.last_saved >= PROGRESS_INTERVAL_S:
            try:
                save_progress(self.instance, self.migration, sample)
            except Exception:  # a failed progress write must not kill the migration
                LOG.warning("could not save migration progress", exc_info=True)
            self.last_saved = now
        step = self.ramp.due(now - self.started)
        if step is not None:
            apply_downtime_step(self.source_machine, self.instance, self.ramp, step)
        if self.active.abort_requested.is_set():
            self.job.cancel()
        if (
            self.completion_timeout
            and not self.timeout_fired
            and now - self.started > self.completion_timeout
        ):
            self.timeout_fired = True
            self._timed_out()
        if self.active.force_requested.is_set():
            self.active.force_requested.clear()
            _force(self.active)

    def _timed_out(self) -> None:
        """``live_migration_timeout_action``: force-complete, or abort (Nova's default)."""
        if self.active.policy.live_migration_timeout_action == "force_complete":
            self.active.force_complete()
            return
        LOG.warning(
            "live migration of %s exceeded %.0f s: aborting", self.instance.uuid, self.completion_timeout
        )
        self.job.cancel()


def _start_ramp(policy: LiveMigrationOptions, data_gb: float) -> DowntimeRamp:
    """The migration's ramp with step 0 applied: it goes in with the migration's other parameters,
    before ``migrate`` (libvirt's monitor sets it on its first pass, within its first half
    second), so nothing of the migration runs under QEMU's default limit in either case."""
    ramp = DowntimeRamp(downtime_steps(policy, data_gb))
    first_at, first_limit = ramp.steps[0]
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
    return ramp


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
    policy = active.policy
    data_gb = live_migration_data_gb(int(instance.flavor.memory_mb))
    ramp = _start_ramp(policy, data_gb)
    writer = ProgressWriter()
    migration = migrate_data.migration
    settings = migration_policy(policy, ramp.steps[0][1])
    started = time.monotonic()
    job = start_migration(source_machine, dest_machine, settings, progress=writer)
    active.job, active.source = job, source_machine
    _Monitor(
        job,
        active,
        instance,
        migration,
        source_machine,
        ramp,
        writer,
        completion_timeout=policy.live_migration_completion_timeout * data_gb,
        started=started,
    ).run()

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
    # The host's CLOCK_MONOTONIC at QEMU's migrate command, which the runner shares: it places the
    # throttle and dirty-rate series (seconds since migrate) on the case clock.
    figures["migrate_monotonic_s"] = result.started_ns / 1e9
    figures["events"] = with_downtime_steps(figures.get("events") or [], ramp, result.started_ns)
    if result.status == "completed":
        _save_final_progress(instance, migration, result)
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


def _save_final_progress(instance: Any, migration: Any, result: Any) -> None:
    last = result.progress[-1] if result.progress else None
    if last is None:
        return
    try:
        save_progress(instance, migration, last)
    except Exception:
        LOG.warning("could not save final migration progress", exc_info=True)


def _check_guest(dest_machine: Any, figures: dict[str, Any]) -> None:
    """After a completed migration: the guest's heartbeat rate, and its integrity region checked.

    Asks the destination's agent `info`; when it reports ``integrity=1``, runs `integrity-check`
    and adds ``figures["integrity"]``: ``ok``, ``pages``, ``check_ms`` and ``generation``, plus
    the agent's failure fields (``first_bad_page``, ``expected``, ``found``, ``word``,
    ``bad_pages``, ``msg``) when it fails. An agent that does not answer the check counts as a
    failure (``ok`` false, ``error``): memory that cannot be read back is not shown intact. A
    guest that is not running (paused) is not asked, and the key stays absent (= not checked).
    """
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
    if info.fields.get("integrity") != "1" or os.environ.get(INTEGRITY_CHECK_ENV) == "off":
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
