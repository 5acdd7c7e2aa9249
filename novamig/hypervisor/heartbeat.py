"""Guest downtime as the guest's own heartbeat shows it, from host arrival times.

The agent sends `H <seq> <guest_ns>` at a fixed rate (1 kHz by default); the agent channel stamps
each line with the host's monotonic clock on arrival (see `agent`). Everything here is arithmetic
on those stamps, so it is one clock, the same one QMP events are stamped with:

* **switchover gap**: last beat on the source → first beat on the destination. What the guest
  experienced across the switchover (QEMU's `downtime` excludes the destination's load and resume).
* **longest source gap while migrating**: auto-converge throttles the vCPU long before the stop;
  QEMU's figure hides that stall, this one shows it.
* **noise floor**: max and p99 gap over a window with no migration: below it nothing is measurable.
* **pause gap**: the gap around an injected `stop`/`cont`, minus one beat period, compared with the
  STOP→RESUME event timestamps (the method's own accuracy check).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qemu.qmp import EventListener

from novamig.hypervisor.runtime import run_sync
from novamig.stats import Gap, gaps, longest_gap, percentile

if TYPE_CHECKING:
    from novamig.hypervisor.agent import AgentChannel, BeatLog
    from novamig.hypervisor.machine import QemuMachine
    from novamig.hypervisor.migration_result import MigrationResult


def _or_nan(value: float | None) -> float:
    """A percentile of no gaps as NaN: `NoiseFloor` keeps its float fields (NaN = not measured)."""
    return math.nan if value is None else value


@dataclass(frozen=True)
class NoiseFloor:
    """Heartbeat jitter with nothing happening: the resolution of every guest-side figure."""

    window_s: float
    beats: int
    period_ms: float  # the beat period: median interval of the guest's own timestamps
    p99_ms: float  # of host arrival gaps
    max_ms: float  # of host arrival gaps


def noise_floor(
    host_ns: Sequence[int], start_ns: int, end_ns: int, guest_ns: Sequence[int] | None = None
) -> NoiseFloor:
    """Jitter of host arrival times within [start_ns, end_ns].

    The period comes from the guest's timestamps when given: under load the host receives beats in
    bursts (QEMU flushes several at once), so the median *arrival* gap can be far below the period.
    """
    found = [
        g.ms for g in gaps(host_ns, start_ns, end_ns) if start_ns <= g.before_ns and g.after_ns <= end_ns
    ]
    period = _or_nan(percentile(found, 50))
    if guest_ns is not None and len(guest_ns) == len(host_ns):
        lo = bisect.bisect_left(host_ns, start_ns)
        hi = bisect.bisect_right(host_ns, end_ns)
        steps = [(guest_ns[i + 1] - guest_ns[i]) / 1e6 for i in range(lo, hi - 1)]
        if steps:
            period = _or_nan(percentile(steps, 50))
    return NoiseFloor(
        window_s=(end_ns - start_ns) / 1e9,
        beats=len(found) + 1 if found else 0,
        period_ms=period,
        p99_ms=_or_nan(percentile(found, 99)),
        max_ms=max(found) if found else math.nan,
    )


def measure_noise_floor(channel: AgentChannel, window_s: float = 2.0) -> NoiseFloor:
    """Watch `channel` for `window_s` seconds with nothing else happening and report the jitter."""
    start = time.monotonic_ns()
    time.sleep(window_s)
    end = time.monotonic_ns()
    beats = channel.beats.beats()
    return noise_floor([b.host_ns for b in beats], start, end, [b.guest_ns for b in beats])


# ------------------------------------------------------------------------------------------ pauses


@dataclass(frozen=True)
class PauseMeasurement:
    """One injected pause: what QEMU says (STOP→RESUME) and what the heartbeat saw."""

    requested_ms: float
    stop_resume_ms: float  # from QEMU's own event timestamps
    stop_ns: int  # host arrival of STOP
    resume_ns: int  # host arrival of RESUME
    gap_ms: float | None  # heartbeat gap around the pause
    period_ms: float
    guest_gap_ms: float | None = None  # the guest's own clock across that gap

    @property
    def starved_ms(self) -> float | None:
        """How far the guest's own clock ran beyond one period across the gap.

        The guest's clock stands still while QEMU is stopped, so across a clean pause it advances by
        one period. More means the host did not run the guest's vCPU (or its beat) around the pause:
        host starvation, not pause, and not an error of the measurement.
        """
        return None if self.guest_gap_ms is None else self.guest_gap_ms - self.period_ms

    @property
    def measured_ms(self) -> float | None:
        """Heartbeat gap minus one beat period (the beat that was due anyway)."""
        return None if self.gap_ms is None else self.gap_ms - self.period_ms

    @property
    def error_ms(self) -> float | None:
        m = self.measured_ms
        return None if m is None else m - self.stop_resume_ms


class _StopResume(EventListener):
    def __init__(self) -> None:
        super().__init__(("STOP", "RESUME"))
        self.seen: dict[str, tuple[int, float]] = {}
        self.both = asyncio.Event()

    async def put(self, event: Any) -> None:
        now = time.monotonic_ns()
        ts = event.get("timestamp") or {}
        self.seen.setdefault(
            str(event["event"]), (now, float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6)
        )
        if len(self.seen) == 2:
            self.both.set()


async def _pause(machine: QemuMachine, seconds: float) -> tuple[int, float, int, float]:
    listener = _StopResume()
    with machine.qmp.listen(listener):
        await machine.execute("stop")
        await asyncio.sleep(seconds)
        await machine.execute("cont")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.both.wait(), 5.0)
    if len(listener.seen) < 2:
        raise TimeoutError(f"{machine.name}: STOP/RESUME events not seen: {sorted(listener.seen)}")
    stop, resume = listener.seen["STOP"], listener.seen["RESUME"]
    return stop[0], stop[1], resume[0], resume[1]


def inject_pause(machine: QemuMachine, pause_ms: float, period_ms: float | None = None) -> PauseMeasurement:
    """Pause the guest with QMP `stop`, wait, `cont`; measure the heartbeat gap around it.

    `period_ms` defaults to the rate the agent announced in READY (else the guest timestamps).
    """
    log: BeatLog = machine.agent.beats
    before = time.monotonic_ns()
    if period_ms is None:
        ready = machine.agent.ready
        if ready is not None and ready.hb_hz > 0:
            period_ms = 1000.0 / ready.hb_hz
        else:
            beats = log.beats()
            floor = noise_floor(
                [b.host_ns for b in beats], before - 1_000_000_000, before, [b.guest_ns for b in beats]
            )
            period_ms = floor.period_ms if not math.isnan(floor.period_ms) else 1.0
    stop_ns, stop_s, resume_ns, resume_s = run_sync(_pause(machine, pause_ms / 1000), 30.0)
    log.wait_after(resume_ns, 2.0)
    time.sleep(0.05)
    beats = log.beats()
    host = [b.host_ns for b in beats]
    # The pause gap is the longest gap in a window around the STOP..RESUME interval.
    gap = longest_gap(host, stop_ns - 50_000_000, resume_ns + 50_000_000)
    guest_gap = None
    if gap is not None:
        i = bisect.bisect_left(host, gap.after_ns)
        if 0 < i < len(beats):
            guest_gap = (beats[i].guest_ns - beats[i - 1].guest_ns) / 1e6
    return PauseMeasurement(
        requested_ms=pause_ms,
        stop_resume_ms=(resume_s - stop_s) * 1000,
        stop_ns=stop_ns,
        resume_ns=resume_ns,
        gap_ms=gap.ms if gap is not None else None,
        period_ms=period_ms,
        guest_gap_ms=guest_gap,
    )


@dataclass(frozen=True)
class PauseEstimate:
    """The median of several clean measurements of one pause length, and every attempt."""

    median: PauseMeasurement | None  # None when no attempt was clean (host too loaded)
    clean: list[PauseMeasurement]
    attempts: list[PauseMeasurement]


def measure_pause(
    machine: QemuMachine,
    pause_ms: float,
    repeats: int = 5,
    *,
    max_starved_ms: float = 2.0,
    max_attempts: int | None = None,
    settle_s: float = 0.2,
) -> PauseEstimate:
    """Inject the same pause until `repeats` clean measurements exist; report their median.

    One measurement carries the host scheduler's noise of two instants (the last beat before the
    stop, the first after the resume). An attempt whose guest clock shows the guest was starved
    around the pause (`starved_ms` above `max_starved_ms`) measured the host's load, not the method,
    and is set aside (kept in `attempts`); the median of the clean ones is the estimate.
    """
    attempts: list[PauseMeasurement] = []
    clean: list[PauseMeasurement] = []
    limit = max_attempts if max_attempts is not None else 3 * repeats
    while len(clean) < repeats and len(attempts) < limit:
        m = inject_pause(machine, pause_ms)
        attempts.append(m)
        if m.error_ms is not None and m.starved_ms is not None and m.starved_ms <= max_starved_ms:
            clean.append(m)
        time.sleep(settle_s)
    if not clean:
        return PauseEstimate(None, clean, attempts)
    ordered = sorted(clean, key=lambda r: r.error_ms if r.error_ms is not None else 0.0)
    return PauseEstimate(ordered[(len(ordered) - 1) // 2], clean, attempts)


# ------------------------------------------------------------------------------------------ migration


@dataclass(frozen=True)
class MigrationHeartbeat:
    """Guest-side figures of one migration."""

    switchover_gap_ms: float | None  # last source beat → first destination beat
    last_source_ns: int | None
    first_destination_ns: int | None
    source_longest_gap_ms: float | None  # while migrating, before the stop
    destination_longest_gap_ms: float | None  # after the first destination beat (post-copy faults)
    source_beats: int
    destination_beats: int
    noise_floor_ms: float | None = None  # longest gap in the window before the migration started
    brownout_ms: float | None = None  # time in stalls above the noise floor, the switchover apart
    stalls: int = 0  # how many such stalls

    @property
    def guest_downtime_ms(self) -> float | None:
        """The worst interruption the guest saw: switchover or a stall during the migration."""
        figures = [
            f
            for f in (self.switchover_gap_ms, self.source_longest_gap_ms, self.destination_longest_gap_ms)
            if f is not None
        ]
        return max(figures) if figures else None


class HeartbeatCollector:
    """Reads the source's and the destination's beat logs around one migration."""

    def __init__(self, source: AgentChannel, destination: AgentChannel | None = None) -> None:
        self.source = source
        self.destination = destination

    NOISE_WINDOW_S = 2.0

    def analyse(
        self, result: MigrationResult, settle_s: float = 1.0, destination_window_s: float = 1.0
    ) -> MigrationHeartbeat:
        """Guest-side figures for `result`.

        Waits up to `settle_s` for the destination's first beat, and until `destination_window_s`
        after the end of the migration so that stalls after the switchover (post-copy page faults)
        are inside the window it examines.
        """
        src = self.source.beats.host_times()
        dst: list[int] = []
        window_ns = int(destination_window_s * 1e9)
        if self.destination is not None:
            if result.status == "completed":
                self.destination.beats.wait_for(1, settle_s)
                remaining = (result.finished_ns + window_ns - time.monotonic_ns()) / 1e9
                if remaining > 0 and settle_s > 0:
                    time.sleep(min(remaining, destination_window_s))
            dst = self.destination.beats.host_times()
        stall_end = result.stop_ns if result.stop_ns is not None else result.finished_ns
        src_gap = longest_gap(src, result.started_ns, stall_end)
        first_dst = dst[0] if dst else None
        last_src = None
        if src:
            if first_dst is not None:
                i = bisect.bisect_left(src, first_dst)
                last_src = src[i - 1] if i > 0 else None
            else:
                last_src = src[-1]
        switchover = None
        if last_src is not None and first_dst is not None:
            switchover = (first_dst - last_src) / 1e6
        dst_gap = None
        dst_gaps: list[Gap] = []
        if first_dst is not None:
            window_end = max(result.finished_ns, first_dst) + window_ns
            dst_gaps = gaps(dst, first_dst, window_end)
            dst_gap = max(g.ms for g in dst_gaps) if dst_gaps else None
        quiet = [
            g.ms
            for g in gaps(src, result.started_ns - int(self.NOISE_WINDOW_S * 1e9), result.started_ns)
            if g.after_ns <= result.started_ns
        ]
        noise = max(quiet) if quiet else None
        brownout, stalls = stall_time(gaps(src, result.started_ns, stall_end) + dst_gaps, noise)
        worst_stall = max(src_gap.ms if src_gap is not None else 0.0, dst_gap or 0.0)
        brownout, stalls = apart_from_blackout(brownout, stalls, switchover, worst_stall, noise)
        return MigrationHeartbeat(
            switchover_gap_ms=switchover,
            last_source_ns=last_src,
            first_destination_ns=first_dst,
            source_longest_gap_ms=src_gap.ms if src_gap is not None else None,
            destination_longest_gap_ms=dst_gap,
            source_beats=len(src),
            destination_beats=len(dst),
            noise_floor_ms=noise,
            brownout_ms=brownout,
            stalls=stalls,
        )


def apart_from_blackout(
    brownout_ms: float | None,
    stalls: int,
    switchover_ms: float | None,
    worst_stall_ms: float,
    noise_floor_ms: float | None,
) -> tuple[float | None, int]:
    """The guest figure is the worst of the switchover gap and the stalls on either side; when a
    stall is the worst, it is the blackout reported as downtime and leaves the brownout."""
    if brownout_ms is None or noise_floor_ms is None or worst_stall_ms <= noise_floor_ms:
        return brownout_ms, stalls
    if switchover_ms is not None and worst_stall_ms <= switchover_ms:
        return brownout_ms, stalls
    return round(max(0.0, brownout_ms - worst_stall_ms), 3), max(0, stalls - 1)


def stall_time(found: Sequence[Gap], noise_floor_ms: float | None) -> tuple[float | None, int]:
    """Brownout: the summed length of gaps longer than the noise floor (whole gaps, in ms).

    The guest ran but slowly — throttled by auto-converge, waiting on post-copy page faults — so
    beats came late. Counting whole gaps says how long the guest's work was held up; gaps within
    the noise floor are what the guest sees with no migration at all and count for nothing. The
    switchover gap is not among `found` (it is the blackout, reported as downtime).
    """
    if noise_floor_ms is None:
        return None, 0
    stalls = [g.ms for g in found if g.ms > noise_floor_ms]
    return round(sum(stalls), 3), len(stalls)
