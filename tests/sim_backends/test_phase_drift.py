"""The loop's residual phase drift θ(t): a random walk, or an Ornstein–Uhlenbeck process with a
correlation time (``loop.phase_drift_correlation_s``), checked against their analytical moments.

A Sagnac loop keeps its phase without active stabilisation for days (visibility 95.3 % ± 0.47 % over
72 h, Nascimento et al., arXiv:2507.01205; > 97 % in 200 km loops, Mandil, Qian & Lo,
arXiv:2407.08009): the residual phase is stationary, so the default station relaxes it with
τ = 100 s. The unbounded walk (no τ) doubled the GUI's QBER after 200 s of live running and
would stop every key within the hour (E θ² = σ²t: about +8 % QBER after an hour)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K
from labqfl.sim_backends.testbed import drift_step

from labqfl.config import load_station_config

SIGMA = 0.01  # rad/√s
DT = 65536e-9  # one 65 536-slot chunk at 1 GHz [s] (the processes hold for any chunk length)


def _loop(tau: float | None):
    return load_station_config().loop.model_copy(update={"phase_drift_rad_per_sqrt_s": SIGMA,
                                                         "phase_drift_correlation_s": tau})


def _paths(tau: float | None, n_chunks: int, n_paths: int) -> np.ndarray:
    s, rho = drift_step(_loop(tau), DT)
    return np.stack([K.drift_thetas(np.int64(1), np.int64(n_chunks), np.array([0.0, 0.0]), s, np.uint64(1000 + k), rho)
                     for k in range(n_paths)])


def test_without_a_correlation_time_the_walk_is_unchanged_bit_for_bit() -> None:
    """ρ = 1 multiplies by 1.0: the phases equal the plain walk θ_m = θ_{m−1} + σ√Δ·N_m."""
    s, rho = drift_step(_loop(None), DT)
    assert rho == 1.0 and s == SIGMA * math.sqrt(DT)
    got = K.drift_thetas(np.int64(1), np.int64(5000), np.array([0.0, 0.0]), s, np.uint64(7), rho)
    want, th = np.empty(5000), 0.0
    for m in range(1, 5001):
        th += s * K._gauss(np.uint64(7), m)
        want[m - 1] = th
    assert np.array_equal(got, want)


@pytest.mark.parametrize("tau", [0.02, 0.1])
def test_ou_variance_and_correlation_match_the_analytical_process(tau: float) -> None:
    """Var θ(t) = σ²τ(1 − e^(−2t/τ))/2 and corr(θ(t), θ(t + τ)) = e^(−1) in the stationary state,
    over 400 independent paths (each variance within 4 standard errors)."""
    n = int(round(8 * tau / DT))
    th = _paths(tau, n, 400)
    lag = int(round(tau / DT))
    for m in (lag // 2, lag, n - lag - 1):
        t = (m + 1) * DT
        var = SIGMA**2 * tau * -math.expm1(-2 * t / tau) / 2
        se = var * math.sqrt(2 / th.shape[0])
        assert abs(th[:, m].var() - var) < 4 * se, (m, th[:, m].var(), var)
    a, b = th[:, n - lag - 1], th[:, n - 1]
    r = float(np.corrcoef(a, b)[0, 1])
    assert abs(r - math.exp(-1)) < 4 * (1 - math.exp(-2)) / math.sqrt(th.shape[0]), r


def test_the_walk_grows_without_bound_and_the_ou_phase_does_not() -> None:
    """At 30 τ the walk's variance is 60× the OU process's stationary σ²τ/2."""
    tau = 0.02
    n = int(round(30 * tau / DT))
    walk, ou = _paths(None, n, 300)[:, -1], _paths(tau, n, 300)[:, -1]
    t = n * DT
    assert walk.var() == pytest.approx(SIGMA**2 * t, rel=0.35)
    assert ou.var() == pytest.approx(SIGMA**2 * tau / 2, rel=0.35)


def test_the_default_station_relaxes_its_phase() -> None:
    loop = load_station_config().loop
    assert loop.phase_drift_correlation_s == 100.0
    assert SIGMA * math.sqrt(loop.phase_drift_correlation_s / 2) == pytest.approx(0.0707, abs=1e-4)
