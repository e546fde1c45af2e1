"""A near-vacuum level is pooled across its client's basis with the two-phase slack, and the declared
intensities may carry a calibration band ±δ (review s36 physics F1 and F2, issue 18; docs/protocol.md
§4.2 (P3') and §7.5 (P10)).

The random-attack tests build the gains from explicit coherent states of the *true* intensities under an
arbitrary (non-phase-covariant) measurement, weighted as the estimator's pools weight them (a pooled level:
its client's four phases weighted p_b/2; otherwise uniform), and check that the LP on the *declared*
intensities with the band bounds the true Fock yields and that (P5) bounds the exact phase-error
probability of the virtual protocol."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.config import load_station_config
from labqfl.qkd.decoy import (
    PHASE_ERROR_TARGETS,
    _constraint_rows,
    _constraint_rows_reference,
    decoy_yield_bounds,
    level_state_bounds,
    phase_error_probability_bound,
    pooled_levels,
    pseudo_fock,
)
from labqfl.qkd.estimation import SecurityParameters, secure_key_length
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.keyrate import (
    expected_counts,
    predict_pair,
    predict_station,
    station_pair_channel,
    station_with_operating_point,
)

NC = 7  # Fock cut-off per mode (μ ≤ 0.2: truncated weight < 1e-10)
N_EMBEDDED = 1.6671e8  # the default `labqfl run` block (docs/station.md)


def _coherent(alpha: complex) -> np.ndarray:
    n = np.arange(NC + 1)
    amp = np.array([alpha**k / math.sqrt(math.factorial(k)) for k in n], dtype=complex)
    return math.exp(-abs(alpha) ** 2 / 2) * amp


def _random_povm(rng: np.random.Generator, dim: int, n_out: int, scale: float) -> list[np.ndarray]:
    """n_out click elements M_k ≥ 0 with Σ M_k ≤ 1 (random, not phase-covariant)."""
    mats = []
    for _ in range(n_out + 1):
        g = rng.normal(size=(dim, dim)) + 1j * rng.normal(size=(dim, dim))
        mats.append(g @ g.conj().T)
    w, v = np.linalg.eigh(sum(mats))
    s_inv_half = v @ np.diag(w**-0.5) @ v.conj().T
    return [scale * s_inv_half @ m @ s_inv_half for m in mats[1:]]


def _expect(m: np.ndarray, psi: np.ndarray) -> float:
    return float(np.real(psi.conj() @ m @ psi))


def _phase_weights(pooled: bool, px: float) -> list[float]:
    """Weight of phase a·π/2 (a = 0..3; X basis: a = 0, 2) in a level's gain: p_b/2 for a pooled level
    (the pooled count), 1/4 otherwise (the reweighted cells)."""
    return [px / 2, (1 - px) / 2, px / 2, (1 - px) / 2] if pooled else [0.25] * 4


def _gains(m_click: np.ndarray, mu_true: list[float], pooled: tuple[bool, ...], px: float,
           mu_true_j: list[float] | None = None) -> np.ndarray:
    """Gains of Ci at ``mu_true`` and Cj at ``mu_true_j`` (default the same levels)."""
    k = len(mu_true)
    states = [[_coherent(1j**a * math.sqrt(m)) for a in range(4)] for m in mu_true]
    states_j = states if mu_true_j is None else [[_coherent(1j**a * math.sqrt(m)) for a in range(4)] for m in mu_true_j]
    g = np.zeros((k, k))
    for a_ in range(k):
        for b_ in range(k):
            wa, wb = _phase_weights(pooled[a_], px), _phase_weights(pooled[b_], px)
            g[a_, b_] = sum(wa[p] * wb[q] * _expect(m_click, np.kron(states[a_][p], states_j[b_][q]))
                            for p in range(4) for q in range(4))
    return g


@pytest.mark.parametrize(("eps", "delta"), [(1e-3, 0.0), (0.03, 0.0), (1e-3, 0.1), (0.0, 0.1), (0.03, 0.2)])
def test_pooled_near_vacuum_and_intensity_band_hold_against_random_attacks(eps: float, delta: float) -> None:
    rng = np.random.default_rng(int(1e6 * eps) + int(100 * delta))
    declared = [0.02, 0.15, eps]
    pooled = (False, False, True)  # pooling is sound for any level (0.03 is brighter than the signal here)
    px = 0.9
    d = NC + 1

    def draw() -> list[float]:  # each level anywhere in its band, the floor (a maximum) in [0, ε(1 + δ)]
        out = [m * (1 + rng.uniform(-delta, delta)) for m in declared]
        out[2] = eps * (rng.uniform(0.0, 1 + delta) if delta > 0 else 1.0)
        return out

    for trial in range(3):
        mu_true, mu_true_j = draw(), draw()  # each client's own (review s37 physics F4)
        povm = _random_povm(rng, d * d, 3, [1.0, 0.2, 0.02][trial])
        m_click = sum(povm)
        g = _gains(m_click, mu_true, pooled, px, mu_true_j)
        b = decoy_yield_bounds(declared, declared, g - 1e-11, g + 1e-11, targets=PHASE_ERROR_TARGETS, lower=False,
                               pooled_i=pooled, pooled_j=pooled, rel_uncertainty=delta)
        assert b.feasible
        y_true = np.real(np.diag(m_click)).reshape(d, d)
        for r, s in PHASE_ERROR_TARGETS:
            assert y_true[r, s] <= b.y_upper[r, s] + 1e-7, (r, s, y_true[r, s], b.y_upper[r, s])
        # virtual protocol with the TRUE key intensity: phase error = click with equal photon-number parities
        key_i, key_j = _coherent(math.sqrt(mu_true[0])), _coherent(math.sqrt(mu_true_j[0]))
        par_i = [np.where(np.arange(d) % 2 == j, key_i, 0.0) for j in (0, 1)]
        par_j = [np.where(np.arange(d) % 2 == j, key_j, 0.0) for j in (0, 1)]
        exact = sum(_expect(m_click, np.kron(par_i[j], par_j[j])) for j in (0, 1))
        assert exact <= phase_error_probability_bound(declared[0], declared[0], b.y_upper, delta) + 1e-12


def test_level_state_bounds_contain_every_intensity_of_the_band() -> None:
    for mu, delta, n_phases, pooled in ((0.03, 0.1, 4, False), (1e-3, 0.2, 2, True), (0.9, 0.2, 4, False),
                                        (2.0, 0.25, 4, False), (3.0, 0.3, 2, True)):
        p_lo, p_hi, t_hi = level_state_bounds(mu, pooled, delta)
        for m in np.linspace(mu * (1 - delta), mu * (1 + delta), 301):
            P, T = pseudo_fock(float(m), n_phases)
            assert np.all(p_lo[:n_phases] <= P + 1e-15) and np.all(P <= p_hi[:n_phases] + 1e-15)
            assert np.all(T <= t_hi[:n_phases] + 1e-15)
    p_lo, p_hi, t = level_state_bounds(0.0263, False, 0.0)  # no band: the point itself, the same arrays
    P, T = pseudo_fock(0.0263)
    assert p_lo is p_hi and np.array_equal(p_lo, P) and np.array_equal(t, T)


def test_two_phase_slack_is_second_order_and_vanishes_at_vacuum() -> None:
    """The pooled level's slack T_0 = 1 − 1/cosh μ ≈ μ²/2 (the first-order 1 − e^(−μ) of a single phase is
    not needed: the bits are uniform, so a basis' state is a two-phase average)."""
    for mu in (1e-3, 0.05, 0.3):
        _, _, t = level_state_bounds(mu, True)
        assert t[0] == pytest.approx(1 - 1 / math.cosh(mu), rel=1e-6) and t[0] <= mu * mu / 2
        assert t[1] == pytest.approx(1 - mu / math.sinh(mu), rel=1e-6)
    p_lo, _, t = level_state_bounds(0.0, True)
    assert np.array_equal(p_lo, [1.0, 0.0, 0.0, 0.0]) and not np.any(t)


