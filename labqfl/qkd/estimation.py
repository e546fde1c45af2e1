"""Parameter estimation and secure key length of one block (docs/protocol.md §4–§6).

Protocol: Curty–Azuma–Lo TF-type QKD (npj Quantum Inf. 5, 64 (2019), "CAL19") with the
finite-key analysis of Currás-Lorenzo et al. (npj Quantum Inf. 7, 22 (2021), "CL21"), adapted to
labqfl's four-phase testbed (test rounds randomised over a·π/2, handled rigorously with the
pseudo-Fock slack of :mod:`labqfl.qkd.decoy`).

Steps of :func:`secure_key_length`:

1. For every test cell c = (k_i, k_j, b_i, b_j) (all cells, including the key cell, whose click
   *count* is public), Kato's inequality turns the click count M_c into bounds on
   S_c = Σ_t Pr[setting c ∧ click | past] (:func:`labqfl.qkd.finite_key.conditional_sum_bounds`).
2. The four basis cells of each intensity pair are reweighted to a uniform phase average:
   Q̄_kl = Σ_b S_klb / (4 p_bi p_bj) / (N p_k p_l) — the slot-averaged gain of the four-phase
   randomised states of intensities (μ_k, μ_l).
3. Decoy linear programs bound the slot-averaged Fock yields Ȳ_nm, n, m ≤ 3.
4. CAL19's bound gives Pr[click ∧ phase error | key setting] ≤ f(Ȳ); the expected number of phase
   errors is ≤ N p_key f(Ȳ^U) (concavity, Jensen), and Kato (K2) bounds the actual number N_ph^U.
5. ℓ = ⌊ n_X (1 − h(N_ph^U/n_X)) − λ_EC − log2(2/ε_cor) − log2(1/ε_PA) ⌋ (CL21 key length in the
   phase-error/complementarity framework, Koashi 2009; Hayashi–Tsurumaru 2012), which is
   ε_cor-correct and ε_sec-secret with ε_sec = √2·√(ε_PE + ε_PA).

Why (P7)/(P8) hold (docs/protocol.md §5 and §9; checked from first principles because the CL21
text was not available offline): with probability ≥ 1 − ε_PE the phase errors of the sifted key
number ≤ N_ph^U, so the error pattern lies in a set of ≤ 2^(n_X h(e_ph^U)) strings (e_ph^U ≤ ½);
privacy amplification to ℓ' = ℓ + λ_EC + log2(2/ε_cor) bits is, in the virtual protocol,
phase-error correction with a random (universal₂) syndrome of n_X − ℓ' bits, which fails with
probability ≤ 2^(n_X h(e_ph^U)) · 2^(−(n_X − ℓ')) = ε_PA exactly when ℓ is (P7); the publicly
disclosed λ_EC + log2(2/ε_cor) bits are charged in full (equivalently, paid for with that many key
bits used as a one-time pad), the standard accounting of the phase-error framework. The virtual protocol then fails with probability δ ≤ ε_PE + ε_PA (union bound) and
the real key is within trace distance √(2δ) of an ideal key (Koashi, NJP 11, 045018 (2009);
Hayashi–Tsurumaru, NJP 14, 093014 (2012)) — (P8). Using √2·√δ (rather than √δ from the pure-state
fidelity bound) and log2(2/ε_cor) (rather than log2(1/ε_cor) for a universal₂ verification hash)
keeps both choices on the conservative side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from labqfl.contracts.types import KEY_BASIS, KEY_INTENSITY_INDEX, PairCounts
from labqfl.qkd.decoy import (
    PHASE_ERROR_TARGETS,
    DecoyBounds,
    basis_pools,
    decoy_yield_bounds,
    phase_error_probability_bound,
    pooled_levels,
)
from labqfl.qkd.finite_key import binary_entropy, conditional_sum_bounds, count_upper_bound


@dataclass(frozen=True)
class SecurityParameters:
    """Security settings of the key-length computation (defaults as in CL21's simulations).

    eps_sec: secrecy parameter ε_sec of the final key (trace distance to an ideal key).
    eps_cor: correctness parameter ε_cor; the verification hash costs log2(2/ε_cor) bits.
    eps_pa_fraction: share of ε_sec²/2 given to privacy amplification (ε_PA); the rest is
        ε_PE, split equally among all Kato bounds (union bound). ε_sec = √2·√(ε_PE + ε_PA).
    max_qber: abort when the reconciled error rate exceeds it (sanity threshold; the key length
        formula itself gives 0 well before for realistic phase errors).
    max_phase_error: abort when the phase-error bound N_ph^U/n_X exceeds it.
    finite_size: False → asymptotic analysis (no Kato deviations, no ε terms), used to check
        that the finite-key rate tends to the asymptotic one.
    yield_lower_bounds: also compute (report-only) lower bounds on the yields (8 more LPs).
    intensity_rel_uncertainty: δ, the relative calibration uncertainty of every declared mean photon
        number: the analysis holds for any true μ in [μ(1 − δ), μ(1 + δ)] (decoy LP coefficients at the
        band's worst case per constraint, (P5) with each p_n at its largest over the band; docs/protocol.md
        (P10)); a client's vacuum-role level (pooled, μ > 0: a modulator's extinction floor) is then taken
        anywhere in [0, μ(1 + δ)], its declared value a maximum (:func:`labqfl.qkd.decoy.level_state_bounds`).
        0: the declared μ are taken as exact (what labqfl did before, and true of the simulator).
    """

    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    eps_pa_fraction: float = 0.5
    max_qber: float = 0.11
    max_phase_error: float = 0.45
    finite_size: bool = True
    yield_lower_bounds: bool = False
    intensity_rel_uncertainty: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.eps_sec < 1 and 0 < self.eps_cor < 1):
            raise ValueError(f"eps_sec and eps_cor must lie in (0, 1), got {self.eps_sec}, {self.eps_cor}")
        if not 0 < self.eps_pa_fraction < 1:
            raise ValueError(f"eps_pa_fraction must lie in (0, 1), got {self.eps_pa_fraction}")
        if not (0 < self.max_qber <= 0.5 and 0 < self.max_phase_error <= 0.5):
            raise ValueError("max_qber and max_phase_error must lie in (0, 0.5]")
        d = self.intensity_rel_uncertainty
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d < 1.0:  # NaN fails too
            raise ValueError(f"intensity_rel_uncertainty must be a relative uncertainty in [0, 1), got {d!r}")

    def with_intensity_rel_uncertainty(self, delta: float) -> SecurityParameters:
        """These parameters with δ raised to ``delta`` (never lowered): a station's declared calibration
        uncertainty (:meth:`labqfl.config.StationConfig.intensity_rel_uncertainty`) on top of a caller's."""
        if delta <= self.intensity_rel_uncertainty:
            return self
        return replace(self, intensity_rel_uncertainty=float(delta))

    @property
    def eps_pa(self) -> float:
        """ε_PA: failure probability of privacy amplification (phase-error correction)."""
        return self.eps_pa_fraction * self.eps_sec**2 / 2.0

    @property
    def eps_pe(self) -> float:
        """ε_PE: total failure probability of all parameter-estimation (Kato) bounds."""
        return (1.0 - self.eps_pa_fraction) * self.eps_sec**2 / 2.0


