"""Exact CE and M2 against known states and slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.fl.datasets.magic import doped_clifford_state
from labqfl.fl.datasets.measures import (
    concentratable_entanglement,
    concentratable_entanglement_reference,
    concentratable_entanglement_torch,
    stabilizer_renyi_entropy,
    stabilizer_renyi_entropy_reference,
)
from labqfl.fl.datasets.ntangled import product_states


def _ghz(n: int) -> np.ndarray:
    g = np.zeros(1 << n, dtype=np.complex128)
    g[0] = g[-1] = 1 / np.sqrt(2)
    return g


def _random_state(seed: int, n: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    s = r.normal(size=1 << n) + 1j * r.normal(size=1 << n)
    return s / np.linalg.norm(s)


def test_product_states_have_zero_ce() -> None:
    s = product_states(np.random.default_rng(0), 5, 6)
    assert np.allclose(concentratable_entanglement(s), 0.0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_ghz_ce_is_half_minus_2_to_minus_n(n: int) -> None:
    # Beckey et al., PRL 127, 140501 (2021): marginals of GHZ have purity 1/2, so CE = 1/2 − 2^(−n)
    assert concentratable_entanglement(_ghz(n)) == pytest.approx(0.5 - 2.0**-n, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 4))
def test_ce_matches_partial_trace_reference_and_torch(seed: int, n: int) -> None:
    s = _random_state(seed, n)
    ce = concentratable_entanglement(s)
    assert ce == pytest.approx(concentratable_entanglement_reference(s), abs=1e-12)
    assert ce == pytest.approx(float(concentratable_entanglement_torch(torch.as_tensor(s[None]))[0]), abs=1e-12)


def test_stabilizer_states_have_zero_m2() -> None:
    assert stabilizer_renyi_entropy(_ghz(6)) == 0.0
    z = np.zeros(64, dtype=np.complex128)
    z[0] = 1
    assert stabilizer_renyi_entropy(z) == 0.0
    rng = np.random.default_rng(5)
    for _ in range(5):  # random Clifford circuits without T gates
        assert abs(stabilizer_renyi_entropy(doped_clifford_state(rng, 6, 40, 0))) < 1e-10


def test_t_state_m2_is_log2_4_over_3() -> None:
    t = np.array([1, np.exp(1j * np.pi / 4)]) / np.sqrt(2)
    assert stabilizer_renyi_entropy(t) == pytest.approx(np.log2(4 / 3), abs=1e-12)
    # additive over tensor products: |T⟩^{⊗3} has 3·log2(4/3)
    t3 = np.kron(np.kron(t, t), t)
    assert stabilizer_renyi_entropy(t3) == pytest.approx(3 * np.log2(4 / 3), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 3))
def test_m2_walsh_hadamard_matches_explicit_paulis(seed: int, n: int) -> None:
    s = _random_state(seed, n)
    assert stabilizer_renyi_entropy(s) == pytest.approx(stabilizer_renyi_entropy_reference(s), abs=1e-10)


def test_unnormalised_state_is_refused() -> None:
    with pytest.raises(ValueError, match="normalised"):
        concentratable_entanglement(np.ones(4))