def test_pooled_levels_are_exact_vacua_and_the_weakest_test_level() -> None:
    assert pooled_levels([0.0263, 0.05, 0.0]) == (False, False, True)
    assert pooled_levels([0.0263, 0.05, 1e-12]) == (False, False, True)
    assert pooled_levels([0.0263, 0.001, 0.05]) == (False, True, False)
    assert pooled_levels([0.03, 0.1]) == (False, False)  # the weakest is the signal: never pooled
    assert pooled_levels([0.03, 0.01, 0.01]) == (False, False, False)  # a tie: no vacuum role
    assert pooled_levels([0.03]) == (False,)


@settings(max_examples=40, deadline=None)
@given(mu=st.lists(st.sampled_from([0.0, 1e-6, 1e-3, 0.03, 0.25, 1.5]), min_size=1, max_size=3),
       delta=st.sampled_from([0.0, 0.02, 0.3]), seed=st.integers(0, 2**32 - 1))
def test_cached_rows_with_pooling_and_band_equal_the_reference_bit_for_bit(mu, delta, seed) -> None:
    rng = np.random.default_rng(seed)
    k = len(mu)
    gl = rng.uniform(0, 0.5, (k, k))
    gu = gl + rng.uniform(0, 0.1, (k, k))
    pooled = pooled_levels(mu)
    a, b = _constraint_rows(mu, mu, gl, gu, pooled, pooled, delta)
    a_ref, b_ref = _constraint_rows_reference(mu, mu, gl, gu, pooled, pooled, delta)
    assert a.tobytes() == a_ref.tobytes() and b.tobytes() == b_ref.tobytes()


