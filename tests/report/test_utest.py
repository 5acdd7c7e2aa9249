"""The Mann-Whitney U test against published values and hand computations."""

from __future__ import annotations

import math
import random

import pytest

from novamig.report.utest import mann_whitney_u, midranks, min_p_value


def _samples_with_u(n1: int, n2: int, u: int) -> tuple[list[float], list[float]]:
    """x and y, no ties, such that exactly `u` of the (x, y) pairs have x > y."""
    y = [10.0 * (k + 1) for k in range(n2)]
    above: list[int] = []
    left = u
    for _ in range(n1):
        take = min(n2, left)
        above.append(take)
        left -= take
    assert left == 0
    x = [10.0 * c + 0.1 * (j + 1) for j, c in enumerate(above)]
    return x, y


def test_scipy_documentation_example() -> None:
    """The example of scipy.stats.mannwhitneyu's documentation (ages of males and females).

    Published: U1 = 17, exact p = 0.1111111111111111, asymptotic p = 0.11134688653314041.
    By hand: the males' ranks 3, 5, 7, 8, 9 sum to 32, U1 = 32 − 5·6/2 = 17; U2 = 3, and 7 of the
    C(9, 4) = 126 arrangements have U ≤ 3, so p = 2 · 7 / 126.
    """
    males = [19.0, 22.0, 16.0, 29.0, 24.0]
    females = [20.0, 11.0, 17.0, 12.0]
    exact = mann_whitney_u(males, females)
    assert exact.u == 17
    assert exact.method == "exact"
    assert exact.p == pytest.approx(14 / 126, abs=1e-12)
    normal = mann_whitney_u(males, females, method="normal")
    assert normal.p == pytest.approx(0.11134688653314041, abs=1e-12)


@pytest.mark.parametrize(
    ("n", "critical"),
    # Two-tailed critical values of U at α = 0.05 for n1 = n2 = n (the table of every
    # statistics textbook): reject when the smaller U is at most this.
    [(4, 0), (5, 2), (8, 13), (10, 23), (20, 127)],
)
def test_critical_values_of_the_published_table(n: int, critical: int) -> None:
    x, y = _samples_with_u(n, n, critical)
    assert mann_whitney_u(x, y).p <= 0.05
    x, y = _samples_with_u(n, n, critical + 1)
    assert mann_whitney_u(x, y).p > 0.05


def test_exact_p_with_ties_counted_by_hand() -> None:
    """x = [1, 2], y = [2, 3]: mid-ranks 1, 2.5 | 2.5, 4. Of the 6 ways to pick x's two ranks,
    the sums are 3.5, 3.5, 5, 5, 6.5, 6.5 around an expected 5; x's 3.5 is as far as 4 of them."""
    result = mann_whitney_u([1.0, 2.0], [2.0, 3.0])
    assert result.u == 0.5
    assert result.p == pytest.approx(4 / 6)


def test_normal_approximation_with_ties_by_hand() -> None:
    """x = [1, 2, 2, 3], y = [2, 3, 3, 4]: mid-ranks of x 1, 3, 3, 6 → R1 = 13, U1 = 3, E[U] = 8.
    Two triples of ties: Σ(t³ − t) = 48, so var = 4·4/12 · (9 − 48/(8·7)); z = (|3 − 8| − 0.5)/σ."""
    result = mann_whitney_u([1.0, 2.0, 2.0, 3.0], [2.0, 3.0, 3.0, 4.0], method="normal")
    sigma = math.sqrt(16 / 12 * (9 - 48 / 56))
    assert result.u == 3
    assert result.p == pytest.approx(math.erfc(4.5 / sigma / math.sqrt(2)), abs=1e-12)
    assert result.p == pytest.approx(0.1720, abs=1e-4)


def test_exact_and_normal_agree_for_moderate_samples() -> None:
    rng = random.Random(12)
    for _ in range(20):
        x = [rng.gauss(100, 10) for _ in range(15)]
        y = [rng.gauss(108, 10) for _ in range(15)]
        exact = mann_whitney_u(x, y, method="exact").p
        normal = mann_whitney_u(x, y, method="normal").p
        assert abs(exact - normal) < 0.01


def test_identical_samples_are_not_different() -> None:
    assert mann_whitney_u([5.0, 5.0, 5.0], [5.0, 5.0]).p == 1.0
    assert mann_whitney_u([5.0] * 30, [5.0] * 30).p == 1.0
    assert mann_whitney_u([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]).p == 1.0


def test_the_smallest_reachable_p_decides_how_many_repeats_a_test_needs() -> None:
    # n1 = n2 = 3: the most extreme of the C(6, 3) = 20 arrangements has p = 2/20.
    assert min_p_value(3, 3) == pytest.approx(0.1)
    assert min_p_value(4, 4) == pytest.approx(2 / 70)
    assert min_p_value(0, 5) == 1.0
    x, y = _samples_with_u(3, 3, 0)
    assert mann_whitney_u(x, y).p == pytest.approx(min_p_value(3, 3))


def test_midranks_share_ties() -> None:
    assert midranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert midranks([]) == []
