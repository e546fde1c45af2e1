"""The Gaussian + flat-background peak fit (``labqfl.calibration.fitting.fit_gaussian_peak``) is
unbiased inside a short gate.

A gated detector's jitter fit stays within ±0.45 of the gate around the peak: for a 0.5 ns gate and
a 150 ps system jitter that is ±1.5 σ, where the background and σ trade off. With the background
bounded at 0 (the landed fit), the fluctuations that want a negative background were clipped, the
background came out too high and σ too small: on the histograms below, pull mean −0.46 and 2 % of
the pulls beyond 3 σ (0.27 % expected); in CI a gated InGaAs station's D1 jitter came out at −5.2 σ.
"""

from __future__ import annotations

import math

import numpy as np
from labqfl.calibration.fitting import fit_gaussian_peak


def _pulls(n_hist: int, clicks: int, sigma: float, half: float, bin_ps: float, seed: int, gate_ps: float | None) -> np.ndarray:
    """Pulls of the fitted σ on ``n_hist`` histograms of a Gaussian peak with 1 % dark counts: uniform
    in the gate and smeared by the jitter (gated), or uniform over the window (free-running)."""
    rng = np.random.default_rng(seed)
    edges = np.arange(math.floor(-half) - 0.5, half + 1e-9, bin_ps)
    c = 0.5 * (edges[1:] + edges[:-1])
    out = []
    for _ in range(n_hist):
        x = rng.normal(0.0, sigma, clicks)
        nb = rng.poisson(0.01 * clicks)
        dark = (rng.uniform(-gate_ps / 2, gate_ps / 2, nb) + rng.normal(0.0, sigma, nb) if gate_ps is not None
                else rng.uniform(-half - 1.0, half + 1.0, nb))
        x = np.concatenate([x, dark])
        n, _ = np.histogram(x, bins=edges)
        fit = fit_gaussian_peak(c, n, "synthetic peak")
        out.append((fit["sigma"] - sigma) / fit.err("sigma"))
    return np.asarray(out)


def test_sigma_inside_a_short_gate_is_unbiased_and_covered() -> None:
    p = _pulls(200, 40_000, sigma=151.5, half=225.0, bin_ps=19.0, seed=3, gate_ps=500.0)
    assert abs(p.mean()) < 0.2, f"pull mean {p.mean():+.2f}"  # landed fit: −0.46
    assert 0.8 < p.std() < 1.2, f"pull sd {p.std():.2f}"
    assert np.count_nonzero(np.abs(p) > 3.0) <= 2, np.sort(p)[:5]  # landed fit: 4 of 200


def test_sigma_in_a_wide_window_is_unbiased() -> None:
    """A free-running detector's window (±8 σ): the fit there was already unbiased and stays so."""
    p = _pulls(100, 20_000, sigma=80.0, half=640.0, bin_ps=10.0, seed=4, gate_ps=None)
    assert abs(p.mean()) < 0.25, f"pull mean {p.mean():+.2f}"
    assert 0.75 < p.std() < 1.25, f"pull sd {p.std():.2f}"
