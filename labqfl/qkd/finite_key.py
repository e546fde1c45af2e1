"""Finite-size statistics for the security analysis: Kato's concentration inequality and helpers.

Against coherent attacks the number of events Λ observed in n rounds is related to the *sum of
conditional probabilities* S = Σ_t Pr[event in round t | past] (not to an i.i.d. mean). We use
Kato's inequality [Kato, arXiv:2002.04357 (2020)], in the form used for TF-QKD by
Currás-Lorenzo et al., "Tight finite-key security for twin-field QKD", npj Quantum Inf. 7, 22
(2021) (arXiv:1910.11407), Methods:

    Pr[ S − Λ ≥ (b + a(2Λ/n − 1))·√n ] ≤ exp(−2(b² − a²) / (1 + 4a/(3√n))²),      b ≥ |a|      (K1)

and, applied to the complementary events 1 − ξ_t (a → −a),

    Pr[ Λ − S ≥ (b + a(2Λ/n − 1))·√n ] ≤ exp(−2(b² − a²) / (1 − 4a/(3√n))²).                   (K2)

Setting the right-hand side to ε fixes b(a); the free parameter a is tuned to a *prediction* Λ̃
of Λ so that the deviation is ≈ √(2 Λ̃ ln(1/ε)) (Chernoff-like) instead of Azuma's √(2 n ln(1/ε)).
Because a must not depend on the data, labqfl fixes a **menu** of predictions before the protocol
(Λ̃_g = n·2^(−g), g = 1..G) and pays for choosing the
tightest one afterwards with a union bound: each menu entry gets ε/len(menu). The optimal a for a
prediction is in closed form (:func:`kato_a`).

Verification status (docs/protocol.md §9): the full texts of Kato's paper and of CL21 were not
available offline. (K1) as written here agrees term by term with an independent public
transcription of the CL21/Kato bound (Li, Cao, Xie, Yin, Chen, Phys. Rev. Research 6, 013022
(2024), Eqs. (24)–(28): deviation [b + a(2Λ/n − 1)]√n with (1 + 4a/(3√n)) for the upper bound
on S and (1 − 4a/(3√n)) for the lower one, b ≥ |a|); (K2) follows from (K1) applied to the
complementary variables 1 − ξ_t. The tests pin that b(a) solves the tail equation, that the
closed-form a is the minimiser, and the coverage on i.i.d. and adaptive (martingale) sequences.

All functions are pure; counts may be floats (expected counts from the station model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def binary_entropy(p: float) -> float:
    """Binary Shannon entropy h(p) = −p log2 p − (1−p) log2(1−p) [bits] for p ∈ [0, 1]
    (Cover & Thomas, *Elements of Information Theory*, 2nd ed., Eq. (2.5)).

    h(0) = h(1) = 0, h(½) = 1, symmetric about ½; p outside [0, 1] is clipped to it. The one
    definition in labqfl: a bound on an error *rate* that must not fall above ½ (the phase-error
    bound in :func:`labqfl.qkd.estimation.secure_key_length`) is capped at ½ by its caller.
    """
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def _b_of_a(a: np.ndarray, n: float, eps: float, sign: float) -> np.ndarray:
    """b(a) that makes the Kato tail equal to ε; sign +1 for (K1), −1 for (K2)."""
    kappa = 4.0 / (3.0 * math.sqrt(n))
    L = -math.log(eps) / 2.0
    return np.sqrt(a * a + L * (1.0 + sign * kappa * a) ** 2)


def kato_a(n: float, eps: float, prediction: np.ndarray | float, sign: float) -> np.ndarray:
    """Optimal Kato parameter a for a predicted count Λ̃ (closed form).

    Minimises b(a) + a·s with s = 2Λ̃/n − 1, b(a) = √(a² + L(1 + σκa)²), L = ln(1/ε)/2,
    κ = 4/(3√n), σ = ``sign`` (+1 for (K1), −1 for (K2)). Setting the derivative to zero gives
    a = (−s·√(L/(A − s²)) − σLκ)/A with A = 1 + Lκ². (Equivalent to the expression for a quoted
    in Currás-Lorenzo et al. 2021, Methods, derived independently here.)
    """
    kappa = 4.0 / (3.0 * math.sqrt(n))
    L = -math.log(eps) / 2.0
    A = 1.0 + L * kappa * kappa
    s = np.clip(2.0 * np.asarray(prediction, dtype=float) / n - 1.0, -1.0, 1.0)
    # A − s² ≥ 0 is 0 where |s| = 1 and A rounds to 1 (n ≳ 1e17): a → ∓∞ there, which the clip below
    # bounds (a limit, not an error: no RuntimeWarning on stderr; CLI review s32 L8)
    with np.errstate(divide="ignore"):
        a = (-s * np.sqrt(L / (A - s * s)) - sign * L * kappa) / A
    # any data-independent a is allowed (b ≥ |a| holds by construction of b(a)); clipping to
    # |a| ≤ 0.45√n keeps 1 ± 4a/(3√n) and 1 − 2a/√n (count_upper_bound) positive
    lim = 0.45 * math.sqrt(n)
    return np.clip(a, -lim, lim)


def prediction_menu(n: float, extra: Sequence[float] = ()) -> np.ndarray:
    """Data-independent menu of predicted counts: n·2^(−g) for g = 1..⌊log2 n⌋ (≥ 1), plus ``extra``."""
    g_max = max(1, int(math.floor(math.log2(max(n, 2.0)))))
    menu = n * 2.0 ** (-np.arange(1, g_max + 1, dtype=float))
    return np.concatenate([menu, np.asarray([x for x in extra if x > 0], dtype=float)])


def conditional_sum_bounds(observed: float, n: float, eps: float, menu: np.ndarray | None = None) -> tuple[float, float]:
    """Bounds [S_L, S_U] on the sum of conditional probabilities S given the observed count Λ.

    Each side holds except with probability ≤ ε (ε is split over the menu by a union bound).
    ``n``: number of rounds (slots); ``observed``: Λ (count, may be a float expectation).
    """
    if n <= 0:
        return 0.0, 0.0
    lam = float(observed)
    m = prediction_menu(n) if menu is None else menu
    e = eps / len(m)
    rn = math.sqrt(n)
    aU = kato_a(n, e, m, +1.0)
    devU = (_b_of_a(aU, n, e, +1.0) + aU * (2.0 * lam / n - 1.0)) * rn
    aL = kato_a(n, e, m, -1.0)
    devL = (_b_of_a(aL, n, e, -1.0) + aL * (2.0 * lam / n - 1.0)) * rn
    upper = min(lam + float(np.min(devU)), n)
    lower = max(lam - float(np.min(devL)), 0.0)
    return lower, upper


def count_upper_bound(sum_upper: float, n: float, eps: float, menu: np.ndarray | None = None) -> float:
    """Upper bound on a count Λ whose sum of conditional probabilities is at most S_U.

    From (K2): Λ − S ≤ (b + a(2Λ/n − 1))√n  ⇒  Λ ≤ (S_U + (b − a)√n)/(1 − 2a/√n).
    Holds except with probability ≤ ε. Used for the number of phase errors.
    """
    if n <= 0:
        return 0.0
    m = prediction_menu(n) if menu is None else menu
    e = eps / len(m)
    rn = math.sqrt(n)
    a = kato_a(n, e, m, -1.0)
    b = _b_of_a(a, n, e, -1.0)
    bound = (sum_upper + (b - a) * rn) / (1.0 - 2.0 * a / rn)
    return float(min(np.min(bound), n))
