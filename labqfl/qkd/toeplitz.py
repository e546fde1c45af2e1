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

Fast exact paths (default where the CPU has the carry-less multiply ``pclmulqdq``). Over GF(2) the
product is a *middle product* of binary polynomials, ``y[i] = (u·x)[i + n − 1]``, i.e. a Toeplitz
matrix–vector product, computed on bit-packed 64-bit words without any rounding at all.

**Ternary FFT** (:func:`toeplitz_hash_tfft`; the default unless ``out_len`` is small). Schönhage's
FFT for characteristic 2 (A. Schönhage, "Schnelle Multiplikation von Polynomen über Körpern der
Charakteristik 2", Acta Inform. 7, 395–398 (1977); as implemented in gf2x: R. P. Brent, P. Gaudry,
E. Thomé, P. Zimmermann, "Faster multiplication in GF(2)[x]", ANTS VIII, LNCS 5011 (2008), §3):

* work in ``R = F2[x]/(x^{2L} + x^L + 1)`` with ``L = t·3^{k−1}``; there ``x^{3L} = 1`` and
  ``ω = x^t`` is a principal ``K = 3^k``-th root of unity (``x^{tj} − 1`` is coprime to
  ``x^{2L} + x^L + 1`` for ``0 < j < K``), ``ρ = x^L`` the cube root, and ``1/3 = 1``;
* cut ``u`` and ``x`` into ``K`` chunks of ``s = 64·sw ≤ L`` bits (elements of R of degree < s);
  the cyclic convolution of the chunk sequences has coefficients of degree ≤ 2s − 2 < 2L, so it
  is exact in R, and it is ``u·x mod (x^{Ks} − 1)``; with ``K·s ≥ n + m − 1`` the wrapped part
  cannot reach the bits ``n − 1 … n + m − 2`` we need (as for the FFT path below);
* the transform is a radix-3 decimation-in-frequency DFT whose twiddles are multiplications by
  powers of x (shifts mod ``x^{2L} + x^L + 1``), no field multiplications at all; the pointwise
  products in R use carry-less multiplication (three W-word products, Karatsuba over ``x^L``);
  the inverse runs the stages backwards with ``ω^{−1}``. Cost ~ K·log K shifts of L-bit words plus
  K small products: for 10^7 input bits (k = 8, L = 2187) about 30× less work than the tiles below;
* the W-word products scan the output diagonals a vector at a time (:func:`_clmul_diag`: one
  load and two (v)pclmulqdq per word of one operand, accumulated in registers), so they run at
  the carry-less multiplier's throughput; a forward butterfly applies the ``X^q`` part of its
  twiddles while it forms its outputs, leaving one shifting pass; from the level whose blocks
  fit in ``_TFFT_BLOCK_BYTES`` on, both forward transforms, the products and the inverse run
  block by block in cache (:func:`_tfft_middle`); packing checks the 0/1 values on the way.