def epsilon_total(params: SecurityParameters, eps_auth: float = 0.0) -> float:
    """ε of a block's key as a whole: ε_sec + ε_cor + ε_auth (docs/protocol.md §5).

    The key is ε_cor-correct and ε_sec-secret *given* an authenticated classical channel; the
    Wegman–Carter authentication that provides it fails (a forged or altered message accepted)
    with probability ≤ ε_auth, summed over the block's tag verifications
    (:func:`labqfl.qkd.authentication.transcript_forgery_probability`). By the triangle
    inequality of composable security the three add (Müller-Quade & Renner, NJP 11, 085006
    (2009); Portmann, IEEE Trans. Inf. Theory 60, 4383 (2014) for authentication with key
    recycling). ``eps_auth`` = 0 gives the ε of the key-length analysis alone.
    """
    if not (eps_auth >= 0.0 and math.isfinite(eps_auth)):
        raise ValueError(f"eps_auth must be a finite probability >= 0, got {eps_auth}")
    return float(params.eps_sec + params.eps_cor + eps_auth)


@dataclass
class KeyLengthReport:
    """Every quantity of one key-length computation (reported in run records and the CLI).

    Probabilities are per slot of the pair; counts are numbers of slots/events; bits are bits.
    Arrays: gains (K_i, K_j); yields (4, 4) indexed [n photons of Ci, m photons of Cj].
    """

    pair: str
    n_slots: int
    n_key_bits: int
    qber_key: float
    leak_ec_bits: int
    key_length_bits: int
    key_length_real: float
    abort: bool
    abort_reason: str
    phase_error_upper: float
    phase_errors_upper: float
    phase_error_sum_upper: float
    phase_error_prob_per_key_slot: float
    key_setting_prob: float
    gains_observed: np.ndarray
    gains_lower: np.ndarray
    gains_upper: np.ndarray
    yields_upper: np.ndarray
    yields_lower: np.ndarray
    decoy_feasible: bool
    n_kato_bounds: int
    eps_per_kato_bound: float
    eps_sec: float
    eps_cor: float
    eps_pa: float
    eps_pe: float
    finite_size: bool
    terms_bits: dict[str, float] = field(default_factory=dict)

    @property
    def secret_fraction(self) -> float:
        """Final key bits per sifted key bit."""
        return self.key_length_bits / self.n_key_bits if self.n_key_bits else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (arrays → nested lists, non-finite floats → None)."""

        def conv(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return conv(v.tolist())
            if isinstance(v, dict):
                return {str(k): conv(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [conv(x) for x in v]
            if isinstance(v, np.bool_ | bool):
                return bool(v)
            if isinstance(v, np.integer):
                return int(v)
            if isinstance(v, float | np.floating):
                f = float(v)
                return f if math.isfinite(f) else None
            return v

        d = conv(asdict(self))
        d["secret_fraction"] = self.secret_fraction
        return d


def _number(what: str, x: Any) -> float:
    """``x`` as a float, or ValueError naming ``what`` (a string, None or an array is not a number)."""
    if isinstance(x, bool | np.bool_) or not isinstance(x, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a number, got {x!r}")
    try:
        return float(x)
    except OverflowError:  # an int beyond float range: reported as not finite below
        return math.inf


def _count(what: str, x: Any) -> None:
    """A finite whole number >= 0 (a bit count), or ValueError naming ``what``."""
    v = _number(what, x)
    if not (math.isfinite(v) and v >= 0 and v == math.floor(v)):
        raise ValueError(f"{what} must be a finite whole number >= 0, got {x!r}")


def _validate_settings(counts: PairCounts) -> None:
    """The pair's intensities, intensity probabilities and X-basis probabilities: what turns click
    counts into gains (docs/protocol.md §4). A negative or unnormalised probability weights the
    pooled gains wrongly, and the decoy bounds then overstate the key (a signal probability of −0.5
    gave 4.8× the key of the true settings)."""
    for side in ("i", "j"):
        mus, probs = getattr(counts, f"intensities_{side}"), getattr(counts, f"intensity_probs_{side}")
        for field_, vec in ((f"intensities_{side}", mus), (f"intensity_probs_{side}", probs)):
            vals = [_number(f"PairCounts.{field_}[{k}] of {counts.pair}", v) for k, v in enumerate(vec)]
            if not all(math.isfinite(v) and v >= 0 for v in vals):
                raise ValueError(f"PairCounts.{field_} of {counts.pair} = {tuple(vec)}; expected finite values >= 0")
        if len(mus) != len(probs):
            raise ValueError(f"PairCounts.intensities_{side} of {counts.pair} has {len(mus)} values but "
                             f"intensity_probs_{side} has {len(probs)}; expected one probability per intensity")
        total = math.fsum(float(v) for v in probs)
        if not abs(total - 1.0) <= 1e-9:
            raise ValueError(f"PairCounts.intensity_probs_{side} of {counts.pair} = {tuple(probs)} sums to "
                             f"{total!r}; expected probabilities that sum to 1 (within 1e-9)")
        px = _number(f"PairCounts.basis_x_prob_{side} of {counts.pair}", getattr(counts, f"basis_x_prob_{side}"))
        if not 0.0 < px < 1.0:
            raise ValueError(f"PairCounts.basis_x_prob_{side} of {counts.pair} = {px!r}; expected a probability "
                             "strictly between 0 and 1")


def _validate(counts: PairCounts, n_key_bits: int, qber_key: float, leak_ec_bits: int) -> None:
    """Refuse inputs :func:`secure_key_length` cannot bound soundly, with a ValueError naming the
    argument or ``PairCounts`` field, its value and what was expected. Every check is written so
    that NaN fails it (``math.isfinite(x) and x > 0``, never ``x <= 0``)."""
    _validate_settings(counts)
    ki, kj = len(counts.intensities_i), len(counts.intensities_j)
    for name in ("clicks", "errors_x2", "double_clicks"):
        arr = np.asarray(getattr(counts, name))
        if arr.shape != (ki, kj, 2, 2):
            raise ValueError(f"PairCounts.{name} of {counts.pair} has shape {arr.shape}; expected {(ki, kj, 2, 2)}")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"PairCounts.{name} of {counts.pair} has dtype {arr.dtype}; expected real counts")
        if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
            raise ValueError(f"PairCounts.{name} of {counts.pair} must be finite and >= 0")
    n_slots = _number(f"PairCounts.n_slots of {counts.pair}", counts.n_slots)
    if not (math.isfinite(n_slots) and n_slots > 0):
        raise ValueError(f"PairCounts.n_slots of {counts.pair} must be a finite number > 0, got {counts.n_slots!r}")
    _count("n_key_bits", n_key_bits)
    _count("leak_ec_bits", leak_ec_bits)
    q = _number("qber_key", qber_key)
    if not (math.isfinite(q) and 0.0 <= q <= 1.0):
        raise ValueError(f"qber_key must be a finite error rate in [0, 1], got {qber_key!r}")
    key_clicks = float(np.asarray(counts.clicks)[KEY_INTENSITY_INDEX, KEY_INTENSITY_INDEX, KEY_BASIS, KEY_BASIS])
    # float expectations from the station model may exceed the cell by rounding; measured (integer) counts may not
    integral = float(n_key_bits).is_integer() and key_clicks.is_integer()
    if n_key_bits > key_clicks + (0.0 if integral else 1e-6 * max(key_clicks, 1.0)):
        raise ValueError(
            f"n_key_bits={n_key_bits} exceeds the clicks in the key cell of {counts.pair} ({key_clicks:.0f}); "
            "expected the sifted key of this block (or a part of it)"
        )


def _pooled_gains(
    clicks: np.ndarray, pools: list[tuple[int, int, tuple[tuple[int, int], ...], float]], pk: np.ndarray, N: float, eps_b: float, finite_size: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1–2 of :func:`secure_key_length`: observed, lower and upper slot-averaged gains,
    each of shape (K_i, K_j).

    1. Kato bounds on the click sum S of every pool of cells that send the same state (cells
       differing only in the basis of a client that sends vacuum, decoy.basis_pools), and
    2. their weighted sum: the slot-averaged gain of the four-phase randomised states,
       Q̄_kl = Σ_pools w·S / (N p_k p_l)
    """
    ki, kj = clicks.shape[0], clicks.shape[1]
    g_obs = np.zeros((ki, kj))
    g_lo = np.zeros((ki, kj))
    g_hi = np.zeros((ki, kj))
    for k, l_, cells, w in pools:
        m = float(sum(clicks[k, l_, bi, bj] for bi, bj in cells))
        lo, hi = conditional_sum_bounds(m, N, eps_b) if finite_size else (m, m)
        g_obs[k, l_] += w * m
        g_lo[k, l_] += w * lo
        g_hi[k, l_] += w * hi
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = N * pk
        g_obs = np.where(denom > 0, g_obs / denom, 0.0)
        g_lo = np.where(denom > 0, g_lo / denom, 0.0)
        g_hi = np.where(denom > 0, g_hi / denom, 1.0)
    g_lo, g_hi = np.clip(g_lo, 0.0, 1.0), np.clip(g_hi, 0.0, 1.0)
    return g_obs, g_lo, g_hi


