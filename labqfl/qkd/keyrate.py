"""Station model → expected counts → predicted secure key rate, and the operating-point optimiser.

The expected statistics come from :mod:`labqfl.contracts.channel_model` (the analytical Sagnac-loop
model the simulator is checked against, detectors' dead time and afterpulsing included, dark counts
over the gate of a gated detector): for every cell (k_i, k_j, b_i, b_j) the outcome
probabilities are averaged over the two bit values of each client. The predicted key length of a
block of N slots is :func:`labqfl.qkd.estimation.secure_key_length` applied to those expected
counts, with the error-correction leakage modelled as λ_EC = f·n_X·h(Q_X) (f = ``ec_efficiency``,
default 1.1: Cascade/LDPC reach f ≈ 1.04–1.16, see docs/protocol.md §6).

Rates: ``bits_per_slot`` = ℓ/N per slot of the pair; a pair owns 1/P of the laser's slots (time
division among P scheduled pairs), so ``bits_per_second`` = ℓ/N · rep_rate / P and
``bits_per_pulse`` = ℓ/N / P per laser pulse. For a station, rep_rate is its key-carrying slot rate
(:func:`labqfl.config.fresh_slot_rate_hz`): with a Pulse Streamer duty cycle (1 fresh frame in n + 1,
``dark_frames_between = n``) the dark frames carry no key, so N counts fresh slots and the pair's key
rate is (n + 1) times lower than at the laser's rate; the laser's rate without a duty cycle.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize

from labqfl.config import StationConfig, fresh_slot_rate_hz
from labqfl.contracts.channel_model import PairChannel, model_limits, pair_channel
from labqfl.contracts.types import KEY_BASIS, KEY_INTENSITY_INDEX, PairCounts, pair_name
from labqfl.qkd.decoy import detector_fock_yields, ideal_fock_yields, phase_error_probability_bound
from labqfl.qkd.estimation import KeyLengthReport, SecurityParameters, secure_key_length
from labqfl.qkd.finite_key import binary_entropy

#: Default error-correction efficiency f (leak = f·n·h(Q)).
DEFAULT_EC_EFFICIENCY = 1.1


def expected_counts(ch: PairChannel, n_slots: float, drift_rad: float = 0.0) -> PairCounts:
    """Expected :class:`PairCounts` (float arrays) of a pair over ``n_slots`` slots.

    Per cell: clicks = N p_c (1 − P(no click)); errors (equal bases only) = D1-only for equal bits
    + D0-only for different bits + ½ double clicks (``errors_x2`` holds twice that);
    double_clicks = N p_c P(both). Bits are uniform within each basis.
    """
    ki, kj = len(ch.intensities_i), len(ch.intensities_j)
    clicks = np.zeros((ki, kj, 2, 2))
    errors_x2 = np.zeros((ki, kj, 2, 2))
    doubles = np.zeros((ki, kj, 2, 2))
    pb_i = (ch.basis_x_prob_i, 1.0 - ch.basis_x_prob_i)
    pb_j = (ch.basis_x_prob_j, 1.0 - ch.basis_x_prob_j)
    for k in range(ki):
        for l_ in range(kj):
            for bi in range(2):
                for bj in range(2):
                    pc = n_slots * ch.intensity_probs_i[k] * ch.intensity_probs_j[l_] * pb_i[bi] * pb_j[bj]
                    c = e = d = 0.0
                    for xi in range(2):
                        for xj in range(2):
                            o = ch.outcome_probabilities(k, l_, bi + 2 * xi, bj + 2 * xj, drift_rad)
                            c += 0.25 * (1.0 - o[0])
                            d += 0.25 * o[3]
                            if bi == bj:
                                e += 0.25 * ((o[2] if xi == xj else o[1]) + 0.5 * o[3])
                    clicks[k, l_, bi, bj] = pc * c
                    doubles[k, l_, bi, bj] = pc * d
                    errors_x2[k, l_, bi, bj] = 2.0 * pc * e
    return PairCounts(
        pair=pair_name(*ch.pair), n_slots=int(round(n_slots)), intensities_i=tuple(ch.intensities_i),
        intensities_j=tuple(ch.intensities_j), intensity_probs_i=tuple(ch.intensity_probs_i),
        intensity_probs_j=tuple(ch.intensity_probs_j), basis_x_prob_i=ch.basis_x_prob_i,
        basis_x_prob_j=ch.basis_x_prob_j, clicks=clicks, errors_x2=errors_x2, double_clicks=doubles,
    )


@dataclass
class KeyRatePrediction:
    """Predicted performance of one pair at one operating point and block size."""

    pair: str
    n_slots: float
    n_pairs: int
    rep_rate_hz: float
    eta_cw: float
    eta_ccw: float
    intensities_i: tuple[float, ...]
    intensities_j: tuple[float, ...]
    intensity_probs_i: tuple[float, ...]
    intensity_probs_j: tuple[float, ...]
    basis_x_prob_i: float
    basis_x_prob_j: float
    gain_key: float  # click probability per key-setting slot (Q_X at signal intensities)
    qber_key: float  # expected bit error rate of the sifted key
    sifted_per_slot: float  # sifted key bits per slot of the pair
    phase_error_upper: float
    key_bits_per_slot: float  # secure bits per slot of the pair (finite block)
    asymptotic_bits_per_slot: float
    report: KeyLengthReport

    @property
    def bits_per_pulse(self) -> float:
        """Secure bits per laser pulse (the pair owns 1/P of the pulses)."""
        return self.key_bits_per_slot / self.n_pairs

    @property
    def bits_per_second(self) -> float:
        """Secure key rate of this pair [bit/s] including the 1/P time share."""
        return self.key_bits_per_slot * self.rep_rate_hz / self.n_pairs

    @property
    def asymptotic_bits_per_second(self) -> float:
        return self.asymptotic_bits_per_slot * self.rep_rate_hz / self.n_pairs

    @property
    def acquisition_time_s(self) -> float:
        """Wall time to accumulate the block of ``n_slots`` slots for this pair [s]."""
        return self.n_slots * self.n_pairs / self.rep_rate_hz

    def as_dict(self) -> dict[str, Any]:
        return {
            "pair": self.pair, "n_slots": self.n_slots, "acquisition_time_s": self.acquisition_time_s,
            "n_pairs": self.n_pairs, "rep_rate_hz": self.rep_rate_hz, "eta_cw": self.eta_cw,
            "eta_ccw": self.eta_ccw, "intensities_i": list(self.intensities_i),
            "intensities_j": list(self.intensities_j), "intensity_probs_i": list(self.intensity_probs_i),
            "intensity_probs_j": list(self.intensity_probs_j), "basis_x_prob_i": self.basis_x_prob_i,
            "basis_x_prob_j": self.basis_x_prob_j, "gain_key": self.gain_key, "qber_key": self.qber_key,
            "sifted_per_slot": self.sifted_per_slot, "phase_error_upper": self.phase_error_upper,
            "key_bits_per_slot": self.key_bits_per_slot, "bits_per_pulse": self.bits_per_pulse,
            "bits_per_second": self.bits_per_second,
            "asymptotic_bits_per_slot": self.asymptotic_bits_per_slot,
            "asymptotic_bits_per_second": self.asymptotic_bits_per_second,
            "abort": self.report.abort, "abort_reason": self.report.abort_reason,
            "gains": self.report.gains_observed.tolist(),
            "yields_upper": self.report.yields_upper.tolist(),
        }


def _key_length_from_model(
    ch: PairChannel, n_slots: float, params: SecurityParameters, ec_efficiency: float,
) -> tuple[KeyLengthReport, float, float]:
    counts = expected_counts(ch, n_slots)
    k0, b0 = KEY_INTENSITY_INDEX, KEY_BASIS
    n_x = float(counts.clicks[k0, k0, b0, b0])
    q = float(counts.errors_x2[k0, k0, b0, b0]) / 2.0 / n_x if n_x > 0 else 0.5
    leak = int(math.ceil(ec_efficiency * n_x * binary_entropy(q)))
    rep = secure_key_length(counts, int(math.floor(n_x)), q, leak, params)
    return rep, n_x, q


def predict_pair(
    ch: PairChannel,
    n_slots: float,
    n_pairs: int,
    rep_rate_hz: float,
    params: SecurityParameters | None = None,
    ec_efficiency: float = DEFAULT_EC_EFFICIENCY,
    with_asymptotic: bool = True,
) -> KeyRatePrediction:
    """Predicted finite-block (and asymptotic) key rate of one pair from the analytical model.

    ``n_slots``: block size in slots of this pair; ``n_pairs``: P (time share 1/P);
    ``rep_rate_hz``: key-carrying slots per second (the laser repetition rate without a duty cycle;
    a station's: :func:`labqfl.config.fresh_slot_rate_hz`).
    """
    if n_slots < 1 or n_pairs < 1 or rep_rate_hz <= 0:
        raise ValueError(f"need n_slots >= 1, n_pairs >= 1, rep_rate_hz > 0; got {n_slots}, {n_pairs}, {rep_rate_hz}")
    p = params or SecurityParameters()
    rep, n_x, q = _key_length_from_model(ch, n_slots, replace(p, finite_size=True), ec_efficiency)
    asym = 0.0
    if with_asymptotic:
        rep_a, _, _ = _key_length_from_model(ch, n_slots, replace(p, finite_size=False), ec_efficiency)
        asym = max(rep_a.key_length_real, 0.0) / n_slots if not rep_a.abort else 0.0
    return KeyRatePrediction(
        pair=pair_name(*ch.pair), n_slots=float(n_slots), n_pairs=n_pairs, rep_rate_hz=rep_rate_hz,
        eta_cw=ch.eta_cw, eta_ccw=ch.eta_ccw, intensities_i=tuple(ch.intensities_i),
        intensities_j=tuple(ch.intensities_j), intensity_probs_i=tuple(ch.intensity_probs_i),
        intensity_probs_j=tuple(ch.intensity_probs_j), basis_x_prob_i=ch.basis_x_prob_i,
        basis_x_prob_j=ch.basis_x_prob_j,
        gain_key=n_x / (n_slots * rep.key_setting_prob) if rep.key_setting_prob > 0 else 0.0,
        qber_key=q, sifted_per_slot=n_x / n_slots, phase_error_upper=rep.phase_error_upper,
        key_bits_per_slot=rep.key_length_bits / n_slots, asymptotic_bits_per_slot=asym, report=rep,
    )


def ideal_decoy_asymptotic_rate(ch: PairChannel, ec_efficiency: float = DEFAULT_EC_EFFICIENCY) -> float:
    """Asymptotic CAL19 key bits per slot with exactly known Fock yields ("infinite decoys").

    Independent of the decoy LPs: the yields are those of the lossy channel with threshold
    detectors (:func:`labqfl.qkd.decoy.ideal_fock_yields`, exact for equal detector
    efficiencies), e_ph = f(Y)/Q_X (CAL19 Eqs. (20)–(21), pooled) and R = p_key·Q_X·[1 − h(e_ph) − f_EC·h(E_X)].
    Upper limit of what :func:`predict_pair` can reach with the same operating point.
    """
    counts = expected_counts(ch, 1.0)
    k0, b0 = KEY_INTENSITY_INDEX, KEY_BASIS
    n_x = float(counts.clicks[k0, k0, b0, b0])
    if n_x <= 0:
        return 0.0
    q = float(counts.errors_x2[k0, k0, b0, b0]) / 2.0 / n_x
    p_key = float(counts.expected_sent()[k0, k0, b0, b0]) / counts.n_slots
    t = ch.splitter_t
    eta_i = ch.eta_cw * (t * ch.eta_d0 + (1 - t) * ch.eta_d1)
    eta_j = ch.eta_ccw * ((1 - t) * ch.eta_d0 + t * ch.eta_d1)
    p_dark = 1.0 - (1.0 - ch.p_dark_d0) * (1.0 - ch.p_dark_d1)
    f_ph = phase_error_probability_bound(ch.intensities_i[k0], ch.intensities_j[k0], ideal_fock_yields(eta_i, eta_j, p_dark))
    e_ph = min(f_ph * p_key / n_x, 0.5)
    return max(n_x * (1.0 - binary_entropy(e_ph) - ec_efficiency * binary_entropy(q)), 0.0)


def cal19_x_basis_gain_and_error(gamma: float, omega: float = 1.0, p_dark: float = 0.0) -> tuple[float, float]:
    """CAL19's closed forms for a key (X-basis) round: (p_XX, e_X) of ONE detector.

    Curty, Azuma, Lo, npj Quantum Inf. 5, 64 (2019), arXiv:1807.07667v2, Eqs. (30)–(31):

        p_XX = ½(1 − p_d)(e^(−γΩ) + e^(γΩ))e^(−γ) − (1 − p_d)² e^(−2γ)
        e_X  = (e^(−γΩ) − (1 − p_d)e^(−γ)) / (e^(−γΩ) + e^(γΩ) − 2(1 − p_d)e^(−γ))

    p_XX: probability that only this detector clicks, averaged over both clients' bits; e_X: the
    bit error rate of those events. ``gamma`` = η_arm·μ, the mean photon number of each pulse at
    the splitter (detector efficiency included, symmetric arms); ``omega`` = Ω = cos φ cos θ, the
    interference visibility (labqfl's ``visibility`` for a 50:50 splitter); ``p_dark`` per detector.
    """
    em, ep, e1 = math.exp(-gamma * omega), math.exp(gamma * omega), math.exp(-gamma)
    p_xx = 0.5 * (1.0 - p_dark) * (em + ep) * e1 - (1.0 - p_dark) ** 2 * math.exp(-2.0 * gamma)
    den = em + ep - 2.0 * (1.0 - p_dark) * e1
    e_x = (em - (1.0 - p_dark) * e1) / den if den > 0 else 0.5
    return p_xx, e_x


def cal19_asymptotic_rate(eta_arm: float, mu: float, p_dark: float = 0.0, ec_efficiency: float = 1.0) -> float:
    """Reference: CAL19's asymptotic key rate per key-setting pulse, pure-loss channel, ideal decoys.

    R = Σ_{detector} p_XX [1 − f·h(e_X) − h(e_Z)] (CAL19 Eqs. (17)–(19); only single clicks give
    key, each detector separately), with p_XX, e_X from :func:`cal19_x_basis_gain_and_error`
    (Ω = 1) and the per-detector phase-error bound e_Z = Σ_j (Σ_{n,m≡j} c_n c_m √Y¹⁰_nm)² / p_XX
    (CAL19 Eqs. (20)–(22), c_n = √p_n(μ), with the exact per-detector yields of
    :func:`labqfl.qkd.decoy.detector_fock_yields` summed to n = 40, i.e. N_max → ∞: no tail term).
    ``eta_arm``: transmittance of each arm including detector efficiency (total loss = η_arm²).

    This is an implementation of the *paper's* formula, independent of labqfl's pooled analysis
    (all outcomes together, double clicks squashed, :func:`ideal_decoy_asymptotic_rate`); the tests
    check that the two agree within a few percent and that labqfl's is never above CAL19's.
    """
    p_xx, e_x = cal19_x_basis_gain_and_error(eta_arm * mu, 1.0, p_dark)
    if p_xx <= 0:
        return 0.0
    f_ph = phase_error_probability_bound(mu, mu, detector_fock_yields(eta_arm, eta_arm, p_dark))
    e_z = min(f_ph / p_xx, 0.5)
    return max(2.0 * p_xx * (1.0 - ec_efficiency * binary_entropy(e_x) - binary_entropy(e_z)), 0.0)


def station_params(cfg: StationConfig, params: SecurityParameters | None = None) -> SecurityParameters:
    """``params`` (default :class:`SecurityParameters`) with the station's intensity calibration uncertainty δ
    (:meth:`labqfl.config.StationConfig.intensity_rel_uncertainty`, docs/protocol.md (P10)) where it is larger:
    what the distiller analyses the station's blocks with, so the prediction uses it too."""
    return (params or SecurityParameters()).with_intensity_rel_uncertainty(cfg.intensity_rel_uncertainty())


def station_pair_channel(cfg: StationConfig, pair: tuple[str, str], extra_loss_db: float = 0.0) -> PairChannel:
    """:class:`PairChannel` of a scheduled pair with ``extra_loss_db`` added to BOTH arms.

    The extra loss models attenuation inserted in the loop next to the node (it enters
    ``node_loss_db`` and thus η_cw and η_ccw equally; the total client-to-client loss grows by
    2·extra_loss_db).
    """
    if extra_loss_db < 0:
        raise ValueError(f"extra loss must be >= 0 dB, got {extra_loss_db}")
    if extra_loss_db:
        cfg = cfg.model_copy(deep=True)
        cfg.loop.node_loss_db = cfg.loop.node_loss_db + extra_loss_db
    return pair_channel(cfg, *pair)


def predict_station(
    cfg: StationConfig,
    n_slots: float,
    pairs: Sequence[tuple[str, str]] | None = None,
    extra_loss_db: float = 0.0,
    params: SecurityParameters | None = None,
    ec_efficiency: float = DEFAULT_EC_EFFICIENCY,
) -> list[KeyRatePrediction]:
    """Predictions for the station's scheduled pairs (time share 1/P with P = all scheduled pairs), with the
    station's declared intensity uncertainty δ (:func:`station_params`).
    Warns (:class:`UserWarning`) for a station outside what the model was checked for
    (:func:`labqfl.contracts.channel_model.model_limits`)."""
    for msg in model_limits(cfg):
        warnings.warn(f"key-rate model: {msg}", UserWarning, stacklevel=2)
    params = station_params(cfg, params)
    scheduled = cfg.pairs()
    n_pairs = len(scheduled)
    sel = scheduled if pairs is None else list(pairs)
    return [
        predict_pair(station_pair_channel(cfg, pr, extra_loss_db), n_slots, n_pairs, fresh_slot_rate_hz(cfg),
                     params, ec_efficiency)
        for pr in sel
    ]


# ---------------------------------------------------------------- optimiser


@dataclass
class OptimizedOperatingPoint:
    """Result of :func:`optimize_pair`: the best settings found and their prediction."""

    prediction: KeyRatePrediction
    start_bits_per_slot: float
    evaluations: int

    def as_dict(self) -> dict[str, Any]:
        d = self.prediction.as_dict()
        d.update(start_key_bits_per_slot=self.start_bits_per_slot, evaluations=self.evaluations)
        return d


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _nelder_mead_refine(
    obj: Callable[[np.ndarray], float], x0: np.ndarray, best_val: float, maxfev: int, step: float,
) -> tuple[np.ndarray, float]:
    """Nelder–Mead from ``x0`` (objective value ``best_val`` < 0) with an axis-aligned initial
    simplex of edge ``step``; returns the better of the start and the optimiser's end point."""
    dim = x0.size
    res = minimize(obj, x0, method="Nelder-Mead",
                   options={"maxfev": maxfev, "xatol": 1e-3, "fatol": 1e-4 * -best_val,
                            "initial_simplex": x0 + np.vstack([np.zeros(dim), step * np.eye(dim)])})
    if res.fun < best_val:
        return res.x, float(res.fun)
    return x0, best_val


def _pair_grid_channels(ch: PairChannel) -> list[PairChannel]:
    """The coarse start grid of :func:`optimize_pair`: intensity-balanced operating points
    (μ_i·η_cw = μ_j·η_ccw at the splitter) over signal, decoy, probability and P(X) settings."""
    out = []
    bal = math.sqrt(ch.eta_ccw / ch.eta_cw) if ch.eta_cw > 0 and ch.eta_ccw > 0 else 1.0
    for mu, nu, (ps, pv), px in itertools.product((0.01, 0.02, 0.04), (0.1, 0.2, 0.4), ((0.9, 0.05), (0.7, 0.15)),
                                                  (0.85, 0.7)):
        out.append(replace(ch, intensities_i=(mu * bal, nu, ch.intensities_i[2]), intensities_j=(mu / bal, nu, ch.intensities_j[2]),
                           intensity_probs_i=(ps, 1 - ps - pv, pv), intensity_probs_j=(ps, 1 - ps - pv, pv),
                           basis_x_prob_i=px, basis_x_prob_j=px))
    return out


def optimize_pair(
    ch: PairChannel,
    n_slots: float,
    n_pairs: int = 1,
    rep_rate_hz: float = 1.0,
    params: SecurityParameters | None = None,
    ec_efficiency: float = DEFAULT_EC_EFFICIENCY,
    max_evaluations: int = 250,
) -> OptimizedOperatingPoint:
    """Maximise the finite-block key rate of one pair over its operating point.

    Free variables (three intensities per client: signal μ, decoy ν, vacuum 0): μ_i, μ_j, ν_i,
    ν_j (each ≤ 1; the decoy may exceed the signal: in CAL19 the key intensity is small and the
    test intensities bound the two-photon yields), the probabilities of signal and vacuum (decoy gets the rest),
    shared by both clients, and one X-basis probability per client. Asymmetric pairs get
    different μ_i, μ_j (balancing η_cw·μ_i against η_ccw·μ_j, cf. Zhong et al., PRApplied 2021,
    asymmetric TF-QKD). Nelder–Mead on unconstrained transforms, started from the channel's
    current settings; the result is never worse than the start.
    """
    p = params or SecurityParameters()
    base = ch
    if len(ch.intensities_i) != 3 or len(ch.intensities_j) != 3:
        raise ValueError("the optimiser handles three intensities per client (signal, decoy, vacuum)")

    def unpack(x: np.ndarray) -> PairChannel:
        mu_i, mu_j = min(math.exp(x[0]), 1.0), min(math.exp(x[1]), 1.0)
        nu_i, nu_j = min(math.exp(x[2]), 1.0), min(math.exp(x[3]), 1.0)
        ps = _sigmoid(x[4])
        pv = (1 - ps) * _sigmoid(x[5])
        pd = 1 - ps - pv
        return replace(
            base,
            intensities_i=(mu_i, nu_i, base.intensities_i[2]),  # the vacuum level as declared (0 or a floor)
            intensities_j=(mu_j, nu_j, base.intensities_j[2]),
            intensity_probs_i=(ps, pd, pv), intensity_probs_j=(ps, pd, pv),
            basis_x_prob_i=_sigmoid(x[6]), basis_x_prob_j=_sigmoid(x[7]),
        )

    def rate(c: PairChannel) -> float:
        rep, _, _ = _key_length_from_model(c, n_slots, p, ec_efficiency)
        return max(rep.key_length_real, 0.0) / n_slots if not rep.abort else 0.0

    def encode(c: PairChannel) -> np.ndarray:
        mi, mj, pi_ = c.intensities_i, c.intensities_j, c.intensity_probs_i
        return np.array([
            math.log(max(mi[0], 1e-4)), math.log(max(mj[0], 1e-4)),
            math.log(max(mi[1], 1e-4)), math.log(max(mj[1], 1e-4)),
            _logit(pi_[0]), _logit(pi_[2] / max(1 - pi_[0], 1e-9)),
            _logit(c.basis_x_prob_i), _logit(c.basis_x_prob_j),
        ])

    n_eval = 0

    def obj(x: np.ndarray) -> float:
        nonlocal n_eval
        n_eval += 1
        return -rate(unpack(x))

    start = rate(ch)
    # coarse start: the given point and a grid of intensity-balanced operating points
    # (μ_i·η_cw = μ_j·η_ccw at the splitter), keep the best. The grid spends more on test rounds
    # than a long-block operating point does: for small blocks or high loss the given point often
    # yields no key at all, and Nelder–Mead cannot leave a flat zero region.
    cands = [encode(ch)] + [encode(c) for c in _pair_grid_channels(ch)]
    vals = [obj(x) for x in cands]
    x0 = cands[int(np.argmin(vals))]
    best_val = min(vals)
    if best_val < 0:
        x0, best_val = _nelder_mead_refine(obj, x0, best_val, max_evaluations, 0.25)
    best = unpack(x0) if -best_val > start else ch
    pred = predict_pair(best, n_slots, n_pairs, rep_rate_hz, p, ec_efficiency)
    return OptimizedOperatingPoint(prediction=pred, start_bits_per_slot=start, evaluations=n_eval)


# ---------------------------------------------------------------- station-wide operating point


@dataclass
class OptimizedStation:
    """Result of :func:`optimize_station`: the station with the best operating point found,
    the per-pair predictions before and after, and the number of model evaluations."""

    config: StationConfig
    before: list[KeyRatePrediction]
    after: list[KeyRatePrediction]
    evaluations: int

    @property
    def min_bits_per_second_before(self) -> float:
        return min(p.bits_per_second for p in self.before)

    @property
    def min_bits_per_second_after(self) -> float:
        return min(p.bits_per_second for p in self.after)


def station_with_operating_point(
    cfg: StationConfig, signal: dict[str, float], decoy: float, probs: tuple[float, float, float], basis_x_prob: float,
) -> StationConfig:
    """Copy of ``cfg`` with every client at intensities (signal[c], decoy, its own vacuum level: its third
    intensity, 0 if it has none), probabilities ``probs`` (signal, decoy, vacuum) and P(X) = ``basis_x_prob``."""
    out = cfg.model_copy(deep=True)
    for c in out.clients:
        c.intensities = [float(signal[c.name]), float(decoy), float(c.intensities[2]) if len(c.intensities) > 2 else 0.0]
        c.intensity_probs = [float(x) for x in probs]
        c.basis_x_prob = float(basis_x_prob)
    return StationConfig.model_validate(out.model_dump())


@dataclass(frozen=True)
class _StationProbs:
    """The shared probabilities of :func:`optimize_station` as unconstrained variables, with floors.

    (p_signal, p_decoy, p_vacuum) and P(X) map to three reals (a, b, x): with F = 1 − d_min,
    p_signal = F·σ(a), p_vacuum = (F − p_signal)·σ(b), p_decoy = 1 − p_signal − p_vacuum ≥ d_min,
    and P(X) = (1 − y_min)·σ(x). Every real triple gives p_decoy ≥ d_min and P(Y) = 1 − P(X) ≥ y_min,
    so Nelder–Mead searches the constrained set without penalties; with floors 0 the map is the
    one used before the floors existed (p_signal = σ(a), p_vacuum = (1 − σ(a))σ(b), P(X) = σ(x)).
    """

    min_decoy_prob: float = 0.0
    min_y_prob: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_decoy_prob < 1.0 and 0.0 <= self.min_y_prob < 0.5):  # NaN fails too
            raise ValueError(f"need 0 <= min_decoy_prob < 1 and 0 <= min_y_prob < 0.5, got "
                             f"{self.min_decoy_prob}, {self.min_y_prob}")

    def feasible(self, cfg: StationConfig) -> StationConfig:
        """``cfg`` if every client honours the floors, else ``cfg`` with the first client's
        probabilities and P(X) projected onto them (:meth:`project`) for all clients."""
        if all(self.honours(c.intensity_probs, c.basis_x_prob) for c in cfg.clients):
            return cfg
        c0 = cfg.clients[0]
        return station_with_operating_point(cfg, {c.name: c.intensities[0] for c in cfg.clients}, c0.intensities[1],
                                            *self.project(c0.intensity_probs, c0.basis_x_prob))

    def decode(self, a: float, b: float, x: float) -> tuple[tuple[float, float, float], float]:
        free = 1.0 - self.min_decoy_prob
        ps = free * _sigmoid(a)
        pv = (free - ps) * _sigmoid(b)
        return (ps, 1.0 - ps - pv, pv), (1.0 - self.min_y_prob) * _sigmoid(x)

    def project(self, probs: Sequence[float], basis_x_prob: float) -> tuple[tuple[float, float, float], float]:
        """The nearest point honouring the floors: a decoy probability below its floor is raised to it
        at the expense of the signal (then the vacuum), P(X) lowered to 1 − y_min."""
        ps, pd, pv = (float(v) for v in probs)
        short = max(self.min_decoy_prob - pd, 0.0)
        take = min(short, ps)
        ps, pd, pv = ps - take, pd + take, pv - (short - take)
        return (ps, pd, pv), min(float(basis_x_prob), 1.0 - self.min_y_prob)

    def encode(self, probs: Sequence[float], basis_x_prob: float) -> tuple[float, float, float]:
        (ps, _pd, pv), px = self.project(probs, basis_x_prob)
        free = 1.0 - self.min_decoy_prob
        return (_logit(ps / free) if free > 0 else 0.0, _logit(pv / max(free - ps, 1e-9)),
                _logit(px / (1.0 - self.min_y_prob)))

    def honours(self, probs: Sequence[float], basis_x_prob: float) -> bool:
        return probs[1] >= self.min_decoy_prob and 1.0 - basis_x_prob >= self.min_y_prob


def _station_decoy_candidates(x_given: np.ndarray, nc: int, floors: _StationProbs, basis_x_prob: float) -> list[np.ndarray]:
    """Start points of :func:`optimize_station` besides the given one: decoy settings for the
    block size (with few slots a weak, rarely sent decoy bounds nothing). With a floor on the decoy
    probability also a weak decoy ν = 0.05: where the decoy LP bounds no yield (short blocks) a
    decoy sent anyway costs least when weak (fewer clicks, less dead time after it)."""
    cands = []
    nus = (0.05, 0.2, 0.4) if floors.min_decoy_prob > 0 else (0.2, 0.4)
    for nu, (pd, pv) in itertools.product(nus, ((0.015, 0.14), (0.03, 0.1))):
        x = x_given.copy()
        x[nc] = math.log(nu)
        x[nc + 1], x[nc + 2], x[nc + 3] = floors.encode((1 - pd - pv, pd, pv), basis_x_prob)
        cands.append(x)
    return cands


def _check_station_levels(cfg: StationConfig) -> None:
    """ValueError naming the client unless every client has intensities [signal, decoy, vacuum level below the
    signal] (:func:`optimize_station`)."""
    for c in cfg.clients:
        if len(c.intensities) != 3 or not c.intensities[2] < c.intensities[0]:
            raise ValueError(f"client {c.name}: the station optimiser handles intensities [signal, decoy, vacuum "
                             f"level below the signal], got {c.intensities}")


def optimize_station(
    cfg: StationConfig,
    n_slots: float,
    params: SecurityParameters | None = None,
    ec_efficiency: float = DEFAULT_EC_EFFICIENCY,
    max_evaluations: int = 200,
    progress: Any = None,
    min_decoy_prob: float = 0.0,
    min_y_prob: float = 0.0,
) -> OptimizedStation:
    """Maximise the *smallest* predicted finite-block key rate over the station's scheduled pairs.

    A client's settings serve all its pairs (it is Ci in some and Cj in others), so the pairs
    cannot be optimised one by one (:func:`optimize_pair`). Free variables: one signal intensity
    per client, and, shared by all clients, the decoy intensity, the probabilities of signal and
    vacuum (decoy gets the rest) and P(X). Three intensities per client (signal, decoy, vacuum level:
    0 or a modulator's declared extinction floor, kept as declared). Starts from the given point and a small
    grid of decoy settings, then Nelder–Mead on unconstrained transforms (log, logit); the result is never
    worse than the start, and a decoy below a tenth of the brightest signal is warned about
    (:func:`weak_decoy_note`). ``progress``: optional callable(evaluations_done, max_evaluations).

    ``min_decoy_prob`` / ``min_y_prob``: floors on the decoy probability and on P(Y) = 1 − P(X)
    (default 0: unconstrained). For short blocks the unconstrained optimum sends practically no
    decoy and no Y-basis rounds (docs/station.md, "The main job's 10 s"); the floors keep both in
    use. A given point below a floor is first projected onto it (:meth:`_StationProbs.project`):
    the result honours the floors and is never worse than that projected start.
    """
    floors = _StationProbs(float(min_decoy_prob), float(min_y_prob))
    p = station_params(cfg, params)
    names = cfg.client_names
    _check_station_levels(cfg)
    pairs = cfg.pairs()
    nc = len(names)

    def unpack(x: np.ndarray) -> StationConfig:
        sig = {n: min(math.exp(x[i]), 1.0) for i, n in enumerate(names)}
        probs, px = floors.decode(x[nc + 1], x[nc + 2], x[nc + 3])
        return station_with_operating_point(cfg, sig, min(math.exp(x[nc]), 1.0), probs, px)

    def encode(c: StationConfig) -> np.ndarray:
        c0 = c.clients[0]
        return np.array([math.log(max(cl.intensities[0], 1e-4)) for cl in c.clients]
                        + [math.log(max(c0.intensities[1], 1e-4)),
                           *floors.encode(c0.intensity_probs, c0.basis_x_prob)])

    n_eval = 0

    def min_rate(c: StationConfig) -> float:
        best = math.inf
        for pr in pairs:
            rep_, _, _ = _key_length_from_model(pair_channel(c, *pr), n_slots, p, ec_efficiency)
            r = max(rep_.key_length_real, 0.0) / n_slots if not rep_.abort else 0.0
            best = min(best, r)
            if best <= 0:
                break
        return best

    def obj(x: np.ndarray) -> float:
        nonlocal n_eval
        n_eval += 1
        if progress is not None:
            progress(n_eval, max_evaluations)
        return -min_rate(unpack(x))

    start_cfg = floors.feasible(cfg)
    start = min_rate(start_cfg)
    x_given = encode(start_cfg)
    cands = [x_given] + _station_decoy_candidates(x_given, nc, floors, start_cfg.clients[0].basis_x_prob)
    vals = [obj(x) for x in cands]
    x0 = cands[int(np.argmin(vals))]
    best_val = min(vals)
    budget = max_evaluations - n_eval
    if best_val < 0 and budget > 0:
        x0, best_val = _nelder_mead_refine(obj, x0, best_val, budget, 0.2)
    best = unpack(x0) if -best_val > start else start_cfg
    if note := weak_decoy_note(best):
        warnings.warn(note, UserWarning, stacklevel=2)
    before = predict_station(cfg, n_slots, params=p, ec_efficiency=ec_efficiency)
    after = predict_station(best, n_slots, params=p, ec_efficiency=ec_efficiency)
    return OptimizedStation(config=best, before=before, after=after, evaluations=n_eval)


#: A decoy below this fraction of the brightest signal is "a second vacuum" (review s36 physics F4)
WEAK_DECOY_RATIO = 0.1


def weak_decoy_note(cfg: StationConfig) -> str:
    """A warning when a client's decoy (intensity index 1) is below :data:`WEAK_DECOY_RATIO` × the brightest
    signal of the station, else "". The station optimiser with ``min_decoy_prob`` keeps the decoy *sent* but not
    distinguishable: for the 10 s block it returned ν = 0.0017 against μ ≈ 0.026, whose X-basis test rounds
    click 65–82 times per block (docs/station.md); the floor constrains the probability only."""
    top = max(c.intensities[0] for c in cfg.clients)
    weak = sorted({c.name for c in cfg.clients if len(c.intensities) > 1 and c.intensities[1] < WEAK_DECOY_RATIO * top})
    if not weak:
        return ""
    nu = min(cfg.client(n).intensities[1] for n in weak)
    return (f"decoy intensity {nu:.3g} of {', '.join(weak)} is below {WEAK_DECOY_RATIO:g} x the brightest signal "
            f"({top:.3g}): a second vacuum rather than a decoy (its test rounds hardly click); --min-decoy-prob "
            "constrains how often the decoy is sent, not its intensity. Set the decoy by hand if the test rounds "
            "should measure something (docs/station.md, 'Operating point')")
