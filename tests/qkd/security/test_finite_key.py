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
    assert binary_entropy(1.0) == 0.0
    # symmetric about 1/2 (an earlier copy returned 1 for every p >= 1/2)
    assert math.isclose(binary_entropy(0.7), binary_entropy(0.3)) and binary_entropy(0.7) < 0.9
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


def _published_kato(k: float, count: float, eps: float, upper: bool) -> tuple[float, float]:
    """Kato's optimal (a, b) in the closed form printed in the literature, written out independently
    of labqfl's derivation: Li, Cao, Xie, Yin, Chen, PRR 6, 013022 (2024), Eqs. (24)–(28) (quoting
    Currás-Lorenzo et al., npj QI 7, 22 (2021)); the same a appears as Eq. (91) of Mizutani,
    Takeuchi, Tamaki, PRR 5, 023132 (2023). ``upper``: the bound S ≤ Λ + dev, else S ≥ Λ − dev."""
    ln_e = math.log(eps)
    spread = 9 * count * (k - count) - 2 * k * ln_e
    root = math.sqrt(-k * k * ln_e * spread)
    mixed = 72 * math.sqrt(k) * count * (k - count) * ln_e - 16 * k * math.sqrt(k) * ln_e**2
    tail = 9 * math.sqrt(2) * (k - 2 * count) * root
    den = 4 * (9 * k - 8 * ln_e) * spread
    a = 3 * (mixed + tail) / den if upper else -3 * (mixed - tail) / den
    pm = 1.0 if upper else -1.0
    b = math.sqrt(18 * a * a * k - (16 * a * a + pm * 24 * a * math.sqrt(k) + 9 * k) * ln_e) / (3 * math.sqrt(2 * k))
    return a, b


def test_kato_a_and_b_match_the_published_closed_form() -> None:
    from labqfl.qkd.finite_key import _b_of_a

    for k, count, eps in ((1e10, 1e6, 1e-12), (1e10, 3e7, 1e-20), (1e8, 1e3, 1e-10), (1e6, 2e5, 1e-9), (1e9, 5e4, 1e-15)):
        for upper in (True, False):
            a_pub, b_pub = _published_kato(k, count, eps, upper)
            sign = 1.0 if upper else -1.0
            a = float(kato_a(k, eps, count, sign))
            b = float(_b_of_a(np.array(a), k, eps, sign))
            assert b_pub >= abs(a_pub)  # the theorem's condition
            assert math.isclose(a, a_pub, rel_tol=1e-9, abs_tol=1e-9), (k, count, eps, upper, a, a_pub)
            assert math.isclose(b, b_pub, rel_tol=1e-9), (k, count, eps, upper, b, b_pub)
