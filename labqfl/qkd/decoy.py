"""Decoy-state bounds for the four-phase testbed and the Curty–Azuma–Lo phase-error bound.

Notation (docs/protocol.md §4):

* ``Y_nm`` — yield of the Fock state |n⟩_i|m⟩_j: probability that the node announces a click
  (outcome 1, 2 or 3) when client i sends n photons and client j sends m photons. Eve's
  measurement does not depend on the setting, so the same Y_nm govern test and key rounds.
* Test rounds are randomised over only the **four phases** a·π/2. Averaged uniformly over the four
  phases (labqfl reweights the announced basis cells to a uniform average, see
  :mod:`labqfl.qkd.estimation`), a coherent state of mean photon number μ becomes

      ρ_μ = Σ_{r=0..3} P_r(μ) |λ_r(μ)⟩⟨λ_r(μ)|,   P_r(μ) = Σ_{n ≡ r (mod 4)} e^(−μ) μⁿ/n!,

  with |λ_r(μ)⟩ ∝ Σ_{n ≡ r (mod 4)} μ^(n/2)/√n! |n⟩ ("pseudo-Fock" states, Cao, Zhang, Lo, Ma,
  New J. Phys. 17, 053014 (2015); Currás-Lorenzo, Wooltorton, Razavi, arXiv:2008.03222 (2021)). They are not
  Fock states: |λ_r⟩ = √(1−T_r)|r⟩ + √T_r|rest⟩ with T_r(μ) = 1 − p_r(μ)/P_r(μ) ≈ μ⁴/((r+4)!/r!).
  labqfl does **not** approximate them by Fock states. For any 0 ≤ M ≤ 1 and a product state
  |ψ⟩ = √(1−T)|rs⟩ + √T|φ⟩ (|φ⟩ ⊥ |rs⟩), with Y = ⟨rs|M|rs⟩, the exact range of ⟨ψ|M|ψ⟩ is

      g_T(Y) ≤ ⟨ψ|M|ψ⟩ ≤ h_T(Y),
      g_T(Y) = (max(0, √(Y(1−T)) − √((1−Y)T)))²,                       (cos²(arccos√Y + arcsin√T))
      h_T(Y) = Y + T(1−2Y) + 2√(T(1−T)Y(1−Y))  (Y ≤ 1−T; else 1)        (cos²(arccos√Y − arcsin√T))

  (proof: only the 2×2 block of M on span{|rs⟩, |φ⟩} matters; 0 ≤ M ≤ 1 bounds its off-diagonal
  element by √(Y w) and √((1−Y)(1−w)) with w = ⟨φ|M|φ⟩; minimising/maximising over w gives the
  rank-one projectors, which attain both ends). g_T is convex and h_T concave in Y, so every
  tangent line is a valid *linear* bound, and tangents stay valid for slot-averaged yields under
  coherent attacks (the constraints are linear in the per-round yields). labqfl imposes tangents
  at a menu of yield guesses (``SLACK_GUESSES_*``) plus the crude constant slack T + 2√T; the LP
  uses the tightest. The simpler Cauchy–Schwarz form |⟨ψ|M|ψ⟩ − Y| ≤ T + 2√(TY) also holds (it
  dominates both ends) but is loose on the lower side. This treatment is labqfl's own; it reduces
  to the usual decoy constraints when T → 0 (continuous phase randomisation).

* Phase-error bound (Curty, Azuma, Lo, npj Quantum Inf. 5, 64 (2019), arXiv:1807.07667v2 Eqs. (20)–(22); its finite
  version, Currás-Lorenzo et al., npj Quantum Inf. 7, 22 (2021)): in a key round both clients
  send |±√μ⟩; in the virtual protocol the ancilla Z-values equal the photon-number parities, and a
  phase error is a click with *equal* parities. With Poisson weights p_n(μ) and M ≥ 0,

      Pr[click ∧ phase error | key setting] ≤ Σ_{par ∈ {even, odd}} ( Σ_{n,m ≡ par} √(p_n(μ_i) p_m(μ_j) Y_nm) )²,

  summed over both announcements: per-detector yields are replaced by the total click yield,
  which is valid by the triangle inequality in ℝ² (Σ_j (Σ w√Y^j)² ≤ (Σ w√(ΣY^j))²) and tight
  for a symmetric splitter. The function is concave in Y, so for coherent attacks the bound
  holds for the slot-averaged yields Ȳ = (1/N)Σ_t Y^(t) (Jensen).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from highspy import HighsLp, HighsModelStatus, MatrixFormat, ObjSense, kHighsInf
from highspy._core import _Highs

#: Number of test-round phases (a·π/2, a = 0..3).
N_PHASES = 4
#: Yield guesses y0 at which the pseudo-Fock envelopes g_T, h_T are linearised (tangent lines):
#: y0 for the vacuum-vacuum yield Y_00 (dark counts) and for all other yields. Every choice gives a
#: valid constraint; all combinations are imposed and the LP uses the tightest.
SLACK_GUESSES_VACUUM: tuple[float, ...] = (1e-7, 1e-5, 1e-3)
SLACK_GUESSES_OTHER: tuple[float, ...] = (3e-3, 0.03, 0.3)
#: Photon-number cut-off for the Poisson sums of the phase-error bound (tail bounded by Y ≤ 1):
#: at least this, and for bright settings μ + 10√μ + 30 (:func:`fock_cutoff`).
N_MAX_FOCK = 40


def fock_cutoff(mu: float) -> int:
    """The photon number up to which the Poisson sums of ``mu`` run: N_MAX_FOCK, or μ + 10√μ + 30
    where that is larger. Beyond it the Poisson weight, and the amplitude √p_n the phase-error sum
    adds, is below 10⁻⁴⁰ for every μ (ten standard deviations plus thirty above the mean), so no
    setting loses mass that the bound must count: a fixed cut at n = 40 dropped most of the
    amplitude at μ ≳ 20 and *lowered* the phase-error bound (review s32: f(Y ≡ 1) = 0.10 instead of
    156 at μ = 50)."""
    m = max(float(mu), 0.0)
    return max(N_MAX_FOCK, int(math.ceil(m + 10.0 * math.sqrt(m) + 30.0)))


def poisson_pmf(mu: float, n_max: int = N_MAX_FOCK) -> np.ndarray:
    """p_n(μ) = e^(−μ) μⁿ/n!, n = 0..n_max (float64)."""
    n = np.arange(n_max + 1, dtype=float)
    if mu <= 0:
        out = np.zeros(n_max + 1)
        out[0] = 1.0
        return out
    logp = -mu + n * math.log(mu) - np.array([math.lgamma(k + 1.0) for k in range(n_max + 1)])
    return np.exp(logp)


def pseudo_fock(mu: float, n_phases: int = N_PHASES) -> tuple[np.ndarray, np.ndarray]:
    """(P_r, T_r), r = 0..n_phases−1, of a coherent state averaged over n_phases uniform phases.

    P_r: probability of the pseudo-Fock state |λ_r(μ)⟩; T_r: its weight outside |r⟩
    (1 − |⟨r|λ_r⟩|²). Shapes (n_phases,).
    """
    p = poisson_pmf(mu, fock_cutoff(mu) + n_phases)
    P = np.array([p[r::n_phases].sum() for r in range(n_phases)])
    with np.errstate(invalid="ignore", divide="ignore"):
        T = np.where(P > 0, 1.0 - p[:n_phases] / np.where(P > 0, P, 1.0), 0.0)
    return P, np.clip(T, 0.0, 1.0)


@dataclass(frozen=True)
class DecoyBounds:
    """Result of the decoy linear programs.

    ``y_upper``/``y_lower``: bounds on the slot-averaged Fock yields Ȳ_rs, r, s = 0..3,
    shape (4, 4). ``feasible``: False if the measured gains are inconsistent with any yields
    (then ``y_upper`` is all ones and ``y_lower`` all zeros: the most conservative choice).
    """

    y_upper: np.ndarray
    y_lower: np.ndarray
    feasible: bool


def pseudo_fock_envelope(T: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact range (g_T(Y), h_T(Y)) of ⟨ψ|M|ψ⟩ over 0 ≤ M ≤ 1 with ⟨rs|M|rs⟩ = Y, for a pure
    |ψ⟩ with |⟨rs|ψ⟩|² = 1 − T (module docstring). Elementwise over broadcast ``T``, ``y``."""
    T = np.clip(np.asarray(T, float), 0.0, 1.0)
    y = np.clip(np.asarray(y, float), 0.0, 1.0)
    lo = np.maximum(0.0, np.sqrt(y * (1.0 - T)) - np.sqrt((1.0 - y) * T)) ** 2
    hi = np.where(y <= 1.0 - T, y + T * (1.0 - 2.0 * y) + 2.0 * np.sqrt(T * (1.0 - T) * y * (1.0 - y)), 1.0)
    return lo, np.minimum(hi, 1.0)


