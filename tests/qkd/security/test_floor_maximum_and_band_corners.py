"""The vacuum-role level (a modulator's extinction floor) is declared as a guaranteed *maximum* and analysed
anywhere in [0, ε(1 + δ)], and the decoy LP's use of the band ±δ is checked at every corner of the band on an
honest channel (review s37 physics F1 and F4; docs/protocol.md §4.2 (P3') and §4.5 (P10)).

Gains are built as in test_near_vacuum_and_intensity_band.py: explicit coherent states of the *true* levels,
weighted as the estimator's pools weight them (a pooled level: its client's four phases weighted p_b/2)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from labqfl.config import load_station_config
from labqfl.qkd.decoy import (
    PHASE_ERROR_TARGETS,
    decoy_yield_bounds,
    level_state_bounds,
    pseudo_fock,
)
from labqfl.qkd.estimation import SecurityParameters, secure_key_length
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.keyrate import expected_counts, station_pair_channel

from .test_near_vacuum_and_intensity_band import N_EMBEDDED, NC, _gains

POOLED = (False, False, True)


def _honest_gains(mu_i: list[float], mu_j: list[float], eta: float, p_dark: float) -> tuple[np.ndarray, np.ndarray]:
    """(gains, Fock yields) of a pure-loss channel (η per arm, threshold detection, p_dark per slot): phase
    covariant, so a level's gain is its Poisson average whatever the pooling."""
    n = np.arange(40)
    yf = 1.0 - (1.0 - p_dark) * np.outer((1.0 - eta) ** n, (1.0 - eta) ** n)
    fact = np.array([math.factorial(int(k)) for k in n], dtype=float)
    pi = [np.exp(-m) * m**n / fact for m in mu_i]
    pj = [np.exp(-m) * m**n / fact for m in mu_j]
    return np.array([[a @ yf @ b for b in pj] for a in pi]), yf


def _holds(declared: list[float], g: np.ndarray, yf: np.ndarray, delta: float) -> tuple[bool, float]:
    """(feasible, min over the phase-error targets of Y^U / Y_true) of the LP on the declared levels."""
    b = decoy_yield_bounds(declared, declared, g * (1 - 1e-9), g * (1 + 1e-9), targets=PHASE_ERROR_TARGETS,
                           lower=False, pooled_i=POOLED, pooled_j=POOLED, rel_uncertainty=delta)
    if not b.feasible:
        return False, math.nan
    return True, min(b.y_upper[r, s] / yf[r, s] for r, s in PHASE_ERROR_TARGETS)


@pytest.mark.parametrize(("eps", "delta"), [(1e-4, 0.05), (1e-3, 0.05), (0.03, 0.2)])
def test_a_pooled_floor_is_bounded_for_every_level_from_zero_to_its_maximum(eps: float, delta: float) -> None:
    """level_state_bounds of the vacuum-role level covers every true floor in [0, ε(1 + δ)], not only the
    relative band [ε(1 − δ), ε(1 + δ)] (before: P_1^min = P_1(ε(1 − δ)) lay above the true P_1 of any dimmer
    floor, e.g. 0)."""
    p_lo, p_hi, t_max = level_state_bounds(eps, True, delta)
    for m in np.linspace(0.0, eps * (1 + delta), 41):
        P, T = pseudo_fock(float(m), 2)
        assert np.all(p_lo[:2] <= P + 1e-15) and np.all(P <= p_hi[:2] + 1e-15), (m, P, p_lo, p_hi)
        assert np.all(T <= t_max[:2] + 1e-15), (m, T, t_max)
    assert p_lo[1] == 0.0 and p_hi[0] == 1.0


@pytest.mark.parametrize(("eps", "eta", "p_dark"), [(1e-3, 0.05, 1e-5), (1e-3, 0.2, 1e-7), (0.03, 0.05, 1e-7)])
def test_a_floor_dimmer_than_declared_keeps_the_lp_feasible_and_its_bounds(eps: float, eta: float, p_dark: float) -> None:
    """A lab declares the floor at its worst extinction; the true floor is anywhere below. On an honest channel
    the LP stays feasible and bounds the true yields. Before (the floor analysed at ε(1 ± δ)): infeasible (an
    abort for honest light) at ε = 10⁻³, and at ε = 0.03 with a true floor 0 a yield bound 24 % below its
    true value."""
    declared = [0.02, 0.15, eps]
    for f in (0.0, 0.1, 0.5, 1.0):
        g, yf = _honest_gains([0.02, 0.15, eps * f], [0.02, 0.15, eps * f], eta, p_dark)
        feasible, ratio = _holds(declared, g, yf, 0.05)
        assert feasible, f
        assert ratio >= 1.0, (f, ratio)


def _interference_attack(eps_true: float) -> np.ndarray:
    """Rank-one click projector onto |00⟩ − (√2/ε)|20⟩ (normalised): orthogonal to Ci's X-basis even cat at
    the true floor ε, so Ci's X-basis floor rounds never click while its Y-basis ones do (review s37 F1)."""
    d = NC + 1
    v = np.zeros(d * d, complex)
    v[0], v[2 * d] = 1.0, -math.sqrt(2) / eps_true
    v /= np.linalg.norm(v)
    return np.outer(v, v.conj())


def _y00_upper(declared_floor: float, true_floor: float, m_click: np.ndarray, px: float) -> float:
    g = _gains(m_click, [0.02, 0.15, true_floor], POOLED, px)
    declared = [0.02, 0.15, declared_floor]
    b = decoy_yield_bounds(declared, declared, g * (1 - 1e-9), g * (1 + 1e-9), targets=[(0, 0)], lower=False,
                           pooled_i=POOLED, pooled_j=POOLED, rel_uncertainty=0.05)
    return float(b.y_upper[0, 0]) if b.feasible else 1.0


