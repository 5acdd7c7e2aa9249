"""The two-sided Mann-Whitney U test, for `novamig compare` (scipy is not a dependency).

Why this test: migration figures are not normally distributed (a downtime is a floor plus a long
tail of unlucky switchovers), repeats are few and expensive, and a comparison must not be swayed by
one outlier. The U test compares ranks only, assumes no distribution, and is what asv uses to decide
that a benchmark changed.

Two ways to the p-value, as in scipy's ``mannwhitneyu``:

- **exact** for small samples (``n1 + n2 <= EXACT_MAX_TOTAL``): the permutation distribution of the
  rank sum, counted over every way of choosing which n1 of the pooled values belong to the first
  sample. With ties the pooled values carry their mid-ranks and the count uses those, so the p-value
  stays exact given the ties (without ties it is the classical U distribution of the tables);
- **normal approximation** beyond that, with the tie correction of the variance and a continuity
  correction of 0.5.

`min_p_value` says whether the test can reach significance at all: with n1 = n2 = 3 the most extreme
arrangement has probability 2 / C(6, 3) = 0.1, so at p < 0.05 no data could ever be called
different; the caller must then say "not enough repeats to test" rather than "no change".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

EXACT_MAX_TOTAL = 40
"""Largest n1 + n2 for the exact distribution; counting it stays under ~0.1 s in pure Python."""

Method = Literal["exact", "normal"]


@dataclass(frozen=True)
class UTest:
    """The outcome of a two-sided test of `x` against `y`."""

    u: float
    """U of the first sample: the number of (x, y) pairs with x > y, ties counted half."""
    p: float
    """Two-sided p-value: the chance, with both samples from one distribution, of a rank sum at
    least as far from its expectation as the one observed."""
    method: Method


def midranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of `values` in their own order; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for k in range(start, end + 1):
            ranks[order[k]] = rank
        start = end + 1
    return ranks


def min_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p the test can give for these sample sizes (no ties).

    It is the probability of the most extreme arrangement (every x below every y) or its mirror:
    2 / C(n1 + n2, n1). Ties only raise it. When it is above the threshold, no difference can be
    shown with so few samples.
    """
    if n1 == 0 or n2 == 0:
        return 1.0
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def _exact_p(doubled_ranks: Sequence[int], n1: int, observed: int) -> float:
    """P(|S - E| >= |observed - E|) where S is the sum of n1 of `doubled_ranks` chosen at random.

    Ranks are doubled so mid-ranks (x.5) stay integers and the comparison is exact. counts[k] maps
    a sum of k chosen ranks to the number of ways to reach it: a knapsack count over the values.
    """
    counts: list[dict[int, int]] = [{0: 1}] + [{} for _ in range(n1)]
    for r in doubled_ranks:
        for k in range(min(n1, len(doubled_ranks)), 0, -1):
            below = counts[k - 1]
            if not below:
                continue
            here = counts[k]
            for s, ways in below.items():
                here[s + r] = here.get(s + r, 0) + ways
    total = math.comb(len(doubled_ranks), n1)
    expected2 = n1 * sum(doubled_ranks)  # n * E[S], kept integral: E[S] = n1 * mean(ranks)
    n = len(doubled_ranks)
    far = abs(observed * n - expected2)
    extreme = sum(ways for s, ways in counts[n1].items() if abs(s * n - expected2) >= far)
    return min(1.0, extreme / total)


def _normal_p(u: float, n1: int, n2: int, ranks: Sequence[float]) -> float:
    """Normal approximation with the tie-corrected variance and a 0.5 continuity correction."""
    n = n1 + n2
    mean = n1 * n2 / 2
    ties = 0.0
    for value in set(ranks):
        t = ranks.count(value)
        ties += t**3 - t
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:  # every value equal: nothing to tell apart
        return 1.0
    z = max(0.0, abs(u - mean) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def mann_whitney_u(x: Sequence[float], y: Sequence[float], method: Method | None = None) -> UTest:
    """Two-sided Mann-Whitney U test of `x` against `y` (both non-empty).

    `method` None picks exact up to `EXACT_MAX_TOTAL` values in all, the normal approximation above.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("the U test needs at least one value on each side")
    ranks = midranks([*x, *y])
    rank_sum = math.fsum(ranks[:n1])
    u = rank_sum - n1 * (n1 + 1) / 2
    if method == "exact" or (method is None and n1 + n2 <= EXACT_MAX_TOTAL):
        doubled = [round(2 * r) for r in ranks]
        p = _exact_p(doubled, n1, sum(doubled[:n1]))
        return UTest(u=u, p=p, method="exact")
    return UTest(u=u, p=_normal_p(u, n1, n2, ranks), method="normal")
