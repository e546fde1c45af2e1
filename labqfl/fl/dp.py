"""Distributed differential privacy that survives collusion: the distributed discrete Gaussian.

Mechanism (Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation", ICML 2021 — "KLS21" below; discrete Gaussian sampling after
Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential Privacy", NeurIPS 2020 —
"CKS20"). Per round, each client i, in the integer domain, *before* masking:

1. **clip** its update x (d parameters) to L2 norm ≤ c;
2. **flatten**: pad to d' = 2^⌈log2 d⌉ and rotate, y = W·D·x with D a diagonal of random signs
   (public per-round randomness, :func:`rotation_signs`) and W the orthonormal Walsh–Hadamard
   matrix (KLS21 §4) — every coordinate is then about c/√d', so the modular sum rarely wraps;
3. **scale and round**: y/γ rounded to integers by *conditional* randomized rounding — unbiased
   stochastic rounding repeated until ‖z‖₂ ≤ Δ₂ with
   Δ₂² = min{ c²/γ² + d'/4 + √(2 ln(1/β))·(c/γ + √d'/2), (c/γ + √d')² } (KLS21 §4, conditional
   randomized rounding; the same bound as the authors' reference code);
   Δ₂ is the L2 sensitivity of one client's integer vector;
4. **noise**: add N_Z(0, σ²) per coordinate (discrete Gaussian, CKS20 Algorithm 3);
5. **encode mod 2^q** (two's complement), then mask as usual (pairwise masks, self-masks).

The server's modular sum S = Σ z_i + Σ noise_i mod 2^q is read as a signed integer in
[−2^{q−1}, 2^{q−1}) (**modular clipping**: a sum outside that range wraps, KLS21 §4), scaled by
γ, rotated back and divided by the number of survivors: the mean of the clipped updates plus
noise. Weights are equal in DP mode (a weight would scale a client's sensitivity).

**Collusion.** If the server colludes with all but H honest clients, the colluders subtract their
own noise; what protects an honest client is the noise of the H honest ones: a sum of H discrete
Gaussians N_Z(0, σ²). By KLS21 Theorem 1 (arXiv 2102.06387; sums of discrete Gaussians) with
neighbouring inputs differing by one client's vector set to zero ("zero-out": the client still adds
its noise; L2 sensitivity Δ₂, L1 ≤ √d'·Δ₂) the round is ½ε_r²-concentrated DP with

    ε_r = min{ √(Δ₂²/(Hσ²) + ½·τ·d'),  Δ₁/√(Hσ²) + τ·√d' },  τ = 10·Σ_{k=1}^{H−1} exp(−2π²σ²·k/(k+1)).

Every client draws σ sized for H (default 1: the paper's worst case, all but one colluding), so
the sum over all N clients carries N/H times the variance central DP would need.

**Accounting.** ρ-zCDP with ρ = ε_r²/2 has the Rényi-DP curve α·ρ of a Gaussian mechanism with
noise multiplier 1/ε_r; the R rounds are composed and converted to (ε, δ) by Google's
``dp_accounting`` library (``RdpAccountant``, ``SelfComposedDpEvent(GaussianDpEvent(1/ε_r), R)``)
— the maintained accountant, not a formula of ours. :func:`plan_dp` searches the smallest σ whose
accounted ε meets the target.

**Bit budget.** γ is the smallest granularity for which N clients' flattened, rounded values plus
k standard deviations of the total noise fit the signed range:
N·(c_∞/γ + 1) + k·√N·σ < 2^{q−1}, with c_∞ = c·√(2 ln(2d'/β_f)/d') the flattened coordinate bound
that holds for each client with probability ≥ 1 − β_f (Hoeffding over the random signs). If no γ
fits, the configuration is refused (:class:`~labqfl.errors.BitBudgetError`).

Noise randomness: a numpy ``Generator`` (PCG64) seeded from the OS CSPRNG (``secrets``) per client
and round; the sampler is exact in distribution up to floating-point evaluation of the acceptance
probabilities (CKS20 give an exact-arithmetic version).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from labqfl.errors import BitBudgetError
from labqfl.fl.quantize import uint_dtype

MECHANISM = "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021)"
ACCOUNTANT = "dp_accounting.rdp.RdpAccountant (Google dp-accounting)"


@dataclass(frozen=True)
class DPConfig:
    """Target (ε, δ) over all rounds; H honest clients assumed; L2 clip c; KLS21's β (rounding),
    β_f (flattening bound) and k (standard deviations of noise kept inside the modulus)."""

    epsilon: float
    delta: float = 1e-5
    honest: int = 1
    l2_clip: float = 1.0
    beta: float = math.exp(-0.5)
    flatten_beta: float = 1e-6
    k_stddevs: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"DP epsilon must be a positive number, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"DP delta must lie in (0, 1), got {self.delta}")
        if self.honest < 1:
            raise ValueError(f"DP honest clients assumed must be >= 1, got {self.honest}")
        if not (math.isfinite(self.l2_clip) and self.l2_clip > 0):
            raise ValueError(f"DP L2 clip must be a positive number, got {self.l2_clip}")
        if not 0 < self.beta < 1 or not 0 < self.flatten_beta < 1 or self.k_stddevs <= 0:
            raise ValueError("DP beta and flatten_beta must lie in (0, 1) and k_stddevs be positive")


@dataclass(frozen=True)
class DPPlan:
    """The mechanism's parameters for a run (all public): granularity γ, per-client noise σ (integer
    units), sensitivity Δ₂, padded dimension d', per-round zCDP ε_r, and the accounted (ε, δ)."""

    gamma: float
    sigma: float
    delta2: float
    d_pad: int
    n_params: int
    n_clients: int
    honest: int
    rounds: int
    q: int
    l2_clip: float
    epsilon_round_zcdp: float
    tau: float
    epsilon: float
    delta: float
    target_epsilon: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPPlan:
        """The plan from :meth:`as_dict` (e.g. sent by a Flower server); refuses missing or extra fields."""
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(f"DP plan fields {sorted(set(d) ^ names)} missing or unknown")
        ints = {"d_pad", "n_params", "n_clients", "honest", "rounds", "q"}
        kw: dict[str, Any] = {k: int(v) if k in ints else float(v) for k, v in d.items()}
        return cls(**kw)

    def privacy(self) -> dict[str, Any]:
        """The ``privacy`` block of metrics.json."""
        return {"mechanism": MECHANISM, "epsilon": self.epsilon, "delta": self.delta,
                "honest_clients_assumed": self.honest, "rounds": self.rounds, "accountant": ACCOUNTANT,
                "noise_sigma_per_client": self.sigma, "granularity": self.gamma, "l2_sensitivity": self.delta2,
                "l2_clip": self.l2_clip, "neighbouring": "zero-out: one client's update replaced by zeros (user-level)"}


