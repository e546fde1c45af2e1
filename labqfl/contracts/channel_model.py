"""Analytical model of the Sagnac loop: transmittances per pair and click probabilities per slot.

This is *the* model that the Monte-Carlo simulator is checked against and that the key-rate
analysis uses (BRIEF "The testbed being modelled"; the coherent-state single-photon-interference
model of Lucamarini et al., Nature 557, 400 (2018), Methods, with a beam splitter of transmission t
and visibility V, and the MDI-type detector model of Xu, Curty, Qi, Lo, NJP 15, 113007 (2013)).

Geometry (clients C1..CK in loop order, ``segments_km[m]`` joins node→C1 for m=0, Cm→Cm+1, CK→node
for m=K). For the pair (Ci, Cj), i before j, client i modulates the clockwise (CW) pulse and client
j the counter-clockwise (CCW) one. Mean photon numbers ``mu`` are defined *leaving the client*
towards the node, so only the path behind the modulating client counts:

* η_cw(i)  = 10^(−[α·Σ_{m≥i} L_m + Σ_{m>i} IL_m + node_loss]/10)   (Ci → … → CK → node)
* η_ccw(j) = 10^(−[α·Σ_{m<j} L_m + Σ_{m<j} IL_m + node_loss]/10)   (Cj → … → C1 → node)

At the splitter (transmission t) with A = η_cw μ_i, B = η_ccw μ_j and phase difference
δ = φ_i − φ_j (+ residual loop drift), the two outputs carry Poisson-distributed photon numbers
with means

* m0 = η_D0 · [t·A + (1−t)·B + 2V·√(t(1−t)AB)·cos δ]   (D0: constructive for δ = 0)
* m1 = η_D1 · [(1−t)·A + t·B − 2V·√(t(1−t)AB)·cos δ]

and each detector clicks independently with p = 1 − (1 − p_dark)·e^(−m) (:meth:`PairChannel.click_probabilities`,
before dead time and afterpulsing; for t = 1/2, η_D0 = η_D1 = 1 this is the BRIEF's
η(μ_i + μ_j ± 2V√(μ_iμ_j)cos δ)/2). p_dark is the dark-count rate times the detector's window: the
whole slot 1/rep_rate for a free-running detector, the gate width for a gated one (the same
windows as the slotting, :meth:`labqfl.qkd.slotting.SlottingParams.from_config`).

:meth:`PairChannel.outcome_probabilities` then applies the detectors' dead time and afterpulsing,
as the simulator's detector kernel does (``sim_backends/_kernels.detector_kernel``):

* **Dead time** (non-paralysable, τ): a detection blinds the detector for τ from the photon's
  arrival. A photon's arrival spreads around its pulse's time by the pulse's width and the laser's
  timing jitter (σ_a² = σ_laser² + (FWHM_pulse/2.3548)²), so the photon of the k-th slot after a
  click is blocked with probability P(k·T + Δ < τ) = Φ((τ − k·T)/σ_Δ), Δ the difference of the
  two arrivals, σ_Δ = √2·σ_a (:func:`arrival_jitter_s`). The detector's own timing jitter
  (read-out noise, the signal's path along the nanowire) shifts the recorded time, not the
  recovery, and does not enter; the simulator draws both this way
  (``sim_backends/_kernels.detector_kernel``; docs/simulator.md "Dead time near a multiple of the
  period"). A click then
  blocks on average n_b = Σ_{k≥1} Φ((τ − k·T)/σ_Δ) later slots (:func:`blocked_slots`):
  ⌈τ/T⌉ − 1 away from the edges and smooth across τ = k·T (2.5 at 30.00 ns and 100 MHz, 2.63 at
  30.01 ns; the step it replaces jumped from 2 to 3 there, and a calibrated τ a hair above 30 ns
  cost ≈ 2 % of the key, review s34). The settings of the slots are independent, so detector d is
  live in a fraction L_d = 1/(1 + n_b·c̄_d) of the slots (renewal: after a click n_b slots are
  dead on average, then the detector is live; exact in the mean when at most one slot is partly
  blocked, σ_Δ ≪ T), c̄_d its mean per-slot click probability over the pair's settings while
  live, and in a cell P(D0 only) = p₀L₀(1 − p₁L₁), P(both) = p₀L₀·p₁L₁, … (the detectors are
  independent). Checked against the simulator per cell at 100 MHz and at 1 GHz (n_b = 2.5 and
  29.5 with τ = 30 ns), and the partly blocked slot's live fraction at τ = 29.9 … 30.1 ns
  (tests/contracts/test_channel_model_detectors.py, test_dead_time_edge.py). Dark counts fall
  anywhere in the window, so a dark count's n_b is off by at most one slot: negligible at the
  stations' dark rates.
* **Afterpulsing** (probability P per click, at t + τ + Exp(τ_ap)): an approximation. Afterpulses
  land in later slots whose settings are independent of the parent click's, so they act as an
  extra dark count of a_d = P·g_d·r_d per slot on detector d (r_d its clicks per slot, afterpulses
  included: the cascade r/(1 − P); g_d the fraction of the slot the window covers, for a gated
  detector gate/T), in the wrong port half the time. Checked against the simulator at P = 5, 20
  and 50 % (τ_ap = 100 ns, 100 MHz; QBER 3.46/11.81/26.81 % simulated against 3.44/11.82/26.73 %)
  and for a gated detector at P = 10 %, τ_ap = 100 ns (1.67 % against 1.70 %). It needs the
  afterpulses spread over many slots for a gated detector: with τ_ap = 2 ns they pile up in the
  gate 3 slots later (QBER 2.48 % against 1.70 %). :func:`model_limits` lists a station outside
  what was checked (P above :data:`AFTERPULSE_MODEL_MAX`, or a gated detector with
  τ_ap < :data:`GATED_AFTERPULSE_MIN_DECAY_SLOTS` slots), and keyrate and the block-size rule warn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from labqfl.config import StationConfig
from labqfl.instruments.interfaces import PHASE_ALPHABET_RAD

#: Largest afterpulse probability (per detector) at which the model's afterpulse approximation was
#: checked against the simulator (QBER within 1 %); above it keyrate and the block-size rule warn.
AFTERPULSE_MODEL_MAX = 0.5
#: A gated detector's afterpulses must spread over this many slots (τ_ap ≥ 10·T) for the model's
#: uniform landing (fraction gate/T in the gate) to hold.
GATED_AFTERPULSE_MIN_DECAY_SLOTS = 10.0


def _db(x: float) -> float:
    return 10.0 ** (-x / 10.0)


@dataclass(frozen=True)
class PairChannel:
    """Everything the analytical model needs for one pair, derived from a station config."""

    pair: tuple[str, str]
    eta_cw: float  # transmittance from client i (CW) to the splitter
    eta_ccw: float  # transmittance from client j (CCW) to the splitter
    eta_d0: float
    eta_d1: float
    p_dark_d0: float  # dark-click probability per slot window
    p_dark_d1: float
    splitter_t: float
    visibility: float
    intensities_i: tuple[float, ...]
    intensities_j: tuple[float, ...]
    intensity_probs_i: tuple[float, ...]
    intensity_probs_j: tuple[float, ...]
    basis_x_prob_i: float
    basis_x_prob_j: float
    # detector memory (module docstring): slots a click blocks (on average, :func:`blocked_slots`),
    # afterpulse probability per click and the fraction of afterpulses that land in the detector's window
    blocked_slots_d0: float = 0.0
    blocked_slots_d1: float = 0.0
    afterpulse_d0: float = 0.0
    afterpulse_d1: float = 0.0
    afterpulse_window_d0: float = 1.0
    afterpulse_window_d1: float = 1.0

    def mean_photons(self, mu_i: float, mu_j: float, delta_rad: float) -> tuple[float, float]:
        """Mean photon numbers (m0, m1) reaching D0 and D1 (after detector efficiency)."""
        A, B, t, V = self.eta_cw * mu_i, self.eta_ccw * mu_j, self.splitter_t, self.visibility
        cross = 2.0 * V * math.sqrt(t * (1.0 - t) * A * B) * math.cos(delta_rad)
        m0 = self.eta_d0 * (t * A + (1.0 - t) * B + cross)
        m1 = self.eta_d1 * ((1.0 - t) * A + t * B - cross)
        return max(m0, 0.0), max(m1, 0.0)

    def click_probabilities(self, mu_i: float, mu_j: float, delta_rad: float) -> tuple[float, float]:
        """Per-slot click probabilities (p0, p1) of D0 and D1 (independent for coherent states),
        before dead time and afterpulsing."""
        m0, m1 = self.mean_photons(mu_i, mu_j, delta_rad)
        p0 = 1.0 - (1.0 - self.p_dark_d0) * math.exp(-m0)
        p1 = 1.0 - (1.0 - self.p_dark_d1) * math.exp(-m1)
        return p0, p1

    def _mean_click_probabilities(self) -> tuple[float, float]:
        """Mean per-slot (p0, p1) over the pair's settings (intensities, bases, bits)."""
        m0 = m1 = 0.0
        for ki, wi in enumerate(self.intensity_probs_i):
            for kj, wj in enumerate(self.intensity_probs_j):
                for ai in range(4):
                    for aj in range(4):
                        w = wi * wj * 0.25 * (self.basis_x_prob_i if ai % 2 == 0 else 1.0 - self.basis_x_prob_i) \
                            * (self.basis_x_prob_j if aj % 2 == 0 else 1.0 - self.basis_x_prob_j)
                        if w == 0.0:
                            continue
                        delta = float(PHASE_ALPHABET_RAD[ai] - PHASE_ALPHABET_RAD[aj])
                        p0, p1 = self.click_probabilities(self.intensities_i[ki], self.intensities_j[kj], delta)
                        m0 += w * p0
                        m1 += w * p1
        return m0, m1

    @cached_property
    def detector_memory(self) -> tuple[float, float, float, float]:
        """(L₀, L₁, a₀, a₁): live fractions and afterpulse probabilities per slot of D0 and D1
        (module docstring); (1, 1, 0, 0) for detectors without dead time and afterpulsing."""
        nb = (self.blocked_slots_d0, self.blocked_slots_d1)
        ap = (self.afterpulse_d0 * self.afterpulse_window_d0, self.afterpulse_d1 * self.afterpulse_window_d1)
        if nb == (0, 0) and ap == (0.0, 0.0):
            return 1.0, 1.0, 0.0, 0.0
        pbar = self._mean_click_probabilities()
        live, after = [1.0, 1.0], [0.0, 0.0]
        for d in range(2):
            a = 0.0
            for _ in range(200):  # fixed point a = P·g·r(a), a contraction with factor < P·g
                p = 1.0 - (1.0 - pbar[d]) * (1.0 - a)
                lv = 1.0 / (1.0 + nb[d] * p)
                a_new = ap[d] * lv * p
                if abs(a_new - a) <= 1e-15:
                    a = a_new
                    break
                a = a_new
            p = 1.0 - (1.0 - pbar[d]) * (1.0 - a)
            live[d], after[d] = 1.0 / (1.0 + nb[d] * p), a
        return live[0], live[1], after[0], after[1]

    def outcome_probabilities(self, k_i: int, k_j: int, a_i: int, a_j: int, drift_rad: float = 0.0) -> np.ndarray:
        """P(no click), P(only D0), P(only D1), P(both) for intensity indices and phase indices,
        with the detectors' dead time and afterpulsing (:attr:`detector_memory`)."""
        delta = float(PHASE_ALPHABET_RAD[a_i] - PHASE_ALPHABET_RAD[a_j]) + drift_rad
        p0, p1 = self.click_probabilities(self.intensities_i[k_i], self.intensities_j[k_j], delta)
        l0, l1, ap0, ap1 = self.detector_memory
        p0 = l0 * (1.0 - (1.0 - p0) * (1.0 - ap0))
        p1 = l1 * (1.0 - (1.0 - p1) * (1.0 - ap1))
        return np.array([(1 - p0) * (1 - p1), p0 * (1 - p1), (1 - p0) * p1, p0 * p1])


