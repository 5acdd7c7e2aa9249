"""novamig.stats: nearest-rank percentile (checked against numpy), gaps, summaries."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from novamig.stats import Gap, Summary, gaps, longest_gap, percentile, summarize

MS = 1_000_000

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=200)
ps = st.one_of(st.integers(min_value=0, max_value=100).map(float), st.floats(min_value=0.0, max_value=100.0))


@given(samples, ps)
def test_percentile_is_numpys_inverted_cdf(values: list[float], p: float) -> None:
    """Equal to numpy's ``inverted_cdf`` wherever numpy's own float arithmetic is exact.

    numpy computes the rank as ``n * (p / 100)`` in floats, so where p/100 · n is an integer it may
    land a hair above it and take the next value (n = 25, p = 28: 7.000000000000001 → the 8th).
    novamig computes the rank in rationals: there the 7th value (28 % of 25 values are at or below
    it) is the definition's answer, and numpy's is one rank higher at most.
    """
    got = percentile(values, p)
    ordered = sorted(values)
    expected = float(np.percentile(values, p, method="inverted_cdf"))
    exact = Fraction(p) * len(values) / 100
    if exact.denominator == 1 and expected != got:
        k = max(1, int(exact))
        assert got == ordered[k - 1]
        assert expected == ordered[min(k, len(ordered) - 1)]
    else:
        assert got == expected


@given(samples, ps)
def test_percentile_is_an_observed_value_with_at_least_p_percent_at_or_below(
    values: list[float], p: float
) -> None:
    got = percentile(values, p)
    assert got in values
    n = len(values)
    assert Fraction(sum(1 for v in values if v <= got) * 100, n) >= Fraction(p)
    smaller = [v for v in values if v < got]
    if smaller:  # the next smaller observed value has fewer than p % at or below it
        below = max(smaller)
        assert Fraction(sum(1 for v in values if v <= below) * 100, n) < Fraction(p)


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([], 0) is None
    assert percentile([7.5], 0) == 7.5
    assert percentile([7.5], 95) == 7.5
    assert percentile([7.5], 100) == 7.5
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.5) == 100.0
    assert percentile(list(range(1, 11)), 70) == 7  # exact rank: 0.7 · 10 = 7, not 8
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order of the input does not matter


def test_p95_of_fewer_than_20_values_is_the_maximum() -> None:
    for n in range(1, 20):
        assert percentile([float(v) for v in range(n)], 95) == n - 1
    assert percentile([float(v) for v in range(20)], 95) == 18.0


@pytest.mark.parametrize("p", [-0.001, 100.001, -5, 150, math.nan, math.inf])
def test_percentile_rejects_p_outside_0_to_100(p: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        percentile([1.0, 2.0], p)
    with pytest.raises(ValueError, match="must be in"):
        percentile([], p)


def test_gaps_and_longest_gap() -> None:
    t = [0, 1 * MS, 2 * MS, 50 * MS, 51 * MS]
    assert [g.ms for g in gaps(t)] == [1.0, 1.0, 48.0, 1.0]
    g = longest_gap(t)
    assert g == Gap(2 * MS, 50 * MS)
    assert g is not None and g.ms == 48.0
    # a window inside the long gap still sees the whole gap (not clipped)
    assert gaps(t, 10 * MS, 20 * MS) == [Gap(2 * MS, 50 * MS)]
    assert longest_gap(t, 10 * MS, 20 * MS) == Gap(2 * MS, 50 * MS)
    # gaps that overlap the window for some time count; one that only touches an edge does not
    assert gaps(t, 1 * MS, 2 * MS) == [Gap(1 * MS, 2 * MS)]
    assert gaps(t, 1 * MS + 1, 2 * MS + 1) == [Gap(1 * MS, 2 * MS), Gap(2 * MS, 50 * MS)]
    assert gaps(t, 51 * MS) == []
    assert gaps(t, 50 * MS + 1) == [Gap(50 * MS, 51 * MS)]
    assert gaps(t, None, 0) == []
    assert longest_gap([5]) is None
    assert longest_gap([]) is None
    assert gaps([5]) == []


def test_longest_gap_takes_the_first_of_equals() -> None:
    assert longest_gap([0, 10, 20, 30]) == Gap(0, 10)


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=2, max_size=100, unique=True))
def test_gaps_cover_consecutive_arrivals(times: list[int]) -> None:
    times.sort()
    found = gaps(times)
    assert [(g.before_ns, g.after_ns) for g in found] == list(itertools.pairwise(times))
    longest = longest_gap(times)
    assert longest is not None and longest.ms == max(g.ms for g in found)


def test_summarize() -> None:
    assert summarize([]) is None
    s = summarize([float(v) for v in range(100, 0, -1)])
    assert s == Summary(count=100, min=1.0, p50=50.0, p95=95.0, p99=99.0, max=100.0, mean=50.5)
    one = summarize([4.25])
    assert one == Summary(count=1, min=4.25, p50=4.25, p95=4.25, p99=4.25, max=4.25, mean=4.25)
    with pytest.raises(AttributeError):
        one.count = 2  # type: ignore[misc]  # frozen: a summary is a fact


@given(samples)
def test_summarize_agrees_with_percentile(values: list[float]) -> None:
    s = summarize(values)
    assert s is not None
    assert (s.count, s.min, s.max) == (len(values), min(values), max(values))
    assert (s.p50, s.p95, s.p99) == (percentile(values, 50), percentile(values, 95), percentile(values, 99))
    assert s.min <= s.mean <= s.max or math.isclose(s.mean, s.min) or math.isclose(s.mean, s.max)
