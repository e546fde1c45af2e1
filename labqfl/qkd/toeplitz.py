"""Privacy amplification by Toeplitz hashing, exact on blocks of 10^7 bits and more.

Matrix convention — identical to the ``randextract`` reference (``ToeplitzHashing``, seed mode
``"default"``, Hahn, Tejada & Sánchez, randextract 0.2): for an input of ``n`` bits and an output
of ``m`` bits the seed has ``L = n + m − 1`` bits and the ``m × n`` matrix is

    T[i, j] = seed[(i − j) mod L]          (Python's negative indexing, 0 ≤ i < m, 0 ≤ j < n)

and the output is ``y = T · x  (mod 2)``. Results therefore agree bit for bit with
``randextract.ToeplitzHashing(n, m).extract(x, seed)``.

Algorithm. Put ``u = roll(seed, −m)`` (so ``u[t] = seed[(t − n + 1) mod L]``); then
``y[i] = (u ∗ x)[i + n − 1]`` (linear convolution). A cyclic convolution of any length ``N ≥ L``
has no aliasing at the indices ``n−1 … L−1`` we need, so one real FFT pair of length
``N = next_fast_len(L)`` gives the integer sums, which are rounded and reduced mod 2.

Exactness. The integer sums are at most ``min(n, popcount)`` < 2^53. The float64 FFT error obeys
Percival's a-priori bound (C. Percival, "Rapid multiplication modulo the sum and difference of
highly composite numbers", Math. Comp. 72, 387 (2003), Thm. 5.1; see also Brent, Percival &
Zimmermann, Math. Comp. 76 (2007)):  ‖z' − z‖∞ ≤ ‖x‖₂‖u‖₂ · ((1+ε)^{3k}(1+ε√5)^{3k+1}(1+β)^{3k} − 1)
with ``k = log2 N``, ``ε = 2^−53`` and β the twiddle-factor error. We use the first-order form
with a 4× safety factor on the per-level constant, ``‖x‖‖u‖ · 4·(3 + 3√5 + 3) · k · ε`` (β ≤ ε),
and require it to be < 1/4; independently every rounded value must lie within 1/8 of an integer
(a-posteriori check). If either check fails the exact number-theoretic transform (NTT modulo the
prime 7·2^26 + 1, no rounding at all) is used instead. For 10^7 input bits the a-priori bound is
≈ 10^−6, so the FFT path is always taken in practice; no result with a rounding error can leave
this module.
"""

from __future__ import annotations

import math
import secrets

import numba
import numpy as np
import scipy.fft as sfft

from labqfl.errors import QKDInputError

__all__ = [
    "toeplitz_hash",
    "toeplitz_hash_ntt",
    "toeplitz_hash_reference",
    "toeplitz_seed",
    "toeplitz_seed_length",
    "require_bits",
]

_EPS = 2.0 ** -53
_NTT_P = 469762049  # 7 * 2^26 + 1, primitive root 3
_NTT_G = 3
_NTT_MAX_LOG = 26


