"""The LDPC benchmarks' frame-error bound."""

from __future__ import annotations

import pytest

from labqfl.bench.entries.reconciliation import fer_upper_95


def test_fer_upper_bound_is_the_clopper_pearson_one_sided_95_percent_bound():
    assert fer_upper_95(0, 120) == pytest.approx(1 - 0.05 ** (1 / 120))  # 2.5 %: "0 of 120"
    assert fer_upper_95(0, 300) < 0.01 < fer_upper_95(0, 298)  # ≈ 300 clean frames to show FER ≤ 1 %
    # k errors: P(Binomial(N, p) ≤ k) = 5 % at the bound
    from scipy.stats import binom

    for k, n in ((1, 120), (2, 120), (5, 600)):
        p = fer_upper_95(k, n)
        assert binom.cdf(k, n, p) == pytest.approx(0.05, abs=1e-9)
    assert fer_upper_95(3, 3) == 1.0
