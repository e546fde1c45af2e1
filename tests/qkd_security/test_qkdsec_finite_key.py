"""Kato bounds (finite_key.py): coverage on random Bernoulli sequences, shape, entropy."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.qkd.finite_key import (
    binary_entropy,
    conditional_sum_bounds,
    count_upper_bound,
    kato_a,
    prediction_menu,
)


def test_binary_entropy_values() -> None:
    assert binary_entropy(0.0) == 0.0
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.7) == 1.0
    assert math.isclose(binary_entropy(0.11), 0.4999, abs_tol=1e-3)


def test_kato_deviation_is_close_to_chernoff_for_large_counts() -> None:
    n, eps = 1e10, 1e-20
    for lam in (1e4, 1e6, 1e8):
        lo, up = conditional_sum_bounds(lam, n, eps)
        chernoff = math.sqrt(2 * lam * math.log(len(prediction_menu(n)) / eps))
        assert lo < lam < up
        assert up - lam < 1.15 * chernoff
        assert lam - lo < 1.15 * chernoff


def test_kato_a_keeps_denominators_positive() -> None:
    a = kato_a(100.0, 1e-30, np.array([1.0, 50.0, 99.0]), -1.0)
    assert np.all(1 - 2 * a / 10.0 > 0)


@settings(max_examples=30, deadline=None)
@given(p=st.floats(1e-3, 0.6), seed=st.integers(0, 2**31 - 1))
def test_bounds_cover_sum_of_probabilities_iid(p: float, seed: int) -> None:
    """For i.i.d. Bernoulli(p) the sum of conditional probabilities is n·p; with ε = 1e-6 it must
    lie inside the bounds (a failure would have probability ≤ 2e-6 per example)."""
    rng = np.random.default_rng(seed)
    n = 20_000
    lam = float(rng.binomial(n, p))
    lo, up = conditional_sum_bounds(lam, n, 1e-6)
    assert lo <= n * p <= up
    assert count_upper_bound(n * p, n, 1e-6) >= lam


def test_bounds_cover_adaptive_sequence() -> None:
    """A martingale whose probabilities depend on the past (coherent-attack style)."""
    rng = np.random.default_rng(7)
    misses = 0
    for _ in range(200):
        n, s, lam, prev = 2000, 0.0, 0, 0
        for _t in range(n):
            pt = 0.02 if prev == 0 else 0.3
            s += pt
            prev = int(rng.random() < pt)
            lam += prev
        lo, up = conditional_sum_bounds(float(lam), n, 1e-3)
        misses += not (lo <= s <= up)
    assert misses <= 2


def test_zero_count_and_degenerate_n() -> None:
    lo, up = conditional_sum_bounds(0.0, 1e9, 1e-20)
    assert lo == 0.0 and 0 < up < 200
    assert conditional_sum_bounds(3.0, 0, 1e-9) == (0.0, 0.0)
