"""The first block's QBER estimate (labqfl.qkd.twoparty.PairEndI.qber_estimate without a previous
block): the key cell's QBER predicted from the public test cells through the channel model, not the
decoy–decoy cell's error rate as it is, which with a bright decoy (ν = 0.442, the 10^9-slot operating point
the default station had until 2026-12-07) on C1-C2 and C3-C4 is 2.7–3× the key cell's (equal decoys
leaving the clients arrive unequal at the splitter; docs/postprocessing.md §3). The default station's
decoy is weak since then (ν = 0.05, docs/station.md): the estimate is checked on it too."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from labqfl.config import load_station_config
from labqfl.contracts.channel_model import PairChannel, pair_channel
from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import PairCounts
from labqfl.qkd.authentication import BitPool
from labqfl.qkd.first_qber import key_qber_from_tests
from labqfl.qkd.sifting import ClientSetup
from labqfl.qkd.twoparty import PairEndI, ProtocolSettings


class _Log:
    """A modulation log that is never read: the estimate uses the counts only."""

    def __init__(self, client: str) -> None:
        self.client = client

    def choices(self, slots: np.ndarray):  # pragma: no cover - not called
        raise AssertionError("the QBER estimate must not read the modulation log")


def _model_counts(ch: PairChannel, pair: str, n_slots: int, rng: np.random.Generator | None = None) -> PairCounts:
    """PairCounts of ``n_slots`` slots as the channel model predicts them (expected values, or a
    Poisson draw per outcome with ``rng``), and the key cell's true QBER."""
    shape = (len(ch.intensities_i), len(ch.intensities_j), 2, 2)
    clicks, errors_x2, doubles = (np.zeros(shape, np.int64) for _ in range(3))
    pi, pj = np.asarray(ch.intensity_probs_i), np.asarray(ch.intensity_probs_j)
    bx = (ch.basis_x_prob_i, 1 - ch.basis_x_prob_i), (ch.basis_x_prob_j, 1 - ch.basis_x_prob_j)
    for ki, kj, ai, aj in itertools.product(range(shape[0]), range(shape[1]), range(4), range(4)):
        bi, bj = ai % 2, aj % 2
        sent = n_slots * pi[ki] * pj[kj] * bx[0][bi] * bx[1][bj] / 4  # bits uniform
        p = ch.outcome_probabilities(ki, kj, ai, aj) * sent  # none, D0, D1, both
        d0, d1, both = (rng.poisson(p[1:]) if rng is not None else np.rint(p[1:])).astype(np.int64)
        clicks[ki, kj, bi, bj] += d0 + d1 + both
        doubles[ki, kj, bi, bj] += both
        if bi == bj:  # D1 is wrong for equal bits, D0 for different ones; a double click is half an error
            errors_x2[ki, kj, bi, bj] += 2 * (d1 if ai == aj else d0) + both
    return PairCounts(pair, n_slots, ch.intensities_i, ch.intensities_j, ch.intensity_probs_i, ch.intensity_probs_j,
                      ch.basis_x_prob_i, ch.basis_x_prob_j, clicks, errors_x2, doubles)


def _key_qber(ch: PairChannel) -> float:
    """The key cell's (signal, signal, X, X) QBER of the model."""
    err = tot = 0.0
    for ai, aj in itertools.product((0, 2), (0, 2)):
        p = ch.outcome_probabilities(0, 0, ai, aj)
        tot += p[1] + p[2] + p[3]
        err += (p[2] if ai == aj else p[1]) + p[3] / 2
    return err / tot


def _first_block_estimate(cfg, pair: str, counts: PairCounts | None, settings: ProtocolSettings) -> float:
    ci, cj = pair.split("-")
    end = PairEndI(pair, _Log(ci), ClientSetup.from_config(cfg.client(ci)), ClientSetup.from_config(cfg.client(cj)),
                   settings, BitPool(), schedule=PairSchedule.from_config(cfg))
    assert end.last_qber is None  # the first block: no previous block's QBER
    if counts is not None:
        end._add_counts(counts)
    return end.qber_estimate()


#: The 10^9-slot operating point's intensities (docs/station.md), the station this module was written about.
BRIGHT_DECOY = {"C1": [0.0294, 0.442, 0.0], "C2": [0.0216, 0.442, 0.0], "C3": [0.0203, 0.442, 0.0],
                "C4": [0.0294, 0.442, 0.0]}


@pytest.fixture(scope="module")
def cfg():
    """The default station with the bright decoy of the 10^9-slot point (its probabilities 0.891/0.024/0.085,
    P(X) 0.967), where the decoy cell is no proxy for the key cell."""
    c = load_station_config()
    for cl in c.clients:
        cl.intensities = list(BRIGHT_DECOY[cl.name])
        cl.intensity_probs = [0.891, 0.024, 0.085]
        cl.basis_x_prob = 0.967
    return c


