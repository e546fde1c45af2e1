"""Quantiser: bit budget, weighted integer ranges, fused kernel vs reference, unbiased rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.errors import BitBudgetError, LabqflError
from labqfl.fl.quantize import (
    ceil_log2,
    dequantize,
    dequantize_sum,
    quantize,
    quantize_reference,
    value_bits,
    weight_ranges,
)
from labqfl.fl.secure import SecAggConfig


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 200, 256, 257, 10**6])
def test_ceil_log2_matches_math(n: int) -> None:
    assert ceil_log2(n) == math.ceil(math.log2(n))


def test_value_bits_is_q_minus_ceil_log2_n() -> None:
    assert value_bits(8, 4) == 6
    assert value_bits(16, 200) == 8
    assert value_bits(32, 200) == 24


def test_bit_budget_refuses_wrapping_configurations_with_clear_message() -> None:
    with pytest.raises(BitBudgetError, match=r"N=200.*q=8.*0 bit.*Use q = 16 or 32\.$") as ei:
        SecAggConfig(q=8).check_bit_budget(200)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, LabqflError)
    with pytest.raises(BitBudgetError, match=r"N=5.*q=8.*5 bits per value.*value_bits=6"):
        SecAggConfig(q=8, value_bits=6).check_bit_budget(5)
    assert SecAggConfig(q=8, value_bits=5).check_bit_budget(5) == 5
    assert SecAggConfig(q=8).check_bit_budget(64) == 2
    with pytest.raises(BitBudgetError):
        SecAggConfig(q=8).check_bit_budget(65)
    # the hint names only word sizes that exist and fit (it once said "Use q >= 11")
    with pytest.raises(BitBudgetError, match=r"Use q = 32\.$"):
        SecAggConfig(q=16).check_bit_budget(2**15)
    with pytest.raises(BitBudgetError, match=r"No supported q \(8, 16, 32\) leaves 2 bits for 1073741825 clients\.$"):
        SecAggConfig(q=32).check_bit_budget(2**30 + 1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), q=st.sampled_from([8, 16, 32]), seed=st.integers(0, 2**32 - 1))
def test_weight_ranges_never_let_the_sum_wrap(n: int, q: int, seed: int) -> None:
    b = q - ceil_log2(n)
    if b < 1:
        return
    w = np.random.default_rng(seed).exponential(size=n) * np.random.default_rng(seed).integers(0, 2, n)
    if w.sum() == 0:
        w[0] = 1.0
    m = weight_ranges(w, b)
    assert m.min() >= 0
    assert int(m.sum()) <= n * ((1 << b) - 1) < (1 << q)
    # M_i/(N·L) is within 1/(N·L) of w_i/Σw (M_i = N·L·p_i − f_i, 0 ≤ f_i < 1; a trimmed floating-point
    # overshoot moves one M_i one level more), asserted loosely below. The effective weights M_i/ΣM are
    # not within 1/(N·L): they are within N/ΣM of w_i/Σw, ≈ (N − 1)/(N·L) without dropouts
    # (labqfl/fl/quantize.py docstring, effective_weight_bound)
    assert np.all(np.abs(m / (n * ((1 << b) - 1)) - w / w.sum()) <= 2.0 / ((1 << b) - 1))


def test_equal_weights_give_full_range() -> None:
    assert np.all(weight_ranges([3.0] * 7, 5) == 31)


@settings(max_examples=40, deadline=None)
@given(
    q=st.sampled_from([8, 16, 32]),
    size=st.integers(0, 300),
    scale=st.floats(0.01, 10.0),
    clip=st.floats(0.05, 5.0),
    rounding=st.sampled_from(["nearest", "stochastic"]),
    f32=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantize_kernel_matches_reference(q: int, size: int, scale: float, clip: float, rounding: str,
                                           f32: bool, seed: int) -> None:
    x = np.random.default_rng(seed).normal(0, scale, size).astype(np.float32 if f32 else np.float64)
    levels = int(np.random.default_rng(seed).integers(0, (1 << q) - 1))
    a, na = quantize(x, clip=clip, levels=levels, q=q, rounding=rounding, rng=np.random.default_rng(seed))  # type: ignore[arg-type]
    b, nb = quantize_reference(x, clip=clip, levels=levels, q=q, rounding=rounding, rng=np.random.default_rng(seed))  # type: ignore[arg-type]
    assert a.dtype == b.dtype == np.dtype(f"uint{q}")
    assert np.array_equal(a, b) and na == nb
    assert na == int(np.count_nonzero(np.abs(x.astype(np.float64)) > clip))
    assert int(a.max(initial=0)) <= levels


def test_quantize_keeps_shape_and_nearest_error_is_half_a_step() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (7, 11))
    v, n_clipped = quantize(x, clip=1.0, levels=1000, q=16)
    assert v.shape == (7, 11) and n_clipped == 0
    assert np.max(np.abs(dequantize(v, clip=1.0, levels=1000) - x)) <= 1.0 / 1000 + 1e-12


def test_stochastic_rounding_is_unbiased() -> None:
    x = np.full(200_000, 0.123)
    v, _ = quantize(x, clip=1.0, levels=10, q=8, rounding="stochastic", rng=np.random.default_rng(5))
    exact = (0.123 + 1.0) / 2.0 * 10  # 5.615
    assert set(np.unique(v)) == {5, 6}
    # std of the mean of Bernoulli(0.615) over 2e5 draws ≈ 1.1e-3; 6 sigma bound
    assert abs(v.mean() - exact) < 6 * math.sqrt(0.615 * 0.385 / x.size)


def test_quantize_refuses_nan_and_reports_clipping() -> None:
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]), clip=1.0, levels=10, q=8)
    with pytest.raises(ValueError, match="NaN"):
        quantize_reference(np.array([np.inf]), clip=1.0, levels=10, q=8)
    v, n = quantize(np.array([-5.0, 0.0, 5.0]), clip=1.0, levels=10, q=8)
    assert n == 2 and v.tolist() == [0, 5, 10]
    with pytest.raises(ValueError, match="rng"):
        quantize(np.zeros(3), clip=1.0, levels=10, q=8, rounding="stochastic")
    with pytest.raises(ValueError, match="levels"):
        quantize(np.zeros(3), clip=1.0, levels=256, q=8)


def test_dequantize_sum_of_equal_weights_is_the_mean() -> None:
    rng = np.random.default_rng(1)
    xs = rng.uniform(-0.5, 0.5, (5, 100))
    vs = [quantize(x, clip=1.0, levels=255, q=16)[0] for x in xs]
    total = np.sum(np.stack(vs).astype(np.int64), axis=0)
    mean = dequantize_sum(total, clip=1.0, total_levels=5 * 255)
    assert np.max(np.abs(mean - xs.mean(axis=0))) <= 1.0 / 255 + 1e-12
