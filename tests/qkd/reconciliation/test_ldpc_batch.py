"""The frame-batched 16-bit A-min* decoder (``decoder="amin16"``, labqfl.qkd.ldpc_batch)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from labqfl.qkd import ldpc_batch as lb
from labqfl.qkd.ldpc import build_code, reconcile_ldpc
from labqfl.qkd.ldpc_qc import _bpx as bpx_float


@pytest.fixture(scope="module")
def code():
    return build_code(4096, 0.7, 3, 64)  # small quasi-cyclic code: z = 64, 64 base columns


ERR = (0.02, 0.03, 0.07, 0.025, 0.08, 0.035, 0.02)
"""Error fraction per frame: some decode, some stall."""


def _frames(code, q: float, F: int, seed: int):
    """F frames with ERR[f]·n errors each, priors for QBER q."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (F, code.n)).astype(np.uint8)
    e = np.zeros((F, code.n), np.uint8)
    for f in range(F):
        e[f, rng.choice(code.n, int(round(ERR[f] * code.n)), replace=False)] = 1
    synd = np.stack([code.syndrome(r) for r in x])
    llr = np.log((1 - q) / q)
    Lq = lb.quantise(np.where((x ^ e) == 1, -llr, llr))
    return x, synd, Lq


def _attempt(code, B, synd, Lq, frames, max_iter, every=3, ratio=0.95):
    Lq = Lq.copy()
    Rq = np.zeros((Lq.shape[0], code.edges), np.int16)
    w = np.full(code.base_col.size, lb.weight_for(code.rate), np.int16)
    res, used = lb.batch_attempt_frames(code.base_ptr, code.base_col, code.base_shift, code.z, B, synd, Lq, Rq,
                                        frames, w, max_iter, every, ratio)
    return res, used, Lq, Rq


@numba.njit
def _bpx_q(x, y):
    return lb._bpx(np.int16(x), np.int16(y))


def test_fixed_point_boxplus_follows_the_float_one():
    """x ⊞ y in 16-bit fixed point (× 64) within 1/32 of the float engine's piecewise-linear ⊞, and the empty
    check state is neutral (x ⊞ EMPTY = x) with no int16 overflow at the caps."""
    grid = np.arange(0, lb.AMAX + 1, 7)
    for x in grid:
        for y in grid[::5]:
            ref = float(bpx_float(np.float32(x / lb.SCALE), np.float32(y / lb.SCALE))) * lb.SCALE
            assert abs(_bpx_q(x, y) - ref) <= 2.0, (x, y)
    for x in (0, 1, 100, lb.AMAX):
        assert _bpx_q(x, lb._EMPTY) == x
        assert _bpx_q(lb._EMPTY, x) == x


def test_results_do_not_depend_on_lanes_threads_or_lane_assignment(code):
    """Each lane is its own frame: 1, 3 or 4 lanes, 1 or 2 threads, frames in another order — the same
    sweeps, posteriors and messages per frame (frames converging, stalling and running out of sweeps)."""
    x, synd, Lq = _frames(code, 0.04, 7, 1)
    frames = np.arange(7)
    ref = _attempt(code, 1, synd, Lq, frames, 40)
    assert (ref[0] > 0).any() and (ref[0] < 0).any()  # both kinds of frame ended in this attempt
    threads = numba.get_num_threads()
    try:
        for B, t in ((4, 1), (3, 2), (4, 2)):
            numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
            out = _attempt(code, B, synd, Lq, frames, 40)
            for a, b in zip(ref[:3], out[:3], strict=True):
                np.testing.assert_array_equal(a, b)
            left = ref[0] < 0  # a converged frame's messages are not kept (the protocol never reads them)
            np.testing.assert_array_equal(ref[3][left], out[3][left])
    finally:
        numba.set_num_threads(threads)
    perm = np.array([3, 6, 0, 5, 1, 4, 2])
    out = _attempt(code, 4, synd, Lq, perm, 40)
    np.testing.assert_array_equal(out[0], ref[0][perm])
    np.testing.assert_array_equal(out[2][perm], ref[2][perm])
    ok = perm[out[0] > 0]
    assert ok.size and all(((out[2][f] < 0).astype(np.uint8) == x[f]).all() for f in ok)  # decoded = Alice's word


