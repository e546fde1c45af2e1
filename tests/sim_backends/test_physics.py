"""Monte-Carlo vs the analytical model (labqfl.contracts.channel_model), with explicit statistical bounds.

For every (intensity pair, phase pair) of a pair, the observed outcome frequencies
(none / D0 only / D1 only / both) are compared with ``PairChannel.outcome_probabilities``:
a Pearson chi-square over all cells (p > 1e-4) and per-combination z-scores of the gain and of
the error rate (|z| < 5).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from labqfl.sim_backends.analysis import pair_cell_counts
from labqfl.sim_backends.stations import edit_station as station
from labqfl.sim_backends.stations import ideal_detectors
from scipy import stats

from labqfl.config import StationConfig
from labqfl.contracts.channel_model import pair_channel


def check_against_model(cfg: StationConfig, counts: np.ndarray, n: np.ndarray) -> None:
    (i, j), = cfg.pairs()
    pc = pair_channel(cfg, i, j)
    chi2, dof = 0.0, 0
    for ki, kj, ai, aj in itertools.product(*(range(x) for x in n.shape)):
        N = n[ki, kj, ai, aj]
        if N < 200:
            continue
        p = pc.outcome_probabilities(ki, kj, ai, aj)
        obs = counts[ki, kj, ai, aj]
        exp = N * p
        cells = exp >= 10
        if cells.sum() >= 2:
            chi2 += float((((obs - exp) ** 2) / exp)[cells].sum())
            dof += int(cells.sum()) - 1
        # gain (any click)
        g = 1 - p[0]
        if N * g >= 10:
            z = (obs[1:].sum() - N * g) / math.sqrt(N * g * (1 - g))
            assert abs(z) < 5, f"gain z={z:.2f} for k=({ki},{kj}) a=({ai},{aj})"
        # error rate for equal bases (D1 clicks on equal bits, D0 on different bits; doubles half)
        if ai % 2 == aj % 2 and N * g >= 50:
            wrong = 2 if ai == aj else 1
            e_p = (p[wrong] + 0.5 * p[3]) / g
            clicks = obs[1:].sum()
            e_obs = (obs[wrong] + 0.5 * obs[3]) / clicks
            z = (e_obs - e_p) / math.sqrt(max(e_p * (1 - e_p), 1e-12) / clicks + 0.25 * p[3] / g / clicks)
            assert abs(z) < 5, f"error-rate z={z:.2f} for k=({ki},{kj}) a=({ai},{aj})"
    assert dof > 50
    pval = stats.chi2.sf(chi2, dof)
    assert pval > 1e-4, f"chi2={chi2:.1f} dof={dof} p={pval:.2g}"


def _point_default(d):
    ideal_detectors(d)
    d["schedule"]["pairs"] = [["C1", "C2"]]


def _point_bright_asymmetric(d):
    ideal_detectors(d)
    d["schedule"]["pairs"] = [["C2", "C4"]]
    d["loop"]["beam_splitter_ratio"] = 0.45
    d["loop"]["visibility"] = 0.9
    d["detectors"]["D0"]["efficiency"] = 0.6
    d["detectors"]["D1"]["efficiency"] = 0.9
    d["detectors"]["D0"]["dark_count_rate_hz"] = 2e5
    d["detectors"]["D1"]["dark_count_rate_hz"] = 5e4
    for c in d["clients"]:
        c["intensities"] = [0.4, 0.1, 0.01]
        c["intensity_probs"] = [0.5, 0.3, 0.2]
        c["basis_x_prob"] = 0.5


def _point_lossy_fast(d):
    ideal_detectors(d)
    d["schedule"]["pairs"] = [["C1", "C4"]]
    d["laser"]["rep_rate_hz"] = 1.25e9
    d["loop"]["node_loss_db"] = 4.0
    d["loop"]["visibility"] = 0.97
    for c in d["clients"]:
        c["intensities"] = [0.3, 0.05, 0.0]
        c["intensity_probs"] = [0.6, 0.2, 0.2]
        c["basis_x_prob"] = 0.6


@pytest.mark.parametrize("edit,duration", [(_point_default, 0.04), (_point_bright_asymmetric, 0.02),
                                           (_point_lossy_fast, 0.006)],
                         ids=["default", "bright-asymmetric-darks", "1.25GHz-lossy"])
def test_outcomes_agree_with_channel_model(edit, duration):
    cfg = station(edit)
    counts, n = pair_cell_counts(cfg, duration)
    check_against_model(cfg, counts, n)


def test_intercept_resend_raises_error_rate_as_predicted():
    def edit(d):
        _point_bright_asymmetric(d)
        d["loop"]["visibility"] = 0.99
        d["loop"]["beam_splitter_ratio"] = 0.5
        d["detectors"]["D0"]["dark_count_rate_hz"] = 100.0
        d["detectors"]["D1"]["dark_count_rate_hz"] = 100.0
        d["simulation"]["intercept_resend"] = {"enabled": True, "client": "C2", "fraction": 0.6}

    cfg = station(edit)
    counts, n = pair_cell_counts(cfg, 0.02)
    pc = pair_channel(cfg, "C2", "C4")
    f = 0.6
    # Eve measures C2's phase in a random basis; a wrong basis resends a uniformly random phase
    # of the other basis at the same intensity: P = (1 − f/2)·P(a_i) + (f/4)·Σ_{a' ∉ basis(a_i)} P(a')
    err_obs = err_exp = err_noeve = clicks = 0.0
    for ki, kj, ai, aj in itertools.product(range(3), range(3), range(4), range(4)):
        if ai % 2 != aj % 2 or ki != kj:
            continue
        other = [b for b in range(4) if b % 2 != ai % 2]
        p = (1 - f / 2) * pc.outcome_probabilities(ki, kj, ai, aj) + (f / 4) * sum(
            pc.outcome_probabilities(ki, kj, b, aj) for b in other)
        p0 = pc.outcome_probabilities(ki, kj, ai, aj)
        wrong = 2 if ai == aj else 1
        N = n[ki, kj, ai, aj]
        obs = counts[ki, kj, ai, aj]
        err_obs += obs[wrong] + 0.5 * obs[3]
        clicks += obs[1:].sum()
        err_exp += N * (p[wrong] + 0.5 * p[3])
        err_noeve += N * (p0[wrong] + 0.5 * p0[3])
    assert err_obs > 3 * err_noeve  # the attack is visible
    z = (err_obs - err_exp) / math.sqrt(err_exp)
    assert abs(z) < 5, f"z={z:.2f}: observed {err_obs} errors, predicted {err_exp:.0f}"
    assert 0.1 < err_obs / clicks < 0.3