def transmittances(cfg: StationConfig, i: str, j: str) -> tuple[float, float]:
    """(η_cw(i), η_ccw(j)) for the pair (Ci, Cj); see module docstring for the path sums."""
    names = cfg.client_names
    ii, jj = names.index(i) + 1, names.index(j) + 1  # 1-based positions on the loop
    if ii >= jj:
        raise ValueError(f"pair ({i}, {j}) must list the client that comes first on the loop first")
    seg, a, L = cfg.loop.segments_km, cfg.loop.fiber_loss_db_per_km, cfg.loop
    il = [c.insertion_loss_db for c in cfg.clients]  # il[m-1] is client m
    cw_db = a * sum(seg[ii:]) + sum(il[m - 1] for m in range(ii + 1, len(names) + 1)) + L.node_loss_db
    ccw_db = a * sum(seg[:jj]) + sum(il[m - 1] for m in range(1, jj)) + L.node_loss_db
    return _db(cw_db), _db(ccw_db)


def blocked_slots(dead_time_s: float, period_s: float, jitter_s: float = 0.0) -> float:
    """Mean number of slots after a click's slot that the dead time τ blocks: Σ_{k≥1} P(k·T + Δ < τ)
    with Δ ~ N(0, ``jitter_s``²) the difference of the two photons' arrival offsets (module docstring;
    √2·:func:`arrival_jitter_s`). Without jitter the step #{k ≥ 1 : k·T < τ} = ⌈τ/T⌉ − 1 (a pulse
    arriving exactly when the detector recovers is detected); with it the slot at the edge counts
    with Φ((τ − k·T)/σ_Δ), 2.5 at τ = 3T."""
    if not (math.isfinite(dead_time_s) and math.isfinite(jitter_s) and math.isfinite(period_s) and period_s > 0):
        raise ValueError(f"blocked_slots needs finite times and a positive period, got dead time {dead_time_s!r} s, "
                         f"period {period_s!r} s, jitter {jitter_s!r} s")
    if dead_time_s <= 0:
        return 0.0
    if jitter_s <= 0:
        return float(max(math.ceil(dead_time_s / period_s - 1e-9) - 1, 0))
    if jitter_s > BLOCKED_SLOTS_SUM_MAX_SIGMA_SLOTS * period_s:
        return _blocked_slots_wide_jitter(dead_time_s, period_s, jitter_s)
    # slots further than 10 σ_Δ from τ count 1 (k·T < τ) or 0: Φ(±10) differs from 1, 0 by < 1e-23
    k_lo = max(math.floor((dead_time_s - 10.0 * jitter_s) / period_s), 0)  # every k ≤ k_lo is blocked
    k_hi = math.ceil((dead_time_s + 10.0 * jitter_s) / period_s)
    edge = sum(0.5 * math.erfc(-(dead_time_s - k * period_s) / (jitter_s * math.sqrt(2.0)))
               for k in range(k_lo + 1, k_hi + 1))
    return float(k_lo) + edge