@pytest.mark.parametrize("pair", ["C1-C2", "C1-C3", "C1-C4"])
def test_first_block_estimate_on_the_embedded_station_is_the_key_cells_qber(pair):
    """The embedded station (weak decoy since 2026-12-07; C1-C2's key signals arrive at 0.79 of each
    other at the splitter, C1-C4's balanced): the model's estimate from 10^9 slots is the key cell's QBER."""
    emb = load_station_config()
    ch = dataclasses.replace(pair_channel(emb, *pair.split("-")), visibility=0.97)
    counts = _model_counts(ch, pair, 10**9)
    q_key = _key_qber(ch)
    est = _first_block_estimate(emb, pair, counts, ProtocolSettings(engine="ldpc"))
    assert est == pytest.approx(q_key, rel=0.2)
    assert key_qber_from_tests(counts, sigmas=0) == pytest.approx(q_key, rel=0.02)


# C1-C2: equal decoys arrive with A/B = 0.66 at the splitter; C1-C4: balanced (control)
@pytest.mark.parametrize("pair", ["C1-C2", "C3-C4", "C1-C4"])
def test_first_block_estimate_is_the_key_cells_qber_not_the_decoy_cells(cfg, pair):
    ch = pair_channel(cfg, *pair.split("-"))
    # a visibility of 0.97 lifts the QBERs above the 0.5 % floor, so the clip does not decide the test
    ch = dataclasses.replace(ch, visibility=0.97)
    counts = _model_counts(ch, pair, 10**9)
    q_key = _key_qber(ch)
    clicks, errs_x2 = counts.matched_test_counts(bases=(0,))
    q_decoy = errs_x2 / 2 / clicks
    if pair != "C1-C4":
        assert q_decoy > 1.5 * q_key  # the station this is about: the decoy cell is no proxy
    est = _first_block_estimate(cfg, pair, counts, ProtocolSettings(engine="ldpc"))
    assert est == pytest.approx(q_key, rel=0.2)
    assert key_qber_from_tests(counts, sigmas=0) == pytest.approx(q_key, rel=0.02)  # the model itself: unbiased


def test_first_block_estimate_at_a_3_s_blocks_statistics(cfg):
    """Sampled counts of a 3 s first block (5e7 slots, ~400 decoy–decoy errors at V = 0.97): the
    model's estimate lies within 30 % of the key cell's QBER (2.5 sd: its spread is ±12 % there,
    mean +0.1 % over 40 seeds, ~±24 % at V = 0.99; seed 0 gives +20.4 % since the model has the
    detectors' dead time), the decoy cell's rate does not; the conservative margin (one
    standard deviation of the decoy cell's error count) only raises it, by less than 20 %."""
    ch = dataclasses.replace(pair_channel(cfg, "C1", "C2"), visibility=0.97)
    q_key = _key_qber(ch)
    for seed in range(3):
        counts = _model_counts(ch, "C1-C2", 50_000_000, np.random.default_rng(seed))
        clicks, errs_x2 = counts.matched_test_counts(bases=(0,))
        assert errs_x2 / 2 / clicks > 1.5 * q_key
        q0, q1 = key_qber_from_tests(counts, sigmas=0), key_qber_from_tests(counts)
        assert q0 is not None and q1 is not None
        assert q0 == pytest.approx(q_key, rel=0.3), seed
        assert q0 < q1 < 1.2 * q0, seed


def test_fallbacks(cfg):
    pair = "C1-C2"
    ch = pair_channel(cfg, "C1", "C2")
    s = ProtocolSettings(engine="ldpc", qber_default=0.031)
    # no counts, or fewer than 200 matched test clicks: the default
    assert _first_block_estimate(cfg, pair, None, s) == 0.031
    few = _model_counts(ch, pair, 200_000)
    assert few.matched_test_counts(bases=(0,))[0] < 200
    assert key_qber_from_tests(few) is None
    assert _first_block_estimate(cfg, pair, few, s) == 0.031
    # no vacuum intensity (the one-sided cells that measure the arrival means): the matched cells' rate as it is
    counts = _model_counts(ch, pair, 10**8)
    no_vac = dataclasses.replace(counts, intensities_i=(0.0294, 0.442, 0.01), intensities_j=(0.0216, 0.442, 0.01))
    clicks, errs_x2 = no_vac.matched_test_counts(bases=(0,))
    assert key_qber_from_tests(no_vac) == pytest.approx(errs_x2 / 2 / clicks)
    # the clip to [floor, 0.25] holds
    bad = dataclasses.replace(counts, errors_x2=counts.errors_x2 * 0 + counts.clicks)  # every test click an error
    assert _first_block_estimate(cfg, pair, bad, s) == 0.25
    clean = dataclasses.replace(counts, errors_x2=counts.errors_x2 * 0)
    assert _first_block_estimate(cfg, pair, clean, s) == s.qber_floor
