"""The network vantage point: downtime as a client on the guests' network sees it.

`NetworkProbe` runs the UDP echo prober (`novamig.measure.echo`) as a process of its own, aimed at
every server's fixed address (the guest agent answers UDP echo on port 7), and turns its reply
records into per-migration figures. Every time is CLOCK_MONOTONIC in ns, the clock of the runner's
`time.monotonic()` and of `CaseClock`.

Definitions (per server; docs/measurement.md, "network", says the same for readers of results):

* **window** of a migration: ``[requested_at, finished_at + MARGIN_S]`` in case seconds; with no
  ``finished_at``, up to the end of the recording. The margin keeps the first reply after a
  switchover that Nova reports just before it in the window; it is cut at the end of the recording.
* **reply gap**: the interval between two consecutive replies from the server, by arrival time.
  Lost requests, a paused guest, a guest whose vCPU is throttled and a slow path all show up as a
  gap: a reply that comes late delays the arrival of everything behind it.
* **downtime** (``downtime_ms.network``): the longest reply gap overlapping the window — last reply
  before the blackout → first reply after it. Not clipped to the window: the whole blackout counts.
  Its **resolution** is one probe period: the true dark time lies within one period (plus the noise
  floor) below the gap.
* **noise floor** (`noise_floor`): the longest reply gap of any of the case's servers, within a
  window with no migration (gaps wholly inside it).
* **brownout** (``brownout_ms.network``): with ``T = max(BROWNOUT_MIN_PERIODS × period, noise
  floor)``, every reply gap ``(a, b)`` overlapping the window other than the downtime gap and longer
  than ``T`` contributes the part of ``[a + period, b]`` inside the window (the next reply was due
  one period after ``a``). So jitter no worse than what the idle guest showed never counts, gaps are
  disjoint so the sum is at most the window, and the blackout is not counted twice. RTT counts only
  through gaps: a steadily higher round-trip time with replies still arriving every period is
  latency, not brownout (the window's RTT percentiles are in `ProbeFigure.details`). Brownout needs
  the case's noise floor: it is None until `noise_floor` has been called (the Probe protocol's
  order), and None when the case measured no noise floor.

A figure is None with a reason when it cannot be trusted: the server has no address, no reply came
before the window (nothing to start a gap from), the server stopped answering and had not answered
again when the probe stopped (an open gap longer than any closed one), or the prober died before the
window ended. Nothing here raises into the runner.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from novamig.hypervisor import runtime
from novamig.hypervisor.heartbeat import Gap, gaps, percentile
from novamig.measure.echo import Replies, read_records
from novamig.results import MigrationRecord, ProbeCost
from novamig.runner.clock import CaseClock
from novamig.runner.probes import ProbeFigure, ServerInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowFigure:
    """What one server's replies say about one window (all times monotonic ns)."""

    downtime: Gap | None
    reason: str | None
    brownout_ms: float | None
    replies: int  # replies that arrived inside the window
    lost: int  # sequence numbers sent inside the window with no reply
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    rtt_max_ms: float | None
    brownout_gaps: int