def _envelope_tangents(T: np.ndarray, y0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tangent lines of g_T (convex) and h_T (concave) at y0: (slope_g, icpt_g, slope_h, icpt_h) with
    slope_g·Y + icpt_g ≤ g_T(Y) and h_T(Y) ≤ slope_h·Y + icpt_h for all Y ∈ [0, 1]."""
    T = np.asarray(T, float)
    y0 = np.clip(np.asarray(y0, float), 1e-300, 1.0 - 1e-12)
    g, h = pseudo_fock_envelope(T, y0)
    root = np.sqrt(T * (1.0 - T))
    dsq = (1.0 - 2.0 * y0) / np.sqrt(y0 * (1.0 - y0))  # d/dY of 2√(Y(1−Y))
    sg = np.where(y0 > T, (1.0 - 2.0 * T) - root * dsq, 0.0)
    sg = np.where(T <= 0.0, 1.0, sg)
    sh = np.where(y0 <= 1.0 - T, (1.0 - 2.0 * T) + root * dsq, 0.0)
    sh = np.where(T <= 0.0, 1.0, sh)
    return sg, g - sg * y0, sh, h - sh * y0


def level_state_bounds(mu: float, pooled: bool = False, rel_uncertainty: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P_min, P_max, T_max), each shape (4,): the pseudo-Fock weights P_r and slacks T_r of one client's
    level as the decoy LP uses them, over every mean photon number in the band [μ(1 − δ), μ(1 + δ)]
    (δ = ``rel_uncertainty``; docs/protocol.md §4.2–§4.3, (P3), (P3'), (P10)).

    ``pooled`` False: the four-phase average (P3), P_r(μ) = Σ_{n≡r (mod 4)} p_n(μ), T_r = 1 − p_r/P_r.
    ``pooled`` True: the level's cells are pooled across this client's basis (:func:`basis_pools`), so the
    state behind the pooled count is the p_X-weighted mix of the two bases' bit-averaged states; each basis
    alone is a coherent state averaged over two opposite phases, whose decomposition is the two-phase one
    (Cao, Zhang, Lo, Ma, NJP 17, 053014 (2015) with N = 2; the even/odd cat states of CAL19 §Methods,
    arXiv:1807.07667v2 Eqs. (12)–(13)): P_r = Σ_{n≡r (mod 2)} p_n (r = 0, 1; 0 for r = 2, 3) and
    T_r = 1 − p_r/P_r, i.e. T_0 = 1 − 1/cosh μ ≈ μ²/2, T_1 = 1 − μ/sinh μ ≈ μ²/6, the same for both bases
    (the Y basis' states are the X basis' rotated by e^(iπn̂/2), which keeps every |⟨n|·⟩|²). Exact
    vacuum: P = (1, 0, 0, 0), T = 0 either way.

    The band (intensity calibration uncertainty, Wang, Yang, Peng, Pan, arXiv:0902.4660 (2009); for this
    protocol family Lu et al., arXiv:1901.04264 (2019)): T_r(μ) increases with μ (p_r/P_r = 1/(1 + Σ_{j≥1}
    μ^(Nj) r!/(r+Nj)!)), so T_max = T(μ(1 + δ)). P_r is monotone in μ when μ(1 + δ) ≤ 1 (dP_r/dμ = P_{r−1} − P_r,
    cyclic, and P_0 > P_1 > … > P_{N−1} term by term there), so its extremes lie at the band's ends; above
    that they are taken on a grid of spacing h with the Lipschitz margin h/2 (|dP_r/dμ| ≤ 1). δ = 0 gives
    P_min = P_max = P(μ), T_max = T(μ) exactly (the same arrays).

    A pooled level with μ > 0 (the vacuum-role level: a modulator's extinction floor) is, with δ > 0, taken
    anywhere in **[0, μ(1 + δ)]**: the declared floor is a guaranteed maximum, not a value known to ±δ (review
    s37 physics F1: the floor's error is the extinction ratio's, dB-scale, and at the default operating point
    the key rests on Y_00, i.e. on that floor). The two-phase P_0 = (1 + e^(−2μ))/2 decreases and
    P_1 = (1 − e^(−2μ))/2 increases for every μ, and T_r increases, so P_min = (P_0(μ(1 + δ)), 0),
    P_max = (1, P_1(μ(1 + δ))), T_max = T(μ(1 + δ)): the ends of the interval, no grid.
    """
    n_ph = 2 if pooled else N_PHASES
    if rel_uncertainty <= 0.0 or mu <= 0.0:
        P, T = pseudo_fock(mu, n_ph)
        p_lo = p_hi = P
    else:
        bottom = 0.0 if pooled else mu * (1.0 - rel_uncertainty)  # a pooled μ > 0: the floor, a maximum
        (P_lo, _), (P_hi, T) = pseudo_fock(bottom, n_ph), pseudo_fock(mu * (1.0 + rel_uncertainty), n_ph)
        p_lo, p_hi = np.minimum(P_lo, P_hi), np.maximum(P_lo, P_hi)
        top = mu * (1.0 + rel_uncertainty)
        if top > 1.0 and not pooled:
            grid = np.linspace(bottom, top, 1001)
            Ps = np.array([pseudo_fock(float(m), n_ph)[0] for m in grid])
            half = (grid[1] - grid[0]) / 2.0
            p_lo = np.clip(Ps.min(axis=0) - half, 0.0, 1.0)
            p_hi = np.clip(Ps.max(axis=0) + half, 0.0, 1.0)
    if n_ph < N_PHASES:
        pad = np.zeros(N_PHASES - n_ph)
        p_lo, p_hi, T = (np.concatenate([a, pad]) for a in (p_lo, p_hi, T))
    return p_lo, p_hi, T


def _pair_geometry(
    mk: float, ml: float, pk: bool, pl: bool, rel: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows (WU, CU, WL, CL) of one intensity pair: Σ WU·Y + CU ≤ Q̄ ≤ Σ WL·Y + CL, one per variant
    (the constant slack T + 2√T, then the tangents at the yield guesses). With an intensity band the
    lower rows take the smallest weights P_min·P_min and the upper ones the largest (⟨ψ|M|ψ⟩ ≥ 0), both
    the largest slack (g_T decreases and h_T increases with T): valid for every μ in the band (P10)."""
    R = N_PHASES
    Pi_lo, Pi_hi, Ti = level_state_bounds(mk, pk, rel)
    Pj_lo, Pj_hi, Tj = level_state_bounds(ml, pl, rel)
    Wlo = np.outer(Pi_lo, Pj_lo).ravel()  # P_r(μ_k) P_s(μ_l), smallest over the band
    Whi = Wlo if Pi_hi is Pi_lo and Pj_hi is Pj_lo else np.outer(Pi_hi, Pj_hi).ravel()
    T = (1.0 - np.outer(1.0 - Ti, 1.0 - Tj)).ravel()
    exact = bool(np.all(T <= 0.0))
    # each variant: Σ W·(su·Y + cu) ≤ Q̄ ≤ Σ W·(sl·Y + cl); first the constant slack T + 2√T
    # (valid since Y ≤ 1), then tangents of the exact envelopes at the yield guesses
    slack = T + 2.0 * np.sqrt(T)
    variants: list[tuple[np.ndarray, float, np.ndarray, float]] = [
        (Wlo, -float(np.sum(Wlo * slack)), Whi, float(np.sum(Whi * slack)))]
    if not exact:
        for gv in SLACK_GUESSES_VACUUM:
            for go in SLACK_GUESSES_OTHER:
                y0 = np.full(R * R, go)
                y0[0] = gv
                sg, cg, sh, ch = _envelope_tangents(T, y0)
                variants.append((Wlo * sg, float(np.sum(Wlo * cg)), Whi * sh, float(np.sum(Whi * ch))))
    return (np.array([v[0] for v in variants]), np.array([v[1] for v in variants]),
            np.array([v[2] for v in variants]), np.array([v[3] for v in variants]))


@functools.lru_cache(maxsize=64)
def _constraint_geometry(
    mu_i: tuple[float, ...], mu_j: tuple[float, ...], pooled_i: tuple[bool, ...] | None = None,
    pooled_j: tuple[bool, ...] | None = None, rel_uncertainty: float = 0.0,
) -> tuple[tuple[np.ndarray, ...], ...]:
    """The gain-independent part of :func:`_constraint_rows`, per intensity pair (k, l) in
    k-major order: arrays (WU, CU, WL, CL), one row per variant — Σ WU·Y + CU ≤ Q̄ ≤ Σ WL·Y + CL
    (:func:`_pair_geometry`). ``pooled_*``: which levels are pooled across that client's basis
    (:func:`level_state_bounds`; None: none); ``rel_uncertainty``: δ of the intensity band. Depends only on
    these, so it is computed once per combination and reused by every block (the arrays are read-only)."""
    pi = pooled_i or (False,) * len(mu_i)
    pj = pooled_j or (False,) * len(mu_j)
    out: list[tuple[np.ndarray, ...]] = []
    for mk, pk in zip(mu_i, pi, strict=True):
        for ml, pl in zip(mu_j, pj, strict=True):
            arrs = _pair_geometry(mk, ml, pk, pl, rel_uncertainty)
            for a in arrs:
                a.setflags(write=False)
            out.append(arrs)
    return tuple(out)


def _constraint_rows(
    mu_i: Sequence[float], mu_j: Sequence[float], gain_lower: np.ndarray, gain_upper: np.ndarray,
    pooled_i: Sequence[bool] | None = None, pooled_j: Sequence[bool] | None = None, rel_uncertainty: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear constraints A·y ≤ b on y = vec(Ȳ_rs) (16 entries) from the gain bounds: per
    intensity pair (k, l) and variant of :func:`_constraint_geometry`, the rows
    Σ W g(Y) ≤ Q̄ ≤ qU and Σ W h(Y) ≥ Q̄ ≥ qL, interleaved, each normalised by 1/qU so that
    the LP tolerance is relative. The same floating-point operations, in the same order, as
    :func:`_constraint_rows_reference` (equal bit for bit)."""
    geo = _constraint_geometry(tuple(float(m) for m in mu_i), tuple(float(m) for m in mu_j),
                               None if pooled_i is None else tuple(bool(x) for x in pooled_i),
                               None if pooled_j is None else tuple(bool(x) for x in pooled_j), float(rel_uncertainty))
    R = N_PHASES
    nrow = 2 * sum(g[0].shape[0] for g in geo)
    A = np.empty((nrow, R * R))
    b = np.empty(nrow)
    pos = 0
    kj = len(mu_j)
    for idx, (WU, CU, WL, CL) in enumerate(geo):
        k, l_ = divmod(idx, kj)
        qL, qU = float(gain_lower[k, l_]), float(gain_upper[k, l_])
        scale = 1.0 / max(qU, 1e-12)
        nv = WU.shape[0]
        A[pos:pos + 2 * nv:2] = WU * scale
        b[pos:pos + 2 * nv:2] = (qU - CU) * scale
        A[pos + 1:pos + 2 * nv:2] = -WL * scale
        b[pos + 1:pos + 2 * nv:2] = (-qL + CL) * scale
        pos += 2 * nv
    return A, b


def _constraint_rows_reference(
    mu_i: Sequence[float], mu_j: Sequence[float], gain_lower: np.ndarray, gain_upper: np.ndarray,
    pooled_i: Sequence[bool] | None = None, pooled_j: Sequence[bool] | None = None, rel_uncertainty: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_constraint_rows` as first written (everything recomputed per call, row by row);
    kept to test the cached version against."""
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    R = N_PHASES
    pi = list(pooled_i) if pooled_i is not None else [False] * len(mu_i)
    pj = list(pooled_j) if pooled_j is not None else [False] * len(mu_j)
    for k, mk in enumerate(mu_i):
        Pi_lo, Pi_hi, Ti = level_state_bounds(float(mk), bool(pi[k]), float(rel_uncertainty))
        for l_, ml in enumerate(mu_j):
            Pj_lo, Pj_hi, Tj = level_state_bounds(float(ml), bool(pj[l_]), float(rel_uncertainty))
            Wlo = np.outer(Pi_lo, Pj_lo).ravel()
            Whi = np.outer(Pi_hi, Pj_hi).ravel()
            T = (1.0 - np.outer(1.0 - Ti, 1.0 - Tj)).ravel()
            qL, qU = float(gain_lower[k, l_]), float(gain_upper[k, l_])
            scale = 1.0 / max(qU, 1e-12)
            exact = bool(np.all(T <= 0.0))
            variants: list[tuple[np.ndarray, float, np.ndarray, float]] = []
            variants.append((Wlo, -float(np.sum(Wlo * (T + 2.0 * np.sqrt(T)))),
                             Whi, float(np.sum(Whi * (T + 2.0 * np.sqrt(T))))))
            if not exact:
                for gv in SLACK_GUESSES_VACUUM:
                    for go in SLACK_GUESSES_OTHER:
                        y0 = np.full(R * R, go)
                        y0[0] = gv
                        sg, cg, sh, ch = _envelope_tangents(T, y0)
                        variants.append((Wlo * sg, float(np.sum(Wlo * cg)), Whi * sh, float(np.sum(Whi * ch))))
            for wu, cu, wl, cl in variants:
                rows.append(wu * scale)
                rhs.append((qU - cu) * scale)
                rows.append(-wl * scale)
                rhs.append((-qL + cl) * scale)
    A = np.array(rows).reshape(-1, R * R)
    return A, np.array(rhs)


def decoy_yield_bounds(
    mu_i: Sequence[float], mu_j: Sequence[float], gain_lower: np.ndarray, gain_upper: np.ndarray,
    targets: Sequence[tuple[int, int]] | None = None, lower: bool = True, *,
    pooled_i: Sequence[bool] | None = None, pooled_j: Sequence[bool] | None = None, rel_uncertainty: float = 0.0,
) -> DecoyBounds:
    """Bound the Fock yields Ȳ_rs (r, s ≤ 3) from bounds on the slot-averaged gains.

    Parameters
    ----------
    mu_i, mu_j: mean photon numbers of the intensity settings of Ci and Cj (leaving the client).
    gain_lower, gain_upper: shape (K_i, K_j); bounds on Q̄_kl = probability of a click per slot
        given intensities (k, l) and phases uniformly random over the four values.
    targets: (r, s) pairs to bound (default: all 16); others get [0, 1].
    lower: also compute lower bounds (else ``y_lower`` is all zeros).
    pooled_i, pooled_j: per level, True where its gain bounds come from cells pooled across that
        client's basis (:func:`basis_pools`): the two-phase states of :func:`level_state_bounds`; None: none.
    rel_uncertainty: δ, the relative calibration uncertainty of every μ: each constraint holds for every
        mean photon number in [μ(1 − δ), μ(1 + δ)] (:func:`level_state_bounds`, docs/protocol.md (P10)).

    One linear program per bound (HiGHS, warm-started from bound to bound), each bound certified by LP
    duality (:class:`_YieldLp`); a small relative margin (1e-7) is added on top, against rounding.

    The result is a deterministic function of the arguments, so it is memoised on their exact
    values (the float bits of every gain bound; :data:`_BOUNDS_MEMO_SIZE` recent calls): the two
    ends of a pair in one process compute the same block's bounds from identical authenticated
    counts, and the second gets the first's result (as a copy) instead of solving the same LPs
    again. Different inputs in any bit are solved anew.
    """
    gl = np.ascontiguousarray(gain_lower, dtype=float)
    gu = np.ascontiguousarray(gain_upper, dtype=float)
    key = (tuple(float(m) for m in mu_i), tuple(float(m) for m in mu_j), gl.shape, gl.tobytes(), gu.shape,
           gu.tobytes(), None if targets is None else tuple((int(r), int(s)) for r, s in targets), bool(lower),
           None if pooled_i is None else tuple(bool(x) for x in pooled_i),
           None if pooled_j is None else tuple(bool(x) for x in pooled_j), float(rel_uncertainty))
    with _BOUNDS_LOCK:
        hit = _BOUNDS_MEMO.get(key)
        if hit is not None:
            _BOUNDS_MEMO.move_to_end(key)
    if hit is None:
        hit = _decoy_yield_bounds(mu_i, mu_j, gl, gu, targets, lower, pooled_i, pooled_j, rel_uncertainty)
        with _BOUNDS_LOCK:
            _BOUNDS_MEMO[key] = hit
            while len(_BOUNDS_MEMO) > _BOUNDS_MEMO_SIZE:
                _BOUNDS_MEMO.popitem(last=False)
    return DecoyBounds(hit.y_upper.copy(), hit.y_lower.copy(), hit.feasible)


#: Recent :func:`decoy_yield_bounds` results kept (keyed on the exact inputs).
_BOUNDS_MEMO_SIZE = 64
_BOUNDS_MEMO: OrderedDict[tuple[object, ...], DecoyBounds] = OrderedDict()
_BOUNDS_LOCK = threading.Lock()


class _YieldLp:
    """The decoy LP of one set of gain bounds, max/min y_rs subject to A·y ≤ b and 0 ≤ y ≤ 1, as ONE
    HiGHS model whose objective changes from bound to bound: each solve starts from the last one's
    optimal basis (a few simplex iterations) instead of from scratch; the eight bounds of a block take
    ≈ 5 ms instead of the ≈ 24 of one SciPy ``linprog(method="highs")`` per bound (labqfl's solver until
    2026-12-05, whose per-call set-up and presolve were most of it).

    **Each bound is certified by LP duality, not read off the solver's primal value** (:meth:`bound`):
    for any row multipliers λ ≥ 0, weak duality gives

        max y_c ≤ b·λ + Σ_i max(0, e_c − Aᵀλ)_i,     min y_c ≥ Σ_i min(0, e_c + Aᵀλ)_i − b·λ

    over the box 0 ≤ y ≤ 1, whatever the solver's tolerances or whether it stopped at the optimum; the
    solver's row duals supply λ (either sign convention is tried, and λ = 0, the box itself), so an
    accurate solve gives a tight bound and an inaccurate one a looser but still valid bound. The
    gains' rows are normalised by the gain (:func:`_constraint_rows`), so coefficients span ~10 to
    ~10^6 and the asymptotic case (lower = upper gain: a thin feasible set) is ill-conditioned: there,
    on the default station's C1-C4 at its optimised point, HiGHS's primal "optimum" for Y_20 came out
    0.532 (SciPy), 1.0 (this model at the default 10^-7 tolerances) or 0.524 at 10^-10 tolerances — the
    last *below* a feasible point at 0.532, i.e. not a valid upper bound; its duals certified only 0.538.
    With feasibility tolerances of 10^-8 the certificate is 0.532. On the finite-size LPs (gain bounds
    with slack) the certified upper bounds lie within 3.4·10^-8 (relative) of SciPy's primal values on
    the default station's pairs at 10^6 … 10^12 slots, inside the 10^-7 margin the bounds always got;
    on random lossy channels (tests/qkd/security/test_decoy_fast.py) the duals of HiGHS's default
    scaling sometimes certified an optimum only to 1–27 % (relative) of small yields (~10^-6), at any
    tolerance, which a solve from scratch with another scaling certifies (:data:`_RESOLVES`); when
    none does, the bound is that much looser, never tighter than the truth. The primal values are no
    bound either way: SciPy's solves at 10^-10 tolerances put a minimum 7.7·10^-7 (relative) below
    what their own duals prove (a point 10^-9 infeasible), more than the 10^-7 margin.

    ``highspy._core._Highs`` is the solver class that :class:`highspy.Highs` extends with Python
    callbacks; installing them prints HiGHS's banner on standard output at the first construction,
    which would corrupt ``--json`` output. Nothing here needs callbacks."""

    #: HiGHS primal and dual feasibility tolerances (its default 10^-7; class docstring)
    TOLERANCE = 1e-8
    #: HiGHS's ``simplex_scale_strategy`` of the warm-started solves (its default, equilibration)
    SCALING = 2

    def __init__(self, A: np.ndarray, b: np.ndarray) -> None:
        m, n = A.shape
        cols = np.nonzero(A.T)  # column-wise nonzeros: (column, row)
        lp = HighsLp()
        lp.num_col_, lp.num_row_ = n, m
        lp.col_cost_ = np.zeros(n)
        lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
        lp.row_lower_, lp.row_upper_ = np.full(m, -kHighsInf), np.asarray(b, dtype=float)
        lp.a_matrix_.format_ = MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(np.bincount(cols[0], minlength=n))]).astype(np.int32)
        lp.a_matrix_.index_ = cols[1].astype(np.int32)
        lp.a_matrix_.value_ = A.T[cols].astype(float)
        self.A, self.b, self.n = A, np.asarray(b, dtype=float), n
        self.h = _Highs()
        self.h.setOptionValue("output_flag", False)
        self._options(self.TOLERANCE, self.SCALING)
        self.h.passModel(lp)
        self._cols = np.arange(n, dtype=np.int32)

    def bound(self, col: int, upper: bool) -> tuple[bool, float]:
        """(feasible, bound): the largest (``upper``) or smallest value of y[col] over the LP, as the
        duality certificate of the class docstring; ``feasible`` False when HiGHS finds no y at all.
        When a solve's certificate lies further than 10^-9 (relative) from its primal value (its duals
        are not accurate enough to certify its optimum), the LP is solved again from scratch as
        :data:`_RESOLVES` lists; the tightest certificate is kept."""
        c = np.zeros(self.n)
        c[col] = 1.0
        self.h.changeObjectiveSense(ObjSense.kMaximize if upper else ObjSense.kMinimize)
        self.h.changeColsCost(self.n, self._cols, c)
        best = 1.0 if upper else 0.0  # λ = 0: the box
        try:
            for fresh, tol, scale in _RESOLVES:
                if fresh:
                    self._options(tol, scale)
                    self.h.clearSolver()
                self.h.run()
                if self.h.getModelStatus() == HighsModelStatus.kInfeasible:
                    return False, math.nan
                best = self._certificate(c, upper, best)
                primal = float(self.h.getInfo().objective_function_value)
                if abs(best - primal) <= 1e-9 * max(abs(primal), 1e-12):
                    break
        finally:
            self._options(self.TOLERANCE, self.SCALING)
        return True, best

    def _options(self, tol: float, scale: int) -> None:
        self.h.setOptionValue("primal_feasibility_tolerance", tol)
        self.h.setOptionValue("dual_feasibility_tolerance", tol)
        self.h.setOptionValue("simplex_scale_strategy", scale)

    def _certificate(self, c: np.ndarray, upper: bool, best: float) -> float:
        """``best`` tightened by the weak-duality bounds of the last solve's row duals (both signs)."""
        duals = np.asarray(self.h.getSolution().row_dual, dtype=float)
        for lam in (np.maximum(duals, 0.0), np.maximum(-duals, 0.0)):
            g = self.A.T @ lam
            if upper:
                best = min(best, float(self.b @ lam + np.maximum(0.0, c - g).sum()))
            else:
                best = max(best, float(np.minimum(0.0, c + g).sum() - self.b @ lam))
        return best


#: :meth:`_YieldLp.bound`'s solves of one bound, until one certifies its optimum: (from scratch,
#: feasibility tolerances, HiGHS's ``simplex_scale_strategy``). The first is the warm start at HiGHS's
#: default scaling (equilibration, 2); from scratch, scaling 4 (each row's and column's largest
#: coefficient scaled to 1) certified the optima that equilibration's duals did not on random lossy
#: channels of tests/qkd/security/test_decoy_fast.py: Y_00's maximum 7.5395·10^-7 (mu = (0.001, 0.03)
#: and (0.03, 0.001), seed 3238), 7.2334·10^-6 and 3.0450·10^-6 (mu = (0, 0.001) and (0.001, 0.25),
#: seeds 604445, 12425), which equilibration's optimal bases certified only to 9.555·10^-7,
#: 7.3093·10^-6 and 3.1210·10^-6 at any tolerance, with or without presolve, by primal or dual simplex.
_RESOLVES: tuple[tuple[bool, float, int], ...] = ((False, _YieldLp.TOLERANCE, _YieldLp.SCALING),
                                                  (True, _YieldLp.TOLERANCE, 4), (True, 1e-9, 4), (True, 1e-10, 4),
                                                  (True, 1e-10, _YieldLp.SCALING))


def _decoy_yield_bounds(
    mu_i: Sequence[float], mu_j: Sequence[float], gain_lower: np.ndarray, gain_upper: np.ndarray,
    targets: Sequence[tuple[int, int]] | None, lower: bool, pooled_i: Sequence[bool] | None = None,
    pooled_j: Sequence[bool] | None = None, rel_uncertainty: float = 0.0,
) -> DecoyBounds:
    """:func:`decoy_yield_bounds` without the memo: the LPs solved, each bound certified
    (:class:`_YieldLp`)."""
    R = N_PHASES
    A, b = _constraint_rows(mu_i, mu_j, gain_lower, gain_upper, pooled_i, pooled_j, rel_uncertainty)
    up = np.ones((R, R))
    lo = np.zeros((R, R))
    tgt = [(r, s) for r in range(R) for s in range(R)] if targets is None else list(targets)
    lp = _YieldLp(A, b)
    for r, s in tgt:
        feasible, value = lp.bound(r * R + s, upper=True)
        if not feasible:
            return DecoyBounds(np.ones((R, R)), np.zeros((R, R)), False)
        up[r, s] = min(1.0, value * (1 + 1e-7) + 1e-12)
        if lower:
            lo[r, s] = max(0.0, lp.bound(r * R + s, upper=False)[1] * (1 - 1e-7) - 1e-12)
    return DecoyBounds(up, lo, True)


def pooled_levels(mu: Sequence[float]) -> tuple[bool, ...]:
    """Which of a client's levels :func:`basis_pools` pools across that client's basis: every exact vacuum
    (μ = 0) and the client's **vacuum-role level**, its weakest test level (index ≥ 1) when it lies strictly
    below all its other levels (docs/protocol.md §4.2).

    Pooling a level with μ > 0 is sound whatever μ: its pooled count is bounded as the two-phase states of
    :func:`level_state_bounds`, whose slack T_0 = 1 − 1/cosh μ ≈ μ²/2 the LP charges exactly, so the
    choice is one of tightness only and limits itself (a bright level pooled gives a weak constraint, never
    a wrong one). The weakest level is the one that pins the vacuum yields Y_0s, where pooling's gain (one
    Kato bound on the whole count instead of a 1/(4 p_Y²)-weighted rare cell) is largest and its slack
    smallest; the key is then continuous in it at μ = 0 (an extinction floor of 10⁻¹² instead of an exact 0
    changes nothing measurable; before, any μ > 0 lost the pooling and with P(X) = 0.98 all the key)."""
    vals = [float(m) for m in mu]
    out = [m == 0.0 for m in vals]
    if len(vals) >= 2:
        k = min(range(1, len(vals)), key=vals.__getitem__)
        if all(vals[k] < m for j, m in enumerate(vals) if j != k):
            out[k] = True
    return tuple(out)


def basis_pools(
    mu_i: Sequence[float], mu_j: Sequence[float], basis_x_prob_i: float, basis_x_prob_j: float,
    pooled_i: Sequence[bool] | None = None, pooled_j: Sequence[bool] | None = None,
) -> list[tuple[int, int, tuple[tuple[int, int], ...], float]]:
    """Groups of announced cells (k, l, b_i, b_j) whose click counts are bounded as ONE count (one Kato
    bound, no 1/(2p_b) reweighting of a rare basis' small count), each with the weight w that turns the
    group's click sum into its share of the gain sum: Σ_groups of (k, l) w·S_group = N p_k p_l Q̄_kl in
    expectation (docs/protocol.md §4.2).

    A level of a client is pooled across that client's basis where ``pooled_*`` says so (default
    :func:`pooled_levels`: exact vacua and the vacuum-role level). For an exact vacuum the state is the
    same whatever the basis, so Q̄_kl is the four-phase average; for a pooled level with μ > 0 the count
    estimates the click probability of the p_X-weighted mix of the two bases' states, which the LP
    describes by the two-phase decomposition of :func:`level_state_bounds` (so the LP needs the same flags):

    * both pooled: the four basis cells pooled, w = 1;
    * only Ci pooled: per b_j the two b_i cells pooled, w = 1/(2 p_bj) (uniform over Cj's bases);
    * only Cj pooled: per b_i, w = 1/(2 p_bi);
    * otherwise: each cell alone, w = 1/(4 p_bi p_bj) (uniform over both clients' four phases).

    Returns [(k, l, cells, w)]; p_b = (P(X), P(Y)).
    """
    pb_i = (basis_x_prob_i, 1.0 - basis_x_prob_i)
    pb_j = (basis_x_prob_j, 1.0 - basis_x_prob_j)
    pi = tuple(pooled_i) if pooled_i is not None else pooled_levels(mu_i)
    pj = tuple(pooled_j) if pooled_j is not None else pooled_levels(mu_j)
    out: list[tuple[int, int, tuple[tuple[int, int], ...], float]] = []
    for k in range(len(mu_i)):
        for l_ in range(len(mu_j)):
            if pi[k] and pj[l_]:
                out.append((k, l_, ((0, 0), (0, 1), (1, 0), (1, 1)), 1.0))
            elif pi[k]:
                out += [(k, l_, ((0, bj), (1, bj)), 1.0 / (2.0 * pb_j[bj])) for bj in (0, 1) if pb_j[bj] > 0]
            elif pj[l_]:
                out += [(k, l_, ((bi, 0), (bi, 1)), 1.0 / (2.0 * pb_i[bi])) for bi in (0, 1) if pb_i[bi] > 0]
            else:
                out += [(k, l_, ((bi, bj),), 1.0 / (4.0 * pb_i[bi] * pb_j[bj]))
                        for bi in (0, 1) for bj in (0, 1) if pb_i[bi] > 0 and pb_j[bj] > 0]
    return out


#: (r, s) yields that enter the phase-error bound with n, m ≤ 3 (equal parities).
PHASE_ERROR_TARGETS: tuple[tuple[int, int], ...] = tuple(
    (r, s) for r in range(N_PHASES) for s in range(N_PHASES) if (r - s) % 2 == 0
)


def poisson_pmf_max(mu: float, rel_uncertainty: float, n_max: int) -> np.ndarray:
    """max of p_n(μ') over μ' ∈ [μ(1 − δ), μ(1 + δ)], n = 0..n_max: p_n is unimodal in μ' with its
    maximum at μ' = n, so the maximum over the band is p_n at n clipped into it. δ = 0: :func:`poisson_pmf`."""
    if rel_uncertainty <= 0.0 or mu <= 0.0:
        return poisson_pmf(mu, n_max)
    lo, hi = mu * (1.0 - rel_uncertainty), mu * (1.0 + rel_uncertainty)
    n = np.arange(n_max + 1, dtype=float)
    m = np.clip(n, lo, hi)
    lg = np.array([math.lgamma(k + 1.0) for k in range(n_max + 1)])
    with np.errstate(divide="ignore"):
        logp = -m + n * np.log(m) - lg
    return np.where(m > 0, np.exp(logp), (n == 0).astype(float))


def phase_error_probability_bound(mu_i: float, mu_j: float, y_upper: np.ndarray, rel_uncertainty: float = 0.0) -> float:
    """Upper bound on Pr[click ∧ phase error] per key-setting slot (CAL19 Eqs. (20)–(21), see module doc).

    ``y_upper``: square array of upper bounds on Ȳ_nm (n, m < y_upper.shape[0], usually 4 from
    the decoy LPs; a larger exact matrix gives the ideal-decoy value); yields beyond it are
    bounded by 1. Poisson sums run to n = :func:`fock_cutoff` (μ(1 + δ)).

    ``rel_uncertainty`` δ > 0: the key states' mean photon numbers are only known to lie in
    [μ(1 − δ), μ(1 + δ)]; every term √(p_n p_m Y_nm) of (P5) is non-negative, so replacing each p_n by its
    largest value over the band (:func:`poisson_pmf_max`) bounds (P5) for every μ in it, and keeps it
    concave in Y (docs/protocol.md (P10); Lu et al., arXiv:1901.04264, treat intensity fluctuations of this
    protocol the same way, by the band's worst case).
    """
    top_i, top_j = mu_i * (1.0 + max(rel_uncertainty, 0.0)), mu_j * (1.0 + max(rel_uncertainty, 0.0))
    pi = poisson_pmf_max(mu_i, rel_uncertainty, fock_cutoff(top_i))
    pj = poisson_pmf_max(mu_j, rel_uncertainty, fock_cutoff(top_j))
    Y = np.ones((pi.size, pj.size))
    R = min(y_upper.shape[0], pi.size)
    Y[:R, :R] = np.clip(np.asarray(y_upper, dtype=float)[:R, :R], 0.0, 1.0)
    amp = np.sqrt(np.outer(pi, pj) * Y)
    par_i = np.arange(pi.size) % 2
    par_j = np.arange(pj.size) % 2
    total = 0.0
    for par in (0, 1):
        total += float(amp[np.ix_(par_i == par, par_j == par)].sum()) ** 2
    return total


def ideal_fock_yields(eta_i: float, eta_j: float, p_dark_total: float = 0.0, n_max: int = N_MAX_FOCK) -> np.ndarray:
    """Exact Fock yields of a lossy channel with threshold detectors (the "infinite decoy" limit).

    Y_nm = 1 − (1 − p_dark_total)(1 − η_i)ⁿ(1 − η_j)ᵐ: no click iff every photon is lost and no
    dark count — exact for phase-randomised Fock inputs when both detectors have the same
    efficiency (η_i, η_j include it). ``p_dark_total``: probability of ≥ 1 dark click per slot.
    Shape (n_max+1, n_max+1).
    """
    n = np.arange(n_max + 1, dtype=float)
    return 1.0 - (1.0 - p_dark_total) * np.outer((1.0 - eta_i) ** n, (1.0 - eta_j) ** n)


def detector_fock_yields(eta_i: float, eta_j: float, p_dark: float = 0.0, n_max: int = N_MAX_FOCK) -> np.ndarray:
    """Exact *per-detector* Fock yields of a pure-loss channel and a 50:50 splitter.

    Y¹⁰_nm = Pr[only D0 clicks | |n⟩_i|m⟩_j] (by symmetry also Pr[only D1 clicks]). Each photon of
    client i (j) survives with probability ``eta_i`` (``eta_j``, detector efficiency included);
    k and l surviving photons leave a symmetric splitter *all* through one port with probability
    C(k+l, k)/2^(k+l) (Fock-state interference, e.g. Hong–Ou–Mandel for k = l = 1); each detector
    has dark-click probability ``p_dark``. Hence

        Y¹⁰_nm = (1 − p_d)·[ Σ_{(k,l)≠(0,0)} B(k; n, η_i) B(l; m, η_j) C(k+l,k)/2^(k+l)
                              + p_d (1 − η_i)ⁿ (1 − η_j)ᵐ ],

    which is Curty–Azuma–Lo (npj Quantum Inf. 5, 64 (2019), arXiv:1807.07667v2) Eqs. (34)–(35)
    without polarisation misalignment (θ_A = θ_B = 0, checked term by term in
    tests/qkd/security/test_literature.py). Shape (n_max+1, n_max+1).
    Used for the CAL19 reference rate (:func:`labqfl.qkd.keyrate.cal19_asymptotic_rate`).
    """
    if not (0.0 <= eta_i <= 1.0 and 0.0 <= eta_j <= 1.0 and 0.0 <= p_dark < 1.0):
        raise ValueError(f"need 0 <= eta <= 1 and 0 <= p_dark < 1, got {eta_i}, {eta_j}, {p_dark}")
    n = np.arange(n_max + 1)
    log_fact = np.array([math.lgamma(k + 1.0) for k in range(n_max + 1)])

    def binom_matrix(eta: float) -> np.ndarray:  # B[n, k] = C(n, k) η^k (1 − η)^(n − k)
        B = np.zeros((n_max + 1, n_max + 1))
        for nn in n:
            k = np.arange(nn + 1)
            logc = log_fact[nn] - log_fact[k] - log_fact[nn - k]
            B[nn, : nn + 1] = np.exp(logc) * np.power(eta, k) * np.power(1.0 - eta, nn - k)
        return B

    k = n[:, None]
    l_ = n[None, :]
    # log C(k+l, k) (k + l may exceed n_max, so lgamma directly)
    log_c = np.array([[math.lgamma(a + b + 1.0) - math.lgamma(a + 1.0) - math.lgamma(b + 1.0) for b in n] for a in n])
    same_port = np.exp(log_c - (k + l_) * math.log(2.0))
    same_port[0, 0] = p_dark
    return (1.0 - p_dark) * binom_matrix(eta_i) @ same_port @ binom_matrix(eta_j).T