# Above this σ_Δ/T the edge sum of blocked_slots (20·σ_Δ/T terms) is replaced by its Euler–Maclaurin closed form,
# whose first neglected term is O((T/σ_Δ)³) < 1e-12 here: the sum stays at most ~2·10⁵ terms, and a jitter of any
# size (review s36 input F1: 1e30 ps looped for ever) costs O(1).
BLOCKED_SLOTS_SUM_MAX_SIGMA_SLOTS = 1e4


def _blocked_slots_wide_jitter(tau: float, period: float, sigma: float) -> float:
    """Σ_{k≥1} Φ((τ − k·T)/σ) for σ ≫ T by the Euler–Maclaurin formula (Abramowitz & Stegun 23.1.30) on
    f(x) = Φ((τ − x)/σ): Σ_{k≥1} f(kT) = (1/T)∫₀^∞ f dx − f(0)/2 − (T/12)·f'(0) + O((T/σ)³), with
    ∫₀^∞ f dx = σ·(a·Φ(a) + φ(a)), a = τ/σ (∫_{−∞}^{a} Φ(u) du = a·Φ(a) + φ(a)) and f'(0) = −φ(a)/σ."""
    a = tau / sigma
    cdf = 0.5 * math.erfc(-a / math.sqrt(2.0))
    pdf = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return (sigma / period) * (a * cdf + pdf) - 0.5 * cdf + period * pdf / (12.0 * sigma)


