"""The analytical model's detector memory (dead time, afterpulsing) and gated windows against the
simulator (review s31, findings F1–F3; labqfl.contracts.channel_model module docstring).

Per (intensity pair, phase pair) the simulated outcomes (none / D0 only / D1 only / both) are
compared with ``PairChannel.outcome_probabilities`` by a Pearson chi-square; the same counts also
reject the model without the correction, so each test can tell the two apart.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from labqfl.sim_backends.analysis import pair_cell_counts
from labqfl.sim_backends.stations import edit_station, ideal_detectors
from scipy import stats

from labqfl.config import LoopConfig
from labqfl.contracts.channel_model import PairChannel, blocked_slots, model_limits, pair_channel
from labqfl.contracts.types import PairCounts
from labqfl.physics import loop_delay_ps
from labqfl.qkd.blocksize import rule_slots
from labqfl.qkd.estimation import SecurityParameters, secure_key_length
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.keyrate import expected_counts


def _expected(ch: PairChannel, n: np.ndarray) -> np.ndarray:
    e = np.zeros(n.shape + (4,))
    for idx in itertools.product(*(range(x) for x in n.shape)):
        e[idx] = n[idx] * ch.outcome_probabilities(*idx)
    return e


def _chi2_p(counts: np.ndarray, e: np.ndarray) -> tuple[float, int, float]:
    m = e[..., 1:] >= 10
    c2 = float((((counts[..., 1:] - e[..., 1:])[m] ** 2) / e[..., 1:][m]).sum())
    return c2, int(m.sum()), float(stats.chi2.sf(c2, int(m.sum())))


def _key_qber(c: np.ndarray) -> float:
    """QBER of the sig-sig X cell from outcome counts per phase combo (doubles count half)."""
    x = (0, 2)
    err = sum(c[0, 0, a, b, 2 if a == b else 1] + 0.5 * c[0, 0, a, b, 3] for a in x for b in x)
    return float(err / sum(c[0, 0, a, b, 1:].sum() for a in x for b in x))


def _no_memory(ch: PairChannel) -> PairChannel:
    return dataclasses.replace(ch, blocked_slots_d0=0, blocked_slots_d1=0, afterpulse_d0=0.0, afterpulse_d1=0.0)


def _one_ghz(d: dict) -> None:
    d["schedule"]["pairs"] = [["C1", "C4"]]
    d["laser"]["rep_rate_hz"] = 1e9


def _gated(d: dict) -> None:  # gated SPADs, 1 ns gate centred on the pulses, 1e5 Hz darks
    ideal_detectors(d)
    d["schedule"]["pairs"] = [["C1", "C2"]]
    tl = round(loop_delay_ps(LoopConfig(**d["loop"])))
    for det in d["detectors"].values():
        det.update(kind="spad", gated=True, gate_width_ns=1.0, gate_delay_ps=float(tl % 10000) - 500.0,
                   dark_count_rate_hz=1e5)


def test_blocked_slots_follow_the_kernels_rule():
    assert blocked_slots(30e-9, 10e-9) == 2  # 100 MHz without jitter: the click at +30 ns is live again
    assert blocked_slots(30e-9, 1e-9) == 29
    assert blocked_slots(25e-9, 10e-9) == 2 and blocked_slots(5e-9, 10e-9) == 0 and blocked_slots(0.0, 1e-9) == 0
    ch = pair_channel(edit_station(_one_ghz), "C1", "C4")  # with jitter the pulse at exactly +τ is blocked half the time
    assert (ch.blocked_slots_d0, ch.blocked_slots_d1) == (pytest.approx(29.5), pytest.approx(29.5))


def test_dead_time_at_1ghz_agrees_with_the_simulator():
    """Default station at 1 GHz, 30 ns dead time (29.5 blocked slots): −18 % clicks (−24 % and −42 % doubles
    with the bright decoy ν = 0.442 embedded until 2026-12-07; the weak decoy since clicks less)."""
    cfg = edit_station(_one_ghz)
    counts, n = pair_cell_counts(cfg, 0.04)
    ch = pair_channel(cfg, "C1", "C4")
    l0, l1, _, _ = ch.detector_memory
    assert 0.81 < l0 < 0.84 and 0.81 < l1 < 0.84
    c2, dof, p = _chi2_p(counts, _expected(ch, n))
    assert dof > 100 and p > 1e-3, f"chi2 {c2:.1f}/{dof}"
    for x in (1, 2, 3):  # D0 only, D1 only, both: within 4 sd of the model
        e = _expected(ch, n)[..., x].sum()
        assert abs(counts[..., x].sum() - e) < 4 * math.sqrt(e)
    _, _, p_old = _chi2_p(counts, _expected(_no_memory(ch), n))
    assert p_old < 1e-30  # the model without dead time is far off


def test_gated_detectors_count_darks_over_the_gate():
    cfg = edit_station(_gated)
    ch = pair_channel(cfg, "C1", "C2")
    assert ch.p_dark_d0 == pytest.approx(1e5 * 1e-9, rel=1e-4)  # the gate, not the 10 ns slot
    counts, n = pair_cell_counts(cfg, 0.1)
    e = _expected(ch, n)
    c2, dof, p = _chi2_p(counts, e)
    assert p > 1e-3, f"chi2 {c2:.1f}/{dof}"
    assert _key_qber(counts) == pytest.approx(_key_qber(e), rel=0.1)
    slot_window = pair_channel(cfg, "C1", "C2", window_s=1e-8)  # a window longer than the gate changes nothing
    assert slot_window.p_dark_d0 == ch.p_dark_d0


def test_afterpulsing_agrees_with_the_simulator():
    """5 % afterpulses (100 ns decay) on the default station raise the QBER from 0.5 % to 3.5 %."""
    def edit(d: dict) -> None:
        d["schedule"]["pairs"] = [["C1", "C4"]]
        for det in d["detectors"].values():
            det.update(afterpulse_prob=0.05, afterpulse_decay_ns=100.0)

    cfg = edit_station(edit)
    counts, n = pair_cell_counts(cfg, 0.2)
    ch = pair_channel(cfg, "C1", "C4")
    e = _expected(ch, n)
    c2, dof, p = _chi2_p(counts, e)
    assert p > 1e-3, f"chi2 {c2:.1f}/{dof}"
    q_obs, q_model = _key_qber(counts), _key_qber(e)
    assert q_model == pytest.approx(q_obs, rel=0.1) and q_obs > 0.025
    assert _key_qber(_expected(_no_memory(ch), n)) < 0.01
    assert not model_limits(cfg)


def test_model_limits_warn_outside_the_checked_range():
    def edit(d: dict) -> None:
        d["detectors"]["D0"].update(afterpulse_prob=0.6)
        d["detectors"]["D1"].update(gated=True, afterpulse_prob=0.05, afterpulse_decay_ns=2.0)

    cfg = edit_station(edit)
    lim = model_limits(cfg)
    assert len(lim) == 2 and "D0" in lim[0] and "D1" in lim[1]
    assert not model_limits(edit_station(lambda d: None))
    with pytest.warns(UserWarning, match="afterpulse"):
        rule_slots(cfg, "-".join(cfg.pairs()[0]))


def test_rule_block_gives_key_at_1ghz():
    """A block of the rule's size at 1 GHz gives key (every such block aborted before the model had
    dead time), and about the model's amount."""
    cfg = edit_station(_one_ghz)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n_rule = rule_slots(cfg, "C1-C4")
    ch = pair_channel(cfg, "C1", "C4")
    period = 1e12 / cfg.laser.rep_rate_hz
    pad = int(math.ceil((SagnacTestbed(cfg).loop_delay_ps + 10_000) / period)) + 2
    counts, n = pair_cell_counts(cfg, (n_rule + pad + 10) / cfg.laser.rep_rate_hz)
    ki, kj = n.shape[:2]
    clicks, err2, dbl = (np.zeros((ki, kj, 2, 2), dtype=np.int64) for _ in range(3))
    for ai, aj in itertools.product(range(4), range(4)):
        bi, bj, o = ai % 2, aj % 2, counts[:, :, ai, aj, :]
        clicks[:, :, bi, bj] += o[..., 1:].sum(-1)
        dbl[:, :, bi, bj] += o[..., 3]
        if bi == bj:
            err2[:, :, bi, bj] += 2 * (o[..., 2] if ai == aj else o[..., 1]) + o[..., 3]
    obs = PairCounts(pair="C1-C4", n_slots=int(n.sum()), intensities_i=ch.intensities_i,
                     intensities_j=ch.intensities_j, intensity_probs_i=ch.intensity_probs_i,
                     intensity_probs_j=ch.intensity_probs_j, basis_x_prob_i=ch.basis_x_prob_i,
                     basis_x_prob_j=ch.basis_x_prob_j, clicks=clicks, errors_x2=err2, double_clicks=dbl)

    def key(c: PairCounts) -> int:
        nx = float(c.clicks[0, 0, 0, 0])
        q = float(c.errors_x2[0, 0, 0, 0]) / 2 / nx
        rep = secure_key_length(c, int(nx), q, int(math.ceil(1.1 * nx * binary_entropy(q))), SecurityParameters())
        assert not rep.abort, rep.abort_reason
        return rep.key_length_bits

    k_obs, k_model = key(obs), key(expected_counts(ch, n.sum()))
    assert k_obs > 1024 and abs(k_obs - k_model) < 0.25 * k_model, (k_obs, k_model)