def test_phase_error_bound_of_the_band_covers_every_intensity_in_it() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        y = rng.uniform(0, 1, (4, 4)) ** 3
        mi, mj, delta = rng.uniform(0.005, 0.5), rng.uniform(0.005, 0.5), rng.uniform(0, 0.3)
        band = phase_error_probability_bound(mi, mj, y, delta)
        for a in np.linspace(1 - delta, 1 + delta, 9):
            for b in np.linspace(1 - delta, 1 + delta, 9):
                assert phase_error_probability_bound(mi * a, mj * b, y) <= band * (1 + 1e-12)
    assert phase_error_probability_bound(0.03, 0.02, y, 0.0) == phase_error_probability_bound(0.03, 0.02, y)


def _station_with_vacuum(vac: float):
    cfg = load_station_config()
    c = cfg.model_copy(deep=True)
    for cl in c.clients:
        cl.intensities = [cl.intensities[0], cl.intensities[1], vac]
    return c


def test_key_is_continuous_and_non_increasing_in_a_near_vacuum_level() -> None:
    """Review s36 physics F1: C1-C4 at the embedded point gave 58.27 kbit/s with an exact vacuum and 0 with
    any non-zero level (10⁻¹² included). Now 10⁻¹² changes nothing measurable and the key falls smoothly."""
    rates = []
    for vac in (0.0, 1e-12, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3):
        ch = station_pair_channel(_station_with_vacuum(vac), ("C1", "C4"))
        rates.append(predict_pair(ch, N_EMBEDDED, 6, 1e8, with_asymptotic=False).bits_per_second)
    assert rates[0] > 58e3
    assert rates[1] >= rates[0] * (1 - 1e-6)
    assert all(b <= a * (1 + 1e-9) for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] > 0.45 * rates[0]  # 30 dB below μ_peak = 1 photon: about half the key (docs/lab_setup.md)


def _issued_and_backed(k: float, delta: float) -> tuple[int, int]:
    """C1-C4: counts made with every intensity k× the declared one; key analysed with the declared
    intensities and δ (issued) and with the true ones, exactly (backed). Review s36 physics F2 snippet."""
    cfg = load_station_config()
    decl = expected_counts(station_pair_channel(cfg, ("C1", "C4")), N_EMBEDDED)
    c0 = cfg.clients[0]
    t = station_with_operating_point(cfg, {c.name: c.intensities[0] * k for c in cfg.clients}, c0.intensities[1] * k,
                                     tuple(c0.intensity_probs), c0.basis_x_prob)
    ct = expected_counts(station_pair_channel(t, ("C1", "C4")), N_EMBEDDED)
    cd = replace(ct, intensities_i=decl.intensities_i, intensities_j=decl.intensities_j)
    nx = float(ct.clicks[0, 0, 0, 0])
    q = float(ct.errors_x2[0, 0, 0, 0]) / 2 / nx
    leak = math.ceil(1.1 * nx * binary_entropy(q))
    issued = secure_key_length(cd, int(nx), q, leak, SecurityParameters(intensity_rel_uncertainty=delta))
    backed = secure_key_length(ct, int(nx), q, leak)
    return issued.key_length_bits, backed.key_length_bits