def _decoy_bounds(counts: PairCounts, g_lo: np.ndarray, g_hi: np.ndarray, p: SecurityParameters,
                  pooled: tuple[tuple[bool, ...], tuple[bool, ...]]) -> DecoyBounds:
    """Step 3 of :func:`secure_key_length`: the decoy LPs on the gain bounds, over the
    intensity pairs that were actually sent (probability > 0); ``pooled``: the levels whose gains come
    from basis-pooled counts (per client, :func:`labqfl.qkd.decoy.pooled_levels`)."""
    mu_i, mu_j = tuple(counts.intensities_i), tuple(counts.intensities_j)
    used_i = [k for k in range(len(mu_i)) if counts.intensity_probs_i[k] > 0]
    used_j = [k for k in range(len(mu_j)) if counts.intensity_probs_j[k] > 0]
    return decoy_yield_bounds(
        [mu_i[k] for k in used_i], [mu_j[k] for k in used_j],
        g_lo[np.ix_(used_i, used_j)], g_hi[np.ix_(used_i, used_j)], targets=PHASE_ERROR_TARGETS,
        lower=p.yield_lower_bounds, pooled_i=[pooled[0][k] for k in used_i], pooled_j=[pooled[1][k] for k in used_j],
        rel_uncertainty=p.intensity_rel_uncertainty,
    )