def arrival_jitter_s(cfg: StationConfig) -> float:
    """RMS spread of a photon's arrival time around its pulse's [s]: the laser's timing jitter and the
    pulse's width (FWHM/2.3548 for a Gaussian pulse) in quadrature, as the simulator draws it
    (``sim_backends.testbed.SagnacTestbed._detector_params``, ``_kernels._arrival_part``)."""
    return math.hypot(cfg.laser.timing_jitter_ps, cfg.laser.pulse_width_ps / 2.3548) * 1e-12


def detector_window_s(cfg: StationConfig, detector: str, window_s: float | None = None) -> float:
    """The window per slot in which a detector's clicks count: ``window_s`` (default the whole slot,
    1/rep_rate), or the gate width if shorter for a gated detector (as the slotting does)."""
    w = (1.0 / cfg.laser.rep_rate_hz) if window_s is None else window_s
    det = cfg.detectors[detector]
    return min(w, det.gate_width_ns * 1e-9) if det.gated else w


def model_limits(cfg: StationConfig) -> list[str]:
    """What the analytical model does not cover on this station (empty: nothing known)."""
    out = []
    period_ns = 1e9 / cfg.laser.rep_rate_hz
    for name in ("D0", "D1"):
        det = cfg.detectors[name]
        p = det.afterpulse_prob
        if p > AFTERPULSE_MODEL_MAX:
            out.append(f"detector {name}: afterpulse probability {p:g} is above {AFTERPULSE_MODEL_MAX:g}, the "
                       "largest at which the model's afterpulse approximation was checked against the simulator; "
                       "the predicted QBER, key rate and block sizes may be wrong")
        elif p > 0 and det.gated and det.afterpulse_decay_ns < GATED_AFTERPULSE_MIN_DECAY_SLOTS * period_ns:
            out.append(f"detector {name}: gated with afterpulse decay {det.afterpulse_decay_ns:g} ns, shorter than "
                       f"{GATED_AFTERPULSE_MIN_DECAY_SLOTS:g} slots: afterpulses pile up in later gates and the "
                       "model underestimates them (QBER, key rate and block sizes optimistic)")
    return out