@pytest.mark.parametrize("k", [0.9, 0.95, 1.0, 1.05, 1.1])
def test_intensities_within_the_declared_band_never_give_more_key_than_backed(k: float) -> None:
    issued, backed = _issued_and_backed(k, 0.1)
    assert 0 < issued <= backed


def test_without_a_band_a_brighter_source_issues_unbacked_key() -> None:
    """What δ is for (the hazard of review s36 F2, unchanged when δ = 0): 10 % too bright, +23 % bits."""
    issued, backed = _issued_and_backed(1.1, 0.0)
    assert issued > 1.2 * backed


def test_the_station_declares_the_band_and_the_prediction_uses_it() -> None:
    cfg = load_station_config()
    assert cfg.intensity_rel_uncertainty() == 0.0  # the simulator emits exactly the declared μ
    base = {p.pair: p.bits_per_second for p in predict_station(cfg, N_EMBEDDED, pairs=[("C1", "C4")])}
    c = cfg.model_copy(deep=True)
    c.clients[1].intensity_rel_uncertainty = 0.05
    assert c.intensity_rel_uncertainty() == 0.05
    banded = {p.pair: p.bits_per_second for p in predict_station(c, N_EMBEDDED, pairs=[("C1", "C4")])}
    # 5 %: 58.27 -> 51.72 kbit/s (docs/station.md); the whole station gets the largest declared δ
    assert 0.85 * base["C1-C4"] < banded["C1-C4"] < 0.92 * base["C1-C4"]


@pytest.mark.parametrize("bad", [-0.01, 1.0, float("nan"), True])
def test_a_band_outside_zero_to_one_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="intensity_rel_uncertainty"):
        SecurityParameters(intensity_rel_uncertainty=bad)  # type: ignore[arg-type]


def test_an_attack_that_clicks_less_on_the_weak_state_than_on_vacuum() -> None:
    """Why the floor must be declared (docs/protocol.md §4.2): with P(X) ≠ ½ the pooled near-vacuum mix keeps a
    |0⟩–|2⟩ coherence ((p_X − p_Y)·ε/√2), and a projector onto cos a|0⟩ − sin a|2⟩ (Cj at vacuum) clicks *less*
    on it than on vacuum. Declared as an exact 0 the LP then bounds Y₀₀ below its true value (unsound); declared
    as ε, the two-phase slack (P3') keeps the bound above it."""
    eps, px, y00 = 1e-3, 0.98, 4e-5
    d = NC + 1
    v = np.zeros(d)
    v[0], v[2] = math.sqrt(y00), -math.sqrt(1 - y00)
    vac = np.zeros(d)
    vac[0] = 1.0
    m_click = np.kron(np.outer(v, v), np.outer(vac, vac))  # a projector: 0 ≤ M ≤ 1
    w = _phase_weights(True, px)
    gain = sum(w[a] * _expect(m_click, np.kron(_coherent(1j**a * math.sqrt(eps)), vac)) for a in range(4))
    assert gain < 0.85 * y00  # the weak state clicks ~20 % less than vacuum
    g = np.array([[gain]])
    declared_eps = decoy_yield_bounds([eps], [0.0], g, g, targets=[(0, 0)], lower=False,
                                      pooled_i=(True,), pooled_j=(True,))
    declared_zero = decoy_yield_bounds([0.0], [0.0], g, g, targets=[(0, 0)], lower=False,
                                       pooled_i=(True,), pooled_j=(True,))
    assert declared_eps.y_upper[0, 0] >= y00
    assert declared_zero.y_upper[0, 0] < 0.9 * y00  # the exact-vacuum analysis of the same counts: unsound
