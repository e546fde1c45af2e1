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

and each detector clicks independently with p = 1 − (1 − p_dark)·e^(−m), before dead time and
afterpulsing (for t = 1/2, η_D0 = η_D1 = 1 this is the BRIEF's η(μ_i + μ_j ± 2V√(μ_iμ_j)cos δ)/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from labqfl.config import StationConfig
from labqfl.instruments.interfaces import PHASE_ALPHABET_RAD


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

    def mean_photons(self, mu_i: float, mu_j: float, delta_rad: float) -> tuple[float, float]:
        """Mean photon numbers (m0, m1) reaching D0 and D1 (after detector efficiency)."""
        A, B, t, V = self.eta_cw * mu_i, self.eta_ccw * mu_j, self.splitter_t, self.visibility
        cross = 2.0 * V * math.sqrt(t * (1.0 - t) * A * B) * math.cos(delta_rad)
        m0 = self.eta_d0 * (t * A + (1.0 - t) * B + cross)
        m1 = self.eta_d1 * ((1.0 - t) * A + t * B - cross)
        return max(m0, 0.0), max(m1, 0.0)

    def click_probabilities(self, mu_i: float, mu_j: float, delta_rad: float) -> tuple[float, float]:
        """Per-slot click probabilities (p0, p1) of D0 and D1 (independent for coherent states)."""
        m0, m1 = self.mean_photons(mu_i, mu_j, delta_rad)
        p0 = 1.0 - (1.0 - self.p_dark_d0) * math.exp(-m0)
        p1 = 1.0 - (1.0 - self.p_dark_d1) * math.exp(-m1)
        return p0, p1

    def outcome_probabilities(self, k_i: int, k_j: int, a_i: int, a_j: int, drift_rad: float = 0.0) -> np.ndarray:
        """P(no click), P(only D0), P(only D1), P(both) for intensity indices and phase indices."""
        delta = float(PHASE_ALPHABET_RAD[a_i] - PHASE_ALPHABET_RAD[a_j]) + drift_rad
        p0, p1 = self.click_probabilities(self.intensities_i[k_i], self.intensities_j[k_j], delta)
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


def pair_channel(cfg: StationConfig, i: str, j: str, window_s: float | None = None) -> PairChannel:
    """The :class:`PairChannel` of pair (Ci, Cj).

    ``window_s`` is the acceptance window per slot used to turn dark-count *rates* into per-slot
    probabilities (default: the whole slot, 1/rep_rate).
    """
    w = (1.0 / cfg.laser.rep_rate_hz) if window_s is None else window_s
    eta_cw, eta_ccw = transmittances(cfg, i, j)
    d0, d1 = cfg.detectors["D0"], cfg.detectors["D1"]
    ci, cj = cfg.client(i), cfg.client(j)
    return PairChannel(
        pair=(i, j), eta_cw=eta_cw, eta_ccw=eta_ccw, eta_d0=d0.efficiency, eta_d1=d1.efficiency,
        p_dark_d0=-math.expm1(-d0.dark_count_rate_hz * w), p_dark_d1=-math.expm1(-d1.dark_count_rate_hz * w),
        splitter_t=cfg.loop.beam_splitter_ratio, visibility=cfg.loop.visibility,
        intensities_i=tuple(ci.intensities), intensities_j=tuple(cj.intensities),
        intensity_probs_i=tuple(ci.intensity_probs), intensity_probs_j=tuple(cj.intensity_probs),
        basis_x_prob_i=ci.basis_x_prob, basis_x_prob_j=cj.basis_x_prob,
    )