# -- discrete Gaussian sampling (CKS20 Algorithm 3, vectorised) -----------------------------------


def _discrete_laplace(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """n samples with P(y) ∝ exp(−|y|/t): difference of two geometric variables (p = 1 − e^{−1/t})."""
    p = -math.expm1(-1.0 / t)
    return (rng.geometric(p, n) - rng.geometric(p, n)).astype(np.int64)


def discrete_gaussian(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """n samples of N_Z(0, σ²): P(x) ∝ exp(−x²/(2σ²)) on the integers (CKS20, Algorithm 3).

    Rejection from the discrete Laplace with t = ⌊σ⌋ + 1: accept y with probability
    exp(−(|y| − σ²/t)²/(2σ²)).
    """
    if not sigma > 0:
        raise ValueError(f"discrete Gaussian sigma must be positive, got {sigma}")
    t = int(math.floor(sigma)) + 1
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        m = int((n - filled) * 1.5) + 16
        y = _discrete_laplace(m, t, rng)
        acc = rng.random(m) < np.exp(-((np.abs(y) - sigma * sigma / t) ** 2) / (2 * sigma * sigma))
        ok = y[acc][: n - filled]
        out[filled:filled + ok.size] = ok
        filled += ok.size
    return out


def discrete_gaussian_pmf(xs: np.ndarray, sigma: float) -> np.ndarray:
    """P(x) of N_Z(0, σ²) at integers ``xs`` (normaliser summed over |x| ≤ σ·40 + 10)."""
    span = int(sigma * 40) + 10
    z = np.exp(-(np.arange(-span, span + 1) ** 2) / (2 * sigma * sigma)).sum()
    return np.exp(-(np.asarray(xs, dtype=np.float64) ** 2) / (2 * sigma * sigma)) / z


def noise_rng() -> np.random.Generator:
    """A fresh noise generator seeded with 256 bits from the OS CSPRNG."""
    return np.random.default_rng(int.from_bytes(secrets.token_bytes(32), "little"))


# -- flattening -----------------------------------------------------------------------------------


def padded_dim(d: int) -> int:
    return 1 << max(0, (d - 1).bit_length())


def fwht(a: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh–Hadamard transform of a float vector of length 2^m (its own inverse)."""
    x = np.array(a, dtype=np.float64)
    n = x.size
    if n & (n - 1):
        raise ValueError(f"Walsh-Hadamard needs a power-of-two length, got {n}")
    h = 1
    while h < n:
        v = x.reshape(-1, 2, h)
        a0 = v[:, 0, :].copy()
        v[:, 0, :] += v[:, 1, :]
        v[:, 1, :] = a0 - v[:, 1, :]
        h *= 2
    return x / math.sqrt(n)


def rotation_signs(d_pad: int, round_index: int) -> np.ndarray:
    """The round's public random signs D (±1.0), the same at every client and at the server."""
    rng = np.random.default_rng([0x6C616271, 0x666C6174, int(round_index)])  # "labq", "flat"
    return rng.integers(0, 2, d_pad).astype(np.float64) * 2.0 - 1.0


# -- planning: sensitivity, accountant, noise, granularity ------------------------------------------


def sensitivity(l2_clip: float, gamma: float, d_pad: int, beta: float) -> float:
    """Δ₂ after conditional randomized rounding at granularity γ (KLS21 §4)."""
    cg = l2_clip / gamma
    a = cg * cg + d_pad / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (cg + math.sqrt(d_pad) / 2.0)
    return math.sqrt(min(a, (cg + math.sqrt(d_pad)) ** 2))


def zcdp_epsilon_of_sum(delta2: float, sigma: float, honest: int, d_pad: int) -> tuple[float, float]:
    """(ε_r, τ): the sum of H discrete Gaussians N_Z(0, σ²) is ½ε_r²-zCDP (KLS21, Theorem 1)."""
    tau = 10.0 * sum(math.exp(-2.0 * math.pi**2 * sigma * sigma * k / (k + 1)) for k in range(1, honest))
    var = honest * sigma * sigma
    e1 = math.sqrt(delta2 * delta2 / var + 0.5 * tau * d_pad)
    e2 = math.sqrt(d_pad) * delta2 / math.sqrt(var) + tau * math.sqrt(d_pad)
    return min(e1, e2), tau


def accounted_epsilon(epsilon_round_zcdp: float, rounds: int, delta: float) -> float:
    """(ε, δ) over ``rounds`` rounds of a ½ε_r²-zCDP mechanism, by ``dp_accounting``'s RDP accountant
    (a Gaussian mechanism with noise multiplier 1/ε_r has exactly that Rényi curve)."""
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0 / epsilon_round_zcdp),
                                                  int(rounds)))
    return float(acc.get_epsilon(delta))