def require_bits(name: str, arr: object, length: int | None = None) -> np.ndarray:
    """Validate a bit array: 1-D ``uint8`` numpy array of 0/1 (optionally of a given length).

    Raises :class:`QKDInputError` naming the argument and what was expected.
    """
    if not isinstance(arr, np.ndarray):
        raise QKDInputError(f"{name}: expected a numpy uint8 array of 0/1 bits, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise QKDInputError(f"{name}: expected dtype uint8 (bits 0/1), got {arr.dtype}")
    if arr.ndim != 1:
        raise QKDInputError(f"{name}: expected a 1-D bit array, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise QKDInputError(f"{name}: expected {length} bits, got {arr.shape[0]}")
    if arr.size and int(arr.max()) > 1:
        raise QKDInputError(f"{name}: bits must be 0 or 1, found value {int(arr.max())}")
    return arr


def toeplitz_seed_length(n_in: int, out_len: int) -> int:
    """Seed length ``n + m − 1`` of the ``m × n`` Toeplitz matrix (randextract convention)."""
    return int(n_in) + int(out_len) - 1


def toeplitz_seed(n_in: int, out_len: int) -> np.ndarray:
    """A fresh uniformly random seed (uint8 0/1, length ``n + m − 1``) from the OS CSPRNG."""
    length = toeplitz_seed_length(n_in, out_len)
    raw = np.frombuffer(secrets.token_bytes((length + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw)[:length].copy()


def _check(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> tuple[int, int]:
    require_bits("bits", bits)
    n = int(bits.shape[0])
    if n < 1:
        raise QKDInputError("bits: expected at least one input bit, got an empty array")
    if isinstance(out_len, bool) or not isinstance(out_len, int | np.integer):
        raise QKDInputError(f"out_len: expected an int, got {type(out_len).__name__}")
    m = int(out_len)
    if not 1 <= m <= n:
        raise QKDInputError(f"out_len: expected 1 <= out_len <= {n} (the input length), got {m}")
    require_bits("seed_bits", seed_bits, n + m - 1)
    return n, m


def toeplitz_hash(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Toeplitz hash ``T(seed) · bits mod 2`` → ``out_len`` bits (uint8 0/1), exact.

    ``bits``: uint8 0/1 of length n; ``seed_bits``: uint8 0/1 of length n + out_len − 1;
    ``1 ≤ out_len ≤ n``. Matrix convention and exactness argument: module docstring.
    """
    n, m = _check(bits, seed_bits, out_len)
    L = n + m - 1
    u = np.roll(seed_bits, -m)
    nfft = sfft.next_fast_len(L, real=True)
    k = math.log2(nfft)
    norm = math.sqrt(float(np.count_nonzero(bits))) * math.sqrt(float(np.count_nonzero(u)))
    a_priori = norm * 4.0 * (6.0 + 3.0 * math.sqrt(5.0)) * k * _EPS
    if a_priori < 0.25:
        workers = 2
        fx = sfft.rfft(bits.astype(np.float64), nfft, workers=workers)
        fu = sfft.rfft(u.astype(np.float64), nfft, workers=workers)
        fx *= fu
        del fu
        z = sfft.irfft(fx, nfft, workers=workers)[n - 1 : L]
        del fx
        r = np.rint(z)
        if float(np.max(np.abs(z - r))) < 0.125:
            return (r.astype(np.int64) & 1).astype(np.uint8)
    return _toeplitz_ntt(bits, u, n, m)


# --------------------------------------------------------------------------------------------
# Exact NTT path (also the large-size cross-check in the tests).


@numba.njit(cache=True)
def _powmod(a: int, e: int, p: int) -> int:
    r = 1
    a %= p
    while e > 0:
        if e & 1:
            r = r * a % p
        a = a * a % p
        e >>= 1
    return r


@numba.njit(cache=True)
def _ntt(a: np.ndarray, invert: bool, p: int, g: int) -> None:
    n = a.shape[0]
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j ^= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    length = 2
    while length <= n:
        w = _powmod(g, (p - 1) // length, p)
        if invert:
            w = _powmod(w, p - 2, p)
        half = length // 2
        tw = np.empty(half, dtype=np.int64)
        tw[0] = 1
        for t in range(1, half):
            tw[t] = tw[t - 1] * w % p
        for i in range(0, n, length):
            for t in range(half):
                x = a[i + t]
                y = a[i + t + half] * tw[t] % p
                s = x + y
                a[i + t] = s - p if s >= p else s
                d = x - y
                a[i + t + half] = d + p if d < 0 else d
        length <<= 1
    if invert:
        ninv = _powmod(n, p - 2, p)
        for i in range(n):
            a[i] = a[i] * ninv % p


def _toeplitz_ntt(bits: np.ndarray, u: np.ndarray, n: int, m: int) -> np.ndarray:
    L = n + m - 1
    size = 1 << max(1, (L - 1).bit_length())
    if size > (1 << _NTT_MAX_LOG):
        raise QKDInputError(f"Toeplitz block of {L} seed bits exceeds the exact NTT limit of 2^{_NTT_MAX_LOG}")
    a = np.zeros(size, dtype=np.int64)
    b = np.zeros(size, dtype=np.int64)
    a[:n] = bits
    b[:L] = u
    _ntt(a, False, _NTT_P, _NTT_G)
    _ntt(b, False, _NTT_P, _NTT_G)
    a = a * b % _NTT_P
    _ntt(a, True, _NTT_P, _NTT_G)
    return (a[n - 1 : L] & 1).astype(np.uint8)


def toeplitz_hash_ntt(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Same result as :func:`toeplitz_hash`, always via the exact NTT (no floating point)."""
    n, m = _check(bits, seed_bits, out_len)
    return _toeplitz_ntt(bits, np.roll(seed_bits, -m), n, m)


def toeplitz_hash_reference(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Slow, obviously-correct reference: build ``T[i, j] = seed[(i − j) mod L]`` and multiply.

    Memory is ``m × n`` bytes — for tests on small blocks only.
    """
    n, m = _check(bits, seed_bits, out_len)
    L = n + m - 1
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    T = seed_bits[(i - j) % L].astype(np.int64)
    return ((T @ bits.astype(np.int64)) % 2).astype(np.uint8)
