"""The network vantage point: downtime as a client on the guests' network sees it.

`NetworkProbe` runs the echo prober (`novamig.measure.echo`) as a process of its own, aimed at
every server's fixed address — UDP echo to the guest agent (port 7), or ICMP echo, which the guest's
kernel answers whatever the image (``measure.network_protocol``) — and turns its reply records into
per-migration figures. Every time is CLOCK_MONOTONIC in ns, the clock of the runner's
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novamig.measure import gaps
from novamig.measure.echo import PROTOCOLS, Replies, read_records
from novamig.measure.spawned_probe import SpawnedProbe
from novamig.stats import Gap, summarize

_WORDS = gaps.Wording("reply", "replies", "prober", "the server had not answered again")


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
    `threshold_ms` is the brownout threshold (None: brownout not computed). The gaps are
    `novamig.measure.gaps`' (shared with the UDP heartbeat); what is the echo's own is the RTT of the
    replies inside the window and the requests sent in it that were never answered.
    """
    w = gaps.window_gaps(
        replies.recv_ns,
        start_ns,
        end_ns,
        period_ns=period_ns,
        recording_end_ns=recording_end_ns,
        threshold_ms=threshold_ms,
    )
    if isinstance(w, gaps.Untrusted):
        return WindowFigure(None, gaps.reason(w, _WORDS), None, 0, 0, None, None, None, 0)
    recv = replies.recv_ns
    inside = range(w.first_in, w.last_in)
    rtts = [(recv[i] - replies.send_ns[i]) / 1e6 for i in inside]
    # replies to requests sent in the window arrive after its start (at the latest a blackout later)
    late = bisect.bisect_right(recv, w.end_ns + 60_000_000_000)
    seqs = sorted(
        replies.seq[i] for i in range(w.first_in, late) if w.start_ns <= replies.send_ns[i] <= w.end_ns
    )
    lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    rtt = summarize(rtts)
    return WindowFigure(
        downtime=w.downtime,
        reason=None,
        brownout_ms=w.brownout_ms,
        replies=len(inside),
        lost=lost,
        rtt_p50_ms=None if rtt is None else round(rtt.p50, 3),
        rtt_p99_ms=None if rtt is None else round(rtt.p99, 3),
        rtt_max_ms=None if rtt is None else round(rtt.max, 3),
        brownout_gaps=w.brownout_gaps,
    )


def quiet_longest_gap_ms(replies: Replies, start_ns: int, end_ns: int) -> float | None:
    """The longest reply gap wholly inside [start_ns, end_ns]; None with fewer than two replies there."""
    return gaps.quiet_longest_gap_ms(replies.recv_ns, start_ns, end_ns)


class NetworkProbe(SpawnedProbe[int, Replies, WindowFigure]):
    """Echo (UDP or ICMP: `protocol`) from the runner's side to every server's address, ``hz``
    probes per second each.

    `netns`: the namespace the guests' addresses live in (the embedded cloud's ``guest_netns``), or
    None when the runner reaches them directly. `workdir`: where each run's files go (one new
    ``network-*`` directory per `start`: ``echo.bin`` reply records, ``echo.json`` status and
    summary, ``echo.log`` the prober's stderr). `sched`: the prober's scheduling ("fifo" when
    permitted, "nice", "none"); see docs/measurement.md for what it changes. `port`: the echo
    port (the agent's is 7; tests aim at their own echo server). The process, the window and the
    noise floor are `SpawnedProbe`'s.
    """

    name = "network"
    _label = "network probe"
    _process = "echo prober"
    _address_use = "the network probe can reach"
    _unreadable = "the echo prober's records could not be read"
    _silent_in_noise = "did not answer"
    _no_summary = "the prober wrote no summary"
    _module = "novamig.measure.echo"
    _dir_prefix = "network-"
    _stem = "echo"

    def __init__(
        self,
        hz: int,
        netns: str | None,
        workdir: Path,
        *,
        sched: str = "fifo",
        port: int = 7,
        protocol: str = "udp",
    ) -> None:
        if hz <= 0:
            raise ValueError(f"network probe rate must be positive, got {hz}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"network probe protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.port = port
        self.protocol = protocol
        super().__init__(hz, netns, workdir, sched, window_figure)

    def _arguments(self) -> list[str]:
        argv = ["--hz", str(self.hz), "--port", str(self.port), "--protocol", self.protocol]
        for index, address in self._servers.values():
            argv += ["--target", f"{index}={address}"]
        return argv

    def _read_records(self, path: Path) -> dict[int, Replies]:
        return read_records(path)

    def _server_key(self, index: int, address: str) -> int:
        return index

    def _server_records(
        self, records: dict[int, Replies], key: int, address: str
    ) -> tuple[Replies | None, str | None]:
        return records.get(key, Replies()), None

    def _details(
        self, w: WindowFigure, address: str, window: dict[str, Any], threshold: float | None
    ) -> dict[str, Any]:
        return {
            "address": address,
            "protocol": self.protocol,
            **window,
            "replies": w.replies,
            "lost": w.lost,
            "rtt_p50_ms": w.rtt_p50_ms,
            "rtt_p99_ms": w.rtt_p99_ms,
            "rtt_max_ms": w.rtt_max_ms,
            "brownout_threshold_ms": threshold,
            "brownout_gaps": w.brownout_gaps,
        }

    def _cost_note(self, st: dict[str, Any]) -> tuple[str, float | None]:
        sent, received = sum(st["sent"]), sum(st["received"])
        note = (
            f"{len(st['targets'])} target(s) at {self.hz} Hz, {st.get('socket', self.protocol)}, "
            f"sched {st['sched']}; "
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
        return note, st.get("achieved_hz")