#: a key error rate above this (with :data:`SWAPPED_MIN_BITS` bits or more, so over 5 standard deviations
#: above 1/2) means inverted bits, not noise: the abort reason names the likely cause
SWAPPED_QBER = 0.75
SWAPPED_MIN_BITS = 100
#: a key error rate within :data:`HALF_SIGMAS` standard deviations (σ = 1/(2√n), the binomial spread of n
#: unrelated bits) of 1/2, over :data:`HALF_MIN_BITS` bits or more (so within ±0.05 at most, clear of any
#: noisy but working link), means Ci's and Cj's bits are unrelated: the abort reason names the likely causes
HALF_SIGMAS = 5.0
HALF_MIN_BITS = 2500


def _abort_reason(
    n_key_bits: int, qber_key: float, feasible: bool, e_ph: float, ell: float, p: SecurityParameters
) -> str:
    """Why the block aborts, checked in this order; "" when it does not."""
    if n_key_bits == 0:
        return "empty sifted key"
    if qber_key > p.max_qber:
        hint = ""
        if qber_key > SWAPPED_QBER and n_key_bits >= SWAPPED_MIN_BITS:
            hint = "; bits inverted: D0/D1 swapped? check time_tagger.detector_channels (or a π bias-phase offset)"
        elif n_key_bits >= HALF_MIN_BITS and abs(qber_key - 0.5) <= HALF_SIGMAS * 0.5 / math.sqrt(n_key_bits):
            hint = (f"; bits unrelated (error rate within {HALF_SIGMAS:g}σ of 1/2): slot numbers off? (a lost first "
                    "sync tag without frame markers shifts every slot: set time_tagger.time_zero_is_pulse_zero where "
                    "the tagger's time 0 is pulse 0, or use frame markers), clients' patterns not aligned to the "
                    "slots, or no interference (bias phase π/2 off)")
        return f"error rate {100 * qber_key:.2f} % above threshold {100 * p.max_qber:.2f} %{hint}"  # % as the tables
    if not feasible:
        return "decoy statistics inconsistent with any channel (possible attack or wrong intensities)"
    if e_ph > p.max_phase_error:
        return f"phase-error bound {100 * e_ph:.2f} % above threshold {100 * p.max_phase_error:.2f} %"
    if ell < 1.0:
        return f"finite-size key length not positive ({ell:.0f} bits): block too small or too noisy"
    return ""