def _reference_attempt(code, synd, Lq, max_iter, every, ratio):
    """The stopping rules of qc_attempt_frames, written out sweep by sweep on one lane."""
    Z = code.z
    Rq = np.zeros(code.edges, np.int16)
    L = Lq.copy()
    S = -synd.astype(np.int16)
    sc = np.empty((2, 5, Z), np.int16)
    acc = np.empty(Z, np.int16)
    par = np.empty(2 * Z, np.int16)
    cnt = np.zeros(1, np.int64)
    prev = -1
    for j in range(1, max_iter + 1):
        lb._sweep(code.base_ptr, code.base_col, code.base_shift, Z, 1, S, L, Rq, np.full(code.base_col.size, lb.weight_for(code.rate),
                  np.int16), sc, acc)
        lb._unsatisfied_lanes(code.base_ptr, code.base_col, code.base_shift, Z, 1, S, L, par, cnt)
        if not acc.any() and cnt[0] == 0:
            return j, j
        if j % every == 0:
            if prev >= 0 and j >= max(2 * every, 3) and cnt[0] > ratio * prev:
                return -1, j
            prev = int(cnt[0])
    return -1, max_iter


def test_stopping_rules_match_the_float_engines_attempt(code):
    """Convergence (no check disagreed during the sweep and the syndrome matches), the stall test every 3
    sweeps from sweep 6, and the sweep limit — as qc_attempt_frames applies them — per lane."""
    x, synd, Lq = _frames(code, 0.04, 6, 2)
    res, used, _, _ = _attempt(code, 4, synd, Lq, np.arange(6), 30)
    kinds = set()
    for f in range(6):
        r, u = _reference_attempt(code, synd[f], Lq[f], 30, 3, 0.95)
        assert (res[f], used[f]) == (r, u), f
        kinds.add("ok" if r > 0 else "stall" if u < 30 else "limit")
    assert {"ok", "stall"} <= kinds


@pytest.mark.parametrize("q", [0.02, 0.08])
def test_amin16_reconciles_like_the_float_engine(q):
    """reconcile_ldpc(decoder="amin16") corrects every frame to Alice's bits, with f within 0.02 of the
    float A-min* engine on the same frames (both blind, same plan)."""
    from labqfl.bench import noisy_frame
    from labqfl.qkd.ldpc import plan_ldpc

    n = 2 * plan_ldpc(q).key_bits_per_frame
    x, y = noisy_frame(n, q, 7)
    ref = reconcile_ldpc(x, y, q, seed=1)
    res = reconcile_ldpc(x, y, q, seed=1, decoder="amin16")
    assert res.success and res.frame_errors == 0
    np.testing.assert_array_equal(res.corrected, x)
    assert res.efficiency <= ref.efficiency + 0.02
    assert res.leaked_bits > 0 and res.details["frames"] == 2


def test_amin16_takes_a_device_as_amin_and_rejects_bad_lanes():
    """A device runs the float kernels only: since amin16 became the default (session 41) an amin16 plan with a
    device runs as amin there, saying so (test_ldpc_cuda.py); before, it was refused."""
    from labqfl.qkd.ldpc import LdpcBob, plan_ldpc
    from labqfl.qkd.reconciliation import ReconciliationInputError

    bits = np.zeros(100, np.uint8)
    assert LdpcBob(bits, 0.04, plan=plan_ldpc(0.04, decoder="amin16"), device="cpu").plan.decoder == "amin16"
    with pytest.raises(ReconciliationInputError, match="quasi-cyclic decoder"):
        LdpcBob(bits, 0.04, plan=plan_ldpc(0.04, decoder="bp"), device="cpu")
    with pytest.raises(ReconciliationInputError, match="lanes"):
        LdpcBob(bits, 0.04, plan=plan_ldpc(0.04, decoder="amin16"), lanes=0)
