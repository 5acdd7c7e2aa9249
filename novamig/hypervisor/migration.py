"""The live-migration engine: one QEMU-to-QEMU migration driven over QMP (qemu.qmp, asyncio).

Sequence (QEMU's documented one, and what libvirt does): the destination QEMU was started with the
same machine type and devices plus `-incoming defer`; the engine sets capabilities on both sides
(`events`, `postcopy-ram` when post-copy is allowed, `auto-converge`), parameters on the source
(`downtime-limit`, `max-bandwidth`, throttle), starts `migrate-incoming` on the destination and
`migrate` on the source, then samples `query-migrate` every `policy.sample_interval_s` (≤ 100 ms),
applying the policy: switch to post-copy, abort, or cancel on timeout (the source keeps running).

Timestamps: every QMP event is stamped with the host's `time.monotonic_ns()` on arrival (the same
clock the heartbeat collector uses) and keeps QEMU's own timestamp. STOP→RESUME is computed from
QEMU's timestamps (source STOP, destination RESUME), which do not include QMP delivery delay.

After `completed`, QEMU 7.2 may report total-time and downtime as 0 for a moment: the engine
queries again until they are filled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qemu.qmp import EventListener
from qemu.qmp.message import Message

from novamig.hypervisor import runtime
from novamig.hypervisor.errors import HypervisorError, QmpCommandError
from novamig.hypervisor.machine import QemuMachine
from novamig.hypervisor.policy import MigrationPolicy

MIGRATION_EVENTS = ("STOP", "RESUME", "MIGRATION", "MIGRATION_PASS")
TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class MigrationEvent:
    """One QMP event seen during a migration."""

    host_ns: int  # host monotonic arrival time
    side: str  # "source" | "destination"
    name: str
    data: dict[str, Any]
    qemu_time_s: float  # QEMU's own timestamp (wall clock, seconds)


@dataclass(frozen=True)
class ProgressSample:
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


@dataclass(frozen=True)
class MigrationResult:
    """Everything measured about one migration; None where QEMU did not report a figure."""

    status: str  # completed | cancelled | failed | timeout
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
    progress: list[ProgressSample] = field(default_factory=list)
    events: list[MigrationEvent] = field(default_factory=list)
    final_info: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (series included, events as name/side/time)."""
        return {
            "status": self.status,
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


class MigrationControl:
    """Requests from other threads into a running migration (Nova's force_complete and abort)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.postcopy_requested = False
        self.cancel_requested = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        with self._lock:
            self._loop = loop
            self._wake = asyncio.Event()
            return self._wake

    def _poke(self) -> None:
        with self._lock:
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def switch_to_postcopy(self) -> None:
        """Switch to post-copy now (needs a policy that allows post-copy)."""
        self.postcopy_requested = True
        self._poke()

    def cancel(self) -> None:
        """Cancel now; the source keeps running (refused by QEMU once post-copy has started)."""
        self.cancel_requested = True
        self._poke()


#: Called with every `query-migrate` sample, on the shared QMP loop thread: it must return quickly
#: (hand the sample to another thread for anything slow, such as a database write).
ProgressCallback = Callable[[ProgressSample], None]


class _Recorder(EventListener):
    """Event listener that keeps every event with its host arrival time (no unbounded queue)."""

    def __init__(self, side: str, sink: list[MigrationEvent], wake: asyncio.Event) -> None:
        super().__init__(MIGRATION_EVENTS)
        self.side = side
        self.sink = sink
        self.wake = wake

    async def put(self, event: Message) -> None:
        now = time.monotonic_ns()
        ts = event.get("timestamp")
        qemu_time = 0.0
        if isinstance(ts, dict):
            qemu_time = float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6
        raw = event.get("data")
        data: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        self.sink.append(MigrationEvent(now, self.side, str(event["event"]), data, qemu_time))
        self.wake.set()


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _caps(policy: MigrationPolicy, *, destination: bool) -> list[dict[str, Any]]:
    caps = {"events": True, "auto-converge": policy.auto_converge, "postcopy-ram": policy.post_copy_allowed}
    if destination and policy.post_copy_allowed:
        caps["postcopy-blocktime"] = True
    return [{"capability": k, "state": v} for k, v in caps.items()]


def _sample(info: dict[str, Any], started_ns: int, now: int) -> ProgressSample:
    ram = info.get("ram", {})
    return ProgressSample(
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


class MigrationEngine:
    """Runs one migration from `source` to `destination` (both launched; destination `-incoming defer`)."""

    def __init__(
        self,
        source: QemuMachine,
        destination: QemuMachine,
        policy: MigrationPolicy,
        *,
        control: MigrationControl | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.policy = policy
        self.control = control or MigrationControl()
        self.progress_callback = progress
        self.events: list[MigrationEvent] = []
        self.samples: list[ProgressSample] = []
        self.notes: list[str] = []

    # ------------------------------------------------------------------ checks

    def _preflight(self) -> None:
        src, dst = self.source, self.destination
        if not src.is_running():
            raise HypervisorError(f"migration source {src.name} is not running ({src.state.value})")
        if not dst.is_running():
            raise HypervisorError(f"migration destination {dst.name} is not running ({dst.state.value})")
        if dst.spec.incoming != "defer":
            raise HypervisorError(f"destination {dst.name} was not started with -incoming defer")
        for attr in ("machine_type", "memory_mib", "vcpus", "cpu_model", "accelerator"):
            a, b = getattr(src.spec, attr), getattr(dst.spec, attr)
            if a != b:
                raise HypervisorError(f"source and destination differ in {attr}: {a!r} vs {b!r}")

    def _uri(self) -> str:
        if self.policy.transport == "tcp":
            return f"tcp:127.0.0.1:{_free_tcp_port()}"
        return f"unix:{self.destination.files.qemu_path('migrate.sock')}"

    def _source_uri(self, uri: str) -> str:
        """The same endpoint as the source QEMU (other cwd) reaches it: a relative path becomes
        `/proc/<destination pid>/cwd/…`, short whatever the run directory's length."""
        path = uri.removeprefix("unix:")
        if not uri.startswith("unix:") or path.startswith("/"):
            return uri
        return f"unix:/proc/{self.destination.pid}/cwd/{path}"

    # ------------------------------------------------------------------ run

    async def run(self) -> MigrationResult:
        """Run the migration to its end (a coroutine on the shared QMP loop)."""
        self._preflight()
        wake = self.control._bind(asyncio.get_running_loop())
        src_rec = _Recorder("source", self.events, wake)
        dst_rec = _Recorder("destination", self.events, wake)
        with self.source.qmp.listen(src_rec), self.destination.qmp.listen(dst_rec):
            try:
                return await self._run(wake)
            except BaseException:
                # Whatever went wrong here (a QMP error, the caller's timeout), do not leave a
                # migration running behind our back: cancel it; the source keeps the guest.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.source.execute("migrate_cancel"), 5.0)
                raise

    async def _run(self, wake: asyncio.Event) -> MigrationResult:
        src, dst, policy = self.source, self.destination, self.policy
        await src.execute("migrate-set-capabilities", {"capabilities": _caps(policy, destination=False)})
        await dst.execute("migrate-set-capabilities", {"capabilities": _caps(policy, destination=True)})
        params: dict[str, Any] = {
            "downtime-limit": policy.downtime_limit_ms,
            "max-bandwidth": policy.max_bandwidth_bytes_s,
        }
        if policy.cpu_throttle_initial is not None:
            params["cpu-throttle-initial"] = policy.cpu_throttle_initial
        if policy.cpu_throttle_increment is not None:
            params["cpu-throttle-increment"] = policy.cpu_throttle_increment
        await src.execute("migrate-set-parameters", params)
        uri = self._uri()
        await dst.execute("migrate-incoming", {"uri": uri})
        started_ns = time.monotonic_ns()
        await src.execute("migrate", {"uri": self._source_uri(uri)})

        status: str | None = None  # our verdict, set when we decide to stop
        error: str | None = None
        postcopy_started_ns: int | None = None
        info: dict[str, Any] = {}
        last_ram: dict[str, Any] = {}
        dst_exit_noted = False
        while True:
            now = time.monotonic_ns()
            elapsed = (now - started_ns) / 1e9
            info = await src.execute("query-migrate")
            sample = _sample(info, started_ns, now)
            self.samples.append(sample)
            if self.progress_callback is not None:
                try:
                    self.progress_callback(sample)
                except Exception as exc:  # a broken callback must not break the migration
                    self.notes.append(f"progress callback failed: {type(exc).__name__}: {exc}")
            qstatus = sample.status
            if qstatus in TERMINAL:
                break
            if "ram" in info:
                last_ram = info["ram"]
            if dst.poll() is not None and status is None and not dst_exit_noted:
                dst_exit_noted = True
                self.notes.append(f"destination QEMU exited with code {dst.exit_code} during the migration")
            in_postcopy = qstatus.startswith("postcopy")

            want_cancel: str | None = None
            aborting = policy.abort_after_s is not None and elapsed >= policy.abort_after_s
            if self.control.cancel_requested or aborting:
                want_cancel = "cancelled"
            elif elapsed >= policy.timeout_s:
                want_cancel = "timeout"
            if want_cancel is not None and status is None:
                if in_postcopy:
                    if want_cancel == "timeout":
                        # Nothing safe can be done once the destination owns the guest.
                        self.notes.append("timeout reached during post-copy; waiting for completion")
                    else:
                        self.notes.append("cancel refused: post-copy has started")
                    self.control.cancel_requested = False
                else:
                    status = want_cancel
                    self.notes.append(
                        f"timed out after {policy.timeout_s:g} s: migrate_cancel"
                        if want_cancel == "timeout"
                        else f"cancelled after {elapsed:.2f} s"
                    )
                    await src.execute("migrate_cancel")

            if status is None and postcopy_started_ns is None and qstatus == "active":
                trigger = None
                if self.control.postcopy_requested:
                    trigger = "requested"
                elif policy.post_copy_after_s is not None and elapsed >= policy.post_copy_after_s:
                    trigger = f"after {policy.post_copy_after_s}s"
                elif (
                    policy.post_copy_after_iterations is not None
                    and sample.dirty_sync_count >= policy.post_copy_after_iterations
                ):
                    trigger = f"after {sample.dirty_sync_count} iterations"
                if trigger is not None:
                    if policy.post_copy_allowed:
                        await src.execute("migrate-start-postcopy")
                        postcopy_started_ns = time.monotonic_ns()
                        self.notes.append(f"post-copy started ({trigger})")
                    else:
                        self.notes.append("post-copy requested but the policy does not allow it")
                        self.control.postcopy_requested = False

            if status is not None and elapsed >= policy.timeout_s + 30:
                error = "source did not reach a final state after migrate_cancel"
                break
            if status is None and in_postcopy and elapsed >= policy.timeout_s + 300:
                status, error = "failed", "post-copy did not complete"
                break
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), policy.sample_interval_s)

        final_status = str(info.get("status"))
        if final_status == "completed":
            info = await self._settled_info(info)
            status = "completed"
            await self._wait_for_event("destination", "RESUME", 5.0)
        elif final_status == "failed":
            status = "failed"
            error = str(info.get("error-desc", "migration failed"))
        elif status is None:
            status = final_status if final_status in ("cancelled", "failed") else "failed"
        if final_status != "completed" and error is None and status == "failed":
            error = str(info.get("error-desc", f"migration ended in state {final_status}"))

        source_running: bool | None = None
        if status in ("cancelled", "timeout", "failed"):
            source_running = await self._ensure_source_running()

        dst_info: dict[str, Any] = {}
        if postcopy_started_ns is not None and dst.poll() is None:
            with contextlib.suppress(QmpCommandError):
                dst_info = await dst.execute("query-migrate")
        finished_ns = time.monotonic_ns()
        if "ram" not in info and last_ram:
            info = {**info, "ram": last_ram}
        return self._result(
            status=status,
            error=error,
            info=info,
            dst_info=dst_info,
            started_ns=started_ns,
            finished_ns=finished_ns,
            postcopy_started_ns=postcopy_started_ns,
            source_running=source_running,
        )

    async def _settled_info(self, info: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + 3.0
        while (not info.get("total-time") or "downtime" not in info) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            info = await self.source.execute("query-migrate")
        return info

    async def _wait_for_event(self, side: str, name: str, limit_s: float) -> MigrationEvent | None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            for ev in self.events:
                if ev.side == side and ev.name == name:
                    return ev
            await asyncio.sleep(0.01)
        return None

    async def _ensure_source_running(self) -> bool:
        """After a cancel or failure the source must run again; resume it if QEMU left it paused."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            info = await self.source.execute("query-migrate")
            if info.get("status") in TERMINAL:
                break
            await asyncio.sleep(0.05)
        st = await self.source.execute("query-status")
        if not st.get("running") and st.get("status") in ("paused", "postmigrate", "finish-migrate"):
            self.notes.append(f"source was {st.get('status')} after the migration ended: cont")
            await self.source.execute("cont")
            st = await self.source.execute("query-status")
        return bool(st.get("running"))

    def _result(
        self,
        *,
        status: str,
        error: str | None,
        info: dict[str, Any],
        dst_info: dict[str, Any],
        started_ns: int,
        finished_ns: int,
        postcopy_started_ns: int | None,
        source_running: bool | None,
    ) -> MigrationResult:
        ram = info.get("ram", {})

        def num(d: dict[str, Any], key: str) -> int | None:
            v = d.get(key)
            return int(v) if v is not None else None

        stop = next((e for e in self.events if e.side == "source" and e.name == "STOP"), None)
        resume = next((e for e in self.events if e.side == "destination" and e.name == "RESUME"), None)
        stop_resume_ms = None
        if status == "completed" and stop is not None and resume is not None:
            stop_resume_ms = round((resume.qemu_time_s - stop.qemu_time_s) * 1000, 3)
        total = info.get("total-time")
        downtime = info.get("downtime")
        setup = info.get("setup-time")
        vcpu_bt = dst_info.get("postcopy-vcpu-blocktime")
        if error is None and self.notes and status != "completed":
            error = "; ".join(self.notes)
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
            dirty_rate_series=[(round(s.t_s, 3), s.dirty_pages_rate) for s in self.samples],
            throttle_series=[(round(s.t_s, 3), s.cpu_throttle_percentage) for s in self.samples],
            progress=list(self.samples),
            events=list(self.events),
            final_info=info,
        )


class MigrationJob:
    """A migration running on the shared loop, controllable from any thread."""

    def __init__(self, engine: MigrationEngine) -> None:
        self.engine = engine
        self.control = engine.control
        self._future: concurrent.futures.Future[MigrationResult] = runtime.submit(engine.run())

    def switch_to_postcopy(self) -> None:
        self.control.switch_to_postcopy()

    def cancel(self) -> None:
        self.control.cancel()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> MigrationResult:
        """Wait for the end; raises what the engine raised (QmpCommandError, HypervisorError)."""
        return self._future.result(timeout)


def start_migration(
    source: QemuMachine,
    destination: QemuMachine,
    policy: MigrationPolicy,
    *,
    progress: ProgressCallback | None = None,
) -> MigrationJob:
    """Start a migration in the background; returns at once with a controllable job."""
    return MigrationJob(MigrationEngine(source, destination, policy, progress=progress))


def migrate(
    source: QemuMachine,
    destination: QemuMachine,
    policy: MigrationPolicy,
    *,
    progress: ProgressCallback | None = None,
) -> MigrationResult:
    """Run a migration and wait for its end (blocking; not from the QMP loop)."""
    job = start_migration(source, destination, policy, progress=progress)
    return job.result(policy.timeout_s + 120)
