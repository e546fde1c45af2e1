"""The amin16 attempt's bookkeeping kernels (labqfl.qkd.ldpc_batch): the unsatisfied-check count of the stall
test against a plain-numpy count of the hard decision's parity, and a lane's write-back and reload in one pass
(``_refill``) against the two steps it replaces (``_scatter`` then ``_gather``)."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.qkd import ldpc_batch as lb
from labqfl.qkd.ldpc import build_code


@pytest.fixture(scope="module")
def code():
    return build_code(4096, 0.7, 3, 64)


def _numpy_unsatisfied(code, B: int, S: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Per lane: checks i of base row r whose XOR of hard decisions (L < 0) over base edges k (variable
    col_k·Z + (i + s_k) mod Z) differs from the syndrome bit (S = −bit)."""
    Z = code.z
    Lv = L.reshape(code.n, B)
    out = np.zeros(B, np.int64)
    for r in range(code.base_ptr.size - 1):
        par = (-S[r * Z * B:(r + 1) * Z * B].astype(np.int64)).reshape(Z, B)
        for k in range(code.base_ptr[r], code.base_ptr[r + 1]):
            v = code.base_col[k] * Z + (np.arange(Z) + code.base_shift[k]) % Z
            par ^= (Lv[v] < 0).astype(np.int64)
        out += par.sum(axis=0)
    return out


@pytest.mark.parametrize(("B", "seed"), [(1, 1), (2, 2), (3, 3), (4, 4), (4, 5), (8, 6), (16, 7)])
def test_unsatisfied_count_equals_the_numpy_parity(code, B, seed):
    """Both entry points (the allocating one and the one on preallocated int8 signs) give numpy's count,
    with posteriors at 0, ±1, the caps and int16's extremes (the sign is L >> 15: 0 counts as a 0 bit)."""
    rng = np.random.default_rng(seed)
    Z = code.z
    L = rng.integers(-3, 3, code.n * B).astype(np.int16)
    pick = rng.random(L.size)
    L[pick < 0.3] = rng.integers(-lb.LMAX, lb.LMAX + 1, (pick < 0.3).sum())
    L[pick > 0.98] = rng.choice(np.array([-32768, 32767, -lb.LMAX, lb.LMAX], np.int16), (pick > 0.98).sum())
    S = -rng.integers(0, 2, (code.base_ptr.size - 1) * Z * B).astype(np.int16)
    want = _numpy_unsatisfied(code, B, S, L)
    cnt = np.full(B, -7, np.int64)
    lb._unsatisfied_lanes(code.base_ptr, code.base_col, code.base_shift, Z, B, S, L, np.empty(2 * Z * B, np.int16),
                          cnt)
    np.testing.assert_array_equal(cnt, want)
    cnt2 = np.full(B, -7, np.int64)
    sg = np.full(2 * L.size, 5, np.int8)  # stale contents: every value is written before it is read
    lb._unsatisfied_into(code.base_ptr, code.base_col, code.base_shift, Z, B, S, L, sg, np.full(Z * B, 3, np.int8),
                         np.full(Z * B, 9, np.int16), cnt2)
    np.testing.assert_array_equal(cnt2, want)


@pytest.mark.parametrize("B", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("with_r", [True, False])
def test_refill_equals_scatter_then_gather(B, with_r):
    """Every lane, both with and without R's write-back: the same lanes, frames and syndrome as the two steps."""
    rng = np.random.default_rng(10 * B + with_r)
    F, n, E, m = 4, 96, 160, 40
    synd = rng.integers(0, 2, (F, m)).astype(np.uint8)
    Lq = rng.integers(-32768, 32768, (F, n)).astype(np.int16)
    Rq = rng.integers(-32768, 32768, (F, E)).astype(np.int16)
    Lb = rng.integers(-32768, 32768, n * B).astype(np.int16)
    Rb = rng.integers(-32768, 32768, E * B).astype(np.int16)
    Sb = rng.integers(-1, 1, m * B).astype(np.int16)
    for lane in range(B):
        want = [a.copy() for a in (Lq, Rq, Sb, Lb, Rb)]
        lb._scatter(want[0], want[1], 1, lane, B, want[3], want[4], with_r)
        lb._gather(synd, want[0], want[1], 2, lane, B, want[2], want[3], want[4])
        lb._refill(synd, Lq, Rq, 1, 2, lane, B, Sb, Lb, Rb, with_r)
        for got, exp in zip((Lq, Rq, Sb, Lb, Rb), want, strict=True):
            np.testing.assert_array_equal(got, exp)
    # the same frame out and in (not what _run_lanes does): still the two steps' result
    want = [a.copy() for a in (Lq, Rq, Sb, Lb, Rb)]
    lb._scatter(want[0], want[1], 3, 0, B, want[3], want[4], with_r)
    lb._gather(synd, want[0], want[1], 3, 0, B, want[2], want[3], want[4])
    lb._refill(synd, Lq, Rq, 3, 3, 0, B, Sb, Lb, Rb, with_r)
    for got, exp in zip((Lq, Rq, Sb, Lb, Rb), want, strict=True):
        np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_posteriors_to_float_equal_numpy(dtype):
    """The converged frames' posteriors written back to the float L: numpy's Lq[done] / 64 in float32, bit for
    bit (every int16, both float widths of L); rows not in ``done`` untouched."""
    rng = np.random.default_rng(3)
    Lq = rng.integers(-32768, 32768, (6, 500)).astype(np.int16)
    Lq[0, :4] = [-32768, 32767, 0, -1]
    L = rng.normal(size=(6, 500)).astype(dtype)
    want = L.copy()
    done = np.array([4, 0, 2], np.int64)
    want[done] = Lq[done].astype(np.float32) / np.float32(lb.SCALE)
    lb._posteriors_to_float(Lq, L, done)
    np.testing.assert_array_equal(L.view(np.uint8), want.view(np.uint8))
