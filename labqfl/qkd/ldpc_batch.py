"""Frame-batched, 16-bit fixed-point layered A-min* for the quasi-cyclic LDPC codes (``decoder="amin16"``).

Layout
------
``B`` frames of one code (same rate, QBER and plan) share one set of *lanes*: posteriors are stored
as ``Lb[v·B + lane]``, check messages as ``Rb[(k·Z + i)·B + lane]`` (base edge k, circulant row i),
the syndrome as ``Sb[c·B + lane]``.  A base edge's Z checks touch a cyclic shift of Z consecutive
variables: its posteriors are copied into check order (two contiguous pieces, split at the wrap), and each
pass of a layer is one contiguous loop over the edge's Z·B int16 values (:func:`_sweep`) — the
quasi-cyclic "intra-frame" layout of :mod:`labqfl.qkd.ldpc_qc` with the frames interleaved inside it (Le
Gal & Jego, IEEE TPDS 27, 1373 (2016) compare intra- and inter-frame SIMD layouts).  Each lane is its own frame: a lane's arithmetic
never reads another lane, so the results do not depend on ``B``, on which lane a frame gets, or on
the thread count (tested).

Arithmetic
----------
Values are LLRs × :data:`SCALE` (64) in int16.  Posteriors saturate at ±:data:`LMAX`, |t| = |L − R|
is capped at :data:`AMAX` before the check update (so sums of two stay within int16), and the check
update is A-min* (Jones, Valles, Smith & Villasenor, IEEE MILCOM 2003) as in
:func:`labqfl.qkd.ldpc_qc.qc_aminstar`: |x ⊞ y| = min(x, y) + f(x + y) − f(|x − y|), with the same
piecewise-linear f(u) = max(0.6931 − 0.38·u, 0.445 − 0.132·u, 0) in fixed point (:func:`_f`).
Messages are scaled by 1 + ``weight``/32, w = 1 … 3 per mother rate (:data:`WEIGHTS`; 1.09375 — the float engine's
1.1 to 0.6 % — below rate 0.73).
Signs are carried as 0 / −1 masks (XOR of arithmetic shifts), so every operation is a packed 16-bit
min, max, add, sub, shift or XOR — every intermediate is cast back to int16 (Numba promotes integer
arithmetic to int64, and a shift or compare of a wide value keeps LLVM from narrowing the vectors),
and both candidates of a select are loaded before it (``B if c else A`` on two array elements became a
per-element gather), and a select whose one candidate is computed (a ⊞) is a bit mask, not a branch (LLVM
sank the candidate's load into the branch and could not vectorise the loop).  In the x86 assembly of the
sweep the inner loops are ``vpminsw`` / ``vpmaxsw`` / ``vpaddw`` / ``vpsubw`` / ``vpsraw`` / ``vpxor`` on 16
lanes (ymm; Numba's LLVM prefers 256-bit vectors).

Schedule and stopping are those of :func:`labqfl.qkd.ldpc_qc.qc_attempt_frames`: layered sweeps; after
a sweep in which no check's sign parity disagreed with the syndrome, the lane's hard decision (L < 0
→ 1) is checked against the whole syndrome; every ``every`` sweeps the lane's unsatisfied checks are
counted and the attempt ends once the count is above ``ratio`` × the previous count (from sweep
max(2·every, 3)).  A lane whose frame has converged, stalled or used its sweeps is written back and
refilled with the next frame of the attempt.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["AMAX", "LMAX", "SCALE", "batch_attempt_frames", "quantise", "weight_for"]

SCALE = 64
"""Fixed-point scale: an LLR x is stored as round(64·x) (16 was too coarse: a degree-22 check's ⊞ of
inputs near 3 is below 1/16, and those messages vanished — the decoder did not move)."""
AMAX = 1800
"""Cap on |t| = |L − R| entering a check update (≈ 28 in LLR units); a message's magnitude is at most
max(AMAX, _EMPTY) · (1 + w/32), and w·_EMPTY fits int16 for w ≤ 8."""
LMAX = 28000
"""Posterior saturation (≈ 437 in LLR units; a revealed value's ±50 is ±3 200): |L ± 2·R| stays in int16."""
_I16 = np.int16
_EMPTY = 4095
"""Initial min / ⊞ state of a check: above AMAX, so x ⊞ _EMPTY = x exactly (f(_EMPTY − x) = 0), and
x + _EMPTY stays inside int16."""


@numba.njit(cache=True, nogil=True)
def _quantise_flat(x: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` ← round-half-even(64·x[i]) saturated at ±LMAX (float64 arithmetic, as numpy's ``rint``)."""
    hi = np.float64(LMAX)
    for i in range(x.size):
        v = np.rint(np.float64(x[i]) * np.float64(SCALE))
        v = v if v < hi else hi
        out[i] = np.int16(v if v > -hi else -hi)


def quantise(x: np.ndarray) -> np.ndarray:
    """LLRs (float) → int16 fixed point (× :data:`SCALE`, rounded half to even, saturated at ±:data:`LMAX`);
    one compiled pass (the numpy chain ``clip(rint(x·64))`` through float64 took half of the time outside the
    sweeps of a one-attempt reconciliation)."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    a = np.ascontiguousarray(a)
    out = np.empty(a.shape, np.int16)
    _quantise_flat(a.reshape(-1), out.reshape(-1))
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _f(u: np.int16) -> np.int16:
    """64·f(u/64) for the ⊞ correction f(u) ≈ max(0.6931 − 0.38·u, 0.445 − 0.132·u, 0), u ≥ 0, rounded:
    max(⌊(359 − 3u)/8⌋, ⌊(3709 − 17u)/128⌋, 0) (44.36 = 64·0.6931, 3/8 = 0.375; 28.48 = 64·0.445,
    17/128 = 0.133).  u is first capped at 218, where the second piece is ⌊3/128⌋ = 0 and the first below 0:
    the second piece is then ≥ 0 for every u, so the max with 0 is implied (same values as a cap at 255 and
    a max with 0 for every u in 0 … 32 767, one operation less)."""
    uc = u if u < _I16(218) else _I16(218)
    a = _I16(_I16(359 - _I16(3) * uc) >> 3)
    b = _I16(_I16(3709 - _I16(17) * uc) >> 7)
    return a if a > b else b


@numba.njit(cache=True, nogil=True, inline="always")
def _bpx(x: np.int16, y: np.int16) -> np.int16:
    """|x ⊞ y| for 0 ≤ x, y ≤ AMAX in fixed point: min(x, y) + f(x + y) − f(|x − y|), at least 0."""
    lo = x if x < y else y
    u = _I16(x + y)
    dd = _I16(x - y)
    md = _I16(-dd)
    d = dd if dd > md else md
    r = _I16(lo + _f(u) - _f(d))
    return r if r > _I16(0) else _I16(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _am1(Ls: np.ndarray, Rs: np.ndarray, st: np.ndarray) -> None:
    """A-min* pass 1 of one base edge over its Z·B checks (``Ls``: the edge's posteriors in check order,
    ``Rs`` its messages), in place on the check state ``st`` (5, Z·B): min |t|, ⊞ of all, ⊞ of all but the
    min, sign parity of t, of L.  Every store is unconditional (min, mask select, XOR), so updating in place
    costs no masked store."""
    s1 = st[0]
    sa = st[1]
    sb = st[2]
    sp = st[3]
    sl = st[4]
    amax = _I16(AMAX)
    for i in range(Ls.size):
        lv = Ls[i]
        t = _I16(lv - Rs[i])
        mt = _I16(-t)
        a0 = t if t > mt else mt
        a = a0 if a0 < amax else amax
        x1 = s1[i]
        A = sa[i]
        B = sb[i]
        An = _bpx(A, a)
        Bn = _bpx(B, a)
        # ⊞ of all but the min: A where a < x1, else Bn — as a mask (−1 where a < x1; a ≤ AMAX, x1 ≤ _EMPTY, so
        # a − x1 fits int16), not ``A if a < x1 else Bn``: Numba's branch let LLVM 22 sink the load of sb and the
        # ⊞ into it, a conditional int16 load has no AVX2 form, and the loop stayed scalar (13 ns per edge on Zen 3)
        m = _I16(_I16(a - x1) >> 15)
        sb[i] = _I16(Bn ^ (_I16(A ^ Bn) & m))
        sa[i] = An
        s1[i] = a if a < x1 else x1
        sp[i] = _I16(sp[i] ^ (t >> 15))
        sl[i] = _I16(sl[i] ^ (lv >> 15))


@numba.njit(cache=True, nogil=True, inline="always")
def _am2(Ls: np.ndarray, Rs: np.ndarray, st: np.ndarray, w: np.int16) -> None:
    """A-min* pass 2 of one base edge, in place on ``Ls`` / ``Rs``: R = sign · (mag + ⌊w·mag/32⌋) (the min
    edge's mag is the ⊞ of the others, every other edge's the ⊞ of all), L = t + R saturated at ±LMAX."""
    s1 = st[0]
    sa = st[1]
    sb = st[2]
    sp = st[3]
    amax = _I16(AMAX)
    lmax = _I16(LMAX)
    lmin = _I16(-LMAX)
    for i in range(Ls.size):
        t = _I16(Ls[i] - Rs[i])
        mt = _I16(-t)
        a0 = t if t > mt else mt
        a = a0 if a0 < amax else amax
        x1 = s1[i]
        A = sa[i]
        B = sb[i]
        mag = B if a == x1 else A  # load both first: a conditional load becomes a gather
        m2 = _I16(mag + _I16(_I16(mag * w) >> 5))
        p = _I16(sp[i] ^ (t >> 15))
        r = _I16((m2 ^ p) - p)
        Rs[i] = r
        v = _I16(t + r)
        v = v if v < lmax else lmax
        Ls[i] = v if v > lmin else lmin


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    for i in range(dst.size):
        dst[i] = src[i]


@numba.njit(cache=True, nogil=True)
def _max_degree(row_ptr: np.ndarray) -> int:
    deg = 0
    for r in range(row_ptr.size - 1):
        deg = max(deg, row_ptr[r + 1] - row_ptr[r])
    return deg


@numba.njit(cache=True, nogil=True)
def _sweep(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int, Sb: np.ndarray,
           Lb: np.ndarray, Rb: np.ndarray, weight: np.ndarray, scratch: np.ndarray, acc: np.ndarray) -> None:
    """:func:`_sweep_into` with its rotated copies allocated here."""
    _sweep_into(row_ptr, bcol, bshift, Z, B, Sb, Lb, Rb, weight, scratch, acc,
                np.empty((_max_degree(row_ptr), Z * B), np.int16))


@numba.njit(cache=True, nogil=True)
def _sweep_into(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int, Sb: np.ndarray,
                Lb: np.ndarray, Rb: np.ndarray, weight: np.ndarray, scratch: np.ndarray, acc: np.ndarray,
                Lrot: np.ndarray) -> None:
    """One layered A-min* sweep over all B lanes; ``acc`` (Z·B) ← OR over layers of the checks'
    "unsatisfied" masks (sign parity of L XOR syndrome, −1 where they disagree).  ``scratch``: int16 of
    (2, 5, Z·B) or more (``scratch[0]`` holds the check state); ``Lrot``: int16 of (largest layer degree, Z·B),
    the layer's posteriors in check order.

    A base edge of shift s connects check i to variable (i + s) mod Z: its posteriors are copied once per layer
    into check order (two contiguous pieces, split at the wrap), pass 1 and pass 2 each run as one loop over
    the Z·B values, and pass 2's posteriors are copied back.  One loop per edge and pass, not one per piece:
    each loop pays LLVM's run-time overlap checks of its arrays and a scalar remainder (< 16 values, the
    expensive part of a piece of ≈ Z·B/2 values at one lane)."""
    ZB = Z * B
    big = _I16(_EMPTY)
    st = scratch[0]
    s1 = st[0]
    sa = st[1]
    sb = st[2]
    sp = st[3]
    sl = st[4]
    for i in range(ZB):
        acc[i] = 0
    for r in range(row_ptr.size - 1):
        sy = Sb[r * ZB:(r + 1) * ZB]
        for i in range(ZB):
            s1[i] = big
            sa[i] = big
            sb[i] = big
            sp[i] = sy[i]
            sl[i] = sy[i]
        k0 = row_ptr[r]
        for k in range(k0, row_ptr[r + 1]):
            base = bcol[k] * Z
            s = bshift[k]
            Lr = Lrot[k - k0]
            _copy(Lr[:(Z - s) * B], Lb[(base + s) * B:(base + Z) * B])
            _copy(Lr[(Z - s) * B:], Lb[base * B:(base + s) * B])
            _am1(Lr, Rb[k * ZB:(k + 1) * ZB], st)
        for i in range(ZB):
            acc[i] = _I16(acc[i] | sl[i])
        for k in range(k0, row_ptr[r + 1]):
            base = bcol[k] * Z
            s = bshift[k]
            Lr = Lrot[k - k0]
            _am2(Lr, Rb[k * ZB:(k + 1) * ZB], st, weight[k])
            _copy(Lb[(base + s) * B:(base + Z) * B], Lr[:(Z - s) * B])
            _copy(Lb[base * B:(base + s) * B], Lr[(Z - s) * B:])


@numba.njit(cache=True, nogil=True)
def _unsatisfied_lanes(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int,
                       Sb: np.ndarray, Lb: np.ndarray, par: np.ndarray, cnt: np.ndarray) -> None:
    """``cnt[lane]`` ← checks whose hard-decision parity (L < 0 → 1) differs from the syndrome
    (:func:`_unsatisfied_into` with its sign copy allocated here; ``par``: int16 scratch of Z·B or more)."""
    ZB = Z * B
    _unsatisfied_into(row_ptr, bcol, bshift, Z, B, Sb, Lb, np.empty(2 * Lb.size, np.int8), np.empty(ZB, np.int8),
                      par[:ZB], cnt)


@numba.njit(cache=True, nogil=True)
def _unsatisfied_into(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int, Sb: np.ndarray,
                      Lb: np.ndarray, sg: np.ndarray, p: np.ndarray, tally: np.ndarray, cnt: np.ndarray) -> None:
    """``cnt[lane]`` ← checks whose hard-decision parity (L < 0 → 1) differs from the syndrome.  ``sg``: int8
    of 2·n·B, ← each base column's sign masks (L >> 15: 0 / −1) twice in a row, so the Z·B signs of a base edge
    in check order are one slice (one XOR loop per edge, on 32 int8 per ymm, instead of two int16 pieces split at
    the wrap); ``p``: int8 of Z·B (the layer's parities); ``tally``: int16 of Z·B (the per-(row, lane) counts,
    summed over layers — at most the number of layers — and over rows at the end).  The same counts as the
    int16 form of before: only the sign of each value is read, and XOR of 0 / −1 masks is exact in int8."""
    ZB = Z * B
    for c in range(Lb.size // ZB):
        src = Lb[c * ZB:(c + 1) * ZB]
        d1 = sg[2 * c * ZB:(2 * c + 1) * ZB]
        for i in range(ZB):
            d1[i] = np.int8(_I16(src[i] >> 15))
        d2 = sg[(2 * c + 1) * ZB:(2 * c + 2) * ZB]
        for i in range(ZB):
            d2[i] = d1[i]
    for i in range(ZB):
        tally[i] = 0
    for r in range(row_ptr.size - 1):
        sy = Sb[r * ZB:(r + 1) * ZB]
        for i in range(ZB):
            p[i] = np.int8(sy[i])
        for k in range(row_ptr[r], row_ptr[r + 1]):
            o = (2 * bcol[k] * Z + bshift[k]) * B
            sk = sg[o:o + ZB]
            for i in range(ZB):
                p[i] = np.int8(p[i] ^ sk[i])
        for i in range(ZB):
            tally[i] = _I16(tally[i] - p[i])
    for lane in range(B):
        cnt[lane] = 0
    for z in range(Z):
        for lane in range(B):
            cnt[lane] += tally[z * B + lane]


@numba.njit(cache=True, nogil=True)
def _put_lane(dst: np.ndarray, src: np.ndarray, lane: int, B: int) -> None:
    """``dst[k·B + lane] = src[k]``.  With 1 lane a copy; with 2 or 4 lanes each k is one int32 / int64 word of
    ``dst``, so the copy is a contiguous read-modify-write loop that vectorises (the strided int16 store does not:
    0.27 ms per frame of the 4 % code at 1, 2 or 8 lanes, 0.10 at 4)."""
    if B == 1:
        for k in range(src.size):
            dst[k] = src[k]
    elif B == 2:
        d32 = dst.view(np.int32)
        sh = 16 * lane
        keep32 = ~(np.int32(0xFFFF) << sh)
        for k in range(src.size):
            d32[k] = (d32[k] & keep32) | ((np.int32(src[k]) & np.int32(0xFFFF)) << sh)
    elif B == 4:
        d64 = dst.view(np.int64)
        sh = 16 * lane
        keep = ~(np.int64(0xFFFF) << sh)
        for k in range(src.size):
            d64[k] = (d64[k] & keep) | ((np.int64(src[k]) & np.int64(0xFFFF)) << sh)
    else:
        for k in range(src.size):
            dst[k * B + lane] = src[k]


@numba.njit(cache=True, nogil=True)
def _get_lane(dst: np.ndarray, src: np.ndarray, lane: int, B: int) -> None:
    """``dst[k] = src[k·B + lane]`` (the inverse of :func:`_put_lane`)."""
    if B == 1:
        for k in range(dst.size):
            dst[k] = src[k]
    elif B == 2:
        s32 = src.view(np.int32)
        sh = 16 * lane
        for k in range(dst.size):
            dst[k] = np.int16(s32[k] >> sh)
    elif B == 4:
        s64 = src.view(np.int64)
        sh = 16 * lane
        for k in range(dst.size):
            dst[k] = np.int16(s64[k] >> sh)
    else:
        for k in range(dst.size):
            dst[k] = src[k * B + lane]


@numba.njit(cache=True, nogil=True)
def _gather(synd: np.ndarray, Lq: np.ndarray, Rq: np.ndarray, f: int, lane: int, B: int, Sb: np.ndarray,
            Lb: np.ndarray, Rb: np.ndarray) -> None:
    """Load frame ``f`` (rows of ``synd`` uint8, ``Lq``, ``Rq`` int16) into ``lane``."""
    for c in range(synd.shape[1]):
        Sb[c * B + lane] = -_I16(synd[f, c])
    _put_lane(Lb, Lq[f], lane, B)
    _put_lane(Rb, Rq[f], lane, B)


@numba.njit(cache=True, nogil=True)
def _scatter(Lq: np.ndarray, Rq: np.ndarray, f: int, lane: int, B: int, Lb: np.ndarray, Rb: np.ndarray,
             with_r: bool) -> None:
    """Write ``lane`` back to frame ``f`` (L, and R when ``with_r``: a frame not yet decoded keeps its messages)."""
    _get_lane(Lq[f], Lb, lane, B)
    if with_r:
        _get_lane(Rq[f], Rb, lane, B)


@numba.njit(cache=True, nogil=True)
def _swap_lane(buf: np.ndarray, new: np.ndarray, old: np.ndarray, lane: int, B: int, keep_old: bool) -> None:
    """``old[k] = buf[k·B + lane]`` (when ``keep_old``), then ``buf[k·B + lane] = new[k]``: a frame's write-back
    and the next frame's load in one pass over the interleaved ``buf`` (words of 2 / 4 lanes as in
    :func:`_put_lane`); ``old`` and ``new`` are rows of different frames."""
    if B == 2:
        b32 = buf.view(np.int32)
        sh = 16 * lane
        keep32 = ~(np.int32(0xFFFF) << sh)
        if keep_old:
            for k in range(new.size):
                w = b32[k]
                old[k] = np.int16(w >> sh)
                b32[k] = (w & keep32) | ((np.int32(new[k]) & np.int32(0xFFFF)) << sh)
        else:
            for k in range(new.size):
                b32[k] = (b32[k] & keep32) | ((np.int32(new[k]) & np.int32(0xFFFF)) << sh)
    elif B == 4:
        b64 = buf.view(np.int64)
        sh = 16 * lane
        keep = ~(np.int64(0xFFFF) << sh)
        if keep_old:
            for k in range(new.size):
                w = b64[k]
                old[k] = np.int16(w >> sh)
                b64[k] = (w & keep) | ((np.int64(new[k]) & np.int64(0xFFFF)) << sh)
        else:
            for k in range(new.size):
                b64[k] = (b64[k] & keep) | ((np.int64(new[k]) & np.int64(0xFFFF)) << sh)
    else:
        if keep_old:
            _get_lane(old, buf, lane, B)
        _put_lane(buf, new, lane, B)


@numba.njit(cache=True, nogil=True)
def _refill(synd: np.ndarray, Lq: np.ndarray, Rq: np.ndarray, f_old: int, f_new: int, lane: int, B: int,
            Sb: np.ndarray, Lb: np.ndarray, Rb: np.ndarray, with_r: bool) -> None:
    """:func:`_scatter` of frame ``f_old`` then :func:`_gather` of frame ``f_new`` in ``lane``, each array
    passed once (the same values: ``f_old`` ≠ ``f_new``, so the frame read is not the one written)."""
    if f_old == f_new:
        _scatter(Lq, Rq, f_old, lane, B, Lb, Rb, with_r)
        _gather(synd, Lq, Rq, f_new, lane, B, Sb, Lb, Rb)
        return
    for c in range(synd.shape[1]):
        Sb[c * B + lane] = -_I16(synd[f_new, c])
    _swap_lane(Lb, Lq[f_new], Lq[f_old], lane, B, True)
    _swap_lane(Rb, Rq[f_new], Rq[f_old], lane, B, with_r)


@numba.njit(cache=True, nogil=True)
def _lane_verdict(j: int, bad: bool, cnt: int, prev: int, max_iter: int, every: int, gate: int,
                  ratio: float) -> int:
    """After sweep ``j`` of a lane's attempt: 1 converged, −1 ended (out of sweeps, or stalled), 0 go on."""
    if not bad and cnt == 0:
        return 1
    if j >= max_iter:
        return -1
    if every > 0 and j % every == 0 and prev >= 0 and j >= gate and cnt > ratio * prev:
        return -1
    return 0


@numba.njit(cache=True, nogil=True)
def _run_lanes(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int, synd: np.ndarray,
               Lq: np.ndarray, Rq: np.ndarray, frames: np.ndarray, weight: np.ndarray, max_iter: int, every: int,
               ratio: float, res: np.ndarray, used: np.ndarray, todo: np.ndarray, lj: np.ndarray,
               prev: np.ndarray) -> int:
    """Run the items ``todo`` (indices into ``frames``, each resuming at sweep ``lj[i]`` with stall count
    ``prev[i]``) through B lanes, refilling a lane as soon as its frame ends.  With B > 1, once no item is
    left to load and a lane falls idle, the still running lanes are written back (L, R, sweep count and
    stall count) and their items moved to the front of ``todo``; returns how many (0: all done)."""
    ZB = Z * B
    Lb = np.empty(Lq.shape[1] * B, np.int16)  # every lane is loaded before a sweep reads it
    Rb = np.empty(Rq.shape[1] * B, np.int16)
    Sb = np.empty(synd.shape[1] * B, np.int16)
    scratch = np.empty((2, 5, ZB), np.int16)
    acc = np.empty(ZB, np.int16)
    Lrot = np.empty((_max_degree(row_ptr), ZB), np.int16)
    sg = np.empty(2 * Lb.size, np.int8)
    p8 = np.empty(ZB, np.int8)
    tally = np.empty(ZB, np.int16)
    cnt = np.zeros(B, np.int64)
    idx = np.full(B, -1, np.int64)
    bad = np.zeros(B, np.bool_)
    gate = max(2 * every, 3)
    nxt = 0
    for lane in range(B):
        if nxt < todo.size:
            _gather(synd, Lq, Rq, frames[todo[nxt]], lane, B, Sb, Lb, Rb)
            idx[lane] = todo[nxt]
            nxt += 1
    while (idx >= 0).any():
        if B > 1 and nxt == todo.size and (idx < 0).any():
            left = 0
            for lane in range(B):
                if idx[lane] >= 0:
                    _scatter(Lq, Rq, frames[idx[lane]], lane, B, Lb, Rb, True)
                    todo[left] = idx[lane]
                    left += 1
            return left
        _sweep_into(row_ptr, bcol, bshift, Z, B, Sb, Lb, Rb, weight, scratch, acc, Lrot)
        count = False
        for lane in range(B):
            bad[lane] = False
            for z in range(Z):
                bad[lane] |= acc[z * B + lane] != 0
            if idx[lane] >= 0:
                lj[idx[lane]] += 1
                count |= (not bad[lane]) or (every > 0 and lj[idx[lane]] % every == 0)
        if count:
            _unsatisfied_into(row_ptr, bcol, bshift, Z, B, Sb, Lb, sg, p8, tally, cnt)
        for lane in range(B):
            i = idx[lane]
            if i < 0:
                continue
            v = _lane_verdict(lj[i], bad[lane], cnt[lane] if count else -1, prev[i], max_iter, every, gate, ratio)
            if v == 0:
                if every > 0 and lj[i] % every == 0:
                    prev[i] = cnt[lane]
                continue
            res[i] = lj[i] if v > 0 else -1
            used[i] = lj[i]
            idx[lane] = -1
            if nxt < todo.size:
                _refill(synd, Lq, Rq, frames[i], frames[todo[nxt]], lane, B, Sb, Lb, Rb, v < 0)
                idx[lane] = todo[nxt]
                nxt += 1
            else:
                _scatter(Lq, Rq, frames[i], lane, B, Lb, Rb, v < 0)
    return 0


@numba.njit(cache=True, nogil=True)
def _attempt_group(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int, synd: np.ndarray,
                   Lq: np.ndarray, Rq: np.ndarray, frames: np.ndarray, weight: np.ndarray, max_iter: int,
                   every: int, ratio: float, res: np.ndarray, used: np.ndarray, lo: int, hi: int) -> None:
    """Frames ``frames[lo:hi]`` through B lanes; once fewer than B are left running, on through half as many
    lanes (at most as many as are left), down to one: an idle lane still costs its sweeps.  Fills ``res`` /
    ``used``."""
    todo = np.arange(lo, hi)
    lj = np.zeros(frames.size, np.int64)
    prev = np.full(frames.size, -1, np.int64)
    b = max(1, min(B, todo.size))
    left = todo.size
    while left:
        left = _run_lanes(row_ptr, bcol, bshift, Z, b, synd, Lq, Rq, frames, weight, max_iter, every, ratio, res,
                          used, todo[:left], lj, prev)
        b = max(1, min(b // 2, left))


@numba.njit(cache=True, nogil=True, parallel=True)
def _batch_attempt(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int, synd: np.ndarray,
                   Lq: np.ndarray, Rq: np.ndarray, frames: np.ndarray, weight: np.ndarray, max_iter: int, every: int,
                   ratio: float, groups: int) -> tuple[np.ndarray, np.ndarray]:
    F = frames.size
    res = np.full(F, -1, np.int64)
    used = np.zeros(F, np.int64)
    for g in numba.prange(groups):
        _attempt_group(row_ptr, bcol, bshift, Z, B, synd, Lq, Rq, frames, weight, max_iter, every, ratio, res,
                       used, g * F // groups, (g + 1) * F // groups)
    return res, used


def batch_attempt_frames(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, B: int,
                         synd: np.ndarray, Lq: np.ndarray, Rq: np.ndarray, frames: np.ndarray, weight: np.ndarray,
                         max_iter: int, every: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """One attempt of the blind protocol on rows ``frames`` of (``synd`` (F, m) uint8, ``Lq`` (F, n) int16,
    ``Rq`` (F, E) int16), ``B`` frames at a time in interleaved lanes, at most ``max_iter`` sweeps each,
    with the stall test every ``every`` sweeps (≤ 0: none) at ``ratio`` — the semantics of
    :func:`labqfl.qkd.ldpc_qc.qc_attempt_frames`.  ``weight`` (E_b,) int16: message scale 1 + w/32 per base
    edge.  Returns per frame (sweeps to convergence or −1, sweeps spent); ``Lq`` / ``Rq`` hold the new
    state (a converged frame: its final posteriors in ``Lq``; its ``Rq`` row is not kept up to date).  The frames are split into one contiguous group per
    Numba thread; no result depends on ``B`` or the thread count."""
    frames = np.ascontiguousarray(frames, np.int64)
    groups = max(1, min(numba.get_num_threads(), -(-frames.size // B)))
    if frames.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return _batch_attempt(row_ptr, bcol, bshift, Z, B, synd, Lq, Rq, frames, weight, max_iter, every, ratio,
                          groups)


LANES = 4
"""Default frames per lane group: on the 2-vCPU Xeon (AVX2 code) 0.65 ns per edge and lane at 4 lanes
against 1.12 at 1 (the segments' scalar remainders) and 0.69–0.88 at 16–32 (a group's messages, B × 0.8 MB,
no longer fit the L2 cache).  On the 2-vCPU AMD EPYC (Zen 3), after session 41's changes: 0.81 / 0.69–0.75 /
0.63–0.71 / 0.67–0.74 / 0.70–0.74 ns at 1 / 2 / 4 / 8 / 16 lanes for the sweep alone, and inside the protocol (24
frames, presets efficient and fast, QBER 2 / 4 / 8 %) 4 lanes the cheapest or within 3 % of it at every point;
docs/reconciliation.md."""
WEIGHTS = ((0.88, 1), (0.83, 2), (0.78, 1), (0.73, 2), (0.0, 3))
"""amin16's message scale 1 + w/32 per mother rate, as (lowest rate, w) from the highest: w = 1 (1.03125) from 0.88,
w = 2 (1.0625) at 0.83–0.87, w = 1 at 0.78–0.82, w = 2 at 0.73–0.77, w = 3 (1.09375; the float engine's
``AMIN_ALPHA`` is 1.1) below 0.73 — the optimum follows the degree table a rate is built from (0.85's above 0.825,
0.80's at 0.78–0.82, 0.75's at 0.73–0.77, :func:`labqfl.qkd.ldpc._distribution`).  Chosen on construction 2 (session
42, docs/reconciliation.md): the same 96 frames per QBER for float ``amin`` and w = 1, 2, 3 (w = 0 too at 24 of
them) at 38 QBERs from 0.5 to 10 %, efficient preset.  At rates 0.78–0.82, w = 1 gives f 0.004–0.027 below w = 3
(2.5 %: 1.1050 against 1.1258, ``amin`` 1.1144); at 0.73–0.77 w = 2 is best (3.35 %: 1.1087, w = 1 1.1115, w = 3
1.1189 with one frame undecoded); at 0.83–0.87 w = 1, 2, 3 lie within 0.004 (w = 2 within 0.0015 of the best at
every point); at 0.88–0.91 w = 1 is at most 0.0006 above w = 2 and up to 0.014 below it (0.5–0.6 %); below 0.73
w = 3 is within 0.002 of w = 2 at 0.71–0.72 and 0.0002–0.006 below it from 0.70 down (session 39 chose it there on
construction 0, frame by frame against ``amin``).
w = 4 (1.125) left 1 of 6 frames undecoded at rate 0.54 (8.5 % errors, session 39)."""


def weight_for(rate: float) -> int:
    """The message scale w (1 + w/32) for a mother code of rate ``rate`` (:data:`WEIGHTS`)."""
    return next(w for lowest, w in WEIGHTS if rate >= lowest - 1e-9)


@numba.njit(cache=True, nogil=True)
def _posteriors_to_float(Lq: np.ndarray, L: np.ndarray, done: np.ndarray) -> None:
    """``L[f] = float32(Lq[f]) / SCALE`` for the rows ``done``, in one pass and no temporaries (numpy's
    fancy-indexed copy, cast, divide and fancy-indexed store: 0.79 ms for 24 frames of n = 65 536 on the 2-vCPU
    EPYC, this 0.19).  Exact in float32 (an int16 times a power of two), so the same values as that chain."""
    inv = np.float32(1.0 / SCALE)
    for j in range(done.size):
        src = Lq[done[j]]
        dst = L[done[j]]
        for i in range(src.size):
            dst[i] = np.float32(src[i]) * inv


class BatchState:
    """Bob's fixed-point decoder state for the blind protocol (:class:`labqfl.qkd.ldpc.LdpcBob` with
    ``decoder="amin16"``): int16 posteriors and messages per frame, kept in step with the float priors
    that the protocol updates as Alice reveals values.  Call it like the float engine's attempt:
    ``state(frames, sweeps)`` → (sweeps to success or −1, sweeps spent); converged frames' posteriors are
    written back to the float ``L`` (÷ :data:`SCALE`), so the protocol reads the corrected bits there."""

    def __init__(self, code: object, synd: np.ndarray, prior: np.ndarray, L: np.ndarray, every: int, ratio: float,
                 lanes: int = LANES) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be a positive number of frames, got {lanes}")
        self.code = code
        self.synd = synd
        self.prior = prior
        self.L = L
        self.every, self.ratio, self.lanes = int(every), float(ratio), int(lanes)
        self.prior_q = quantise(prior)
        self.Lq = self.prior_q.copy()
        self.Rq = np.zeros((prior.shape[0], code.edges), np.int16)  # type: ignore[attr-defined]
        self.weight = np.full(code.base_col.size, weight_for(code.rate), np.int16)  # type: ignore[attr-defined]

    def __call__(self, frames: np.ndarray, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.code
        res, used = batch_attempt_frames(c.base_ptr, c.base_col, c.base_shift, c.z,  # type: ignore[attr-defined]
                                         self.lanes, self.synd, self.Lq, self.Rq, frames, self.weight, sweeps,
                                         self.every, self.ratio)
        _posteriors_to_float(self.Lq, self.L, np.ascontiguousarray(frames[res > 0], np.int64))
        return res, used

    def revealed(self, frames: np.ndarray, cols: np.ndarray) -> None:
        """The priors of ``cols`` changed for ``frames``: move the posteriors by the same step (warm start)."""
        rows = frames[:, None]
        new = quantise(self.prior[rows, cols[None, :]])
        step = new.astype(np.int32) - self.prior_q[rows, cols[None, :]]
        self.Lq[rows, cols[None, :]] = np.clip(self.Lq[rows, cols[None, :]] + step, -LMAX, LMAX)
        self.prior_q[rows, cols[None, :]] = new

    def reset(self, frames: np.ndarray) -> None:
        """Cold restart of ``frames``: posteriors back to the priors, messages to zero."""
        self.Lq[frames] = self.prior_q[frames]
        self.Rq[frames] = 0
