"""The guest vantage point over the network: the agent's heartbeat sent by UDP to a runner-side collector.

On the embedded cloud the driver reads the agent's heartbeat from the virtio-serial channel. On
other clouds (DevStack) the host's channel is out of the runner's reach, so the agent also sends
every beat as one UDP datagram (``novamig.hb_udp=<ipv4>:<port>``, written by the server's user-data:
``GuestSetup.heartbeat_udp``) and `UdpHeartbeatProbe` receives them in a collector process of its
own (`novamig.measure.heartbeat_udp_collector`), stamping each arrival on CLOCK_MONOTONIC — the clock
of the runner's `time.monotonic()` and of `CaseClock`.

**Where the runner must bind** (`bind`, the address the guests send to): an address the guests can
reach *without source NAT*, because servers are told apart by the datagrams' source address, which
must be `ServerInfo.address`:

* embedded cloud: the gateway of the guests' network inside the guest namespace (``192.168.1.1`` in
  `guest_netns`; pass ``netns=<guest_netns>``, the collector enters it before binding);
* DevStack / a real cloud: the runner's own address on a network the guests route to (a user
  setting; ``netns=None``). A guest behind a router with SNAT (no floating IP, collector outside)
  arrives from the router's address and is not recognised: the figure then says which senders
  were seen.

Definitions (per server; the same as the network probe's, novamig.measure.network, with beats for
replies — docs/measurement.md, "guest", says the same for readers of results):

* **window**: ``[requested_at, finished_at + MARGIN_S]`` in case seconds; with no ``finished_at``,
  up to the end of the recording; cut at the end of the recording.
* **downtime** (``downtime_ms.guest``): the longest arrival gap between two consecutive beats of
  the server overlapping the window, whole. A paused guest sends nothing; a lost datagram also
  shows as a gap (``details.lost`` counts missing sequence numbers, ``details.guest_gap_ms`` says
  how far the guest's own clock advanced across the gap: about one period when the guest was
  stopped, the whole gap when it ran and its beats were lost on the way).
* **resolution**: one beat period (``1000 / hz`` ms).
* **noise floor**: the longest arrival gap of any server wholly inside a window with no migration.
* **brownout** (``brownout_ms.guest``): with ``T = max(3 periods, noise floor)``, every other gap
  ``(a, b)`` in the window longer than ``T`` contributes the part of ``[a + period, b]`` inside it.

A figure is None with a reason when it cannot be trusted (no beat from the server, none before the
window, beats not resumed before the collector stopped, the collector died before the window
ended). Nothing here raises into the runner.
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
from novamig.hypervisor.heartbeat import Gap, gaps
from novamig.measure.heartbeat_udp_collector import Beats, read_records
from novamig.measure.network import _proc_cpu
from novamig.results import MigrationRecord, ProbeCost
from novamig.runner.clock import CaseClock
from novamig.runner.probes import ProbeFigure, ServerInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BeatWindow:
    """What one server's beats say about one window (times monotonic ns)."""

    downtime: Gap | None
    reason: str | None
    brownout_ms: float | None
    beats: int  # beats that arrived inside the window
    lost: int  # sequence numbers missing among them (datagrams lost, or beats the guest dropped)
    guest_gap_ms: float | None  # the guest's clock across the downtime gap
    brownout_gaps: int


