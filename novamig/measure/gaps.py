"""The figure arithmetic the network probe and the UDP heartbeat probe share: gaps between arrivals.

Both probes see a server as a sorted list of arrival times (CLOCK_MONOTONIC ns): echo replies
(`novamig.measure.network`) or heartbeat datagrams (`novamig.measure.heartbeat_udp`). The definitions
of window, downtime, brownout and noise floor are the same for both (docs/measurement.md), so they
are computed here once, as pure functions over those times, and the two figures cannot drift apart.
What differs stays in the probes: what a record holds besides its arrival time (RTT and lost
requests, the guest's own clock), the words of the reasons (`Wording`), and the details a figure
carries. So the arithmetic returns typed results (`WindowGaps`, or `Untrusted` with a `Trouble` kind
and the number the reason quotes), and `reason` puts them into a probe's words.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from novamig.stats import Gap, gaps


class Trouble(enum.Enum):
    """Why a window's downtime cannot be trusted (the probes word it for their records)."""

    NO_ARRIVAL = "no arrival from this server at all"
    NONE_BEFORE = "no arrival before the window: the gap the migration caused has no start"
    OPEN_GAP = "silent until the recording stopped: the gap has no end"
    TOO_FEW = "fewer than two arrivals around the window"


@dataclass(frozen=True)
class Untrusted:
    """A window with no trustworthy downtime.

    `ms`: for NONE_BEFORE how long after the window's start the first arrival came, for OPEN_GAP
    how long the server had been silent when the recording stopped; 0 otherwise.
    """

    trouble: Trouble
    ms: float = 0.0


@dataclass(frozen=True)
class Wording:
    """How a probe names its arrivals and its recording process in the reasons (`reason`)."""

    one: str  # "reply", "beat"
    many: str  # "replies", "beats"
    recorder: str  # "prober", "collector"
    not_again: str  # what the server had not done again when the recording stopped


def reason(u: Untrusted, words: Wording) -> str:
    """Why the window has no trustworthy downtime, in the probe's words (for the figure's reason)."""
    if u.trouble is Trouble.NO_ARRIVAL:
        return f"no {words.one} from this server at all"
    if u.trouble is Trouble.NONE_BEFORE:
        return (
            f"no {words.one} before the window (first {words.one} {u.ms:.1f} ms after its start): "
            f"the gap the migration caused has no start"
        )
    if u.trouble is Trouble.OPEN_GAP:
        return (
            f"no {words.one} in the last {u.ms:.0f} ms before the {words.recorder} stopped: "
            f"{words.not_again}, so the gap has no end"
        )
    return f"fewer than two {words.many} around the window"


@dataclass(frozen=True)
class WindowGaps:
    """The gaps of one server in one window (times monotonic ns).

    `end_ns` is the window's end cut at the end of the recording; ``recv_ns[first_in:last_in]`` are
    the arrivals inside ``[start_ns, end_ns]``, for the probes' own per-record details.
    """

    start_ns: int
    end_ns: int
    first_in: int
    last_in: int
    downtime: Gap
    brownout_ms: float | None
    brownout_gaps: int


def window_gaps(
    recv_ns: Sequence[int],
    start_ns: int,
    end_ns: int,
    *,
    period_ns: int,
    recording_end_ns: int,
    threshold_ms: float | None,
) -> WindowGaps | Untrusted:
    """Downtime and brownout of one server's arrivals within [start_ns, end_ns].

    * The window is cut at `recording_end_ns` (when the recording process stopped listening).
    * Downtime: the longest gap between consecutive arrivals overlapping the window, whole (not
      clipped): the last arrival before the blackout → the first after it.
    * A server silent from its last arrival until the recording stopped has an *open* gap; when it
      is longer than any closed one (and than three periods) it would be the downtime, but it has
      no end, so the window is `Untrusted` (OPEN_GAP).
    * Brownout (`threshold_ms` not None): every other overlapping gap ``(a, b)`` longer than the
      threshold contributes the part of ``[a + period, b]`` inside the window (the next arrival was
      due one period after ``a``), so the blackout is never counted twice and the sum is at most the
      window. None when `threshold_ms` is None (no noise floor yet).
    """
    end_ns = min(end_ns, recording_end_ns)
    if not recv_ns:
        return Untrusted(Trouble.NO_ARRIVAL)
    first_in = bisect.bisect_left(recv_ns, start_ns)
    if first_in == 0:
        return Untrusted(Trouble.NONE_BEFORE, (recv_ns[0] - start_ns) / 1e6)
    last_in = bisect.bisect_right(recv_ns, end_ns)
    found = gaps(recv_ns, start_ns, end_ns)
    longest = max(found, key=lambda g: g.ms) if found else None
    open_ms = (recording_end_ns - recv_ns[-1]) / 1e6 if last_in == len(recv_ns) else 0.0
    if open_ms > (longest.ms if longest is not None else 0.0) and open_ms > 3 * period_ns / 1e6:
        return Untrusted(Trouble.OPEN_GAP, open_ms)
    if longest is None:
        return Untrusted(Trouble.TOO_FEW)
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
    return WindowGaps(start_ns, end_ns, first_in, last_in, longest, brownout, count)


def quiet_longest_gap_ms(recv_ns: Sequence[int], start_ns: int, end_ns: int) -> float | None:
    """The longest arrival gap wholly inside [start_ns, end_ns] (a window with no migration: one
    server's share of the noise floor); None with fewer than two arrivals there."""
    inside = [
        g.ms for g in gaps(recv_ns, start_ns, end_ns) if start_ns <= g.before_ns and g.after_ns <= end_ns
    ]
    return max(inside) if inside else None


def brownout_threshold_ms(period_ns: int, min_periods: int, noise_ms: float | None) -> float | None:
    """max(`min_periods` periods, the case's noise floor), so that jitter no worse than the idle
    guest showed never counts as brownout; None without a noise floor."""
    if noise_ms is None:
        return None
    return round(max(min_periods * period_ns / 1e6, noise_ms), 3)
