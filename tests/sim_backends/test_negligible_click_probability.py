"""A negligible click probability gives no signal clicks (review s34 F3).

The thinning kernels draw candidate slots with geometric gaps ⌊ln u / ln(1−q)⌋ (Devroye, *Non-Uniform
Random Variate Generation*, 1986, §X.2); for q ≲ 7.5·10⁻¹⁹ the gap exceeds 2^63 and an unclamped
int64 cast of it overflowed to a negative gap: candidates back to back, accepted with p/p_max ≈ 1,
so a station with a 300 dB node loss showed ≈ 1.5·10⁴ photon-timed clicks/s per detector.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K
from labqfl.sim_backends.analysis import pair_cell_counts
from labqfl.sim_backends.stations import edit_station, ideal_detectors

from labqfl.contracts.channel_model import pair_channel


@pytest.mark.parametrize("q", [1e-18, 7e-19, 1e-19, 1e-30, 1e-100, 1e-300])
def test_guide_of_a_negligible_rate_holds_no_negative_gap(q):
    glo = np.empty(K.GUIDE, dtype=np.int64)
    ghi = np.empty(K.GUIDE, dtype=np.int64)
    K._build_guide(q, glo, ghi)
    assert glo.min() >= 0 and ghi.min() >= 0
    assert np.all(glo <= ghi)
    # every bin but the last (u up to 1: gap 0) has gaps ≥ that of u = 1 − 1/G, ≥ 10¹⁴ slots here
    assert glo[:-1].min() >= min(K.GAP_MAX, math.floor(math.log(1.0 - 1.0 / K.GUIDE) / math.log1p(-q)))
    assert glo[:-1].min() > 10**14


def test_guide_of_ordinary_rates_is_the_unclamped_floor():
    """The clamp changes nothing where the gaps fit (every rate ≥ 10⁻¹⁷ on the kernels' 0.5 % grid):
    the same tables, so the same clicks for every ordinary station."""
    glo = np.empty(K.GUIDE, dtype=np.int64)
    ghi = np.empty(K.GUIDE, dtype=np.int64)
    for q in np.exp(np.arange(math.ceil(math.log(1e-17) / K._Q_STEP), 0) * K._Q_STEP)[::97]:
        K._build_guide(float(q), glo, ghi)
        l1q = math.log1p(-float(q))
        want_lo = [math.floor(math.log((i + 1.0) / K.GUIDE) / l1q) for i in range(K.GUIDE)]
        want_hi = [math.floor(math.log(i / K.GUIDE) / l1q) for i in range(1, K.GUIDE)]
        assert glo.tolist() == want_lo
        assert ghi[1:].tolist() == want_hi


def _clicks_vs_model(edit, duration_s):
    """(observed, expected) clicks per intensity pair (k_i, k_j), the expectation from the channel
    model (:func:`labqfl.contracts.channel_model.pair_channel`, dark counts included)."""
    cfg = edit_station(edit)
    counts, n = pair_cell_counts(cfg, duration_s)
    (i, j), = cfg.pairs()
    pc = pair_channel(cfg, i, j)
    out = {}
    for ki in range(n.shape[0]):
        for kj in range(n.shape[1]):
            exp = sum(n[ki, kj, a, b] * (1.0 - pc.outcome_probabilities(ki, kj, a, b)[0])
                      for a in range(4) for b in range(4))
            out[ki, kj] = (int(counts[ki, kj, :, :, 1:].sum()), float(exp))
    return out


def _poisson_ok(obs, exp):
    return abs(obs - exp) <= 5.0 * math.sqrt(exp) + 5.0


def test_300_dB_node_loss_gives_only_dark_counts():
    def edit(d):
        ideal_detectors(d)
        d["schedule"]["pairs"] = [["C1", "C4"]]
        d["loop"]["node_loss_db"] = 300.0
        d["detectors"]["D0"]["dark_count_rate_hz"] = 2e3
        d["detectors"]["D1"]["dark_count_rate_hz"] = 2e3

    res = _clicks_vs_model(edit, 0.02)
    obs = sum(o for o, _ in res.values())
    exp = sum(e for _, e in res.values())
    assert 40 < exp < 120  # dark counts only: 2 · 2 kHz · 0.02 s of slot windows
    assert _poisson_ok(obs, exp), f"{obs} clicks, {exp:.1f} dark counts expected"


def test_negligible_dim_levels_next_to_a_bright_one_give_only_dark_counts():
    """The two-rate thinning (bright decoy, C_lo of the dim levels at q_lo ≈ 10⁻²¹): the dim-dim
    slots click with the dark counts only, the bright ones as the model says."""
    def edit(d):
        ideal_detectors(d)
        d["schedule"]["pairs"] = [["C1", "C4"]]
        d["detectors"]["D0"]["dark_count_rate_hz"] = 1e3
        d["detectors"]["D1"]["dark_count_rate_hz"] = 1e3
        for c in d["clients"]:
            c["intensities"] = [1e-20, 0.442, 0.0]

    res = _clicks_vs_model(edit, 0.02)
    for (ki, kj), (obs, exp) in res.items():
        assert _poisson_ok(obs, exp), f"k=({ki},{kj}): {obs} clicks, {exp:.1f} expected"
    assert res[0, 1][1] > 1000  # the bright cells have light