def window_figure(
    replies: Replies,
    start_ns: int,
    end_ns: int,
    *,
    period_ns: int,
    recording_end_ns: int,
    threshold_ms: float | None,
) -> WindowFigure:
    """Downtime and brownout of one server within [start_ns, end_ns] (pure arithmetic; see module doc).

    `recording_end_ns` is when the prober stopped listening: a server silent from its last reply
    until then has an *open* gap, which decides the figure when it is longer than any closed one.
    `threshold_ms` is the brownout threshold (None: brownout not computed).
    """
    recv = replies.recv_ns
    end_ns = min(end_ns, recording_end_ns)

    def empty(reason: str) -> WindowFigure:
        return WindowFigure(None, reason, None, 0, 0, None, None, None, 0)

    if not recv:
        return empty("no reply from this server at all")
    first_in = bisect.bisect_left(recv, start_ns)
    if first_in == 0:
        return empty(
            f"no reply before the window (first reply {(recv[0] - start_ns) / 1e6:.1f} ms after its "
            f"start): the gap the migration caused has no start"
        )
    last_in = bisect.bisect_right(recv, end_ns)  # recv[first_in:last_in] are inside
    found = gaps(recv, start_ns, end_ns)
    longest = max(found, key=lambda g: g.ms) if found else None
    open_ms = (recording_end_ns - recv[-1]) / 1e6 if last_in == len(recv) else 0.0
    if open_ms > (longest.ms if longest is not None else 0.0) and open_ms > 3 * period_ns / 1e6:
        return empty(
            f"no reply in the last {open_ms:.0f} ms before the prober stopped: the server had not "
            f"answered again, so the gap has no end"
        )
    if longest is None:
        return empty("fewer than two replies around the window")
    inside = range(first_in, last_in)
    rtts = [(recv[i] - replies.send_ns[i]) / 1e6 for i in inside]
    # replies to requests sent in the window arrive after its start (at the latest a blackout later)
    late = bisect.bisect_right(recv, end_ns + 60_000_000_000)
    seqs = sorted(replies.seq[i] for i in range(first_in, late) if start_ns <= replies.send_ns[i] <= end_ns)
    lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    brownout: float | None = None
    count = 0
    if threshold_ms is not None:
        total_ns = 0
        for g in found:
            if g is longest or g.ms <= threshold_ms:
                continue
            lo = max(g.before_ns + period_ns, start_ns)
            hi = min(g.after_ns, end_ns)
            if hi > lo:
                total_ns += hi - lo
                count += 1
        brownout = round(total_ns / 1e6, 3)
    return WindowFigure(
        downtime=longest,
        reason=None,
        brownout_ms=brownout,
        replies=len(inside),
        lost=lost,
        rtt_p50_ms=round(percentile(rtts, 50), 3) if rtts else None,
        rtt_p99_ms=round(percentile(rtts, 99), 3) if rtts else None,
        rtt_max_ms=round(max(rtts), 3) if rtts else None,
        brownout_gaps=count,
    )


def quiet_longest_gap_ms(replies: Replies, start_ns: int, end_ns: int) -> float | None:
    """The longest reply gap wholly inside [start_ns, end_ns]; None with fewer than two replies there."""
    inside = [
        g.ms
        for g in gaps(replies.recv_ns, start_ns, end_ns)
        if start_ns <= g.before_ns and g.after_ns <= end_ns
    ]
    return max(inside) if inside else None