def pair_channel(cfg: StationConfig, i: str, j: str, window_s: float | None = None) -> PairChannel:
    """The :class:`PairChannel` of pair (Ci, Cj).

    ``window_s`` is the acceptance window per slot used to turn dark-count *rates* into per-slot
    probabilities (default: the whole slot, 1/rep_rate; a gated detector's window is its gate
    width if shorter, :func:`detector_window_s`). Dead time and afterpulsing come from the
    detectors' settings (module docstring).
    """
    period = 1.0 / cfg.laser.rep_rate_hz
    w0, w1 = detector_window_s(cfg, "D0", window_s), detector_window_s(cfg, "D1", window_s)
    eta_cw, eta_ccw = transmittances(cfg, i, j)
    d0, d1 = cfg.detectors["D0"], cfg.detectors["D1"]
    ci, cj = cfg.client(i), cfg.client(j)
    sig_delta = math.sqrt(2.0) * arrival_jitter_s(cfg)  # the two arrivals' difference (module docstring)
    return PairChannel(
        pair=(i, j), eta_cw=eta_cw, eta_ccw=eta_ccw, eta_d0=d0.efficiency, eta_d1=d1.efficiency,
        p_dark_d0=-math.expm1(-d0.dark_count_rate_hz * w0), p_dark_d1=-math.expm1(-d1.dark_count_rate_hz * w1),
        splitter_t=cfg.loop.beam_splitter_ratio, visibility=cfg.loop.visibility,
        intensities_i=tuple(ci.intensities), intensities_j=tuple(cj.intensities),
        intensity_probs_i=tuple(ci.intensity_probs), intensity_probs_j=tuple(cj.intensity_probs),
        basis_x_prob_i=ci.basis_x_prob, basis_x_prob_j=cj.basis_x_prob,
        blocked_slots_d0=blocked_slots(d0.dead_time_ns * 1e-9, period, sig_delta),
        blocked_slots_d1=blocked_slots(d1.dead_time_ns * 1e-9, period, sig_delta),
        afterpulse_d0=d0.afterpulse_prob, afterpulse_d1=d1.afterpulse_prob,
        afterpulse_window_d0=min(w0 / period, 1.0), afterpulse_window_d1=min(w1 / period, 1.0),
    )