def _noise_multiplier_for(target: float, rounds: int, delta: float) -> float:
    """Smallest Gaussian noise multiplier z (bisection) whose R-fold composition has ε ≤ target."""
    lo, hi = 1e-3, 1.0
    while accounted_epsilon(1.0 / hi, rounds, delta) > target:
        hi *= 2.0
        if hi > 1e7:
            raise BitBudgetError(f"DP target epsilon={target} is unreachable over {rounds} rounds")
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if accounted_epsilon(1.0 / mid, rounds, delta) > target:
            lo = mid
        else:
            hi = mid
    return hi


def plan_dp(cfg: DPConfig, *, n_params: int, n_clients: int, q: int, rounds: int) -> DPPlan:
    """Choose σ (privacy) and γ (bit budget) for a run; raise :class:`BitBudgetError` if q is too
    small for N clients' values plus the noise."""
    uint_dtype(q)
    if cfg.honest > n_clients:
        raise ValueError(f"DP honest clients H={cfg.honest} exceeds the number of clients N={n_clients}")
    if rounds < 1:
        raise ValueError(f"DP needs rounds >= 1, got {rounds}")
    d_pad = padded_dim(n_params)
    z = _noise_multiplier_for(cfg.epsilon, rounds, cfg.delta)
    c_inf = cfg.l2_clip * math.sqrt(2.0 * math.log(2.0 * d_pad / cfg.flatten_beta) / d_pad)
    half = float(1 << (q - 1))

    def sigma_for(gamma: float) -> tuple[float, float, float, float]:
        d2 = sensitivity(cfg.l2_clip, gamma, d_pad, cfg.beta)
        sigma = z * d2 / math.sqrt(cfg.honest)
        er, tau = zcdp_epsilon_of_sum(d2, sigma, cfg.honest, d_pad)
        while accounted_epsilon(er, rounds, cfg.delta) > cfg.epsilon:  # τ > 0 only for tiny σ
            sigma *= 1.01
            er, tau = zcdp_epsilon_of_sum(d2, sigma, cfg.honest, d_pad)
        return d2, sigma, er, tau

    def fits(gamma: float) -> bool:
        _, sigma, _, _ = sigma_for(gamma)
        return n_clients * (c_inf / gamma + 1.0) + cfg.k_stddevs * math.sqrt(n_clients) * sigma < half

    hi = cfg.l2_clip
    while not fits(hi):
        hi *= 2.0
        if hi > cfg.l2_clip * 2.0**40:
            break
    if not fits(hi):
        _, sigma, _, _ = sigma_for(hi)
        raise BitBudgetError(
            f"bit budget too small for DP: q={q} cannot hold the sum of N={n_clients} clients' noise "
            f"(k={cfg.k_stddevs} std devs of √N·σ with σ={sigma:.3g} at the coarsest granularity); "
            f"use a larger q, a larger --dp-epsilon or fewer clients")
    lo = hi / 2.0**40
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if fits(mid):
            hi = mid
        else:
            lo = mid
    d2, sigma, er, tau = sigma_for(hi)
    return DPPlan(gamma=hi, sigma=sigma, delta2=d2, d_pad=d_pad, n_params=n_params, n_clients=n_clients,
                  honest=cfg.honest, rounds=rounds, q=q, l2_clip=cfg.l2_clip, epsilon_round_zcdp=er, tau=tau,
                  epsilon=accounted_epsilon(er, rounds, cfg.delta), delta=cfg.delta, target_epsilon=cfg.epsilon)


