"""secure_key_length (estimation.py): API contract, aborts, asymptotic limit, monotonicity."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.contracts.types import PairCounts
from labqfl.qkd.estimation import KeyLengthReport, SecurityParameters, secure_key_length
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.keyrate import expected_counts, predict_pair

_make: Any = None


@pytest.fixture(autouse=True, scope="module")
def _factory(channel_factory: Any) -> None:
    global _make
    _make = channel_factory


def _integer_counts(n_slots: float, **kw: object) -> tuple[PairCounts, int, float]:
    c = expected_counts(_make(**kw), n_slots)  # type: ignore[arg-type]
    counts = replace(c, clicks=np.round(c.clicks).astype(np.int64), errors_x2=np.round(c.errors_x2).astype(np.int64),
                     double_clicks=np.round(c.double_clicks).astype(np.int64))
    n_x = int(counts.clicks[0, 0, 0, 0])
    q = counts.errors_x2[0, 0, 0, 0] / 2 / n_x
    return counts, n_x, float(q)


def test_report_contract_and_json() -> None:
    counts, n_x, q = _integer_counts(1e10)
    leak = int(1.1 * n_x * binary_entropy(q))
    rep = secure_key_length(counts, n_x, q, leak)
    assert isinstance(rep, KeyLengthReport)
    assert not rep.abort and rep.abort_reason == ""
    assert isinstance(rep.key_length_bits, int) and 0 < rep.key_length_bits < n_x
    assert 0 < rep.phase_error_upper < 0.45
    assert rep.gains_lower.shape == (3, 3) and rep.yields_upper.shape == (4, 4)
    assert np.all(rep.gains_lower <= rep.gains_observed + 1e-15)
    assert np.all(rep.gains_observed <= rep.gains_upper + 1e-15)
    d = rep.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["key_length_bits"] == rep.key_length_bits
    # the key length formula (P7) holds term by term
    t = rep.terms_bits
    ell = t["sifted"] - t["privacy_amplification_n_h_eph"] - t["leak_ec"] - t["verification_log2_2_over_eps_cor"] - t["pa_log2_1_over_eps_pa"]
    assert rep.key_length_bits == math.floor(ell)
    # ε budget: ε_sec = √2·√(ε_PE + ε_PA)
    assert math.isclose(math.sqrt(2 * (rep.eps_pe + rep.eps_pa)), rep.eps_sec, rel_tol=1e-12)


def test_abort_when_qber_above_threshold() -> None:
    counts, n_x, _ = _integer_counts(1e10)
    rep = secure_key_length(counts, n_x, 0.12, int(n_x * 0.6))
    assert rep.abort and rep.key_length_bits == 0
    assert "error rate" in rep.abort_reason and "threshold" in rep.abort_reason


def test_abort_when_phase_error_above_threshold() -> None:
    # a high signal intensity makes the CAL19 phase-error bound large
    counts, n_x, q = _integer_counts(1e9, mu=(0.4, 0.1, 0.0))
    rep = secure_key_length(counts, n_x, q, int(1.1 * n_x * binary_entropy(q)))
    assert rep.abort and rep.key_length_bits == 0
    assert "phase-error bound" in rep.abort_reason


def test_no_key_from_noisy_channel_even_below_threshold() -> None:
    """Low visibility → QBER ~ 10 % (< 11 % threshold) but the key length is not positive."""
    counts, n_x, q = _integer_counts(1e10, visibility=0.8)
    assert 0.05 < q < 0.11
    rep = secure_key_length(counts, n_x, q, int(1.1 * n_x * binary_entropy(q)))
    assert rep.abort and rep.key_length_bits == 0


def test_invalid_inputs_raise() -> None:
    counts, n_x, q = _integer_counts(1e8)
    with pytest.raises(ValueError, match="exceeds the clicks"):
        secure_key_length(counts, n_x + 10, q, 0)
    with pytest.raises(ValueError, match="qber_key"):
        secure_key_length(counts, n_x, 1.5, 0)
    bad = replace(counts, clicks=counts.clicks[:2])
    with pytest.raises(ValueError, match="shape"):
        secure_key_length(bad, n_x, q, 0)
    with pytest.raises(ValueError):
        SecurityParameters(eps_sec=0.0)


def test_partial_key_is_allowed_and_conservative() -> None:
    counts, n_x, q = _integer_counts(1e10)
    full = secure_key_length(counts, n_x, q, 0)
    half = secure_key_length(counts, n_x // 2, q, 0)
    assert half.phase_error_upper >= full.phase_error_upper


def test_finite_key_tends_to_asymptotic_rate() -> None:
    ch = _make()
    rates = [predict_pair(ch, n, 1, 1.0) for n in (1e10, 1e12, 1e14, 1e16)]
    asym = rates[-1].asymptotic_bits_per_slot
    assert asym > 0
    finite = [r.key_bits_per_slot for r in rates]
    assert all(a <= b * (1 + 1e-9) for a, b in zip(finite, finite[1:], strict=False))
    assert all(f <= asym * (1 + 1e-9) for f in finite)
    assert finite[-1] > 0.99 * asym


@settings(max_examples=8, deadline=None)
@given(loss=st.floats(0.0, 6.0), extra=st.floats(0.1, 3.0))
def test_more_loss_never_raises_the_rate(loss: float, extra: float) -> None:
    eta = 0.5 * 10 ** (-loss / 10)
    a = predict_pair(_make(eta, eta), 1e10, 1, 1.0, with_asymptotic=False)
    eta2 = eta * 10 ** (-extra / 10)
    b = predict_pair(_make(eta2, eta2 * 0.9), 1e10, 1, 1.0, with_asymptotic=False)
    assert b.key_bits_per_slot <= a.key_bits_per_slot + 1e-15


@settings(max_examples=8, deadline=None)
@given(p_dark=st.floats(1e-9, 1e-4), factor=st.floats(1.5, 100.0))
def test_more_dark_counts_never_raise_the_rate(p_dark: float, factor: float) -> None:
    a = predict_pair(_make(p_dark=p_dark), 1e10, 1, 1.0, with_asymptotic=False)
    b = predict_pair(_make(p_dark=min(p_dark * factor, 1e-2)), 1e10, 1, 1.0, with_asymptotic=False)
    assert b.key_bits_per_slot <= a.key_bits_per_slot + 1e-15