def test_the_review_counter_example_a_floor_declared_at_its_worst_extinction() -> None:
    """Review s37 F1: a modulator specified at 30 dB (floor 10⁻³ at μ_peak 1) that drifts to 25 dB plays a
    floor ~3× brighter. Declared at the nominal 10⁻³ with δ = 5 % the interference attack gets Y₀₀^U below the
    true Y₀₀ (no analysis can help a floor declared too low: this is why `extinction_db` must be a guaranteed
    minimum). Declared at the worst extinction (25 dB: 10^(−2.5) = 3.16·10⁻³) the bound holds for every true
    floor up to it."""
    nominal, worst = 1e-3, 10 ** -2.5
    m = _interference_attack(3e-3)
    assert _y00_upper(nominal, 3e-3, m, 0.98) < float(m[0, 0].real)  # declared too low: unsound
    for true in (3e-3, 1e-3, 3e-4, 3e-5):
        m = _interference_attack(true)
        for px in (0.9, 0.98):
            assert _y00_upper(worst, true, m, px) >= float(m[0, 0].real), (true, px)


def _corner_levels(declared: list[float], delta: float, signs: tuple[int, ...]) -> list[float]:
    """The true levels at one corner of the band: signal and decoy at μ(1 ± δ), the floor at 0 or ε(1 + δ)."""
    return [m * (1 + s * delta) if k < 2 else (m * (1 + delta) if s > 0 else 0.0)
            for k, (m, s) in enumerate(zip(declared, signs, strict=True))]


def test_honest_channel_at_every_corner_of_the_band() -> None:
    """Review s37 F4: nothing checked that the LP's rows use the band (a mutant that keeps δ in (P5) only and
    analyses the rows at the declared μ passed every test). Honest lossy channel (η = 0.1 per arm, p_d = 10⁻⁶),
    declared [0.02, 0.15, 10⁻³], δ = 0.2; each client's three levels independently at a corner of the band
    (64 corners): the LP stays feasible and bounds every phase-error yield. The mutant is infeasible (an abort
    for honest light) or low at several corners."""
    declared, delta = [0.02, 0.15, 1e-3], 0.2
    for si in itertools.product((-1, 1), repeat=3):
        for sj in itertools.product((-1, 1), repeat=3):
            g, yf = _honest_gains(_corner_levels(declared, delta, si), _corner_levels(declared, delta, sj), 0.1, 1e-6)
            feasible, ratio = _holds(declared, g, yf, delta)
            assert feasible, (si, sj)
            assert ratio >= 1.0, (si, sj, ratio)


@pytest.mark.parametrize("px", [0.9, 0.98])
def test_destructive_interference_on_a_decoy_sized_pooled_level(px: float) -> None:
    """Review s37 F4: the interference attack at a pooled level of decoy size (ε = 0.05, so T_0 = 1.25·10⁻³):
    both clients' clicks need their state to overlap χ = a|0⟩ + c|2⟩ ⊥ the X-basis even cat. The pooled
    two-phase slack keeps Y₀₀^U above the true Y₀₀ (a pooled slack of 0 gives 1.6·10⁻⁹ and 6.5·10⁻¹¹
    against 10⁻⁸)."""
    eps, y = 0.05, 1e-4
    d = NC + 1
    chi = np.zeros(d, complex)
    chi[0], chi[2] = math.sqrt(y), -math.sqrt(y) / (eps / math.sqrt(2))
    chi /= max(1.0, float(np.linalg.norm(chi)))
    a = np.outer(chi, chi.conj())
    m_click = np.kron(a, a)
    declared = [0.02, 0.15, eps]
    g = _gains(m_click, declared, POOLED, px)
    for delta in (0.0, 0.05):
        b = decoy_yield_bounds(declared, declared, g - 1e-13, g + 1e-13, targets=[(0, 0)], lower=False,
                               pooled_i=POOLED, pooled_j=POOLED, rel_uncertainty=delta)
        assert b.feasible
        assert b.y_upper[0, 0] >= float(m_click[0, 0].real) * (1 - 1e-6), delta


def _floor_station(eps: float):
    cfg = load_station_config().model_copy(deep=True)
    for cl in cfg.clients:
        cl.intensities = [cl.intensities[0], cl.intensities[1], eps]
    return cfg


@pytest.mark.parametrize("true_floor", [0.0, 1e-4, 10 ** -3.5])
def test_a_floor_declared_at_its_maximum_issues_no_more_than_the_true_floor_backs(true_floor: float) -> None:
    """The default operating point (C1-C4, the 10 s block) with a modulator floor declared at 10^-3.5 (its worst
    extinction, 35 dB at μ_peak = 1) and δ = 5 %; the counts are made with the true floor at or below it. The key
    issued (declared floor, δ) never exceeds the key the true floor backs (the true levels, δ = 0)."""
    declared = expected_counts(station_pair_channel(_floor_station(10 ** -3.5), ("C1", "C4")), N_EMBEDDED)
    true = expected_counts(station_pair_channel(_floor_station(true_floor), ("C1", "C4")), N_EMBEDDED)
    counts = replace(true, intensities_i=declared.intensities_i, intensities_j=declared.intensities_j)
    nx = float(true.clicks[0, 0, 0, 0])
    q = float(true.errors_x2[0, 0, 0, 0]) / 2 / nx
    leak = math.ceil(1.1 * nx * binary_entropy(q))
    issued = secure_key_length(counts, int(nx), q, leak, SecurityParameters(intensity_rel_uncertainty=0.05))
    backed = secure_key_length(true, int(nx), q, leak)
    assert issued.key_length_bits > 0
    assert issued.key_length_bits <= backed.key_length_bits
