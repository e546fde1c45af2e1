"""Clip, quantise and dequantise model updates for exact modular aggregation.

The protocol (QuNetQFL, arXiv 2501.12709, "quantize → mask → sum mod 2^q → dequantize") needs
the *sum* of the N clients' integers to stay below the modulus 2^q, otherwise the modular sum
wraps and the aggregate is garbage. A sum of N values of b bits is below 2^q for every input only
if ``b <= q - ceil(log2 N)``; labqfl therefore quantises to

    b = q - ceil(log2 N)      bits per value (equal weights),  L = 2^b - 1 levels above zero.

**Offset encoding.** A clipped value x ∈ [-c, c] is mapped onto the integer range [0, M]:
``v = R((x + c) / (2c) · M)`` with R nearest or unbiased stochastic rounding; v is clamped to
[0, M]. With equal weights every client uses M = L.

**Weighted FedAvg (how weights enter exactly).** Client i's weight w_i (e.g. its sample count;
public metadata the FedAvg server knows anyway) sets the size of its integer range:

    M_i = floor(N · L · w_i / Σ_j w_j),     so  Σ_i M_i <= N · L = N · (2^b − 1) < 2^q.

Because v_i ∈ [0, M_i], the modular sum S = Σ v_i never wraps, whatever the inputs (a hard bound,
not a probabilistic one). The server decodes

    2c · S / Σ_j M_j  −  c  =  Σ_i (M_i / Σ_j M_j) · x_i  +  (2c / Σ_j M_j) · Σ_i e_i,

the weighted average of the clipped updates x_i with *effective* weights M_i / ΣM, plus the
rounding errors e_i = v_i − M_i·(x_i + c)/(2c) of the clients (in levels). With dropouts the sums
run over the N_s survivors s (renormalised weighted average of the survivors). The server learns
S — the weighted sum — and nothing about an individual v_i beyond what the sum reveals.

**Error bounds** (review s35 F3/F4; elementary, from the two displays above). Write p_i = w_i/Σw,
M_i = N·L·p_i − f_i with 0 ≤ f_i < 1 (the floor), and ΣM_s, N_s over the clients summed.

* Quantisation: nearest rounding has |e_i| ≤ ½, so the decoded average is within
  **N_s·c/ΣM_s** per coordinate of the effective-weight average (:func:`decode_error_bound`);
  stochastic rounding has |e_i| < 1 (twice that) and E[e_i] = 0. Without dropouts ΣM = N·L − F with
  F = Σ f_i an integer ≤ N − 1, so the bound is N·c/(N·L − N + 1) ≈ c/L; with dropouts of heavy
  clients ΣM_s ≪ N_s·L and it grows (weights 10, 10, 1000, 1000 at q = 16, the two heavy clients
  lost: 43.8·c/L measured, bound 50.6·c/L).
* Effective weights: M_i/ΣM_s − w_i/Σ_s w = (F_s·p^s_i − f_i)/ΣM_s with p^s_i = w_i/Σ_s w and
  F_s = Σ_s f_j < N_s, so each is within **N_s/ΣM_s** of the survivors' FedAvg weight
  (:func:`effective_weight_bound`); without dropouts within max(1, (N − 1)·p_i)/(N·L − N + 1) ≤
  (N − 1)/(N·L − N + 1) ≈ (N − 1)/(N·L) (not 1/(N·L): w = (0.9883, 0.0039, 0.0039, 0.0039) at N = 4,
  L = 63 gives M = (249, 0, 0, 0), an error of 0.0117 against 3/249 = 0.0120). The trimming of a
  floating-point overshoot moves one M_i by one more level.
* A client with p_i < 1/(N·L) gets M_i = 0: its update is in no aggregate (nothing wraps, nothing is
  revealed, but it does not count). ``SecAggConfig.quantization`` lists such clients and
  ``labqfl train`` warns about them at planning; a larger q gives them levels.

All functions are pure, over numpy arrays with explicit dtypes; updates are float arrays of any
shape, integers come back as ``uint{q}`` (the modulus is the dtype's wrap-around).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numba
import numpy as np

Rounding = Literal["nearest", "stochastic"]

SUPPORTED_Q = (8, 16, 32)


def q_problem(q: object) -> str | None:
    """Why ``q`` is not a supported word size (``None``: it is), as one phrase for the caller to prefix
    with the option it came from: "must be one of 8, 16, 32 (bits per masked value), got 7"."""
    return None if q in SUPPORTED_Q else f"must be one of {', '.join(map(str, SUPPORTED_Q))} (bits per masked value), got {q!r}"


def ceil_log2(n: int) -> int:
    """⌈log2 n⌉ for an integer n >= 1 (exact, no floating point)."""
    if n < 1:
        raise ValueError(f"ceil_log2 needs n >= 1, got {n}")
    return (int(n) - 1).bit_length()


_UINT: dict[int, np.dtype] = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.uint32)}


def uint_dtype(q: int) -> np.dtype:
    """The unsigned numpy dtype whose wrap-around is arithmetic mod 2^q (q ∈ {8, 16, 32})."""
    try:
        return _UINT[q]
    except (KeyError, TypeError):
        raise ValueError(f"q must be one of {SUPPORTED_Q} bits, got {q!r}") from None


def value_bits(q: int, n_clients: int) -> int:
    """Bits per value b = q − ⌈log2 N⌉ for which a sum of N values never wraps mod 2^q."""
    uint_dtype(q)
    return q - ceil_log2(n_clients)


def weight_ranges(weights: Sequence[float] | np.ndarray, b: int) -> np.ndarray:
    """Integer range M_i per client for weighted FedAvg (int64, shape (N,)).

    ``M_i = floor(N·L·w_i/Σw)`` with L = 2^b − 1, corrected so that Σ M_i <= N·L exactly (floating
    point can overshoot a floor by one; the largest ranges are trimmed). Equal weights give M_i = L.
    Weights must be finite, >= 0, with a positive sum.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    if b < 1:
        raise ValueError(f"value bits b must be >= 1, got {b}")
    n = w.size
    cap = n * ((1 << b) - 1)
    m = np.floor(cap * (w / w.sum())).astype(np.int64)
    m = np.clip(m, 0, cap)
    while int(m.sum()) > cap:  # at most a few iterations (float overshoot only)
        m[int(np.argmax(m))] -= 1
    return m


