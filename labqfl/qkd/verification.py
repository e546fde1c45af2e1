"""Error verification by 2-universal (Toeplitz) hashing: do both corrected keys agree?

After error correction Ci draws a fresh random Toeplitz seed (OS CSPRNG), computes a
``t``-bit tag ``T(seed)·k_i`` and sends seed and tag to Cj over the authenticated channel; Cj
compares with ``T(seed)·k_j``. Toeplitz matrices form a 2-universal family (Carter & Wegman,
JCSS 18, 143 (1979); Krawczyk, CRYPTO '94), so two different keys give equal tags with
probability ``2^−t`` over the seed: with ``t = ⌈log2(1/ε_cor)⌉`` the protocol is
ε_cor-correct (Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012); the
``log2(2/ε_cor)`` term of the finite-key formula pays for the ``t`` disclosed bits).
A block whose tags differ is never amplified or stored as it is: with Cascade, reconciliation
continues and the block is verified again with a few fresh tag bits, every earlier tag checked too,
at most as often as :func:`verification_tag_plan` allows within ε_cor; a block no attempt verifies
is discarded.

The tag uses the same matrix convention as privacy amplification (:mod:`labqfl.qkd.toeplitz`).
Because ``t`` ≤ 64 is tiny it is computed directly, not by an FFT: with that convention tag bit
``i`` is ``Σ_b seed[(i − b) mod L]·x[b]`` (``L = n + t − 1``), a cyclic convolution, so
``tag[i] = c[i] ⊕ c[L + i]`` for the linear product ``c = seed·x`` in GF(2)[z]. Where the CPU
has the carry-less multiply (:data:`~labqfl.qkd.toeplitz.HAS_CLMUL`) the two windows of ``c``
are read off three carry-less dot products of the packed words (``O(n/64)`` multiplies,
:func:`_tag_clmul`); elsewhere a shift-and-AND kernel computes each bit's parity
(``O(t·n/64)`` word operations, :func:`_tag_kernel`, also the fast path's test reference).
Both give the same tag bit for bit: the hash function, and with it the ``2^−t`` collision bound,
is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from labqfl.errors import QKDInputError
from labqfl.qkd.toeplitz import HAS_CLMUL, _clmul_dot, _pack_checked, require_bits, toeplitz_seed

__all__ = ["verification_tag_length", "hash_tag", "hash_tag_reference", "VerificationOutcome", "verify_keys"]


def verification_tag_length(eps_cor: float) -> int:
    """Tag length ``t = ⌈log2(1/ε_cor)⌉`` bits (1 ≤ t ≤ 64)."""
    if not 0.0 < eps_cor < 1.0:
        raise QKDInputError(f"verification: eps_cor must be in (0, 1), got {eps_cor}")
    t = max(1, math.ceil(math.log2(1.0 / eps_cor)))
    if t > 64:
        raise QKDInputError(f"verification: eps_cor {eps_cor} needs a {t}-bit tag; at most 64 bits supported")
    return t


def _pack_words(bits: np.ndarray, n_words: int) -> np.ndarray:
    """Little-endian packing: bit b of word w is bits[64·w + b] (zeros past the end)."""
    out = np.zeros(n_words * 8, dtype=np.uint8)
    packed = np.packbits(bits, bitorder="little")
    out[: packed.size] = packed
    return out.view("<u8")


@numba.njit(cache=True, nogil=True)
def _parity64(x):  # type: ignore[no-untyped-def]
    x ^= x >> np.uint64(32)
    x ^= x >> np.uint64(16)
    x ^= x >> np.uint64(8)
    x ^= x >> np.uint64(4)
    x ^= x >> np.uint64(2)
    x ^= x >> np.uint64(1)
    return x & np.uint64(1)


@numba.njit(cache=True, nogil=True)
def _tag_kernel(Q, X, n_words, m):  # type: ignore[no-untyped-def]
    out = np.zeros(m, dtype=np.uint8)
    for i in range(m):
        o = m - 1 - i
        w0 = o >> 6
        sh = np.uint64(o & 63)
        acc = np.uint64(0)
        if sh == 0:
            for k in range(n_words):
                acc ^= Q[w0 + k] & X[k]
        else:
            back = np.uint64(64) - sh
            for k in range(n_words):
                acc ^= ((Q[w0 + k] >> sh) | (Q[w0 + k + 1] << back)) & X[k]
        out[i] = np.uint8(_parity64(acc))
    return out


@numba.njit(cache=True, nogil=True)
def _diagonal(S, Xr, d):  # type: ignore[no-untyped-def]
    """``D[d] = XOR_{u+j=d} clmul(S[u], X[j])`` (128 bits as (lo, hi)), ``Xr`` = X's words in
    reverse order (so the dot product runs forward in both); (0, 0) where no term exists."""
    kx = Xr.shape[0]
    u0 = d - (kx - 1)
    if u0 < 0:
        u0 = 0
    u1 = d if d < S.shape[0] - 1 else S.shape[0] - 1
    if d < 0 or u1 < u0:
        return np.uint64(0), np.uint64(0)
    return _clmul_dot(S, u0, Xr, kx - 1 - d + u0, u1 - u0 + 1)


@numba.njit(cache=True, nogil=True)
def _tag_clmul(S, X, L, m):  # type: ignore[no-untyped-def]
    """Tag bits ``c[i] ⊕ c[L + i]`` (i < m ≤ 64) of ``c = S·X`` over GF(2) (module docstring).

    ``S``: the seed's L bits, ``X``: the key's bits, both packed little-endian in 64-bit words
    (zero above). Word w of ``c`` is ``lo(D[w]) ⊕ hi(D[w − 1])``; ``c[0 … 63]`` is the low word
    of ``clmul(S[0], X[0])`` alone."""
    Xr = X[::-1].copy()
    low, _ = _clmul_dot(S, 0, X, 0, 1)
    w0 = L >> 6
    _, h_prev = _diagonal(S, Xr, w0 - 1)
    l0, h0 = _diagonal(S, Xr, w0)
    l1, _ = _diagonal(S, Xr, w0 + 1)
    c0 = l0 ^ h_prev  # bits 64·w0 … 64·w0 + 63 of c
    c1 = l1 ^ h0
    r = L & 63
    out = np.zeros(m, dtype=np.uint8)
    one = np.uint64(1)
    for i in range(m):
        k = r + i
        hi = (c0 >> np.uint64(k)) if k < 64 else (c1 >> np.uint64(k - 64))
        out[i] = np.uint8(((low >> np.uint64(i)) ^ hi) & one)
    return out


def hash_tag(bits: np.ndarray, seed_bits: np.ndarray, t: int) -> np.ndarray:
    """``t``-bit Toeplitz tag ``T(seed)·bits mod 2`` (uint8 0/1), same as ``toeplitz_hash``.

    ``seed_bits`` has ``n + t − 1`` bits (randextract convention, see :mod:`labqfl.qkd.toeplitz`).
    """
    require_bits("bits", bits, values=not HAS_CLMUL)
    n = int(bits.size)
    X = _pack_checked("bits", bits, (n + 63) // 64) if HAS_CLMUL and n else None  # checks the 0/1 values on the way
    if not 1 <= t <= max(n, 1) or t > 64:
        raise QKDInputError(f"verification: tag length must be 1..min(64, n={n}), got {t}")
    L = n + t - 1
    require_bits("seed_bits", seed_bits, L, values=X is None)
    if X is not None:
        return _tag_clmul(_pack_checked("seed_bits", seed_bits, (L + 63) // 64), X, L, t)
    return _hash_tag_words(bits, seed_bits, t)


def _hash_tag_words(bits: np.ndarray, seed_bits: np.ndarray, t: int) -> np.ndarray:
    """The tag by :func:`_tag_kernel` (any CPU; checked arguments)."""
    n = int(bits.size)
    L = n + t - 1
    # Row i of T is the window q[t-1-i : t-1-i+n] of q[s] = seed[(t-1-s) mod L], that is
    # seed[t-1], …, seed[0] and then seed[L-1], …, seed[t]: two reversed slices, no index array.
    q = np.concatenate((seed_bits[t - 1::-1], seed_bits[:t - 1:-1]))
    n_words = (n + 63) // 64
    X = _pack_words(bits, n_words)
    Q = _pack_words(q, (L + 63) // 64 + 2)
    return _tag_kernel(Q, X, n_words, t)


def hash_tag_reference(bits: np.ndarray, seed_bits: np.ndarray, t: int) -> np.ndarray:
    """Slow reference: the explicit matrix product (same as ``toeplitz_hash_reference``)."""
    from labqfl.qkd.toeplitz import toeplitz_hash_reference

    return toeplitz_hash_reference(bits, seed_bits, t)


@dataclass(frozen=True)
class VerificationOutcome:
    """Result of one verification round. ``disclosed_bits`` = tag length (counted as leakage)."""

    ok: bool
    tag_bits: int
    disclosed_bits: int


def verify_keys(bits_i: np.ndarray, bits_j: np.ndarray, eps_cor: float,
                seed_bits: np.ndarray | None = None) -> VerificationOutcome:
    """Run the verification between Ci's and Cj's corrected keys (in-process form).

    Ci draws the seed (``secrets``) unless one is given; the comparison uses only what crosses
    the channel (seed and Ci's tag). Length mismatch → :class:`QKDInputError`.
    """
    require_bits("bits_i", bits_i)
    require_bits("bits_j", bits_j, bits_i.size)
    n = int(bits_i.size)
    if n == 0:
        return VerificationOutcome(True, 0, 0)
    t = min(verification_tag_length(eps_cor), n)
    seed = toeplitz_seed(n, t) if seed_bits is None else seed_bits
    tag_i = hash_tag(bits_i, seed, t)
    tag_j = hash_tag(bits_j, seed, t)
    return VerificationOutcome(bool(np.array_equal(tag_i, tag_j)), t, t)


MAX_VERIFY_ATTEMPTS = 4
"""Verification attempts a block may make (:func:`verification_tag_plan`): the first, and up to three
after a reconciliation continued because the tags differed (docs/protocol.md §5, "Verification")."""

MAX_RETRY_TAG_BITS = 16
"""A further attempt is planned only if it needs at most this many new tag bits."""


def verification_tag_plan(eps_cor: float, attempts: int = MAX_VERIFY_ATTEMPTS) -> tuple[int, ...]:
    """Tag bits disclosed at each verification attempt of one block: ``(t_0, Δ_1, Δ_2, …)``.

    Attempt 0 is the verification of :func:`verification_tag_length` (``t_0 = ⌈log2(1/ε_cor)⌉``).
    When its tags differ, reconciliation may continue (more confirmation parities) and the block
    is verified again: attempt i draws a **fresh** Toeplitz seed of ``Δ_i`` rows, Ci discloses
    those ``Δ_i`` new tag bits, and Cj accepts only if **every** tag so far (0 … i) matches its
    corrected key.  The key difference e_i that attempt i tests is a function of the keys and of
    the reconciliation's own seeds, which are drawn independently of every verification seed, and
    the seeds of the attempts are independent of each other, so for e_i ≠ 0 all tags collide with
    probability 2^−(t_0 + Δ_1 + … + Δ_i) (each Toeplitz family is universal₂: Carter & Wegman,
    JCSS 18, 143 (1979); Krawczyk, CRYPTO '94).  A block is accepted at most once, so the
    probability of accepting differing keys is at most Σ_i 2^−(t_0 + … + Δ_i), and each Δ_i is the
    smallest that keeps this sum ≤ ε_cor (exact rational arithmetic).  Since 2^−t_0 ≤ ε_cor <
    2^(1−t_0), what is left after attempt 0 is < 2^−t_0: every Δ_i ≥ 1.  With ε_cor = 10^−15:
    (50, 3, 8, 1).  The plan stops early where a further attempt would need more than
    :data:`MAX_RETRY_TAG_BITS` bits (ε_cor a power of two leaves nothing: ``(t_0,)``).  The
    ``Δ_i`` bits are disclosed after a failed verification and are counted in the leak λ_EC; ``t_0``
    is charged by the log2(2/ε_cor) term of the key length, as before.
    """
    from fractions import Fraction

    t0 = verification_tag_length(eps_cor)
    left = Fraction(eps_cor) - Fraction(1, 2 ** t0)
    plan = [t0]
    total = t0
    while len(plan) < attempts and left > 0:
        e = total + 1
        while Fraction(1, 2 ** e) > left:
            e += 1
        if e - total > MAX_RETRY_TAG_BITS:
            break
        plan.append(e - total)
        left -= Fraction(1, 2 ** e)
        total = e
    return tuple(plan)
