"""What one QEMU live migration leaves behind: its outcome, its QMP events, its progress samples.

These are plain records, apart from the engine that fills them (`novamig.hypervisor.migration`),
so that code reading a result (the heartbeat analysis, the embedded driver) needs nothing of QMP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class MigrationOutcome(enum.StrEnum):
    """How a migration ended. A `str` enum: it compares equal to, and is written as, its value."""

    COMPLETED = "completed"
    """QEMU reported `completed`: the destination runs the guest."""
    CANCELLED = "cancelled"
    """Cancelled on request (or by `abort_after_s`, or by someone else); the source keeps running."""
    FAILED = "failed"
    """QEMU reported `failed`, or post-copy never finished."""
    TIMEOUT = "timeout"
    """Cancelled because it took longer than `timeout_s`; the source keeps running."""


@dataclass(frozen=True)
class MigrationEvent:
    """One QMP event seen during a migration."""

    host_ns: int  # host monotonic arrival time
    side: str  # "source" | "destination"
    name: str
    data: dict[str, Any]
    qemu_time_s: float  # QEMU's own timestamp (wall clock, seconds)


@dataclass(frozen=True)
class QemuProgress:
    """One `query-migrate` sample of the source."""

    t_s: float  # seconds since `migrate` was issued
    host_ns: int
    status: str
    total_bytes: int  # guest RAM size
    processed_bytes: int  # transferred so far
    remaining_bytes: int
    dirty_pages_rate: int  # pages/s, as QEMU measured in the last round
    dirty_sync_count: int
    cpu_throttle_percentage: int
    mbps: float
    expected_downtime_ms: int | None

    @classmethod
    def from_info(cls, info: dict[str, Any], started_ns: int, now: int) -> QemuProgress:
        """The sample in a `query-migrate` reply received at host time `now`."""
        ram = info.get("ram", {})
        return cls(
            t_s=(now - started_ns) / 1e9,
            host_ns=now,
            status=str(info.get("status", "unknown")),
            total_bytes=int(ram.get("total", 0)),
            processed_bytes=int(ram.get("transferred", 0)),
            remaining_bytes=int(ram.get("remaining", 0)),
            dirty_pages_rate=int(ram.get("dirty-pages-rate", 0)),
            dirty_sync_count=int(ram.get("dirty-sync-count", 0)),
            cpu_throttle_percentage=int(info.get("cpu-throttle-percentage", 0)),
            mbps=float(ram.get("mbps", 0.0)),
            expected_downtime_ms=info.get("expected-downtime"),
        )


@dataclass(frozen=True)
class MigrationResult:
    """Everything measured about one migration; None where QEMU did not report a figure."""

    status: MigrationOutcome
    error: str | None
    started_ns: int
    finished_ns: int
    total_ms: float | None
    qemu_downtime_ms: float | None
    stop_resume_ms: float | None
    setup_ms: float | None
    bytes_total: int | None
    bytes_precopy: int | None
    bytes_downtime: int | None
    bytes_postcopy: int | None
    ram_total_bytes: int | None
    dirty_sync_count: int | None
    postcopy: bool
    postcopy_started_ns: int | None
    postcopy_blocktime_ms: float | None
    postcopy_vcpu_blocktime_ms: list[int] | None
    stop_ns: int | None  # host arrival of the source's STOP
    resume_ns: int | None  # host arrival of the destination's RESUME
    source_running_after: bool | None  # for cancelled/timeout: did the source resume?
    dirty_rate_series: list[tuple[float, int]] = field(default_factory=list)
    throttle_series: list[tuple[float, int]] = field(default_factory=list)
    progress: list[QemuProgress] = field(default_factory=list)
    events: list[MigrationEvent] = field(default_factory=list)
    final_info: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (series included, events as name/side/time)."""
        return {
            "status": str(self.status),
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "total_ms": self.total_ms,
            "qemu_downtime_ms": self.qemu_downtime_ms,
            "stop_resume_ms": self.stop_resume_ms,
            "setup_ms": self.setup_ms,
            "bytes": {
                "total": self.bytes_total,
                "precopy": self.bytes_precopy,
                "downtime": self.bytes_downtime,
                "postcopy": self.bytes_postcopy,
                "ram": self.ram_total_bytes,
            },
            "dirty_sync_count": self.dirty_sync_count,
            "postcopy": self.postcopy,
            "postcopy_blocktime_ms": self.postcopy_blocktime_ms,
            "dirty_rate_series": self.dirty_rate_series,
            "throttle_series": self.throttle_series,
            "progress": [
                {
                    "t": round(p.t_s, 3),
                    "status": p.status,
                    "memory_total_bytes": p.total_bytes,
                    "memory_processed_bytes": p.processed_bytes,
                    "memory_remaining_bytes": p.remaining_bytes,
                }
                for p in self.progress
            ],
            "events": [
                {"t": round((e.host_ns - self.started_ns) / 1e9, 4), "side": e.side, "what": e.name, **e.data}
                for e in self.events
            ],
        }


