"""The detector's photon draws taken up front (``_kernels._photon_draws``): each photon's time, jitter and
arrival exactly as the dead-time loop drew them one at a time, for the detector's outcome bit only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K

_M64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014), as ``labqfl.sim_backends.qrng.mix64``."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _reference(slots: np.ndarray, outc: np.ndarray, bit: int, period_int: int, t_loop: int, key: int,
               sigma_sig: float, sigma_other: float) -> tuple[list[int], list[float], list[int]]:
    """The draws of the loop before: per photon h = mix64(key + t·γ), g = σ·table[h >> 48], and its arrival part
    from table[mix64(h ^ γ2) >> 48] (:func:`_kernels._arrival_part`)."""
    ts, gs, tas = [], [], []
    g_ = int(K._G)
    g2 = int(K._G2)
    for s, o in zip(slots.tolist(), outc.tolist(), strict=True):
        if not o & bit:
            continue
        t = s * period_int + t_loop
        h = _mix64((key + t * g_) & _M64)
        g = sigma_sig * float(K.GAUSS_TABLE[h >> 48])
        ta = t
        if sigma_sig > sigma_other:
            z = float(K.GAUSS_TABLE[_mix64(h ^ g2) >> 48])
            v = sigma_sig ** 2 - sigma_other ** 2
            ta = t + int(round(g * v / sigma_sig ** 2 + math.sqrt(v) * sigma_other / sigma_sig * z))
        ts.append(t)
        gs.append(g)
        tas.append(ta)
    return ts, gs, tas


@pytest.mark.parametrize("sigmas", [(53.9, 50.0), (50.0, 50.0)])
def test_photon_draws_equal_the_one_at_a_time_draws(sigmas):
    rng = np.random.default_rng(4)
    n_rows, cap = 3, 400
    sig_n = np.array([250, 0, 317], dtype=np.int64)
    sig_slot = np.zeros((n_rows, cap), dtype=np.int64)
    sig_outc = rng.integers(1, 4, (n_rows, cap)).astype(np.uint8)  # garbage past sig_n as well
    for r in range(n_rows):
        sig_slot[r, :sig_n[r]] = np.sort(rng.choice(np.arange(r * 10_000, (r + 1) * 10_000), int(sig_n[r]), replace=False))
    key = 0x1234_5678_9ABC_DEF1
    for bit in (1, 2):
        t, g, ta = K._photon_draws(sig_slot, sig_outc, sig_n, np.uint8(bit), 10_000.0, np.int64(10_000),
                                   np.int64(48_000), np.uint64(key), sigmas[0], sigmas[1], K.GAUSS_TABLE)
        slots = np.concatenate([sig_slot[r, :sig_n[r]] for r in range(n_rows)])
        outc = np.concatenate([sig_outc[r, :sig_n[r]] for r in range(n_rows)])
        rt, rg, rta = _reference(slots, outc, bit, 10_000, 48_000, key, *sigmas)
        assert 100 < len(rt) < slots.size
        assert t.tolist() == rt
        assert g.tolist() == rg
        assert ta.tolist() == rta
