"""The amin16 sweep (labqfl.qkd.ldpc_batch._sweep) against a plain-numpy reference, and its pass loops compiled
to SIMD code.

The reference is written from the module's description (A-min* of Jones et al., IEEE MILCOM 2003, in the
fixed point of :mod:`labqfl.qkd.ldpc_batch`) in int64 numpy arithmetic with floor division — no int16 wrap, no
masks — edge after edge over one layer's Z checks and all lanes at once; the kernel must give the same L, R and
"unsatisfied" masks bit for bit, for any lane count.
"""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from labqfl.qkd import ldpc_batch as lb
from labqfl.qkd.ldpc import build_code


def _f(u: np.ndarray) -> np.ndarray:
    uc = np.minimum(u, 255)
    return np.maximum(np.maximum((359 - 3 * uc) // 8, (3709 - 17 * uc) // 128), 0)


def _bpx(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(x, y) + _f(x + y) - _f(np.abs(x - y)), 0)


def reference_sweep(code, B: int, S: np.ndarray, L: np.ndarray, R: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One layered A-min* sweep over lanes of (flat, interleaved) S, L, R as ldpc_batch lays them out; L and R
    updated in place, returns the (Z, B) OR over layers of the checks' disagree flags (sign parity of L XOR
    syndrome)."""
    Z = code.z
    L2 = L.reshape(-1, B).astype(np.int64)
    R2 = R.reshape(-1, B).astype(np.int64)
    S2 = S.reshape(-1, B).astype(np.int64) != 0  # syndrome bit per (check, lane)
    acc = np.zeros((Z, B), bool)
    i = np.arange(Z)
    for r in range(code.base_ptr.size - 1):
        ks = range(code.base_ptr[r], code.base_ptr[r + 1])
        x1 = np.full((Z, B), lb._EMPTY, np.int64)
        A = x1.copy()
        Bs = x1.copy()
        par = S2[r * Z:(r + 1) * Z].copy()
        lpar = par.copy()
        for k in ks:
            v = code.base_col[k] * Z + (i + code.base_shift[k]) % Z
            t = L2[v] - R2[k * Z + i]
            a = np.minimum(np.abs(t), lb.AMAX)
            An, Bn = _bpx(A, a), _bpx(Bs, a)
            lo = a < x1
            Bs = np.where(lo, A, Bn)
            A = An
            x1 = np.minimum(x1, a)
            par ^= t < 0
            lpar ^= L2[v] < 0
        acc |= lpar
        for k in ks:
            v = code.base_col[k] * Z + (i + code.base_shift[k]) % Z
            t = L2[v] - R2[k * Z + i]
            a = np.minimum(np.abs(t), lb.AMAX)
            mag = np.where(a == x1, Bs, A)
            m2 = mag + (mag * int(w[k])) // 32
            msg = np.where(par ^ (t < 0), -m2, m2)
            assert np.abs(t).max() < 2**15 and np.abs(msg).max() < 2**15  # the kernel's int16 never wraps
            R2[k * Z + i] = msg
            L2[v] = np.clip(t + msg, -lb.LMAX, lb.LMAX)
    L[:] = L2.reshape(-1)
    R[:] = R2.reshape(-1)
    return acc


@pytest.fixture(scope="module")
def code():
    return build_code(4096, 0.7, 3, 64)


def _state(code, B: int, seed: int):
    """Random lanes: posteriors anywhere in ±LMAX (many near 0, some at the caps), messages up to the largest
    magnitude pass 2 writes, random syndrome, a random message scale 0..8 per base edge."""
    rng = np.random.default_rng(seed)
    n, E, m = code.n, code.edges, code.base_ptr.size - 1
    L = rng.integers(-600, 600, n * B)
    big = rng.random(n * B) < 0.2
    L[big] = rng.integers(-lb.LMAX, lb.LMAX + 1, big.sum())
    L[rng.random(n * B) < 0.01] = lb.LMAX * rng.choice([-1, 1])
    cap = (lb.AMAX + 45) * 40 // 32  # ⊞ ≤ min + f(0) = min + 44; scale ≤ 1 + 8/32
    R = rng.integers(-300, 300, E * B)
    big = rng.random(E * B) < 0.05
    R[big] = rng.integers(-cap, cap + 1, big.sum())
    S = -rng.integers(0, 2, m * code.z * B)
    w = rng.integers(0, 9, code.base_col.size)
    return S.astype(np.int16), L.astype(np.int16), R.astype(np.int16), w.astype(np.int16)


@pytest.mark.parametrize(("B", "seed"), [(1, 1), (2, 2), (3, 3), (4, 4), (4, 5), (8, 6), (16, 7)])
def test_sweep_equals_the_numpy_reference(code, B, seed):
    """Three sweeps from random lanes: L, R and the unsatisfied masks equal the reference's after each."""
    S, L, R, w = _state(code, B, seed)
    Lr, Rr = L.copy(), R.copy()
    ZB = code.z * B
    scratch = np.empty((2, 5, ZB), np.int16)
    acc = np.empty(ZB, np.int16)
    for _ in range(3):
        lb._sweep(code.base_ptr, code.base_col, code.base_shift, code.z, B, S, L, R, w, scratch, acc)
        ref = reference_sweep(code, B, S, Lr, Rr, w)
        np.testing.assert_array_equal(L, Lr)
        np.testing.assert_array_equal(R, Rr)
        np.testing.assert_array_equal(acc.reshape(code.z, B) != 0, ref)
        assert set(np.unique(acc)) <= {0, -1}


@numba.njit
def _pass1(L, R, st):
    lb._am1(L, R, st)


@numba.njit
def _pass2(L, R, st, w):
    lb._am2(L, R, st, w)


def test_both_passes_compile_to_int16_vector_code():
    """Each pass's loop is vectorised (LLVM vector min/max on i16).  Pass 1 was a scalar loop with branches
    with Numba 0.68 / LLVM 22: the select ``A if a < x1 else Bn`` became a branch, LLVM sank the load of the
    second candidate and its ⊞ into it, and a conditional 16-bit load has no AVX2 form, so the vectoriser's
    cost model kept the loop scalar (13 ns per edge and lane on an AMD EPYC Zen 3, 0.7 after)."""
    L = np.zeros(64, np.int16)
    st = np.zeros((5, 64), np.int16)
    _pass1(L, L.copy(), st)
    _pass2(L, L.copy(), st, np.int16(3))
    for fn in (_pass1, _pass2):
        ir = fn.inspect_llvm(fn.signatures[0])
        assert re.search(r"@llvm\.smin\.v\d+i16", ir), fn
        assert re.search(r"@llvm\.smax\.v\d+i16", ir), fn


@pytest.mark.parametrize("B", [1, 2, 3, 4, 5, 8])
def test_lane_copies_equal_strided_numpy(B):
    """_put_lane / _get_lane (a copy at 1 lane, int32 / int64 words at 2 / 4 lanes, strided int16 otherwise)
    write and read exactly ``dst[lane::B]``, leaving the other lanes as they were (values across the int16 range)."""
    rng = np.random.default_rng(B)
    n = 1000
    inter = rng.integers(-(2**15), 2**15, n * B).astype(np.int16)
    for lane in range(B):
        src = rng.integers(-(2**15), 2**15, n).astype(np.int16)
        want = inter.copy()
        want[lane::B] = src
        lb._put_lane(inter, src, lane, B)
        np.testing.assert_array_equal(inter, want)
        out = np.empty(n, np.int16)
        lb._get_lane(out, inter, (lane + 1) % B, B)
        np.testing.assert_array_equal(out, inter[(lane + 1) % B::B])


@numba.njit
def _f_all(u):
    out = np.empty(u.size, np.int16)
    for i in range(u.size):
        out[i] = lb._f(u[i])
    return out


def test_boxplus_correction_equals_the_documented_formula_for_every_u():
    """lb._f(u) = max(⌊(359 − 3c)/8⌋, ⌊(3709 − 17c)/128⌋, 0) with c = min(u, 255), for every u ≥ 0 of int16
    (the kernel caps at 218 and drops the max with 0: the same values)."""
    u = np.arange(0, 2**15, dtype=np.int16)
    np.testing.assert_array_equal(_f_all(u), _f(u.astype(np.int64)))
