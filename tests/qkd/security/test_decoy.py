"""Decoy LPs and the CAL19 phase-error bound (decoy.py)."""

from __future__ import annotations

import numpy as np

from labqfl.qkd.decoy import (
    PHASE_ERROR_TARGETS,
    decoy_yield_bounds,
    ideal_fock_yields,
    phase_error_probability_bound,
    poisson_pmf,
    pseudo_fock,
)


def _true_gains(mus_i, mus_j, Y: np.ndarray) -> np.ndarray:
    """Exact gains of 4-phase-randomised coherent states for a Fock-diagonal (phase-insensitive)
    channel: Σ p_n p_m Y_nm (pseudo-Fock coherences vanish because the yields are diagonal)."""
    n = Y.shape[0]
    return np.array([[poisson_pmf(a, n - 1) @ Y @ poisson_pmf(b, n - 1) for b in mus_j] for a in mus_i])


def test_pseudo_fock_probabilities() -> None:
    P, T = pseudo_fock(0.1)
    assert np.isclose(P.sum(), 1.0)
    assert np.isclose(T[0], 0.1**4 / 24, rtol=0.05)
    P0, T0 = pseudo_fock(0.0)
    assert P0[0] == 1.0 and np.all(T0 == 0)


def test_lp_bounds_contain_true_yields() -> None:
    Y = ideal_fock_yields(0.2, 0.3, 1e-6)
    mus = [0.05, 0.2, 0.0]
    g = _true_gains(mus, mus, Y)
    b = decoy_yield_bounds(mus, mus, g * (1 - 1e-9), g * (1 + 1e-9), targets=PHASE_ERROR_TARGETS)
    assert b.feasible
    for r, s in PHASE_ERROR_TARGETS:
        assert b.y_lower[r, s] - 1e-9 <= Y[r, s] <= b.y_upper[r, s] + 1e-9


def test_more_decoys_tighten_the_bounds() -> None:
    Y = ideal_fock_yields(0.2, 0.2, 1e-6)
    few = [0.05, 0.2, 0.0]
    many = [0.05, 0.1, 0.2, 0.3, 0.0]
    b1 = decoy_yield_bounds(few, few, _true_gains(few, few, Y), _true_gains(few, few, Y), targets=[(1, 1)], lower=False)
    b2 = decoy_yield_bounds(many, many, _true_gains(many, many, Y), _true_gains(many, many, Y), targets=[(1, 1)], lower=False)
    assert b2.y_upper[1, 1] <= b1.y_upper[1, 1] + 1e-9
    assert b2.y_upper[1, 1] < 1.5 * Y[1, 1]


def test_inconsistent_gains_are_infeasible() -> None:
    mus = [0.05, 0.2, 0.0]
    g = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.9]])  # vacuum gain 0.9 but ...
    g[2, 2] = 0.9
    g[0, 0] = 1e-6  # ... signal gain far below vacuum's: impossible
    b = decoy_yield_bounds(mus, mus, g, g)
    assert not b.feasible
    assert np.all(b.y_upper == 1.0)


def test_phase_error_bound_single_photon_regime() -> None:
    """Small μ, loss-only: e_ph ≈ f/Q_X → roughly 3μ/2·(ratio of yields); and monotone in Y."""
    Y = ideal_fock_yields(0.1, 0.1)
    f1 = phase_error_probability_bound(0.02, 0.02, Y)
    f2 = phase_error_probability_bound(0.02, 0.02, np.minimum(Y * 1.5, 1.0))
    assert 0 < f1 < f2
    q_x = 1 - np.exp(-2 * 0.02 * 0.1)
    assert 0.02 < f1 / q_x < 0.1
    # with every yield bounded by 1 the bound does not depend on the channel
    assert np.isclose(phase_error_probability_bound(0.02, 0.02, np.ones((4, 4))),
                      phase_error_probability_bound(0.02, 0.02, np.ones((41, 41))))


def test_the_phase_error_sum_keeps_the_mass_of_bright_settings() -> None:
    """With every yield 1 the bound is Σ_par (Σ_{n≡par} √p_n(μ_i) · Σ_{m≡par} √p_m(μ_j))²: computed here to
    n = 600 from log-weights. A fixed cut at n = 40 gave 0.10 instead of 156 at μ = 50 (review s32 F3), i.e. a
    phase-error bound far too low for a bright setting; the cut-off now follows μ. Dim settings are unchanged."""
    import math

    from labqfl.qkd.decoy import fock_cutoff

    def exact(mi: float, mj: float) -> float:
        def amps(mu: float) -> np.ndarray:
            n = np.arange(601)
            logp = -mu + n * math.log(mu) - np.array([math.lgamma(k + 1.0) for k in n])
            return np.exp(0.5 * logp)
        ai, aj = amps(mi), amps(mj)
        return sum(float(ai[par::2].sum() * aj[par::2].sum()) ** 2 for par in (0, 1))

    for mi, mj in ((50.0, 50.0), (30.0, 0.5), (20.0, 20.0)):
        assert np.isclose(phase_error_probability_bound(mi, mj, np.ones((4, 4))), exact(mi, mj), rtol=1e-9)
    assert fock_cutoff(0.0) == fock_cutoff(0.8) == 40  # the usual settings: the same sums as before
    assert np.isclose(phase_error_probability_bound(0.5, 0.1, np.ones((4, 4))), exact(0.5, 0.1), rtol=1e-12)
    P, _ = pseudo_fock(50.0)
    assert np.isclose(P.sum(), 1.0, rtol=1e-12)
