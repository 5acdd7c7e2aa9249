"""The live-migration engine: one QEMU-to-QEMU migration driven over QMP (qemu.qmp, asyncio).

Sequence (QEMU's documented one, and what libvirt does): the destination QEMU was started with the
same machine type and devices plus `-incoming defer`; the engine sets capabilities on both sides
(`events`, `postcopy-ram` when post-copy is allowed, `auto-converge`), parameters on the source
(`downtime-limit`, `max-bandwidth`, throttle), starts `migrate-incoming` on the destination and
`migrate` on the source, then samples `query-migrate` every `policy.sample_interval_s` (≤ 100 ms),
applying the policy: switch to post-copy, abort, or cancel on timeout (the source keeps running).

The loop is a small state machine (`MigrationState`: setting up → pre-copy → post-copy or
cancelling → ended), moved in one place and logged on every move, so what the engine may still do
is read from one value instead of from a handful of flags. How it ended is a `MigrationOutcome`:
QEMU's final word (completed, failed) wins over the engine's own decision (cancelled, timeout).

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
import enum
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from qemu.qmp import EventListener
from qemu.qmp.message import Message

from novamig.hypervisor.errors import HypervisorError, QmpCommandError
from novamig.hypervisor.machine import QemuMachine
from novamig.hypervisor.migration_result import (
    MigrationEvent,
    MigrationOutcome,
    MigrationResult,
    QemuProgress,
    build_result,
)
from novamig.hypervisor.policy import QemuMigrationSettings
from novamig.hypervisor.runtime import submit

__all__ = [
    "MigrationControl",
    "MigrationEngine",
    "MigrationEvent",
    "MigrationJob",
    "MigrationOutcome",
    "MigrationResult",
    "MigrationState",
    "QemuProgress",
    "migrate",
    "start_migration",
]

MIGRATION_EVENTS = ("STOP", "RESUME", "MIGRATION", "MIGRATION_PASS")
TERMINAL = frozenset({"completed", "failed", "cancelled"})

_log = logging.getLogger(__name__)


class MigrationState(enum.Enum):
    """Where the engine is in one migration (modelled on qemu.qmp's `Runstate`).

    The engine moves between states only through `MigrationEngine._move`, which checks the move
    against `_NEXT` and logs it; the loop's behaviour in each state is what the docstrings say.
    """

    NEW = "new"
    """Not started."""
    SETTING_UP = "setting-up"
    """Capabilities and parameters are being set; `migrate` is not yet issued."""
    PRECOPY = "pre-copy"
    """`migrate` issued: every sample may switch to post-copy, cancel, or time out."""
    POSTCOPY = "post-copy"
    """`migrate-start-postcopy` issued: the destination takes over the guest; the engine waits for
    the end (a cancel is still tried while QEMU does not yet report post-copy)."""
    CANCELLING = "cancelling"
    """`migrate_cancel` issued (a request, `abort_after_s` or `timeout_s`): waiting for QEMU's end."""
    ENDED = "ended"
    """QEMU reported a final state, or the engine stopped waiting for one."""


_NEXT: dict[MigrationState, frozenset[MigrationState]] = {
    MigrationState.NEW: frozenset({MigrationState.SETTING_UP}),
    MigrationState.SETTING_UP: frozenset({MigrationState.PRECOPY}),
    MigrationState.PRECOPY: frozenset(
        {MigrationState.POSTCOPY, MigrationState.CANCELLING, MigrationState.ENDED}
    ),
    MigrationState.POSTCOPY: frozenset({MigrationState.CANCELLING, MigrationState.ENDED}),
    MigrationState.CANCELLING: frozenset({MigrationState.ENDED}),
    MigrationState.ENDED: frozenset(),
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
ProgressCallback = Callable[[QemuProgress], None]


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


def _caps(policy: QemuMigrationSettings, *, destination: bool) -> list[dict[str, Any]]:
    caps = {"events": True, "auto-converge": policy.auto_converge, "postcopy-ram": policy.post_copy_allowed}
    if destination and policy.post_copy_allowed:
        caps["postcopy-blocktime"] = True
    return [{"capability": k, "state": v} for k, v in caps.items()]


class MigrationEngine:
    """Runs one migration from `source` to `destination` (both launched; destination `-incoming defer`)."""

    def __init__(
        self,
        source: QemuMachine,
        destination: QemuMachine,
        policy: QemuMigrationSettings,
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
        self.samples: list[QemuProgress] = []
        self.notes: list[str] = []
        self.state = MigrationState.NEW
        self.started_ns = 0  # host monotonic time `migrate` was issued
        self.postcopy_started_ns: int | None = None
        self._verdict: MigrationOutcome | None = None  # the engine's own decision to end it
        self._error: str | None = None
        self._last_ram: dict[str, Any] = {}
        self._dst_exit_noted = False

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

    def _move(self, state: MigrationState, why: str) -> None:
        """The one place the state changes: only along `_NEXT`, and each move is logged."""
        if state not in _NEXT[self.state]:
            raise HypervisorError(
                f"migration engine: no move from {self.state.value} to {state.value} ({why})"
            )
        _log.debug(
            "migration %s -> %s: %s -> %s (%s)",
            self.source.name,
            self.destination.name,
            self.state.value,
            state.value,
            why,
        )
        self.state = state

    async def _run(self, wake: asyncio.Event) -> MigrationResult:
        self._move(MigrationState.SETTING_UP, "both machines are ready")
        uri = await self._set_up()
        self.started_ns = time.monotonic_ns()
        await self.source.execute("migrate", {"uri": self._source_uri(uri)})
        self._move(MigrationState.PRECOPY, "migrate issued")
        info = await self._sample_until_ended(wake)
        return await self._finish(info)

    async def _set_up(self) -> str:
        """Capabilities on both sides, parameters on the source, `migrate-incoming`; the URI."""
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
        return uri

    async def _sample_until_ended(self, wake: asyncio.Event) -> dict[str, Any]:
        """Sample `query-migrate` and steer until the state is ENDED; the last sample's info."""
        while True:
            now = time.monotonic_ns()
            elapsed = (now - self.started_ns) / 1e9
            info: dict[str, Any] = await self.source.execute("query-migrate")
            sample = self._record(info, now)
            if sample.status in TERMINAL:
                self._move(MigrationState.ENDED, f"QEMU reports {sample.status}")
                return info
            if "ram" in info:
                self._last_ram = info["ram"]
            self._note_destination_exit()
            await self._steer(sample, elapsed)
            self._give_up_if_stuck(sample, elapsed)
            if self.state is MigrationState.ENDED:
                return info
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.policy.sample_interval_s)

    def _record(self, info: dict[str, Any], now: int) -> QemuProgress:
        sample = QemuProgress.from_info(info, self.started_ns, now)
        self.samples.append(sample)
        if self.progress_callback is not None:
            try:
                self.progress_callback(sample)
            except Exception as exc:  # a broken callback must not break the migration
                self.notes.append(f"progress callback failed: {type(exc).__name__}: {exc}")
        return sample

    def _note_destination_exit(self) -> None:
        dst = self.destination
        if (
            dst.poll() is not None
            and self.state is not MigrationState.CANCELLING
            and not self._dst_exit_noted
        ):
            self._dst_exit_noted = True
            self.notes.append(f"destination QEMU exited with code {dst.exit_code} during the migration")

    async def _steer(self, sample: QemuProgress, elapsed: float) -> None:
        """Apply the policy and the caller's requests to one sample: cancel, or switch to post-copy."""
        policy = self.policy
        want: MigrationOutcome | None = None
        aborting = policy.abort_after_s is not None and elapsed >= policy.abort_after_s
        if self.control.cancel_requested or aborting:
            want = MigrationOutcome.CANCELLED
        elif elapsed >= policy.timeout_s:
            want = MigrationOutcome.TIMEOUT
        if want is not None and self.state is not MigrationState.CANCELLING:
            await self._cancel(want, sample, elapsed)
        if self.state is MigrationState.PRECOPY and sample.status == "active":
            await self._maybe_start_postcopy(sample, elapsed)

    async def _cancel(self, want: MigrationOutcome, sample: QemuProgress, elapsed: float) -> None:
        if sample.status.startswith("postcopy"):
            if want is MigrationOutcome.TIMEOUT:
                # Nothing safe can be done once the destination owns the guest.
                self.notes.append("timeout reached during post-copy; waiting for completion")
            else:
                self.notes.append("cancel refused: post-copy has started")
            self.control.cancel_requested = False
            return
        self._verdict = want
        timed_out = want is MigrationOutcome.TIMEOUT
        why = (
            f"timed out after {self.policy.timeout_s:g} s"
            if timed_out
            else f"cancelled after {elapsed:.2f} s"
        )
        self.notes.append(f"{why}: migrate_cancel" if timed_out else why)
        self._move(MigrationState.CANCELLING, why)
        await self.source.execute("migrate_cancel")

    async def _maybe_start_postcopy(self, sample: QemuProgress, elapsed: float) -> None:
        policy = self.policy
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
        if trigger is None:
            return
        if not policy.post_copy_allowed:
            self.notes.append("post-copy requested but the policy does not allow it")
            self.control.postcopy_requested = False
            return
        await self.source.execute("migrate-start-postcopy")
        self.postcopy_started_ns = time.monotonic_ns()
        self.notes.append(f"post-copy started ({trigger})")
        self._move(MigrationState.POSTCOPY, f"post-copy started ({trigger})")

    def _give_up_if_stuck(self, sample: QemuProgress, elapsed: float) -> None:
        """End without a final state from QEMU when it has had far more than enough time."""
        timeout_s = self.policy.timeout_s
        if self.state is MigrationState.CANCELLING and elapsed >= timeout_s + 30:
            self._error = "source did not reach a final state after migrate_cancel"
            self._move(MigrationState.ENDED, self._error)
        elif (
            self.state is not MigrationState.CANCELLING
            and sample.status.startswith("postcopy")
            and elapsed >= timeout_s + 300
        ):
            self._verdict, self._error = MigrationOutcome.FAILED, "post-copy did not complete"
            self._move(MigrationState.ENDED, self._error)

    def _outcome(self, info: dict[str, Any]) -> tuple[MigrationOutcome, str | None]:
        """How the migration ended: QEMU's final word wins, then the engine's own verdict."""
        final = str(info.get("status"))
        if final == "completed":
            return MigrationOutcome.COMPLETED, self._error
        if final == "failed":
            return MigrationOutcome.FAILED, str(info.get("error-desc", "migration failed"))
        outcome = self._verdict
        if outcome is None:
            outcome = MigrationOutcome.CANCELLED if final == "cancelled" else MigrationOutcome.FAILED
        error = self._error
        if error is None and outcome is MigrationOutcome.FAILED:
            error = str(info.get("error-desc", f"migration ended in state {final}"))
        return outcome, error

    async def _finish(self, info: dict[str, Any]) -> MigrationResult:
        """Settle the figures, make sure the guest runs somewhere, and build the result."""
        outcome, error = self._outcome(info)
        if outcome is MigrationOutcome.COMPLETED:
            info = await self._settled_info(info)
            await self._wait_for_event("destination", "RESUME", 5.0)
        source_running: bool | None = None
        if outcome is not MigrationOutcome.COMPLETED:
            source_running = await self._ensure_source_running()
        dst_info: dict[str, Any] = {}
        if self.postcopy_started_ns is not None and self.destination.poll() is None:
            with contextlib.suppress(QmpCommandError):
                dst_info = await self.destination.execute("query-migrate")
        finished_ns = time.monotonic_ns()
        if "ram" not in info and self._last_ram:
            info = {**info, "ram": self._last_ram}
        return build_result(
            status=outcome,
            error=error,
            info=info,
            dst_info=dst_info,
            started_ns=self.started_ns,
            finished_ns=finished_ns,
            postcopy_started_ns=self.postcopy_started_ns,
            source_running=source_running,
            events=self.events,
            samples=self.samples,
            notes=self.notes,
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


class MigrationJob:
    """A migration running on the shared loop, controllable from any thread."""

    def __init__(self, engine: MigrationEngine) -> None:
        self.engine = engine
        self.control = engine.control
        self._future: concurrent.futures.Future[MigrationResult] = submit(engine.run())

    @property
    def state(self) -> MigrationState:
        """Where the engine is now (read from any thread; it only ever moves forward)."""
        return self.engine.state

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
    policy: QemuMigrationSettings,
    *,
    progress: ProgressCallback | None = None,
) -> MigrationJob:
    """Start a migration in the background; returns at once with a controllable job."""
    return MigrationJob(MigrationEngine(source, destination, policy, progress=progress))


def migrate(
    source: QemuMachine,
    destination: QemuMachine,
    policy: QemuMigrationSettings,
    *,
    progress: ProgressCallback | None = None,
) -> MigrationResult:
    """Run a migration and wait for its end (blocking; not from the QMP loop)."""
    job = start_migration(source, destination, policy, progress=progress)
    return job.result(policy.timeout_s + 120)
