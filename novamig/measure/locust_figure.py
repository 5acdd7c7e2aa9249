"""The Locust figure of one migration, from per-request records (pure arithmetic, no Locust).

Figure of one migration (all times case seconds):

* window = [requested_at − 0.5 s, finished_at + 1 s] (finished_at is when the runner saw Nova
  report the end; the switchover is before it);
* the **longest gap**: the longest interval between consecutive successful completions to that
  server that overlaps the window (a gap still open at the end of the records counts to the last
  record, with ``details.open_ended``);
* the **normal interval**: the median (nearest rank, `novamig.stats.percentile`) interval between
  consecutive successful completions to that server over the whole run;
* ``downtime_ms`` = longest gap − normal interval (at least 0): how long the service's users went
  without an answer beyond the usual pause between two answers — the next answer was due one
  normal interval after the last one, as the network probe's next reply is due one period after
  the last. The longest gap itself is ``details.longest_gap_ms``;
* the gap's **breakdown** (``details``, three disjoint parts adding up to ``longest_gap_ms``):
  ``waiting_ms``, when at least one request that was eventually answered was outstanding (the
  service, or the guest it runs in, was dark or too slow to answer); ``failing_ms``, when only
  requests that ended in a failure were outstanding (time-outs, resets, refused connections: the
  client's cost of a broken connection — its reconnect is inside the next request's latency);
  ``idle_ms``, when no request was outstanding at all (Locust's own scheduling and ``wait_time``,
  not the service). A request's outstanding span is [completion − its latency, completion];
* ``resolution_ms`` = the normal interval (how finely the records sample the service), plus, for
  guest Locust, the uncertainty of the clock step put into the gap;
* ``brownout_ms`` = slow-but-answering time: baseline = p99 latency of that server's successful
  requests completing in the 10 s before the window (after Locust's first 3 s); every request
  in the window slower than that contributes [its start + baseline, its end]; the union of
  those intervals, clipped to the window, minus the blackout interval itself;
* ``details``: latency spike (max latency in the window), baseline p99, requests and failures
  in the window, the blackout interval, the clock step (guest).

The noise floor (`quiet_longest_gap_ms`) is the same subtraction over a window with no migration.
What the breakdown showed on ``scenarios/locust-web.yaml`` is in docs/measurement.md ("locust").

Locust's records are completion times in float case seconds, not arrival stamps in ns as the
heartbeat's and the echo's are, so the interval here is its own type, `RequestGap`, and carries
whether it was still open when the records ended; the percentiles are `novamig.stats`'.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from novamig.measure.contract import ProbeFigure
from novamig.results import MigrationRecord
from novamig.stats import percentile

WINDOW_BEFORE_S = 0.5
WINDOW_AFTER_S = 1.0
BASELINE_S = 10.0
WARMUP_S = 3.0  # Locust's first requests (imports, connection set-up) are slow, most of all under TCG
#: Fewer pre-window requests than this give no baseline p99 (and so no brownout): a p99 of fewer
#: than 100 values is their maximum, and of fewer than 20 a single outlier decides it.
BASELINE_MIN_REQUESTS = 20


@dataclass(frozen=True)
class Req:
    """One Locust request as the figures need it."""

    t_s: float  # completion, case seconds
    latency_ms: float
    ok: bool
    name: str = ""  # "GET /api/items": Locust's request type and name, for the per-name table


def parse_guest_rows(csv: str) -> list[tuple[float, float, bool, str]]:
    """Guest Locust's records file (``mono_ns,response_time_ms,ok,host,name`` lines, written by
    novamig/workload/locust_hook.py) as sorted (guest seconds, latency ms, ok, name); a line cut
    short by a kill, or one that does not parse, is skipped."""
    rows: list[tuple[float, float, bool, str]] = []
    for line in csv.splitlines():
        parts = line.split(",", 4)
        if len(parts) != 5:
            continue
        with contextlib.suppress(ValueError):
            rows.append((int(parts[0]) / 1e9, float(parts[1]), parts[2] == "1", parts[4]))
    rows.sort()
    return rows


def parse_guest_records(csv: str) -> list[tuple[float, float, bool]]:
    """`parse_guest_rows` without the request names."""
    return [(t, lat, ok) for t, lat, ok, _ in parse_guest_rows(csv)]


@dataclass(frozen=True)
class RequestGap:
    """The interval between two consecutive successful completions (case seconds).

    `open_ended`: no success followed; the gap runs to the last record (a failure or the end).
    """

    start_s: float
    end_s: float
    open_ended: bool = False

    @property
    def ms(self) -> float:
        return (self.end_s - self.start_s) * 1000.0


def longest_request_gap(reqs: Sequence[Req], start_s: float, end_s: float) -> RequestGap | None:
    """The longest interval between consecutive successful completions that overlaps
    [start_s, end_s]; a gap from the last success to the last record counts when no success
    follows. None when no record at all overlaps."""
    if not reqs:
        return None
    ok = [r.t_s for r in reqs if r.ok]
    last_t = reqs[-1].t_s
    best: RequestGap | None = None
    for a, b in itertools.pairwise(ok):
        if b > start_s and a < end_s and (best is None or b - a > best.end_s - best.start_s):
            best = RequestGap(a, b)
    if ok and ok[-1] < end_s and last_t > ok[-1]:
        tail = RequestGap(ok[-1], last_t, open_ended=True)
        if best is None or tail.ms > best.ms:
            best = tail
    if not ok and reqs[0].t_s <= end_s and last_t >= start_s:
        best = RequestGap(reqs[0].t_s, last_t, open_ended=True)
    return best


def quiet_longest_gap_ms(reqs: Sequence[Req], start_s: float, end_s: float) -> float | None:
    """The longest interval between successful completions inside [start_s, end_s) (a window
    with no migration: this server's share of the noise floor) less the normal interval, as the
    downtime figure is; None when the records do not cover the window or it holds fewer than two
    successes."""
    if not reqs or reqs[0].t_s > start_s or reqs[-1].t_s < end_s:
        return None
    ok = [r.t_s for r in reqs if r.ok and start_s <= r.t_s < end_s]
    if len(ok) < 2:
        return None
    longest = max(b - a for a, b in itertools.pairwise(ok)) * 1000.0
    return max(0.0, longest - (median_interval_ms(reqs) or 0.0))


def median_interval_ms(reqs: Sequence[Req]) -> float | None:
    """The median interval between consecutive successful completions: the records' sampling."""
    ok = [r.t_s for r in reqs if r.ok]
    median = percentile([b - a for a, b in itertools.pairwise(ok)], 50)
    return None if median is None else median * 1000.0


def gap_breakdown(reqs: Sequence[Req], gap: RequestGap) -> dict[str, float]:
    """`waiting_ms`, `failing_ms` and `idle_ms` of the gap (module docstring): which part of it
    had an eventually answered request outstanding, only failing ones, or none."""

    def covered(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [
            (max(a, gap.start_s), min(b, gap.end_s)) for a, b in spans if b > gap.start_s and a < gap.end_s
        ]

    answered = covered([(r.t_s - r.latency_ms / 1000.0, r.t_s) for r in reqs if r.ok])
    failing = covered([(r.t_s - r.latency_ms / 1000.0, r.t_s) for r in reqs if not r.ok])
    waiting = _union_length(answered)
    any_outstanding = _union_length(answered + failing)
    return {
        "waiting_ms": round(waiting * 1000.0, 3),
        "failing_ms": round((any_outstanding - waiting) * 1000.0, 3),
        "idle_ms": round(max(0.0, gap.ms - any_outstanding * 1000.0), 3),
    }


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def brownout_ms(
    reqs: Sequence[Req], start_s: float, end_s: float, baseline_ms: float, blackout: RequestGap | None
) -> float:
    """See the module docstring: union of [start + baseline, end] of the window's slow requests,
    clipped to the window, minus the blackout."""
    slow: list[tuple[float, float]] = []
    for r in reqs:
        if not r.ok or r.latency_ms <= baseline_ms:
            continue
        a = r.t_s - (r.latency_ms - baseline_ms) / 1000.0
        b = r.t_s
        a, b = max(a, start_s), min(b, end_s)
        if blackout is not None:  # cut the blackout out: it is downtime, not brownout
            pieces = [(a, min(b, blackout.start_s)), (max(a, blackout.end_s), b)]
        else:
            pieces = [(a, b)]
        slow += [(x, y) for x, y in pieces if y > x]
    return _union_length(slow) * 1000.0


def window_of(migration: MigrationRecord, last_t_s: float | None) -> tuple[float, float]:
    """The migration's window (module docstring); a migration with no end runs to the records' end."""
    end = migration.finished_at
    if end is None:
        end = last_t_s if last_t_s is not None else migration.requested_at
    return migration.requested_at - WINDOW_BEFORE_S, end + WINDOW_AFTER_S


def figure_from(
    reqs: Sequence[Req], start_s: float, end_s: float, extra_resolution_ms: float = 0.0
) -> ProbeFigure:
    """The figure for one server's records (sorted by t_s) and one window."""
    if not reqs:
        return ProbeFigure(None, None, "no Locust records for this server")
    first, last = reqs[0].t_s, reqs[-1].t_s
    if first > start_s or last < end_s:
        return ProbeFigure(
            None, None,
            f"Locust records cover [{first:.1f}, {last:.1f}] s, not the whole migration window "
            f"[{start_s:.1f}, {end_s:.1f}] s",
        )  # fmt: skip
    gap = longest_request_gap(reqs, start_s, end_s)
    if gap is None:
        return ProbeFigure(None, None, "no successful request around the migration")
    normal = median_interval_ms(reqs)
    in_window = [r for r in reqs if start_s <= r.t_s <= end_s]
    warm = first + WARMUP_S
    base = [r.latency_ms for r in reqs if r.ok and max(start_s - BASELINE_S, warm) <= r.t_s < start_s]
    baseline = percentile(base, 99) if len(base) >= BASELINE_MIN_REQUESTS else None
    details: dict[str, Any] = {
        "window_s": [round(start_s, 3), round(end_s, 3)],
        "blackout_s": [round(gap.start_s, 3), round(gap.end_s, 3)],
        "open_ended": gap.open_ended,
        "longest_gap_ms": round(gap.ms, 3),
        "normal_interval_ms": None if normal is None else round(normal, 3),
        **gap_breakdown(reqs, gap),
        "requests_in_window": len(in_window),
        "failures_in_window": sum(1 for r in in_window if not r.ok),
        "latency_spike_ms": round(max((r.latency_ms for r in in_window), default=0.0), 3),
        "baseline_p99_ms": None if baseline is None else round(baseline, 3),
        "baseline_requests": len(base),
    }
    brown = None if baseline is None else round(brownout_ms(in_window, start_s, end_s, baseline, gap), 3)
    return ProbeFigure(
        round(max(0.0, gap.ms - (normal or 0.0)), 3),
        None if normal is None else round(normal + extra_resolution_ms, 3),
        None,
        details,
        brown,
    )