# -- client encode / server decode ---------------------------------------------------------------


def dp_encode(x: np.ndarray, plan: DPPlan, *, round_index: int, rng: np.random.Generator,
              noise: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Client: clip, flatten, scale, conditionally round, add discrete Gaussian noise, encode mod
    2^q. Returns (``uint{q}`` vector of length d', whether the L2 clip was active)."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if v.size != plan.n_params:
        raise ValueError(f"update has {v.size} parameters, the DP plan {plan.n_params}")
    if not np.all(np.isfinite(v)):
        raise ValueError("update contains NaN or infinite values; refusing to encode")
    norm = float(np.linalg.norm(v))
    clipped = norm > plan.l2_clip
    if clipped:
        v = v * (plan.l2_clip / norm)
    pad = np.zeros(plan.d_pad)
    pad[: v.size] = v
    y = fwht(pad * rotation_signs(plan.d_pad, round_index)) / plan.gamma
    fl = np.floor(y)
    frac = y - fl
    for _ in range(1000):
        z = fl + (rng.random(y.size) < frac)
        if float(np.linalg.norm(z)) <= plan.delta2:
            break
    else:  # pragma: no cover - probability ≤ β^1000
        raise RuntimeError("conditional randomized rounding did not meet the L2 bound")
    total = z.astype(np.int64) + discrete_gaussian(plan.d_pad, plan.sigma, noise)
    return np.mod(total, 1 << plan.q).astype(uint_dtype(plan.q)), clipped


def dp_decode(total: np.ndarray, plan: DPPlan, *, round_index: int, n_survivors: int) -> np.ndarray:
    """Server: signed reading of the modular sum, scale by γ, rotate back, mean over survivors."""
    s = np.asarray(total).astype(np.int64)
    half = 1 << (plan.q - 1)
    signed = np.where(s >= half, s - (1 << plan.q), s).astype(np.float64) * plan.gamma
    x = fwht(signed) * rotation_signs(plan.d_pad, round_index)
    return x[: plan.n_params] / n_survivors