def beat_window(
    beats: Beats,
    start_ns: int,
    end_ns: int,
    *,
    period_ns: int,
    recording_end_ns: int,
    threshold_ms: float | None,
) -> BeatWindow:
    """Downtime and brownout of one server's beats within [start_ns, end_ns] (pure arithmetic)."""
    recv = beats.recv_ns
    end_ns = min(end_ns, recording_end_ns)

    def empty(reason: str) -> BeatWindow:
        return BeatWindow(None, reason, None, 0, 0, None, 0)

    if not recv:
        return empty("no beat from this server at all")
    first_in = bisect.bisect_left(recv, start_ns)
    if first_in == 0:
        return empty(
            f"no beat before the window (first beat {(recv[0] - start_ns) / 1e6:.1f} ms after its "
            f"start): the gap the migration caused has no start"
        )
    last_in = bisect.bisect_right(recv, end_ns)
    found = gaps(recv, start_ns, end_ns)
    longest = max(found, key=lambda g: g.ms) if found else None
    open_ms = (recording_end_ns - recv[-1]) / 1e6 if last_in == len(recv) else 0.0
    if open_ms > (longest.ms if longest is not None else 0.0) and open_ms > 3 * period_ns / 1e6:
        return empty(
            f"no beat in the last {open_ms:.0f} ms before the collector stopped: the guest had not "
            f"beaten again, so the gap has no end"
        )
    if longest is None:
        return empty("fewer than two beats around the window")
    seqs = sorted(set(beats.seq[first_in:last_in]))
    lost = max(0, seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    after = bisect.bisect_left(recv, longest.after_ns)
    guest_gap = None
    if 0 < after < len(recv):
        step = beats.guest_ns[after] - beats.guest_ns[after - 1]
        guest_gap = round(step / 1e6, 3) if step >= 0 else None  # negative: the agent restarted
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
    return BeatWindow(longest, None, brownout, last_in - first_in, lost, guest_gap, count)


def quiet_longest_gap_ms(beats: Beats, start_ns: int, end_ns: int) -> float | None:
    """The longest arrival gap wholly inside [start_ns, end_ns]; None with fewer than two beats there."""
    inside = [
        g.ms
        for g in gaps(beats.recv_ns, start_ns, end_ns)
        if start_ns <= g.before_ns and g.after_ns <= end_ns
    ]
    return max(inside) if inside else None


class UdpHeartbeatProbe:
    """The guest agents' heartbeats over UDP, received by a collector bound to `bind`.

    `hz`: the rate the agents beat at (``measure.heartbeat_hz``; the resolution). `bind`: (IPv4,
    port) the collector binds and the agents send to — see the module docstring for which address;
    `target` is the ``ip:port`` text for ``GuestSetup.heartbeat_udp``. `netns`: the namespace to bind
    in (the embedded cloud's ``guest_netns``) or None. `workdir`: one new ``guest-udp-*`` directory
    per `start` (``beats.bin`` records, ``beats.json`` status and summary, ``beats.log`` stderr).
    `sched`: the collector's scheduling ("fifo" when permitted, "nice", "none").
    """

    name = "guest"
    MARGIN_S = 1.0
    BROWNOUT_MIN_PERIODS = 3
    START_TIMEOUT_S = 10.0
    STOP_GRACE_S = 5.0

    def __init__(
        self, hz: float, bind: tuple[str, int], netns: str | None, workdir: Path, *, sched: str = "fifo"
    ) -> None:
        if hz <= 0:
            raise ValueError(f"heartbeat rate must be positive, got {hz}")
        if not 0 < bind[1] <= 65535:
            raise ValueError(f"the collector needs a fixed port the agents are told, got {bind[1]}")
        self.hz = hz
        self.bind = bind
        self.netns = netns
        self.workdir = Path(workdir)
        self.sched = sched
        self.period_ns = round(1e9 / hz)
        self._reset()

    @property
    def target(self) -> str:
        """``ip:port``, what the agents are told (``novamig.hb_udp``, ``GuestSetup.heartbeat_udp``)."""
        return f"{self.bind[0]}:{self.bind[1]}"

    def _reset(self) -> None:
        self._clock: CaseClock | None = None
        self._addresses: dict[str, str] = {}  # server id → address
        self._names: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._logf: IO[bytes] | None = None
        self.dir: Path | None = None
        self._reason: str | None = None
        self._died: str | None = None
        self._stopped = False
        self._started_mono = 0.0
        self._stopped_mono: float | None = None
        self._status: dict[str, Any] | None = None
        self._cpu_fallback: tuple[float, float] | None = None
        self._beats: dict[str, Beats] | None = None
        self._recording_end_ns: int | None = None
        self._noise_ms: float | None = None
        self._noise_known = False

    # ------------------------------------------------------------------------------ lifecycle

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        if self._proc is not None:
            self.stop()
        self._reset()
        self._clock = clock
        for s in servers:
            self._names[s.id] = s.name
            if s.address:
                self._addresses[s.id] = s.address
        if not self._addresses:
            self._reason = "no server has an address to tell its UDP heartbeats apart by"
            return
        try:
            self._launch()
        except Exception as exc:
            log.exception("guest UDP heartbeat probe: start failed")
            self._reason = f"the UDP heartbeat collector did not start: {exc}"
            self._kill()

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="guest-udp-", dir=self.workdir))
        argv = [
            sys.executable,
            "-m",
            "novamig.measure.heartbeat_udp_collector",
            "--bind",
            self.target,
            "--out",
            str(self.dir / "beats.bin"),
            "--status",
            str(self.dir / "beats.json"),
            "--sched",
            self.sched,
        ]
        if self.netns is not None:
            argv += ["--netns", self.netns]
        self._logf = open(self.dir / "beats.log", "wb")  # noqa: SIM115 - closed in stop()
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
            data = json.loads((self.dir / "beats.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            text = (self.dir / "beats.log").read_text(errors="replace").strip()
        except OSError:
            return ""
        return text.splitlines()[-1] if text else "(no output)"

    @property
    def records(self) -> dict[str, Beats] | None:
        """Every beat the collector recorded, per sender address; None before `stop` loaded them."""
        return self._beats

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """End the collector (SIGTERM, then SIGKILL after STOP_GRACE_S) and load its records.

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
                self._died = f"the UDP heartbeat collector exited by itself (code {code}): {self._log_tail()}"
            else:
                self._cpu_fallback = _proc_cpu(self._proc.pid)
            self._kill()
            self._stopped_mono = time.monotonic()
            self._load()
        except Exception as exc:
            log.exception("guest UDP heartbeat probe: stop failed")
            self._reason = self._reason or f"the collector's records could not be read: {exc}"
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
                    log.warning("guest UDP heartbeat probe: pid %d ignored SIGTERM; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10.0)
        finally:
            runtime.unregister_process_group(proc.pid)

    def _load(self) -> None:
        assert self.dir is not None
        self._status = self._read_status()
        self._beats = read_records(self.dir / "beats.bin")
        ends = [b.recv_ns[-1] for b in self._beats.values() if b.recv_ns]
        st = self._status or {}
        last_status = int(st["now_ns"]) if isinstance(st.get("now_ns"), int) else None
        if self._died is not None or st.get("state") != "stopped":
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

    def _server_beats(self, server_id: str) -> tuple[Beats | None, str | None]:
        if self._reason is not None:
            return None, self._reason
        address = self._addresses.get(server_id)
        if address is None:
            name = self._names.get(server_id)
            if name is None:
                return None, f"server {server_id} was not known to the guest UDP heartbeat probe"
            return None, f"server {name} has no address to tell its UDP heartbeats apart by"
        if not self._stopped:
            return None, "the guest UDP heartbeat probe was asked for a figure before it was stopped"
        if self._beats is None or self._recording_end_ns is None:
            return None, self._reason or "the UDP heartbeat collector left no records"
        beats = self._beats.get(address)
        if beats is None:
            seen = sorted(self._beats)
            others = f"beats came from {', '.join(seen[:5])} only" if seen else "no beat came at all"
            return None, (
                f"no UDP heartbeat from {address} reached {self.target} ({others}): is novamig.hb_udp "
                f"set in the server's user-data, and does the guest reach {self.target} without NAT?"
            )
        return beats, None

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        try:
            return self._figure(migration, server_id)
        except Exception as exc:
            log.exception("guest UDP heartbeat probe: figure failed")
            return ProbeFigure(None, None, f"guest UDP heartbeat probe error: {type(exc).__name__}: {exc}")

    def _figure(self, migration: MigrationRecord, server_id: str) -> ProbeFigure:
        beats, why = self._server_beats(server_id)
        if beats is None or self._recording_end_ns is None:
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
        bw = beat_window(
            beats,
            start_ns,
            end_ns,
            period_ns=self.period_ns,
            recording_end_ns=self._recording_end_ns,
            threshold_ms=threshold,
        )
        address = self._addresses[server_id]
        if bw.downtime is None:
            return ProbeFigure(None, resolution, f"{address}: {bw.reason}")
        details: dict[str, Any] = {
            "via": f"udp {self.target}",
            "address": address,
            "gap_from_s": self._to_case(bw.downtime.before_ns),
            "gap_to_s": self._to_case(bw.downtime.after_ns),
            "guest_gap_ms": bw.guest_gap_ms,
            "window_s": [self._to_case(start_ns), self._to_case(min(end_ns, self._recording_end_ns))],
            "beats": bw.beats,
            "lost": bw.lost,
            "brownout_threshold_ms": threshold,
            "brownout_gaps": bw.brownout_gaps,
        }
        return ProbeFigure(
            round(bw.downtime.ms, 3), resolution, None, details=details, brownout_ms=bw.brownout_ms
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
            log.exception("guest UDP heartbeat probe: noise floor failed")
            floor = None
        self._noise_ms = floor
        self._noise_known = True
        return floor

    def _noise_floor(self, start_s: float, end_s: float) -> float | None:
        if self._reason is not None or not self._stopped or self._beats is None:
            return None
        lo, hi = self._to_ns(start_s), self._to_ns(end_s)
        if self._recording_end_ns is not None and hi > self._recording_end_ns:
            return None
        worst: float | None = None
        for server_id, address in self._addresses.items():
            g = quiet_longest_gap_ms(self._beats.get(address, Beats()), lo, hi)
            if g is None:
                log.warning(
                    "guest UDP heartbeat probe: %s (%s) sent no beats in the noise window", server_id, address
                )
                return None
            worst = g if worst is None else max(worst, g)
        return None if worst is None else round(worst, 3)

    def cost(self) -> ProbeCost | None:
        st = self._status
        if st is not None and st.get("state") in ("stopped", "running"):
            cpu = float(st["cpu_user_s"]) + float(st["cpu_sys_s"])
            wall = float(st["wall_s"])
            senders = st.get("senders") or {}
            known = set(self._addresses.values())
            ours = sum(int(n) for a, n in senders.items() if a in known)
            note = (
                f"collector on {st.get('bind')}, {len(known)} server(s) beating at {self.hz:g} Hz, "
                f"sched {st.get('sched')}; beats {ours} from the servers"
            )
            foreign = {a: n for a, n in senders.items() if a not in known}
            if foreign:
                note += f", {sum(foreign.values())} from other senders ({', '.join(sorted(foreign)[:5])})"
            if st.get("stray") or st.get("recv_errors"):
                note += (
                    f"; {st.get('stray')} stray datagram(s) (last from {st.get('last_stray')}), "
                    f"{st.get('recv_errors')} receive error(s)"
                )
            if st.get("state") != "stopped":
                note += "; the collector did not finish cleanly: figures up to its last status"
            rate = self._beat_rate_hz()
            if rate is not None:
                note += "; rate_hz: beats per second per server, first to last beat (mean of servers)"
            return ProbeCost(
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                cpu_percent=round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                rate_hz=rate,
                note=note,
            )
        if self._cpu_fallback is not None:
            cpu, wall = self._cpu_fallback
            return ProbeCost(
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                cpu_percent=round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                note="from /proc before the kill: the collector wrote no summary",
            )
        return None

    def _beat_rate_hz(self) -> float | None:
        """Mean over the servers of (beats − 1) / (last arrival − first arrival): the rate the
        collector received, not diluted by the time before the guests booted."""
        if self._beats is None:
            return None
        rates = []
        for address in self._addresses.values():
            b = self._beats.get(address)
            if b is not None and len(b.recv_ns) > 1 and b.recv_ns[-1] > b.recv_ns[0]:
                rates.append((len(b.recv_ns) - 1) / ((b.recv_ns[-1] - b.recv_ns[0]) / 1e9))
        return round(sum(rates) / len(rates), 3) if rates else None

    def case_stats(self) -> dict[str, Any] | None:
        return None