class NetworkProbe:
    """UDP echo from the runner's side to every server's address, ``hz`` probes per second each.

    `netns`: the namespace the guests' addresses live in (the embedded cloud's ``guest_netns``), or
    None when the runner reaches them directly. `workdir`: where each run's files go (one new
    ``network-*`` directory per `start`: ``echo.bin`` reply records, ``echo.json`` status and
    summary, ``echo.log`` the prober's stderr). `sched`: the prober's scheduling ("fifo" when
    permitted, "nice", "none"); see docs/measurement.md for what it changes. `port`: the echo
    port (the agent's is 7; tests aim at their own echo server).
    """

    name = "network"
    MARGIN_S = 1.0
    BROWNOUT_MIN_PERIODS = 3
    START_TIMEOUT_S = 10.0
    STOP_GRACE_S = 5.0

    def __init__(
        self, hz: int, netns: str | None, workdir: Path, *, sched: str = "fifo", port: int = 7
    ) -> None:
        if hz <= 0:
            raise ValueError(f"network probe rate must be positive, got {hz}")
        self.hz = hz
        self.netns = netns
        self.workdir = Path(workdir)
        self.sched = sched
        self.port = port
        self.period_ns = round(1e9 / hz)
        self._reset()

    def _reset(self) -> None:
        self._clock: CaseClock | None = None
        self._targets: dict[str, tuple[int, str]] = {}  # server id → (index, address)
        self._names: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._logf: IO[bytes] | None = None
        self.dir: Path | None = None
        self._reason: str | None = None  # why the probe as a whole measured nothing
        self._died: str | None = None  # the prober ended before stop() asked it to
        self._stopped = False
        self._started_mono = 0.0
        self._stopped_mono: float | None = None
        self._status: dict[str, Any] | None = None
        self._cpu_fallback: tuple[float, float] | None = None  # (cpu_s, wall_s) read from /proc
        self._replies: dict[int, Replies] | None = None
        self._recording_end_ns: int | None = None
        self._noise_ms: float | None = None
        self._noise_known = False

    # ------------------------------------------------------------------------------ lifecycle

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        if self._proc is not None:
            self.stop()  # a second start: the previous run ends first
        self._reset()
        self._clock = clock
        for s in servers:
            self._names[s.id] = s.name
            if s.address:
                self._targets[s.id] = (len(self._targets), s.address)
        if not self._targets:
            self._reason = "no server has an address the network probe can reach"
            return
        try:
            self._launch()
        except Exception as exc:
            log.exception("network probe: start failed")
            self._reason = f"the echo prober did not start: {exc}"
            self._kill()

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="network-", dir=self.workdir))
        argv = [
            sys.executable,
            "-m",
            "novamig.measure.echo",
            "--hz",
            str(self.hz),
            "--out",
            str(self.dir / "echo.bin"),
            "--status",
            str(self.dir / "echo.json"),
            "--sched",
            self.sched,
            "--port",
            str(self.port),
        ]
        if self.netns is not None:
            argv += ["--netns", self.netns]
        for index, address in self._targets.values():
            argv += ["--target", f"{index}={address}"]
        self._logf = open(self.dir / "echo.log", "wb")  # noqa: SIM115 - closed in stop()
        self._started_mono = time.monotonic()
        self._proc = runtime.spawn(argv, stdout=self._logf, cwd=self.dir, timeout=30.0)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while True:
            status = self._read_status()
            if status is not None and status.get("state") == "running":
                return
            if status is not None and status.get("state") == "failed":
                raise RuntimeError(str(status.get("error")))
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"exited with code {code}: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not running after {self.START_TIMEOUT_S:g} s: {self._log_tail()}")
            time.sleep(0.02)

    def _read_status(self) -> dict[str, Any] | None:
        if self.dir is None:
            return None
        try:
            data = json.loads((self.dir / "echo.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            text = (self.dir / "echo.log").read_text(errors="replace").strip()
        except OSError:
            return ""
        return text.splitlines()[-1] if text else "(no output)"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """End the prober (SIGTERM, then SIGKILL after STOP_GRACE_S) and load its records.

        Safe to call twice and before `start`; never raises.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._proc is None:
            return
        try:
            code = self._proc.poll()
            if code is not None:
                self._died = f"the echo prober exited by itself (code {code}): {self._log_tail()}"
            else:
                self._cpu_fallback = _proc_cpu(self._proc.pid)
            self._kill()
            self._stopped_mono = time.monotonic()
            self._load()
        except Exception as exc:
            log.exception("network probe: stop failed")
            self._reason = self._reason or f"the echo prober's records could not be read: {exc}"
        finally:
            if self._logf is not None:
                self._logf.close()
                self._logf = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    log.warning("network probe: pid %d ignored SIGTERM; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10.0)
        finally:
            runtime.unregister_process_group(proc.pid)

    def _load(self) -> None:
        assert self.dir is not None
        self._status = self._read_status()
        self._replies = read_records(self.dir / "echo.bin")
        ends = [r.recv_ns[-1] for r in self._replies.values() if r.recv_ns]
        st = self._status or {}
        last_status = int(st["now_ns"]) if isinstance(st.get("now_ns"), int) else None
        if self._died is not None or st.get("state") != "stopped":
            # Died, or killed before its summary: it listened at least until its last sign of life
            # (a reply or a status update); when it was killed by stop(), until the kill.
            alive = [x for x in (*ends, last_status) if x is not None]
            if self._died is None and self._stopped_mono is not None:
                alive.append(int(self._stopped_mono * 1e9))
            self._recording_end_ns = max(alive) if alive else int(self._started_mono * 1e9)
        else:
            assert last_status is not None
            self._recording_end_ns = last_status

    # ------------------------------------------------------------------------------ figures

    def _to_ns(self, case_s: float) -> int:
        assert self._clock is not None
        return round((case_s + self._clock.origin) * 1e9)

    def _to_case(self, ns: int) -> float:
        assert self._clock is not None
        return self._clock.at(ns / 1e9)

    def _server_replies(self, server_id: str) -> tuple[Replies | None, str | None]:
        if self._reason is not None:
            return None, self._reason
        if server_id not in self._targets:
            name = self._names.get(server_id)
            if name is None:
                return None, f"server {server_id} was not known to the network probe"
            return None, f"server {name} has no address the network probe can reach"
        if not self._stopped:
            return None, "the network probe was asked for a figure before it was stopped"
        if self._replies is None or self._recording_end_ns is None:
            return None, self._reason or "the echo prober left no records"
        index = self._targets[server_id][0]
        return self._replies.get(index, Replies()), None

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        try:
            return self._figure(migration, server_id)
        except Exception as exc:  # a figure is never worth a case
            log.exception("network probe: figure failed")
            return ProbeFigure(None, None, f"network probe error: {type(exc).__name__}: {exc}")

    def _figure(self, migration: MigrationRecord, server_id: str) -> ProbeFigure:
        replies, why = self._server_replies(server_id)
        if replies is None or self._recording_end_ns is None:
            return ProbeFigure(None, None, why)
        resolution = round(self.period_ns / 1e6, 3)
        start_ns = self._to_ns(migration.requested_at)
        if migration.finished_at is not None:
            end_ns = self._to_ns(migration.finished_at + self.MARGIN_S)
        else:
            end_ns = self._recording_end_ns
        if self._died is not None and end_ns >= self._recording_end_ns:
            return ProbeFigure(
                None,
                resolution,
                f"{self._died}; it stopped {self._to_case(self._recording_end_ns):.3f} s into the case, "
                f"before this migration's window ended",
            )
        threshold = self.brownout_threshold_ms()
        wf = window_figure(
            replies,
            start_ns,
            end_ns,
            period_ns=self.period_ns,
            recording_end_ns=self._recording_end_ns,
            threshold_ms=threshold,
        )
        address = self._targets[server_id][1]
        if wf.downtime is None:
            return ProbeFigure(None, resolution, f"{address}: {wf.reason}")
        details: dict[str, Any] = {
            "address": address,
            "gap_from_s": self._to_case(wf.downtime.before_ns),
            "gap_to_s": self._to_case(wf.downtime.after_ns),
            "window_s": [self._to_case(start_ns), self._to_case(min(end_ns, self._recording_end_ns))],
            "replies": wf.replies,
            "lost": wf.lost,
            "rtt_p50_ms": wf.rtt_p50_ms,
            "rtt_p99_ms": wf.rtt_p99_ms,
            "rtt_max_ms": wf.rtt_max_ms,
            "brownout_threshold_ms": threshold,
            "brownout_gaps": wf.brownout_gaps,
        }
        return ProbeFigure(
            round(wf.downtime.ms, 3), resolution, None, details=details, brownout_ms=wf.brownout_ms
        )

    def brownout_threshold_ms(self) -> float | None:
        """max(BROWNOUT_MIN_PERIODS periods, the case's noise floor); None before the noise floor."""
        if not self._noise_known or self._noise_ms is None:
            return None
        return round(max(self.BROWNOUT_MIN_PERIODS * self.period_ns / 1e6, self._noise_ms), 3)

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        try:
            floor = self._noise_floor(start_s, end_s)
        except Exception:
            log.exception("network probe: noise floor failed")
            floor = None
        self._noise_ms = floor
        self._noise_known = True
        return floor

    def _noise_floor(self, start_s: float, end_s: float) -> float | None:
        if self._reason is not None or not self._stopped or self._replies is None:
            return None
        lo, hi = self._to_ns(start_s), self._to_ns(end_s)
        if self._recording_end_ns is not None and hi > self._recording_end_ns:
            return None
        worst: float | None = None
        for server_id, (index, address) in self._targets.items():
            g = quiet_longest_gap_ms(self._replies.get(index, Replies()), lo, hi)
            if g is None:
                log.warning("network probe: %s (%s) did not answer in the noise window", server_id, address)
                return None
            worst = g if worst is None else max(worst, g)
        return None if worst is None else round(worst, 3)

    def cost(self) -> ProbeCost | None:
        st = self._status
        if st is not None and st.get("state") in ("stopped", "running"):
            cpu = float(st["cpu_user_s"]) + float(st["cpu_sys_s"])
            wall = float(st["wall_s"])
            sent, received = sum(st["sent"]), sum(st["received"])
            note = (
                f"{len(st['targets'])} target(s) at {self.hz} Hz, sched {st['sched']}; "
                f"replies {received}/{sent}; skipped slots {st['skipped']}; "
                f"send lateness max {st['late_max_us']} µs"
            )
            if st.get("stray") or st.get("send_errors"):
                note += (
                    f"; {st.get('stray')} stray datagram(s), {st.get('send_errors')} send error(s) "
                    f"(last: {st.get('last_send_error')})"
                )
            if st.get("state") != "stopped":
                note += "; the prober did not finish cleanly: figures up to its last status"
            return ProbeCost(
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                cpu_percent=round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                rate_hz=st.get("achieved_hz"),
                note=note,
            )
        if self._cpu_fallback is not None:
            cpu, wall = self._cpu_fallback
            return ProbeCost(
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                cpu_percent=round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                note="from /proc before the kill: the prober wrote no summary",
            )
        return None

    def case_stats(self) -> dict[str, Any] | None:
        return None


def _proc_cpu(pid: int) -> tuple[float, float] | None:
    """(cpu seconds, seconds alive) of a live process from /proc: the cost if it dies unsummarised."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    alive = uptime - int(fields[19]) / tick
    return cpu, alive
