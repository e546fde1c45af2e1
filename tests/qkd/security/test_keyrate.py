"""Station model, published limits of CAL19, the default operating point and the optimiser."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from labqfl.contracts.channel_model import PairChannel
from labqfl.qkd.keyrate import (
    expected_counts,
    ideal_decoy_asymptotic_rate,
    optimize_pair,
    predict_pair,
    predict_station,
    station_pair_channel,
)

PAPER_RATE_BPS = 32.8e3  # QuNetQFL (arXiv 2501.12709): key rate per pair of the four-client network
REALISTIC_BLOCK = 1e10  # slots per pair = 600 s of acquisition at 100 MHz shared by 6 pairs


def _pure_loss(eta_arm: float, mu: float) -> PairChannel:
    """Loss-only channel: ideal detectors, no dark counts, V = 1, all slots key slots."""
    return PairChannel(("A", "B"), eta_arm, eta_arm, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0, (mu, 0.1, 0.0), (mu, 0.1, 0.0),
                       (1.0, 0.0, 0.0), (1.0, 0.0, 0.0), 1 - 1e-12, 1 - 1e-12)


def _best_ideal_rate(loss_total_db: float) -> tuple[float, float]:
    eta = 10 ** (-loss_total_db / 20)
    r = minimize_scalar(lambda lm: -ideal_decoy_asymptotic_rate(_pure_loss(eta, math.exp(lm))),
                        bounds=(math.log(1e-3), math.log(0.5)), method="bounded", options={"xatol": 1e-4})
    return -float(r.fun), math.exp(float(r.x))


def test_expected_counts_match_channel_model(channel_factory: Any) -> None:
    ch = channel_factory()
    c = expected_counts(ch, 1e6)
    sent = c.expected_sent()
    assert np.isclose(sent.sum(), 1e6)
    o = np.mean([ch.outcome_probabilities(0, 0, a, b) for a in (0, 2) for b in (0, 2)], axis=0)
    assert np.isclose(c.clicks[0, 0, 0, 0], sent[0, 0, 0, 0] * (1 - o[0]))
    # equal X phases → D0 (no error); QBER of the key ≈ (1 − V)/2 plus dark counts
    q = c.errors_x2[0, 0, 0, 0] / 2 / c.clicks[0, 0, 0, 0]
    assert 0.004 < q < 0.007


def test_cal19_square_root_scaling_and_plob_crossing() -> None:
    """Published limits of CAL19 (npj QI 5, 64 (2019)): with ideal decoys in a pure-loss channel
    the key rate scales as √η (square-root improvement over point-to-point), and it beats the
    PLOB bound −log2(1 − η) (Pirandola et al., Nat. Commun. 8, 15043 (2017)) at high loss."""
    rates = {L: _best_ideal_rate(L) for L in (40.0, 50.0, 60.0, 70.0)}
    for L, (R, mu) in rates.items():
        assert 0.03 < mu < 0.08  # small optimal signal intensity, as in CAL19's simulations
        plob = -math.log2(1 - 10 ** (-L / 10))
        assert R > plob
    # slope -1/2 in log-log: 10 dB more total loss → rate / √10
    for a, b in ((40.0, 50.0), (50.0, 60.0), (60.0, 70.0)):
        assert rates[a][0] / rates[b][0] == pytest.approx(math.sqrt(10), rel=0.03)
    # R/√η tends to a constant (≈ 0.039 bit per pulse for this model)
    c = [rates[L][0] / 10 ** (-L / 20) for L in (50.0, 60.0, 70.0)]
    assert max(c) / min(c) < 1.01
    # at low loss the point-to-point bound wins (the crossing lies between 20 and 40 dB)
    assert _best_ideal_rate(20.0)[0] < -math.log2(1 - 10 ** (-2.0))


def test_lp_asymptotic_rate_approaches_ideal_decoy_rate(channel_factory: Any) -> None:
    """With several decoy intensities the LP-based asymptotic rate is close to the infinite-decoy one."""
    ch = channel_factory(0.3, 0.3, p_dark=1e-7)
    ch = replace(ch, intensities_i=(0.03, 0.01, 0.05, 0.1, 0.0), intensities_j=(0.03, 0.01, 0.05, 0.1, 0.0),
                 intensity_probs_i=(0.6, 0.1, 0.1, 0.1, 0.1), intensity_probs_j=(0.6, 0.1, 0.1, 0.1, 0.1))
    ideal = ideal_decoy_asymptotic_rate(ch)
    lp = predict_pair(ch, 1e12, 1, 1.0).asymptotic_bits_per_slot
    assert 0.85 * ideal < lp <= ideal * (1 + 1e-6)


def test_default_station_meets_paper_rate(station: Any) -> None:
    preds = predict_station(station, REALISTIC_BLOCK)
    assert len(preds) == 6
    for p in preds:
        assert not p.report.abort, p.pair
        assert p.bits_per_second >= PAPER_RATE_BPS, (p.pair, p.bits_per_second)
        assert p.acquisition_time_s == pytest.approx(600.0)


def test_extra_loss_lowers_station_rate(station: Any) -> None:
    a = predict_station(station, REALISTIC_BLOCK, pairs=[("C1", "C4")])[0]
    b = predict_station(station, REALISTIC_BLOCK, pairs=[("C1", "C4")], extra_loss_db=3.0)[0]
    assert b.eta_cw == pytest.approx(a.eta_cw * 10 ** -0.3)
    assert b.bits_per_second < a.bits_per_second
    with pytest.raises(ValueError):
        station_pair_channel(station, ("C1", "C4"), -1.0)


def test_optimizer_improves_asymmetric_pair(channel_factory: Any) -> None:
    ch = channel_factory(0.4, 0.1, mu=(0.03, 0.1, 0.0))  # 6 dB asymmetry
    start = predict_pair(ch, 1e10, 1, 1.0, with_asymptotic=False)
    opt = optimize_pair(ch, 1e10, max_evaluations=60)
    p = opt.prediction
    assert p.key_bits_per_slot >= start.key_bits_per_slot
    assert p.key_bits_per_slot > 1.05 * start.key_bits_per_slot
    # the weaker arm gets the stronger signal
    assert p.intensities_j[0] > p.intensities_i[0]


def test_optimizer_finds_key_where_the_given_point_has_none(channel_factory: Any) -> None:
    # 35 dB total loss (17.5 dB per arm), block 10^10: the default long-block point (μ 0.03, ν 0.1,
    # 0.9/0.05/0.05) cannot bound the phase error; more test rounds and a larger decoy can
    eta = 10 ** (-35 / 20)
    ch = channel_factory(eta, eta, mu=(0.03, 0.1, 0.0))
    assert predict_pair(ch, 1e10, 1, 1.0, with_asymptotic=False).key_bits_per_slot == 0.0
    opt = optimize_pair(ch, 1e10, max_evaluations=20)
    assert opt.prediction.key_bits_per_slot > 0.0 and not opt.prediction.report.abort
