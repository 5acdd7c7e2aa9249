"""The one place for novamig's statistics: percentiles, gaps between arrivals, summaries.

Every figure novamig reports about a set of values — an SLA's p95 downtime, a heartbeat's noise
floor, a probe's RTT percentiles, Locust's latency percentiles — comes from here, so they all mean
the same thing (docs/measurement.md, "Statistics").

**Percentile** is the *nearest rank*: the p-th percentile of n values is the smallest value with
at least p % of the values at or below it (numpy's ``method="inverted_cdf"``). There is no
interpolation, so a reported percentile is always a value that was really observed — a downtime
that some migration really had. For an SLA it is conservative: a p95 is at or above the linearly
interpolated one except for counts that are multiples of 20 (there by less than 5 % of one step),
and with fewer than 20 values the p95 is the maximum.

A leaf module: the standard library only, no novamig import, so every layer may use it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`-th percentile of `values` (p in [0, 100]); None when there are none.

    The rank is ceil(p/100 · n), at least 1, computed exactly (in rationals) so that, for example,
    the 70th percentile of 10 values is the 7th, not the 8th through a rounding error. p = 0 is the
    minimum, p = 100 the maximum.
    """
    if not 0 <= p <= 100 or math.isnan(p):
        raise ValueError(f"percentile p must be in [0, 100], not {p!r}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(p) * len(ordered) / 100))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    """Count, extremes, nearest-rank percentiles and mean of a non-empty set of values."""

    count: int
    min: float
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


def summarize(values: Sequence[float]) -> Summary | None:
    """The `Summary` of `values`, or None when there are none (a summary of nothing says nothing)."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(p: float) -> float:
        found = percentile(ordered, p)
        assert found is not None  # ordered is not empty
        return found

    return Summary(
        count=len(ordered),
        min=ordered[0],
        p50=rank(50),
        p95=rank(95),
        p99=rank(99),
        max=ordered[-1],
        mean=math.fsum(ordered) / len(ordered),
    )


@dataclass(frozen=True)
class Gap:
    """The interval between two consecutive arrival times (monotonic clock, ns)."""

    before_ns: int
    after_ns: int

    @property
    def ms(self) -> float:
        return (self.after_ns - self.before_ns) / 1e6


def gaps(arrivals_ns: Sequence[int], start_ns: int | None = None, end_ns: int | None = None) -> list[Gap]:
    """Gaps between consecutive sorted arrivals that overlap [start_ns, end_ns].

    Whole gaps, not clipped to the window: a silence that began before the window and ended in
    it is the silence the guest had, so it counts at its full length.
    """
    if len(arrivals_ns) < 2:
        return []
    lo = 0 if start_ns is None else max(0, bisect.bisect_right(arrivals_ns, start_ns) - 1)
    hi = (
        len(arrivals_ns)
        if end_ns is None
        else min(len(arrivals_ns), bisect.bisect_left(arrivals_ns, end_ns) + 1)
    )
    return [Gap(arrivals_ns[i], arrivals_ns[i + 1]) for i in range(lo, hi - 1)]


def longest_gap(
    arrivals_ns: Sequence[int], start_ns: int | None = None, end_ns: int | None = None
) -> Gap | None:
    """The longest of `gaps` (the first of equals), or None when there are fewer than two arrivals."""
    found = gaps(arrivals_ns, start_ns, end_ns)
    return max(found, key=lambda g: g.after_ns - g.before_ns) if found else None
