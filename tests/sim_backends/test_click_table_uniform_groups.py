"""``_kernels._build_table`` computes the outcome probabilities of an intensity pair without interference (a
vacuum level, or V = 0) once for all its phase pairs (session 40, issue 18 item 5): every entry and p_max the
same bits as the per-phase-pair formulas it had before (kept here as the reference)."""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K


@nb.njit(cache=False)
def _reference(table, ci, cj, eta_cw, eta_ccw, mu, cnk, phase, pmode, t, vis, eta_d0, eta_d1, theta,  # type: ignore[no-untyped-def]
               normalise=True):
    """``_build_table`` as of e6da8db (every phase pair computed on its own)."""
    n_phase, k_max = K.N_PHASE, K.K_MAX
    ai_lo, ai_hi = (4, 5) if pmode[ci] == 1 else (0, 4)
    aj_lo, aj_hi = (4, 5) if pmode[cj] == 1 else (0, 4)
    cosd = np.empty(n_phase * n_phase)
    for ai in range(ai_lo, ai_hi):
        for aj in range(aj_lo, aj_hi):
            cosd[ai * n_phase + aj] = math.cos(phase[ci, ai] - phase[cj, aj] + theta)
    pmax = 0.0
    for ki in range(cnk[ci]):
        A = eta_cw * mu[ci, ki]
        for kj in range(cnk[cj]):
            B = eta_ccw * mu[cj, kj]
            amp = 2.0 * vis * math.sqrt(t * (1.0 - t) * A * B)
            for ai in range(ai_lo, ai_hi):
                for aj in range(aj_lo, aj_hi):
                    cross = amp * cosd[ai * n_phase + aj]
                    m0 = eta_d0 * (t * A + (1.0 - t) * B + cross)
                    m1 = eta_d1 * ((1.0 - t) * A + t * B - cross)
                    m0 = max(m0, 0.0)
                    m1 = max(m1, 0.0)
                    p0 = -math.expm1(-m0)
                    p1 = -math.expm1(-m1)
                    idx = ((ki * k_max + kj) * n_phase + ai) * n_phase + aj
                    e1 = p0 * (1.0 - p1)
                    e2 = e1 + (1.0 - p0) * p1
                    e3 = e2 + p0 * p1
                    table[idx, 0] = e1
                    table[idx, 1] = e2
                    table[idx, 2] = e3
                    if e3 > pmax:
                        pmax = e3
    if pmax > 0.0 and normalise:
        for ki in range(cnk[ci]):
            for kj in range(cnk[cj]):
                for ai in range(ai_lo, ai_hi):
                    for aj in range(aj_lo, aj_hi):
                        idx = ((ki * k_max + kj) * n_phase + ai) * n_phase + aj
                        table[idx, 0] /= pmax
                        table[idx, 1] /= pmax
                        table[idx, 2] /= pmax
    return pmax


@pytest.mark.parametrize("seed", range(40))
def test_table_equals_the_per_phase_pair_formulas_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    cnk = rng.integers(1, 4, 2)
    mu = rng.uniform(0.0, 0.6, (2, K.K_MAX))
    mu[rng.random((2, K.K_MAX)) < 0.35] = 0.0  # vacuum levels
    phase = rng.uniform(-4.0, 4.0, (2, K.N_PHASE))
    if seed % 5 == 0:
        phase[0, 1] = math.inf  # a phase whose cosine is NaN: no shortcut may hide it
    pmode = rng.integers(0, 2, 2) * (seed % 3 == 0)
    vis = 0.0 if seed % 4 == 0 else float(rng.uniform(0.5, 1.0))
    args = (0, 1, float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), mu, cnk, phase, pmode,
            float(rng.uniform(0.3, 0.7)), vis, float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.5, 0.9)),
            float(rng.uniform(-10, 10)))
    for normalise in (True, False):
        got, want = np.full((K.K_MAX ** 2 * K.N_PHASE ** 2, 3), 7.0), np.full((K.K_MAX ** 2 * K.N_PHASE ** 2, 3), 7.0)
        p_got = K._build_table(got, *args, normalise)
        p_want = _reference(want, *args, normalise)
        assert np.array_equal(np.float64(p_got).view(np.uint64), np.float64(p_want).view(np.uint64)) or (
            math.isnan(p_got) and math.isnan(p_want))
        np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_default_station_pairs_take_the_shortcut_and_agree():
    """The default station's clients (signal, decoy, vacuum): 5 of 9 intensity pairs without interference."""
    from labqfl.sim_backends import SagnacTestbed

    from labqfl.config import load_station_config

    cfg = load_station_config()
    tb = SagnacTestbed(cfg)
    ca, pa, dets, *_ = tb._window_inputs()
    assert (ca["mu"][:, :3] == 0.0).sum() == len(cfg.clients)
    for p in range(pa["ci"].size):
        for theta in (0.0, 1.3, -2.9):
            args = (int(pa["ci"][p]), int(pa["cj"][p]), float(pa["eta_cw"][p]), float(pa["eta_ccw"][p]), ca["mu"],
                    ca["cnk"], ca["phase"], ca["pmode"], cfg.loop.beam_splitter_ratio, cfg.loop.visibility,
                    dets[0].efficiency, dets[1].efficiency, theta)
            got, want = np.zeros((K.K_MAX ** 2 * K.N_PHASE ** 2, 3)), np.zeros((K.K_MAX ** 2 * K.N_PHASE ** 2, 3))
            assert K._build_table(got, *args) == _reference(want, *args)
            np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))