def build_result(
    *,
    status: MigrationOutcome,
    error: str | None,
    info: dict[str, Any],
    dst_info: dict[str, Any],
    started_ns: int,
    finished_ns: int,
    postcopy_started_ns: int | None,
    source_running: bool | None,
    events: list[MigrationEvent],
    samples: list[QemuProgress],
    notes: list[str],
) -> MigrationResult:
    """The result from QEMU's final `query-migrate` of each side and what the engine recorded.

    Downtime and total time count only for a completed migration; an unsuccessful one without an
    error of its own is explained by the engine's notes.
    """
    ram = info.get("ram", {})

    def num(d: dict[str, Any], key: str) -> int | None:
        v = d.get(key)
        return int(v) if v is not None else None

    stop = next((e for e in events if e.side == "source" and e.name == "STOP"), None)
    resume = next((e for e in events if e.side == "destination" and e.name == "RESUME"), None)
    stop_resume_ms = None
    if status == "completed" and stop is not None and resume is not None:
        stop_resume_ms = round((resume.qemu_time_s - stop.qemu_time_s) * 1000, 3)
    total = info.get("total-time")
    downtime = info.get("downtime")
    setup = info.get("setup-time")
    vcpu_bt = dst_info.get("postcopy-vcpu-blocktime")
    if error is None and notes and status != "completed":
        error = "; ".join(notes)
    return MigrationResult(
        status=status,
        error=error,
        started_ns=started_ns,
        finished_ns=finished_ns,
        total_ms=float(total) if status == "completed" and total is not None else None,
        qemu_downtime_ms=float(downtime) if status == "completed" and downtime is not None else None,
        stop_resume_ms=stop_resume_ms,
        setup_ms=float(setup) if setup is not None else None,
        bytes_total=num(ram, "transferred"),
        bytes_precopy=num(ram, "precopy-bytes"),
        bytes_downtime=num(ram, "downtime-bytes"),
        bytes_postcopy=num(ram, "postcopy-bytes"),
        ram_total_bytes=num(ram, "total"),
        dirty_sync_count=num(ram, "dirty-sync-count"),
        postcopy=postcopy_started_ns is not None,
        postcopy_started_ns=postcopy_started_ns,
        postcopy_blocktime_ms=float(dst_info["postcopy-blocktime"])
        if "postcopy-blocktime" in dst_info
        else None,
        postcopy_vcpu_blocktime_ms=[int(x) for x in vcpu_bt] if isinstance(vcpu_bt, list) else None,
        stop_ns=stop.host_ns if stop is not None else None,
        resume_ns=resume.host_ns if resume is not None else None,
        source_running_after=source_running,
        dirty_rate_series=[(round(s.t_s, 3), s.dirty_pages_rate) for s in samples],
        throttle_series=[(round(s.t_s, 3), s.cpu_throttle_percentage) for s in samples],
        progress=list(samples),
        events=list(events),
        final_info=info,
    )