def decode_error_bound(levels: Sequence[int] | np.ndarray, clip: float, rounding: Rounding = "nearest") -> float:
    """Largest error per coordinate of the decoded average against the effective-weight average of the
    clipped updates, for the clients whose levels M_i are summed (the survivors): N_s·c/ΣM_s with nearest
    rounding (each client errs by ≤ ½ level of 2c/ΣM_s), 2·N_s·c/ΣM_s with stochastic rounding (< 1 level;
    unbiased). Derivation in the module docstring."""
    m = np.asarray(levels, dtype=np.int64)
    total = int(m.sum())
    if total <= 0:
        raise ValueError("the summed clients' levels are all zero; nothing is decoded")
    return (1.0 if rounding == "nearest" else 2.0) * m.size * float(clip) / total


def effective_weight_bound(levels: Sequence[int] | np.ndarray) -> float:
    """Bound on |M_i/ΣM_s − w_i/Σ_s w| over the clients summed: N_s/ΣM_s (module docstring)."""
    m = np.asarray(levels, dtype=np.int64)
    total = int(m.sum())
    if total <= 0:
        raise ValueError("the summed clients' levels are all zero; no effective weights")
    return m.size / total


def quantize(
    x: np.ndarray,
    *,
    clip: float,
    levels: int,
    q: int,
    rounding: Rounding = "nearest",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """Clip ``x`` to [-clip, clip] and encode it on the integer range [0, levels].

    Returns ``(v, n_clipped)``: v is ``uint{q}`` with x's shape, n_clipped the number of entries
    that were outside [-clip, clip] (reported, never silent). ``rounding="stochastic"`` is
    unbiased: E[v] = (x + clip)/(2·clip)·levels for x inside the clip range; it needs ``rng``.
    Non-finite inputs are refused. One fused Numba pass (:func:`_quantize_kernel`);
    :func:`quantize_reference` is the plain numpy reference.
    """
    a, dt = _check_quantize_args(x, clip, levels, q, rounding, rng)
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    u = rng.random(flat.size) if rounding == "stochastic" else np.empty(0)  # type: ignore[union-attr]
    out = np.empty(flat.size, dtype=dt)
    n_clipped = _quantize_kernel(flat, float(clip), float(levels), u, out)
    if n_clipped < 0:
        raise ValueError("update contains NaN or infinite values; refusing to quantise")
    return out.reshape(np.shape(a)), int(n_clipped)


def quantize_reference(
    x: np.ndarray,
    *,
    clip: float,
    levels: int,
    q: int,
    rounding: Rounding = "nearest",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """Slow obviously-correct numpy version of :func:`quantize` (same rng draws, same result)."""
    a, dt = _check_quantize_args(x, clip, levels, q, rounding, rng)
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("update contains NaN or infinite values; refusing to quantise")
    n_clipped = int(np.count_nonzero(np.abs(a) > clip))
    z = (np.clip(a, -clip, clip) + clip) * (levels / (2.0 * clip))
    if rounding == "nearest":
        z = np.floor(z + 0.5)
    else:
        z = np.floor(z + rng.random(a.size).reshape(a.shape))  # type: ignore[union-attr]
    return np.clip(z, 0, levels).astype(dt), n_clipped


def _check_quantize_args(x: np.ndarray, clip: float, levels: int, q: int, rounding: str,
                         rng: np.random.Generator | None) -> tuple[np.ndarray, np.dtype]:
    if not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite float, got {clip}")
    dt = uint_dtype(q)
    if not 0 <= levels < (1 << q):
        raise ValueError(f"levels must lie in [0, 2^{q}), got {levels}")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if rounding == "stochastic" and rng is None:
        raise ValueError("stochastic rounding needs a numpy Generator (rng)")
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"update must be a real numeric array, got dtype {a.dtype}")
    return a, dt


@numba.njit(cache=True, nogil=True)
def _quantize_kernel(x, clip, levels, u, out):  # type: ignore[no-untyped-def]
    """Fused clip → offset → scale → round → clamp; returns #clipped, or −1 on NaN/inf.

    Branch-free body (no early exit) so that LLVM vectorises the loop.
    """
    scale = levels / (2.0 * clip)
    stochastic = u.size > 0
    n_clipped = 0
    n_bad = 0
    for t in range(x.size):
        v = np.float64(x[t])
        n_bad += not (v - v == 0.0)  # NaN or ±inf
        a = min(max(v, -clip), clip)
        n_clipped += a != v
        z = np.floor((a + clip) * scale + (u[t] if stochastic else 0.5))
        out[t] = np.uint64(min(max(z, 0.0), levels))
    return -1 if n_bad else n_clipped


def dequantize(v: np.ndarray, *, clip: float, levels: int) -> np.ndarray:
    """Inverse of :func:`quantize` for one client's integers: 2·clip·v/levels − clip (float64)."""
    if levels <= 0:
        raise ValueError(f"levels must be positive to dequantise, got {levels}")
    return np.asarray(v, dtype=np.float64) * (2.0 * clip / levels) - clip


def dequantize_sum(total: np.ndarray, *, clip: float, total_levels: int) -> np.ndarray:
    """Weighted average from the exact integer sum S = Σ v_i: 2·clip·S/ΣM − clip (float64).

    ``total_levels`` is Σ M_i over the clients whose values are in S (the survivors).
    """
    if total_levels <= 0:
        raise ValueError(f"total_levels must be positive, got {total_levels}")
    return np.asarray(total, dtype=np.float64) * (2.0 * clip / total_levels) - clip