**Toeplitz–Karatsuba tiles** (:func:`toeplitz_hash_gf2`; the default for ``out_len`` below
min(2^15, n/8) bits, where the FFT's fixed cost dominates, e.g. 64-bit tags):

* the ``m × n`` matrix is tiled into square ``K × K`` Toeplitz tiles (K = 64·k bits, k = b·2^r
  words chosen to minimise the cost estimate; x is zero-padded in front to a multiple of 64 bits,
  which leaves the formula unchanged with n' = n + pad);
* each tile is split by the transposed Karatsuba identity for Toeplitz matrices
  (Winograd; see e.g. Fan & Hasan, "A new approach to subquadratic space complexity parallel
  multipliers for extended binary fields", IEEE Trans. Comput. 56 (2007)):
  ``[[T1, T0], [T2, T1]]·(v0, v1) = (P + (T0−T1)·v1, P + (T2−T1)·v0)`` with ``P = T1·(v0 + v1)``,
  three half-size products instead of four (cost ~ K^1.585);
* below ``b`` words a schoolbook middle product uses hardware carry-less multiplication
  (``pclmulqdq``; the 256- or 512-bit ``vpclmulqdq`` forms when the CPU has them), called from
  Numba through an LLVM intrinsic.

:func:`toeplitz_hash` takes these paths when the host CPU reports ``pclmul`` and falls back to the
FFT/NTT path otherwise; :func:`toeplitz_hash_fft`, :func:`toeplitz_hash_tfft` and
:func:`toeplitz_hash_gf2` select a path explicitly (tests compare all of them with
:func:`toeplitz_hash_reference` and randextract).
"""

from __future__ import annotations

import math
import secrets

import numba
import numpy as np
import scipy.fft as sfft
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from labqfl.bitops import target_features
from labqfl.errors import QKDInputError

__all__ = [
    "fft_rounding_bound",
    "toeplitz_hash",
    "toeplitz_hash_fft",
    "toeplitz_hash_gf2",
    "toeplitz_hash_ntt",
    "toeplitz_hash_tfft",
    "HAS_CLMUL",
    "toeplitz_hash_reference",
    "toeplitz_seed",
    "toeplitz_seed_length",
    "require_bits",
]

_EPS = 2.0 ** -53
_NTT_P = 469762049  # 7 * 2^26 + 1, primitive root 3
_NTT_G = 3
_NTT_MAX_LOG = 26


def require_bits(name: str, arr: object, length: int | None = None, *, values: bool = True) -> np.ndarray:
    """Validate a bit array: 1-D ``uint8`` numpy array of 0/1 (optionally of a given length).

    ``values=False`` skips the pass over the values (for callers that check them while packing).
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
    if values and arr.size and int(arr.max()) > 1:
        raise QKDInputError(f"{name}: bits must be 0 or 1, found value {int(arr.max())}")
    return arr


def toeplitz_seed_length(n_in: int, out_len: int) -> int:
    """Seed length ``n + m − 1`` of the ``m × n`` Toeplitz matrix (randextract convention)."""
    return int(n_in) + int(out_len) - 1


def toeplitz_seed(n_in: int, out_len: int) -> np.ndarray:
    """A fresh uniformly random seed (uint8 0/1, length ``n + m − 1``) from the OS CSPRNG."""
    length = toeplitz_seed_length(n_in, out_len)
    raw = np.frombuffer(secrets.token_bytes((length + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=length)  # a new array of exactly ``length`` bits (no slice copy)


def _check(bits: np.ndarray, seed_bits: np.ndarray, out_len: int, values: bool = True) -> tuple[int, int]:
    require_bits("bits", bits, values=values)
    n = int(bits.shape[0])
    if n < 1:
        raise QKDInputError("bits: expected at least one input bit, got an empty array")
    if isinstance(out_len, bool) or not isinstance(out_len, int | np.integer):
        raise QKDInputError(f"out_len: expected an int, got {type(out_len).__name__}")
    m = int(out_len)
    if not 1 <= m <= n:
        raise QKDInputError(f"out_len: expected 1 <= out_len <= {n} (the input length), got {m}")
    require_bits("seed_bits", seed_bits, n + m - 1, values=values)
    return n, m


def toeplitz_hash(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Toeplitz hash ``T(seed) · bits mod 2`` → ``out_len`` bits (uint8 0/1), exact.

    ``bits``: uint8 0/1 of length n; ``seed_bits``: uint8 0/1 of length n + out_len − 1;
    ``1 ≤ out_len ≤ n``. Matrix convention and exactness argument: module docstring. Uses the
    GF(2) ternary-FFT path where the CPU has carry-less multiplication (the Karatsuba tiles for
    short outputs), else the exact FFT/NTT path.
    """
    n, m = _check(bits, seed_bits, out_len, values=False)
    if HAS_CLMUL and m >= min(_TFFT_MIN_OUT, n // 8):
        return _toeplitz_tfft(bits, seed_bits, n, m)  # checks the values while packing them
    require_bits("bits", bits)
    require_bits("seed_bits", seed_bits)
    if HAS_CLMUL:
        return _toeplitz_gf2(bits, seed_bits, n, m)
    return _toeplitz_fft(bits, seed_bits, n, m)


def toeplitz_hash_fft(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Same result as :func:`toeplitz_hash`, always via the float FFT (NTT if a check fails)."""
    n, m = _check(bits, seed_bits, out_len)
    return _toeplitz_fft(bits, seed_bits, n, m)


def fft_rounding_bound(ones_x: int, ones_u: int, nfft: int) -> float:
    """A-priori bound on the float64 FFT convolution's error for 0/1 inputs with ``ones_x`` and
    ``ones_u`` ones at length ``nfft``: ‖x‖₂‖u‖₂ · 4·(3 + 3√5 + 3) · log2(nfft) · 2^−53 (Percival 2003,
    Thm. 5.1, first order, 4× safety factor; module docstring). The rounded sums are exact when < 1/4."""
    norm = math.sqrt(float(ones_x)) * math.sqrt(float(ones_u))
    return norm * 4.0 * (6.0 + 3.0 * math.sqrt(5.0)) * math.log2(nfft) * _EPS


def _toeplitz_fft(bits: np.ndarray, seed_bits: np.ndarray, n: int, m: int) -> np.ndarray:
    L = n + m - 1
    u = np.roll(seed_bits, -m)
    nfft = sfft.next_fast_len(L, real=True)
    if fft_rounding_bound(int(np.count_nonzero(bits)), int(np.count_nonzero(u)), nfft) < 0.25:
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


@numba.njit(cache=True, nogil=True)
def _powmod(a: int, e: int, p: int) -> int:
    r = 1
    a %= p
    while e > 0:
        if e & 1:
            r = r * a % p
        a = a * a % p
        e >>= 1
    return r


@numba.njit(cache=True, nogil=True)
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


# --------------------------------------------------------------------------------------------
# Exact GF(2) path: bit-packed Toeplitz–Karatsuba with hardware carry-less multiplication.


_FEATURES = target_features()  # what Numba compiles for (NUMBA_CPU_FEATURES where set, else the host's)
HAS_CLMUL: bool = "pclmul" in _FEATURES
"""True where the CPU has ``pclmulqdq``: :func:`toeplitz_hash` then uses the GF(2) path."""
_WIDE_CLMUL: bool = HAS_CLMUL and {"vpclmulqdq", "avx512f"} <= _FEATURES
_YMM_CLMUL: bool = HAS_CLMUL and {"vpclmulqdq", "avx2"} <= _FEATURES

_TFFT_MIN_OUT = 1 << 15
"""Outputs shorter than min(this, n/8) bits use the Karatsuba tiles (measured crossover, x86-64)."""

_GF2_BASE = 128
"""Tiles of fewer than ``2·_GF2_BASE`` words are multiplied by the schoolbook kernel."""


@intrinsic
def _clmul_dot(typingctx, a, ao, b, bo, cnt):  # type: ignore[no-untyped-def]
    """``XOR_{t<cnt} clmul(a[ao+t], b[bo+t])`` as a 128-bit (lo, hi) pair of uint64.

    Unchecked indices (callers guarantee the ranges). 512-bit ``vpclmulqdq`` for eight words a
    step where available (256-bit, four words a step, on CPUs with ``vpclmulqdq`` but without
    AVX-512, e.g. AMD Zen 3), then 128-bit ``pclmulqdq`` on word pairs.
    """
    sig = types.UniTuple(types.uint64, 2)(a, types.intp, b, types.intp, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
        v2 = ir.VectorType(i64, 2)
        fn = builder.module.declare_intrinsic("llvm.x86.pclmulqdq", fnty=ir.FunctionType(v2, [v2, v2, i8]))
        pa = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
        pb = builder.gep(context.make_array(signature.args[2])(context, builder, args[2]).data, [args[3]])
        cnt = args[4]
        acc = cgutils.alloca_once_value(builder, ir.Constant(v2, None))
        acc2 = cgutils.alloca_once_value(builder, ir.Constant(v2, None))
        lanes = 8 if _WIDE_CLMUL else 4 if _YMM_CLMUL else 0
        if lanes:
            vl = ir.VectorType(i64, lanes)
            fnl = builder.module.declare_intrinsic(f"llvm.x86.pclmulqdq.{64 * lanes}", fnty=ir.FunctionType(vl, [vl, vl, i8]))
            accl = cgutils.alloca_once_value(builder, ir.Constant(vl, None))
            shift = lanes.bit_length() - 1
            nl = builder.ashr(cnt, ir.Constant(cnt.type, shift))
            with cgutils.for_range(builder, nl) as loop:
                off = builder.shl(loop.index, ir.Constant(loop.index.type, shift))
                va = builder.load(builder.bitcast(builder.gep(pa, [off]), vl.as_pointer()), align=8)
                vb = builder.load(builder.bitcast(builder.gep(pb, [off]), vl.as_pointer()), align=8)
                r0 = builder.call(fnl, [va, vb, ir.Constant(i8, 0x00)])
                r1 = builder.call(fnl, [va, vb, ir.Constant(i8, 0x11)])
                builder.store(builder.xor(builder.load(accl), builder.xor(r0, r1)), accl)
            al = builder.load(accl)
            red = ir.Constant(v2, None)
            for lane in range(lanes // 2):
                red = builder.xor(red, builder.shuffle_vector(al, al, ir.Constant(ir.VectorType(i32, 2), [2 * lane, 2 * lane + 1])))
            builder.store(red, acc)
            done = builder.shl(nl, ir.Constant(cnt.type, shift))
            pa = builder.gep(pa, [done])
            pb = builder.gep(pb, [done])
            cnt = builder.sub(cnt, done)
        npair = builder.ashr(cnt, ir.Constant(cnt.type, 1))
        with cgutils.for_range(builder, npair) as loop:
            off = builder.shl(loop.index, ir.Constant(loop.index.type, 1))
            va = builder.load(builder.bitcast(builder.gep(pa, [off]), v2.as_pointer()), align=8)
            vb = builder.load(builder.bitcast(builder.gep(pb, [off]), v2.as_pointer()), align=8)
            builder.store(builder.xor(builder.load(acc), builder.call(fn, [va, vb, ir.Constant(i8, 0x00)])), acc)
            builder.store(builder.xor(builder.load(acc2), builder.call(fn, [va, vb, ir.Constant(i8, 0x11)])), acc2)
        odd = builder.icmp_signed("!=", builder.and_(cnt, ir.Constant(cnt.type, 1)), ir.Constant(cnt.type, 0))
        with builder.if_then(odd):
            last = builder.sub(cnt, ir.Constant(cnt.type, 1))
            xa = builder.insert_element(ir.Constant(v2, None), builder.load(builder.gep(pa, [last])), ir.Constant(i32, 0))
            xb = builder.insert_element(ir.Constant(v2, None), builder.load(builder.gep(pb, [last])), ir.Constant(i32, 0))
            builder.store(builder.xor(builder.load(acc), builder.call(fn, [xa, xb, ir.Constant(i8, 0)])), acc)
        res = builder.xor(builder.load(acc), builder.load(acc2))
        lo = builder.extract_element(res, ir.Constant(i32, 0))
        hi = builder.extract_element(res, ir.Constant(i32, 1))
        return context.make_tuple(builder, signature.return_type, [lo, hi])

    return sig, codegen


_ROW_LANES = 8 if _WIDE_CLMUL else 4 if _YMM_CLMUL else 2
"""64-bit words per vector in :func:`_clmul_row` (one carry-less product per 128-bit lane)."""


@intrinsic
def _clmul_diag(typingctx, a, i0, i1, b, s, ev, od, d):  # type: ignore[no-untyped-def]
    """Product scanning over ``_ROW_LANES`` consecutive diagonals ``d … d + _ROW_LANES − 1``:
    ``D[d + q] = XOR_{i0 ≤ i < i1} clmul(a[i], b[s − i + q])`` (128 bits each), accumulated in
    two vector registers and stored once: the even-offset diagonals to ``ev[d : d + lanes]`` and
    the odd ones to ``od[d : d + lanes]`` (two words per diagonal).

    Unchecked indices (callers guarantee the ranges). One unaligned vector load of ``b`` and two
    carry-less multiplies per ``i``: ``pclmulqdq`` immediate 0x00 multiplies the low qwords of each
    128-bit lane, 0x10 the low qword of the first operand by the high qword of the second (Intel
    SDM vol. 2B, "PCLMULQDQ"/"VPCLMULQDQ"); ``a[i]`` is broadcast to every lane.
    """
    sig = types.void(a, types.intp, types.intp, b, types.intp, ev, od, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
        lanes = _ROW_LANES
        vl = ir.VectorType(i64, lanes)
        name = "llvm.x86.pclmulqdq" if lanes == 2 else f"llvm.x86.pclmulqdq.{64 * lanes}"
        fn = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(vl, [vl, vl, i8]))

        def data(k: int):  # type: ignore[no-untyped-def]
            return context.make_array(signature.args[k])(context, builder, args[k]).data

        pa, pb = data(0), data(3)
        acc0 = cgutils.alloca_once_value(builder, ir.Constant(vl, None))
        acc1 = cgutils.alloca_once_value(builder, ir.Constant(vl, None))
        count = builder.sub(args[2], args[1])
        with cgutils.for_range(builder, count) as loop:
            i = builder.add(args[1], loop.index)
            one = builder.insert_element(ir.Constant(vl, None), builder.load(builder.gep(pa, [i])), ir.Constant(i32, 0))
            va = builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
            vb = builder.load(builder.bitcast(builder.gep(pb, [builder.sub(args[4], i)]), vl.as_pointer()), align=8)
            builder.store(builder.xor(builder.load(acc0), builder.call(fn, [va, vb, ir.Constant(i8, 0x00)])), acc0)
            builder.store(builder.xor(builder.load(acc1), builder.call(fn, [va, vb, ir.Constant(i8, 0x10)])), acc1)
        qe = builder.bitcast(builder.gep(data(5), [args[7]]), vl.as_pointer())
        qo = builder.bitcast(builder.gep(data(6), [args[7]]), vl.as_pointer())
        builder.store(builder.load(acc0), qe, align=8)
        builder.store(builder.load(acc1), qo, align=8)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _mp_base(g, v, z, k, ws):  # type: ignore[no-untyped-def]
    """Schoolbook middle product: ``z[i] = (g·v)[i + 64k − 1]`` over GF(2), i < 64k bits.

    ``g``: 2k words, ``v``, ``z``: k words; ``ws`` scratch of ≥ 3k + 1 words. The product word
    ``P[s]`` (s = k−1 … 2k−1) is the low half of diagonal s plus the high half of diagonal s−1;
    diagonals are carry-less dot products of reversed ``g`` with ``v``.
    """
    P = ws[0:k + 1]
    gr = ws[k + 1:3 * k + 1]
    for j in range(2 * k):
        gr[j] = g[2 * k - 1 - j]
    lo, prev_hi = _clmul_dot(gr, k + 1, v, 0, k - 1)
    for s in range(k + 1):
        d = s + k - 1
        b0 = d - (2 * k - 1)
        if b0 < 0:
            b0 = 0
        b1 = d if d < k - 1 else k - 1
        lo, hi = _clmul_dot(gr, 2 * k - 1 - d + b0, v, b0, b1 - b0 + 1)
        P[s] = lo ^ prev_hi
        prev_hi = hi
    one = np.uint64(1)
    s63 = np.uint64(63)
    for t in range(k):
        z[t] = (P[t] >> s63) | (P[t + 1] << one)


@numba.njit(cache=True, nogil=True)
def _mp(g, v, z, k, ws, base):  # type: ignore[no-untyped-def]
    """Toeplitz–Karatsuba middle product (see module docstring); k = b·2^r words, b < 2·base."""
    if k < 2 * base or k & 1:
        _mp_base(g, v, z, k, ws)
        return
    h = k // 2
    vs = ws[0:h]
    gd = ws[h:3 * h]
    P = ws[3 * h:4 * h]
    rest = ws[4 * h:]
    for i in range(h):
        vs[i] = v[i] ^ v[h + i]
    _mp(g[h:3 * h], vs, P, h, rest, base)
    for i in range(2 * h):
        gd[i] = g[i] ^ g[h + i]
    _mp(gd, v[h:k], z[0:h], h, rest, base)
    for i in range(2 * h):
        gd[i] = g[2 * h + i] ^ g[h + i]
    _mp(gd, v[0:h], z[h:k], h, rest, base)
    for i in range(h):
        z[i] ^= P[i]
        z[h + i] ^= P[i]


@numba.njit(cache=True, nogil=True, parallel=True)
def _mp_tiles(U, X, Y, k, NI, NJ, padw, nw, base):  # type: ignore[no-untyped-def]
    """``Y[I] ^= MP(U[padw + (I−J)k + nw − k :][:2k], X[J])`` over all k-word tiles (I, J).

    Every tile's middle product is independent: they run in parallel (one workspace and one
    output row per tile), then the rows are XOR-reduced into ``Y`` in a fixed order.
    """
    n_tiles = NI * NJ
    Z = np.empty((n_tiles, k), dtype=np.uint64)
    for t_id in numba.prange(n_tiles):
        i_t = t_id // NJ
        j_t = t_id - i_t * NJ
        ws = np.empty(4 * k + 4 * base + 8, dtype=np.uint64)
        o = padw + (i_t - j_t) * k + nw - k
        _mp(U[o:o + 2 * k], X[j_t * k:(j_t + 1) * k], Z[t_id], k, ws, base)
    for t_id in range(n_tiles):
        i_t = t_id // NJ
        for t in range(k):
            Y[i_t * k + t] ^= Z[t_id, t]


def _gf2_tiling(mw: int, nw: int, base: int) -> tuple[int, int, int]:
    """Tile size k = b·2^r words (base ≤ b < 2·base, or k < base for small inputs) minimising
    ``tiles · 3^r · b²`` (Karatsuba cost model); returns (k, row tiles, column tiles)."""
    best: tuple[float, int, int, int] | None = None
    for b in range(1, 2 * base):
        for r in range(0, 40):
            if r and b < base:
                break
            k = b << r
            ni, nj = -(-mw // k), -(-nw // k)
            cost = ni * nj * 3.0 ** r * (b * (b + 2) + 6 * b + 16)
            if best is None or cost < best[0]:
                best = (cost, k, ni, nj)
            if k >= max(mw, nw):
                break
    assert best is not None
    return best[1], best[2], best[3]


def _toeplitz_gf2(bits: np.ndarray, seed_bits: np.ndarray, n: int, m: int, base: int = _GF2_BASE) -> np.ndarray:
    L = n + m - 1
    pad = (-n) % 64  # zero bits in front of x: y[i] = Σ x'[j] u[i + n' − 1 − j] with n' = n + pad
    nw = (n + pad) // 64
    mw = -(-m // 64)
    k, ni, nj = _gf2_tiling(mw, nw, base)
    xb = np.zeros(nj * k * 64, dtype=np.uint8)
    xb[pad:pad + n] = bits
    X = np.packbits(xb, bitorder="little").view(np.uint64)
    padw = nj * k  # lowest generator offset (I − J)·k + nw − k is ≥ −padw
    ub = np.zeros((padw + -(-L // 64) + ni * k + 2 * k) * 64, dtype=np.uint8)
    ub[padw * 64:padw * 64 + n - 1] = seed_bits[m:]  # u = roll(seed, −m): u[t] = seed[(t + m) mod L]
    ub[padw * 64 + n - 1:padw * 64 + L] = seed_bits[:m]
    U = np.packbits(ub, bitorder="little").view(np.uint64)
    Y = np.zeros(ni * k, dtype=np.uint64)
    _mp_tiles(U, X, Y, k, ni, nj, padw, nw, base)
    return np.unpackbits(Y.view(np.uint8), count=m, bitorder="little")


def toeplitz_hash_gf2(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Same result as :func:`toeplitz_hash`, always via the exact GF(2) carry-less path.

    Raises :class:`QKDInputError` on a CPU without ``pclmulqdq`` (use :func:`toeplitz_hash`).
    """
    n, m = _check(bits, seed_bits, out_len)
    if not HAS_CLMUL:
        raise QKDInputError("toeplitz_hash_gf2 needs a CPU with the pclmulqdq instruction; use toeplitz_hash")
    return _toeplitz_gf2(bits, seed_bits, n, m)


# --------------------------------------------------------------------------------------------
# Exact GF(2) path for large blocks: Schönhage's ternary FFT over F2[x]/(x^{2L} + x^L + 1).


@numba.njit(cache=True, nogil=True)
def _mulx_masks(q):  # type: ignore[no-untyped-def]
    """Word masks (m00, m01, m10, m11) of X^q·(s0, s1) = (s0&m00 ^ s1&m01, s0&m10 ^ s1&m11),
    X = x^L, X² = X + 1: q = 0 → (s0, s1), q = 1 → (s1, s0 + s1), q = 2 → (s0 + s1, s0)."""
    all1 = np.uint64(0xFFFFFFFFFFFFFFFF)
    zero = np.uint64(0)
    return (all1 if q != 1 else zero, all1 if q != 0 else zero,
            all1 if q != 0 else zero, all1 if q != 2 else zero)


@numba.njit(cache=True, nogil=True)
def _mulx_shift(tmp, r, d, W, L, lastmask):  # type: ignore[no-untyped-def]
    """``d = x^r · (f0 + f1·X)`` in R for ``0 ≤ r < L``, where f0, f1 (L bits, W words each) sit
    at words [W, 2W) and [G + W, G + 2W) of ``tmp`` (G = 3W + 2; every other word of ``tmp`` is
    zero: guards, so the shifted reads need no bounds tests). With lo = (·x^r mod x^L) and
    hi = (· >> (L − r)): x^r·(f0 + f1 X) = [lo(f0) + hi(f1)] + [lo(f1) + hi(f0) + hi(f1)] X."""
    G = 3 * W + 2
    F0 = tmp[0:G]
    F1 = tmp[G:2 * G]
    Wu = np.uint64(W)  # unsigned indices: Numba then emits no wraparound code, loops vectorise
    rw = r >> 6
    rb = np.uint64(r & 63)
    rc = np.uint64(63) - rb
    sh = L - r
    sw = sh >> 6
    sb = np.uint64(sh & 63)
    sc = np.uint64(63) - sb
    one = np.uint64(1)
    o1 = np.uint64(W - rw)
    o1m = np.uint64(W - rw - 1)
    o2 = np.uint64(W + sw)
    o2p = np.uint64(W + sw + 1)
    for i in range(Wu):
        l0 = (F0[o1 + i] << rb) | ((F0[o1m + i] >> one) >> rc)
        l1 = (F1[o1 + i] << rb) | ((F1[o1m + i] >> one) >> rc)
        h0 = (F0[o2 + i] >> sb) | ((F0[o2p + i] << one) << sc)
        h1 = (F1[o2 + i] >> sb) | ((F1[o2p + i] << one) << sc)
        d[i] = l0 ^ h1
        d[Wu + i] = l1 ^ h0 ^ h1
    d[W - 1] &= lastmask
    d[2 * W - 1] &= lastmask


@numba.njit(cache=True, nogil=True)
def _mulx(s, p, d, tmp, W, L, lastmask):  # type: ignore[no-untyped-def]
    """``d = x^p · s`` in R = F2[x]/(x^{2L} + x^L + 1), ``0 ≤ p < 3L``; elements are (e0, e1) =
    ``e0 + e1·x^L`` with e0, e1 of L bits, stored as 2W words. x^p = X^q·x^r (p = qL + r):
    first X^q (:func:`_mulx_masks`) into ``tmp``, then x^r (:func:`_mulx_shift`)."""
    q = p // L
    m00, m01, m10, m11 = _mulx_masks(q)
    G = 3 * W + 2
    Wu = np.uint64(W)
    Gu = np.uint64(G)
    for i in range(Wu):
        a0 = s[i]
        a1 = s[Wu + i]
        tmp[Wu + i] = (a0 & m00) ^ (a1 & m01)
        tmp[Gu + Wu + i] = (a0 & m10) ^ (a1 & m11)
    _mulx_shift(tmp, p - q * L, d, W, L, lastmask)


@numba.njit(cache=True, nogil=True)
def _tfft_stage(A, lo, hi, M, e, inverse, W, L, lastmask):  # type: ignore[no-untyped-def]
    """Radix-3 butterflies ``lo ≤ b < hi`` of one stage (blocks of 3M elements, twiddle x^{e·j}).

    Forward (Gentleman–Sande): y0 = a+b+c, y1 = ω^j(a + ρb + ρ²c), y2 = ω^{2j}(a + ρ²b + ρc);
    the X^q part of each twiddle is applied while y1, y2 are formed (into the guarded buffers of
    :func:`_mulx_shift`), the x^r part by one shifting pass into b and c.
    Inverse (exact inverse of that stage; 1/3 = 1 in characteristic 2): b' = ω^{−j}b,
    c' = ω^{−2j}c, then a+b'+c', a + ρ²b' + ρc', a + ρb' + ρ²c'. ρ = X = x^L.
    """
    G = 3 * W + 2
    Wu = np.uint64(W)  # unsigned indices: no wraparound code, vectorisable loops
    Gu = np.uint64(G)
    L3 = 3 * L
    tmp = np.zeros(2 * G, dtype=np.uint64)
    tmp2 = np.zeros(2 * G, dtype=np.uint64)
    for b in range(lo, hi):
        blk = b // M
        j = b - blk * M
        ia = blk * 3 * M + j
        ib = ia + M
        ic = ib + M
        a = A[ia]
        bb = A[ib]
        cc = A[ic]
        e1 = (e * j) % L3
        e2 = (2 * e1) % L3
        if inverse:
            if e1:  # in place: _mulx reads all of its input into tmp before writing
                _mulx(bb, L3 - e1, bb, tmp, W, L, lastmask)
            if e2:
                _mulx(cc, L3 - e2, cc, tmp, W, L, lastmask)
            for i in range(Wu):
                a0 = a[i]
                a1 = a[Wu + i]
                p0 = bb[i]
                p1 = bb[Wu + i]
                q0 = cc[i]
                q1 = cc[Wu + i]
                a[i] = a0 ^ p0 ^ q0
                a[Wu + i] = a1 ^ p1 ^ q1
                bb[i] = a0 ^ p0 ^ p1 ^ q1
                bb[Wu + i] = a1 ^ p0 ^ q0 ^ q1
                cc[i] = a0 ^ p1 ^ q0 ^ q1
                cc[Wu + i] = a1 ^ p0 ^ p1 ^ q0
        elif e1 == 0:  # then e2 = 0 too: no twiddles
            for i in range(Wu):
                a0 = a[i]
                a1 = a[Wu + i]
                p0 = bb[i]
                p1 = bb[Wu + i]
                q0 = cc[i]
                q1 = cc[Wu + i]
                a[i] = a0 ^ p0 ^ q0
                a[Wu + i] = a1 ^ p1 ^ q1
                bb[i] = a0 ^ p1 ^ q0 ^ q1
                bb[Wu + i] = a1 ^ p0 ^ p1 ^ q0
                cc[i] = a0 ^ p0 ^ p1 ^ q1
                cc[Wu + i] = a1 ^ p0 ^ q0 ^ q1
        else:
            q1s = e1 // L
            q2s = e2 // L
            m00, m01, m10, m11 = _mulx_masks(q1s)
            n00, n01, n10, n11 = _mulx_masks(q2s)
            for i in range(Wu):
                a0 = a[i]
                a1 = a[Wu + i]
                p0 = bb[i]
                p1 = bb[Wu + i]
                q0 = cc[i]
                q1 = cc[Wu + i]
                a[i] = a0 ^ p0 ^ q0
                a[Wu + i] = a1 ^ p1 ^ q1
                u0 = a0 ^ p1 ^ q0 ^ q1
                u1 = a1 ^ p0 ^ p1 ^ q0
                v0 = a0 ^ p0 ^ p1 ^ q1
                v1 = a1 ^ p0 ^ q0 ^ q1
                tmp[Wu + i] = (u0 & m00) ^ (u1 & m01)
                tmp[Gu + Wu + i] = (u0 & m10) ^ (u1 & m11)
                tmp2[Wu + i] = (v0 & n00) ^ (v1 & n01)
                tmp2[Gu + Wu + i] = (v0 & n10) ^ (v1 & n11)
            _mulx_shift(tmp, e1 - q1s * L, bb, W, L, lastmask)
            _mulx_shift(tmp2, e2 - q2s * L, cc, W, L, lastmask)


@numba.njit(cache=True, nogil=True, parallel=True)
def _tfft(A, k, t, inverse, l0, l1, W, L, lastmask, nthreads):  # type: ignore[no-untyped-def]
    """Levels ``l0 … l1−1`` of the in-place length-3^k DFT over R with ω = x^t (forward: natural →
    digit-reversed order, levels ascending; inverse: digit-reversed → natural, the same levels
    descending). Level l has blocks of 3M = 3^{k−l} elements and twiddle ω^{3^l}."""
    K = A.shape[0]
    nb = K // 3
    for st in range(l1 - l0):
        level = l0 + st if not inverse else l1 - 1 - st
        M = K // 3 ** (level + 1)
        e = t * 3 ** level  # ω_{3M} = ω^{K/(3M)}
        for tid in numba.prange(nthreads):
            _tfft_stage(A, tid * nb // nthreads, (tid + 1) * nb // nthreads, M, e, inverse, W, L, lastmask)


@numba.njit(cache=True, nogil=True)
def _polymul(a, b, out, W, bp, ev, od):  # type: ignore[no-untyped-def]
    """``out[0:2W] = a · b`` in F2[x] (W-word operands) by product scanning over carry-less
    products (:func:`_clmul_diag`, ``_ROW_LANES`` diagonals at a time, in registers).

    With ``D[d] = XOR_{i+j=d} clmul(a[i], b[j])`` (128 bits), word d of the product is
    ``lo(D[d]) ^ hi(D[d−1])``. ``_clmul_diag`` leaves the diagonals of even offset in ``ev``
    (D[d] at words d, d+1 for d ≡ 0 mod 2) and the others in ``od`` (D[d] at words d−1, d), so
    word d is ``ev[d] ^ od[d−1]`` for every d. ``bp``: scratch of ``W + 2·_ROW_LANES`` words
    (``b`` with ``_ROW_LANES`` zero words on each side); ``ev``, ``od``: ≥ 2W + _ROW_LANES words.
    """
    R = _ROW_LANES
    for i in range(np.uint64(R)):
        bp[i] = 0
        bp[np.uint64(W + R) + i] = 0
    for i in range(np.uint64(W)):
        bp[np.uint64(R) + i] = b[i]
    for d in range(0, 2 * W - 1, R):
        i0 = d - W + 1 if d >= W else 0  # b[d − i + q] = 0 unless −R < d − i < W
        i1 = d + R if d + R < W else W
        _clmul_diag(a, i0, i1, bp, R + d, ev, od, d)
    out[0] = ev[0]
    for d in range(np.uint64(1), np.uint64(2 * W)):
        out[d] = ev[d] ^ od[d - np.uint64(1)]


@numba.njit(cache=True, nogil=True)
def _split_at_L(c, lo, hi, W, Lw, Lb, lastmask):  # type: ignore[no-untyped-def]
    """A product ``c`` (2W words, < 2L bits) → ``lo ^= c mod x^L``, ``hi ^= c >> L`` (W words each)."""
    for i in range(np.uint64(W - 1)):
        lo[i] ^= c[i]
    lo[W - 1] ^= c[W - 1] & lastmask
    Lu = np.uint64(Lw)
    if Lb == 0:
        for i in range(np.uint64(W)):
            hi[i] ^= c[Lu + i]
    else:
        sb = np.uint64(Lb)
        sc = np.uint64(64 - Lb)
        n_full = np.uint64(min(W, 2 * W - Lw - 1))  # words with a next word inside c
        Lu1 = np.uint64(Lw + 1)
        for i in range(n_full):
            hi[i] ^= (c[Lu + i] >> sb) | (c[Lu1 + i] << sc)
        for i in range(n_full, np.uint64(W)):
            hi[i] ^= c[Lu + i] >> sb


@numba.njit(cache=True, nogil=True)
def _rmul(e, f, W, Lw, Lb, lastmask, ws):  # type: ignore[no-untyped-def]
    """``e ← e·f`` in R, Karatsuba over X = x^L: with p0 = e0f0, p2 = e1f1,
    p1 = (e0+e1)(f0+f1): c0 = p0 + p2, c1 = p1 + p0, and c0 + c1·X reduced by X² = X + 1.
    ``ws``: scratch of ≥ 14·W + 4·_ROW_LANES words."""
    Wu = np.uint64(W)  # unsigned indices: no wraparound code
    sa = ws[0:W]
    sb = ws[W:2 * W]
    h = ws[2 * W:3 * W]
    p0 = ws[3 * W:5 * W]
    p1 = ws[5 * W:7 * W]
    p2 = ws[7 * W:9 * W]
    R = _ROW_LANES
    bp = ws[9 * W:10 * W + 2 * R]
    ev = ws[10 * W + 2 * R:12 * W + 3 * R]
    od = ws[12 * W + 3 * R:14 * W + 4 * R]
    for i in range(Wu):
        sa[i] = e[i] ^ e[Wu + i]
        sb[i] = f[i] ^ f[Wu + i]
    _polymul(e[0:W], f[0:W], p0, W, bp, ev, od)
    _polymul(e[W:2 * W], f[W:2 * W], p2, W, bp, ev, od)
    _polymul(sa, sb, p1, W, bp, ev, od)
    for i in range(Wu + Wu):
        p1[i] ^= p0[i]  # c1
        p0[i] ^= p2[i]  # c0
    r0 = e[0:W]
    r1 = e[W:2 * W]
    for i in range(Wu):
        r0[i] = 0
        r1[i] = 0
        h[i] = 0
    _split_at_L(p0, r0, r1, W, Lw, Lb, lastmask)  # c0l → r0, c0h → r1
    _split_at_L(p1, r1, h, W, Lw, Lb, lastmask)  # c1l → r1, c1h → h
    for i in range(Wu):
        r0[i] ^= h[i]
        r1[i] ^= h[i]


@numba.njit(cache=True, nogil=True, parallel=True)
def _tfft_middle(A, B, k, t, g, W, L, Lw, Lb, lastmask, nthreads):  # type: ignore[no-untyped-def]
    """Levels ``g … k−1`` of both forward transforms, the pointwise products and the same levels
    of the inverse transform of ``A``, one block of ``3^{k−g}`` elements at a time.

    From level g on, the radix-3 blocks (3M = 3^{k−l} elements) nest inside these blocks, so each
    block is transformed, multiplied and transformed back while it stays in cache, instead of
    one pass over the whole arrays per level (same butterflies, same order within a block)."""
    K = A.shape[0]
    Kb = K // 3 ** g
    nblk = 3 ** g
    for tid in numba.prange(nthreads):
        ws = np.empty(14 * W + 4 * _ROW_LANES, dtype=np.uint64)
        for c in range(tid * nblk // nthreads, (tid + 1) * nblk // nthreads):
            Ab = A[c * Kb:(c + 1) * Kb]
            Bb = B[c * Kb:(c + 1) * Kb]
            for level in range(g, k):
                M = K // 3 ** (level + 1)
                _tfft_stage(Ab, 0, Kb // 3, M, t * 3 ** level, False, W, L, lastmask)
                _tfft_stage(Bb, 0, Kb // 3, M, t * 3 ** level, False, W, L, lastmask)
            for J in range(Kb):
                _rmul(Ab[J], Bb[J], W, Lw, Lb, lastmask, ws)
            for level in range(k - 1, g - 1, -1):
                M = K // 3 ** (level + 1)
                _tfft_stage(Ab, 0, Kb // 3, M, t * 3 ** level, True, W, L, lastmask)


_TFFT_BLOCK_BYTES = 1 << 17
"""Blocks of :func:`_tfft_middle` hold at most this many bytes per array (both fit in L2)."""


@numba.njit(cache=True, nogil=True)
def _pack_octets(words, out):  # type: ignore[no-untyped-def]
    """``out[i]`` = the eight 0/1 bytes of ``words[i]`` as bits 0…7 (little-endian: byte j → bit
    j); returns the OR of every byte with its lowest bit cleared (non-zero ⇔ a byte was > 1).

    Gather by shifts (byte j's bit at 8j): ``w |= w >> 7`` puts bit pairs in each byte,
    ``>> 14`` quadruples, ``>> 28`` all eight in byte 0; branch-free, so LLVM vectorises it.
    """
    bad = np.uint64(0)
    s7 = np.uint64(7)
    s14 = np.uint64(14)
    s28 = np.uint64(28)
    for i in range(words.shape[0]):
        w = words[i]
        bad |= w
        w |= w >> s7
        w |= w >> s14
        w |= w >> s28
        out[i] = np.uint8(w & np.uint64(0xFF))
    return bad & np.uint64(0xFEFEFEFEFEFEFEFE)


def _pack_checked(name: str, bits: np.ndarray, nwords: int) -> np.ndarray:
    """uint8 0/1 bits → ``nwords`` little-endian uint64 words (as :func:`_packed_words`), checking
    on the way that every byte is 0 or 1 (:class:`QKDInputError` naming ``name`` otherwise)."""
    n = bits.shape[0]
    out = np.zeros(nwords * 8, dtype=np.uint8)
    n8 = n // 8
    bad = 0
    if n8 and bits.flags.c_contiguous and bits.ctypes.data % 8 == 0:
        bad = int(_pack_octets(bits[:n8 * 8].view(np.uint64), out[:n8]))
    elif n8:
        bad = int(_pack_octets(np.ascontiguousarray(bits[:n8 * 8]).copy().view(np.uint64), out[:n8]))
    tail = bits[n8 * 8:]
    if bad or (tail.size and int(tail.max()) > 1):
        require_bits(name, bits)  # raises, naming the value found
    if tail.size:
        out[n8] = np.packbits(tail, bitorder="little")[0]
    return out.view(np.uint64)


@numba.njit(cache=True, nogil=True)
def _rolled_seed(P, F, n, m):  # type: ignore[no-untyped-def]
    """``F`` (zeroed words) ← u = roll(seed, −m) from the packed seed ``P`` (n + m − 1 bits, zero
    above): bits m … m+n−2 of ``P`` at bit 0, then bits 0 … m−1 of ``P`` at bit n − 1."""
    nb = n - 1
    w0 = m >> 6
    b0 = np.uint64(m & 63)
    np_ = P.shape[0]
    nw = (nb + 63) >> 6
    for i in range(nw):
        v = P[w0 + i] >> b0
        if b0 != 0 and w0 + i + 1 < np_:
            v |= P[w0 + i + 1] << (np.uint64(64) - b0)
        F[i] = v
    if nb & 63:
        F[nw - 1] &= (np.uint64(1) << np.uint64(nb & 63)) - np.uint64(1)
    mw = (m + 63) >> 6
    head = P[0:mw].copy()
    if m & 63:
        head[mw - 1] &= (np.uint64(1) << np.uint64(m & 63)) - np.uint64(1)
    _xor_at_bit(F, head, nb)


def _packed_words(bits: np.ndarray, nwords: int) -> np.ndarray:
    """uint8 0/1 bits → ``nwords`` little-endian uint64 words (bit j of the input at bit j mod 64
    of word j // 64), zero-padded."""
    out = np.zeros(nwords * 8, dtype=np.uint8)
    packed = np.packbits(bits, bitorder="little")
    out[:packed.size] = packed
    return out.view(np.uint64)


@numba.njit(cache=True, nogil=True)
def _xor_at_bit(dst, src, off):  # type: ignore[no-untyped-def]
    """``dst ^= src · x^off`` on word arrays (bits shifted out of ``dst`` are dropped)."""
    ow = off >> 6
    ob = np.uint64(off & 63)
    nd = dst.shape[0]
    for i in range(src.shape[0]):
        if ow + i >= nd:
            break
        v = src[i]
        dst[ow + i] ^= v << ob
        if ob != 0 and ow + i + 1 < nd:
            dst[ow + i + 1] ^= v >> (np.uint64(64) - ob)


@numba.njit(cache=True, nogil=True)
def _to_chunks(F, A, sw, W):  # type: ignore[no-untyped-def]
    """Element J of ``A`` ← (e0 = words [J·sw, (J+1)·sw) of ``F``, e1 = 0)."""
    for J in range(A.shape[0]):
        row = A[J]
        for i in range(sw):
            row[i] = F[J * sw + i]
        for i in range(sw, 2 * W):
            row[i] = 0


@numba.njit(cache=True, nogil=True)
def _overlap_add(A, Z, sw, W, Lw, Lb):  # type: ignore[no-untyped-def]
    """``Z = Σ_J c_J · x^{64·sw·J}`` mod x^{64·sw·K} − 1 with c_J = e0 + e1·x^L (cyclic in words)."""
    K = A.shape[0]
    NZ = Z.shape[0]
    for i in range(NZ):
        Z[i] = 0
    sb = np.uint64(Lb)
    sc = np.uint64(64 - Lb) if Lb else np.uint64(0)
    for J in range(K):
        base = J * sw
        e = A[J]
        if base + Lw + W + 1 <= NZ:  # no wrap: straight-line, unsigned indices
            bu = np.uint64(base)
            for i in range(np.uint64(W)):
                Z[bu + i] ^= e[i]
            bl = np.uint64(base + Lw)
            if Lb == 0:
                for i in range(np.uint64(W)):
                    Z[bl + i] ^= e[np.uint64(W) + i]
            else:
                for i in range(np.uint64(W)):
                    v = e[np.uint64(W) + i]
                    Z[bl + i] ^= v << sb
                    Z[bl + i + np.uint64(1)] ^= v >> sc
            continue
        for i in range(W):
            Z[(base + i) % NZ] ^= e[i]
        if Lb == 0:
            for i in range(W):
                Z[(base + Lw + i) % NZ] ^= e[W + i]
        else:
            for i in range(W):
                v = e[W + i]
                Z[(base + Lw + i) % NZ] ^= v << sb
                Z[(base + Lw + i + 1) % NZ] ^= v >> sc


@numba.njit(cache=True, nogil=True)
def _extract_bits(Z, start, m, out):  # type: ignore[no-untyped-def]
    """``out`` (⌈m/64⌉ words) = bits ``start … start+m−1`` of ``Z``."""
    w0 = start >> 6
    b0 = np.uint64(start & 63)
    nz = Z.shape[0]
    for i in range(out.shape[0]):
        v = Z[w0 + i] >> b0 if w0 + i < nz else np.uint64(0)
        if b0 != 0 and w0 + i + 1 < nz:
            v |= Z[w0 + i + 1] << (np.uint64(64) - b0)
        out[i] = v


def _tfft_params(n: int, m: int) -> tuple[int, int, int]:
    """(k, t, sw) minimising a cost model of the ternary-FFT middle product for an ``m × n`` block:
    K = 3^k points, L = t·3^{k−1}, chunks of 64·sw ≤ L bits with K·64·sw ≥ n + m − 1.

    Cost model (rough per-word weights, W = ⌈L/64⌉): three transforms of k·K/3 radix-3
    butterflies on 2W-word elements plus K pointwise products of 3·W² carry-less products; the
    smallest t that fits is best for each k.
    """
    Ls = n + m - 1
    best: tuple[float, int, int, int] | None = None
    for k in range(1, 16):
        K = 3 ** k
        sw = -(-Ls // (64 * K))
        for t in range(1, 200):
            L = t * 3 ** (k - 1)
            if 64 * sw > L:
                continue
            W = -(-L // 64)
            cost = 3 * k * (K // 3) * (60 * W + 40) + K * (3 * W * W * 1.5 + 30 * W)
            if best is None or cost < best[0]:
                best = (cost, k, t, sw)
            break  # larger t only grows the elements
    assert best is not None
    return best[1], best[2], best[3]


def _toeplitz_tfft(bits: np.ndarray, seed_bits: np.ndarray, n: int, m: int,
                   params: tuple[int, int, int] | None = None) -> np.ndarray:
    """GF(2) middle product via one cyclic convolution of length K·64·sw bits (Schönhage's ternary
    FFT, see module docstring); ``params`` = (k, t, sw) overrides the cost model (tests)."""
    L_s = n + m - 1
    k, t, sw = params if params is not None else _tfft_params(n, m)
    K = 3 ** k
    L = t * 3 ** (k - 1)
    if 64 * sw > L or K * 64 * sw < L_s:
        raise QKDInputError(f"ternary FFT parameters (k={k}, t={t}, sw={sw}) do not fit a block of {L_s} seed bits")
    W = -(-L // 64)
    Lw, Lb = L // 64, L % 64
    lastmask = np.uint64((1 << Lb) - 1) if Lb else np.uint64(0xFFFFFFFFFFFFFFFF)
    nthreads = numba.get_num_threads()
    A = np.empty((K, 2 * W), dtype=np.uint64)
    B = np.empty((K, 2 * W), dtype=np.uint64)
    _to_chunks(_pack_checked("bits", bits, K * sw), A, sw, W)
    F = np.zeros(K * sw, dtype=np.uint64)  # u = roll(seed, −m): seed[m:], then seed[:m] at bit n − 1
    _rolled_seed(_pack_checked("seed_bits", seed_bits, -(-L_s // 64)), F, n, m)
    _to_chunks(F, B, sw, W)
    del F
    g = 0  # levels before g run over the whole arrays, the rest block by block in cache
    while g < k and K // 3 ** g * 2 * W * 8 > _TFFT_BLOCK_BYTES:
        g += 1
    _tfft(A, k, t, False, 0, g, W, L, lastmask, nthreads)
    _tfft(B, k, t, False, 0, g, W, L, lastmask, nthreads)
    _tfft_middle(A, B, k, t, g, W, L, Lw, Lb, lastmask, nthreads)
    del B
    _tfft(A, k, t, True, 0, g, W, L, lastmask, nthreads)
    Z = np.empty(K * sw, dtype=np.uint64)
    _overlap_add(A, Z, sw, W, Lw, Lb)
    Y = np.empty(-(-m // 64), dtype=np.uint64)
    _extract_bits(Z, n - 1, m, Y)
    return np.unpackbits(Y.view(np.uint8), count=m, bitorder="little")


def toeplitz_hash_tfft(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Same result as :func:`toeplitz_hash`, always via the exact GF(2) ternary FFT.

    Raises :class:`QKDInputError` on a CPU without ``pclmulqdq`` (use :func:`toeplitz_hash`).
    """
    n, m = _check(bits, seed_bits, out_len)
    if not HAS_CLMUL:
        raise QKDInputError("toeplitz_hash_tfft needs a CPU with the pclmulqdq instruction; use toeplitz_hash")
    return _toeplitz_tfft(bits, seed_bits, n, m)