def secure_key_length(
    counts: PairCounts,
    n_key_bits: int,
    qber_key: float,
    leak_ec_bits: int,
    params: SecurityParameters | None = None,
) -> KeyLengthReport:
    """Secure key length of one block of one pair (CAL19 + CL21, four-phase test rounds).

    Parameters
    ----------
    counts: observed statistics of the block (all cells, including the key cell's click count).
    n_key_bits: sifted key length of the block (slots with both clients at intensity 0, basis X,
        and a click); may be a part of the key cell, never more.
    qber_key: bit error rate found by reconciliation on that key.
    leak_ec_bits: bits disclosed by error correction (syndromes/parities), NOT counting the
        verification hash, which is charged here as log2(2/ε_cor).
    params: security settings (default :class:`SecurityParameters`).

    Returns a :class:`KeyLengthReport`; on abort ``key_length_bits`` is 0 and ``abort_reason``
    says why. Pure function; counts may be float expectations (station model).
    """
    p = params or SecurityParameters()
    _validate(counts, n_key_bits, qber_key, leak_ec_bits)
    N = float(counts.n_slots)
    mu_i, mu_j = tuple(counts.intensities_i), tuple(counts.intensities_j)
    clicks = np.asarray(counts.clicks, dtype=float)
    sent = counts.expected_sent()  # N p_c
    pc = sent / N
    pk = np.outer(np.asarray(counts.intensity_probs_i), np.asarray(counts.intensity_probs_j))
    # the levels pooled across a client's basis are chosen from the declared intensities alone (before any data)
    pooled = (pooled_levels(mu_i), pooled_levels(mu_j))
    pools = [g for g in basis_pools(mu_i, mu_j, counts.basis_x_prob_i, counts.basis_x_prob_j, *pooled)
             if pk[g[0], g[1]] > 0]
    n_bounds = 2 * len(pools) + 1
    eps_b = p.eps_pe / n_bounds

    # 1.–2. Kato bounds on every pool's click sum, and the slot-averaged gains
    g_obs, g_lo, g_hi = _pooled_gains(clicks, pools, pk, N, eps_b, p.finite_size)

    # 3. decoy LPs (only intensity pairs that were actually sent)
    db = _decoy_bounds(counts, g_lo, g_hi, p, pooled)

    # 4. phase errors
    k0 = KEY_INTENSITY_INDEX
    p_key = float(pc[k0, k0, KEY_BASIS, KEY_BASIS])
    f_ph = phase_error_probability_bound(mu_i[k0], mu_j[k0], db.y_upper, p.intensity_rel_uncertainty)
    s_ph = N * p_key * f_ph
    n_ph = count_upper_bound(s_ph, N, eps_b) if p.finite_size else s_ph
    n_x = float(n_key_bits)
    e_ph = min(n_ph / n_x, 0.5) if n_x > 0 else 0.5

    # 5. key length
    pa_term = n_x * binary_entropy(e_ph)
    cor_term = math.log2(2.0 / p.eps_cor) if p.finite_size else 0.0
    epa_term = math.log2(1.0 / p.eps_pa) if p.finite_size else 0.0
    ell = n_x - pa_term - float(leak_ec_bits) - cor_term - epa_term

    reason = _abort_reason(n_key_bits, qber_key, db.feasible, e_ph, ell, p)
    abort = bool(reason)
    length = 0 if abort else int(math.floor(ell))

    return KeyLengthReport(
        pair=counts.pair, n_slots=int(counts.n_slots), n_key_bits=int(n_key_bits), qber_key=float(qber_key),
        leak_ec_bits=int(leak_ec_bits), key_length_bits=length, key_length_real=float(ell), abort=abort,
        abort_reason=reason, phase_error_upper=float(e_ph), phase_errors_upper=float(n_ph),
        phase_error_sum_upper=float(s_ph), phase_error_prob_per_key_slot=float(f_ph), key_setting_prob=p_key,
        gains_observed=g_obs, gains_lower=g_lo, gains_upper=g_hi, yields_upper=db.y_upper,
        yields_lower=db.y_lower, decoy_feasible=db.feasible, n_kato_bounds=n_bounds,
        eps_per_kato_bound=float(eps_b), eps_sec=p.eps_sec, eps_cor=p.eps_cor, eps_pa=p.eps_pa, eps_pe=p.eps_pe,
        finite_size=p.finite_size,
        terms_bits={
            "sifted": n_x, "privacy_amplification_n_h_eph": pa_term, "leak_ec": float(leak_ec_bits),
            "verification_log2_2_over_eps_cor": cor_term, "pa_log2_1_over_eps_pa": epa_term,
        },
    )
