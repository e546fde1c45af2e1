"""Slotting and sifting in one pass: time tags + both clients' modulation logs → per-pair
announcements, raw keys and :class:`~labqfl.contracts.types.PairCounts`.

Same rules and the same output as the two stages run one after the other on a whole tag stream —
:class:`~labqfl.qkd.slotting.Slotter` (push + finish), then
:func:`~labqfl.qkd.slotting.announcements_by_pair`, then
:func:`~labqfl.qkd.sifting.sift_records` per pair (in schedule order, one random generator for
the squashed double clicks) — which stay the reference (tests compare the two on random streams
with drift, dropped syncs, frame markers, lost-data intervals, dark counts and multi-click slots).

What is shared with the slotter, unchanged: the anchors (syncs: ``_SyncChain``/``_anchor_syncs``; frame markers:
``Slotter._anchor_markers``, the frames numbered from slot 0 = the first sync tag), the period of every
interval, the dropped ranges (frames that are not kept or lie before the first marker, lost-data intervals widened by the detectors' delays and windows). What is fused into
one pass over the tags (:func:`_fused_kernel`): per block of tags, each tag's delay correction,
interval, nearest slot (a multiplication by 1/period, bit for bit the slotter's division:
:func:`_block_slots`) and window/frame/burst tests, vectorised; each accepted click → its
detector's bit in its slot's byte of a ring (which merges the two detectors and combines clicks of
one slot into outcome 1/2/3); slots below a horizon no later tag can reach are read back in slot order,
straight into the pairs' announcements, with both clients' choices looked up in their logs, the
sifting statistics tallied and the key bits written (:func:`_scan_sift`) — no per-tag or
per-pair intermediate arrays, no per-pair log queries, no sort. Streams it cannot take in order
(slots going backwards across an inconsistent anchor) rerun through :func:`_sorted_kernel`.

This is a single-process tool (both logs in one place: simulations, the station's own checks, the
bench). The distributed pipeline keeps the two stages, because there the node slots and the two
clients sift, each with only its own log (:mod:`labqfl.qkd.twoparty`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic
from numba.typed import List as NumbaList

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import Announcements, ModulationRecord, PairCounts
from labqfl.errors import QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.sifting import ClientSetup, SiftResult, squash_bits
from labqfl.qkd.slotting import (
    SlotRanges,
    Slotter,
    SlottingParams,
    SlottingStats,
    _anchor_step,
    _interval_periods,
    _SyncChain,
    block_lost_intervals,
)

__all__ = ["DenseLog", "SlotSiftBuffers", "SlotSiftResult", "slot_sift"]


@dataclass(frozen=True, repr=False)
class DenseLog:
    """A client's whole modulation record as per-slot arrays (slot s → ``intensity_idx[s]``,
    ``phase_idx[s]``; uint8), e.g. a pattern file or a simulation's record. Also a
    :class:`~labqfl.contracts.types.ModulationLog` (``choices``), so the two-stage path can use it."""

    client: str
    intensity_idx: np.ndarray
    phase_idx: np.ndarray

    def __post_init__(self) -> None:
        for name in ("intensity_idx", "phase_idx"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 1:
                raise QKDInputError(f"DenseLog {self.client}: {name} must be a 1-D uint8 array, got "
                                    f"{getattr(a, 'dtype', type(a).__name__)}")
            # the kernel's vector loads (_group_codes) read 64 consecutive bytes from the data pointer, and its
            # typed list of logs needs one layout: a strided view (a column of an (n, 2) pattern, a[::2], a[::-1])
            # is copied into one contiguous array here (review s40 siftrev F1: before, such a view gave other
            # key bits than the two-stage path, or a false error, or read past the buffer's end)
            if not a.flags.c_contiguous:
                object.__setattr__(self, name, np.ascontiguousarray(a))
        if self.intensity_idx.shape != self.phase_idx.shape:
            raise QKDInputError(f"DenseLog {self.client}: intensity_idx has {self.intensity_idx.size} slots, "
                                f"phase_idx {self.phase_idx.size}")

    def __repr__(self) -> str:  # the phase indices carry key bits: sizes only
        return f"DenseLog(client={self.client!r}, n_slots={self.intensity_idx.size})"

    __str__ = __repr__

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        """The client's choices at ``slots``; a slot outside its log is one QKDInputError, as slot_sift's
        (before: a bare IndexError, or a negative slot silently read from the log's end)."""
        n = self.intensity_idx.size
        if slots.size and (int(slots.min()) < 0 or int(slots.max()) >= n):
            bad = int(slots.min()) if int(slots.min()) < 0 else int(slots.max())
            raise QKDInputError(f"DenseLog {self.client}: slot {bad} is outside its modulation log of {n} slots; "
                                f"expected slots 0..{n - 1}")
        return ModulationRecord(self.client, slots, self.intensity_idx[slots], self.phase_idx[slots])


@dataclass(frozen=True)
class SlotSiftResult:
    """Per pair (schedule order): the node's announcements and the sifting result."""

    announcements: dict[str, Announcements]
    sifted: dict[str, SiftResult]


class SlotSiftBuffers:
    """Output buffers that a caller slotting one acquisition after another keeps between calls of
    :func:`slot_sift` (``out=``): the announcements' slots and outcomes and the key slots and bits
    of every pair are then written into pages already mapped by an earlier call, not into fresh
    ones (first touching fresh pages — the kernel zeroing them — is ~9 ms of the bench's ~60).

    The result of a call is a set of views into these buffers: it stays valid only until the next
    call with the same buffers, which overwrites it. Take (copy, store, send) every key and
    announcement out of a result before the next call. Buffers grow as needed and are never
    shrunk; their unused pages are address space only."""

    def __init__(self) -> None:
        self._size = 0
        self._arrays: tuple[np.ndarray, ...] = ()

    def take(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(announced slots int64, outcomes uint8, key slots int64, Ci's key bits uint8, Cj's
        key bits uint8), each with room for ``size`` entries."""
        if size > self._size or not self._arrays:
            self._arrays = _new_outputs(size)
            self._size = size
        out_s, out_o, key_s, key_bi, key_bj = self._arrays
        return out_s, out_o, key_s, key_bi, key_bj

    def __repr__(self) -> str:  # they hold key bits: sizes only
        return f"SlotSiftBuffers(size={self._size})"


def _new_outputs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh output arrays, allocated by numpy (not inside a kernel): numpy asks the kernel for
    huge pages (madvise), which makes first touching them several times cheaper."""
    return (np.empty(size, dtype=np.int64), np.empty(size, dtype=np.uint8), np.empty(size, dtype=np.int64),
            np.empty(size, dtype=np.uint8), np.empty(size, dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# The kernel

U = np.uint64
"""Index cast in the kernels: indices that are never negative, cast to unsigned, spare Numba's
negative-index wraparound code (and let LLVM vectorise)."""

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_TOL = 2.0 ** -20
"""Half-width (in slots) of the band around a rounding edge where the reciprocal product is not
trusted and the exact division decides (:func:`_block_slots`)."""
_XMAX = 2.0 ** 24
"""Largest |slot offset| for which the reciprocal product is trusted (beyond: the exact division)."""
_BASE_MAX = 2 ** 49
"""Anchors at or beyond this slot take the exact path (slot codes are carried as doubles)."""
_BLOCK = 1024
"""Tags per vectorised block."""
_GALLOP = 64
"""Step (tags) of the search for a block's end: the tags of each step below the block's limit are
counted (vectorised), which reads the block from its start, as the slot codes do next. Probing
the far end of the block (1024 tags, 10 kB ahead) first missed the cache once per block; galloping
probes 64 tags apart and a bisection at the end (mispredicted branches) took the fused kernel
4.6 ms longer on the bench stream (63.2 against 58.6 ms)."""
_CHUNK = 2048
"""Slots per announcement chunk (keeps the chunk's events in L1 cache)."""
_EXACT = np.int64(-2)
_REJECT = np.int64(-1)
_MAGIC = np.int64(0x4330000000000000)
"""Bits of the double 2^52. The slot codes leave the vector loops as doubles ``2^52 + code``
(exact for 0 <= code < 2^52), and are read back through an int64 view less these bits: the
double → integer conversion, which AVX2 has no vector instruction for, becomes one addition."""
_F_REJECT = 2.0 ** 52 - 0.5
"""The double whose bits are ``_MAGIC + _REJECT``."""
_F_EXACT = 2.0 ** 52 - 1.0
"""The double whose bits are ``_MAGIC + _EXACT``."""
_F_D0 = 2.0 ** 52
_F_D1 = 2.0 ** 52 + 1.0
_FAST_X = 2.0 ** 23
"""A block takes :func:`_block_slots_one` only if every tag's |slot offset| is bounded below this
(so below ``_XMAX``: the per-tag test is not needed)."""


def _key_lut() -> np.ndarray:
    """Per (a_i, a_j, outcome) = 16·a_i + 4·a_j + b: bit 0 Ci's key bit, bits 1–2 Cj's (2|bit marks
    a double click; D1 flips Cj's bit), bit 3 both in basis X (with both at intensity 0: a key slot)."""
    t = np.zeros(64, dtype=np.uint8)
    for ai in range(4):
        for aj in range(4):
            for b in range(4):
                kbj = ((aj >> 1) ^ int(b == 2)) | (int(b == 3) << 1)
                t[ai * 16 + aj * 4 + b] = (ai >> 1) | (kbj << 1) | (int(((ai | aj) & 1) == 0) << 3)
    return t


_KEY_LUT = _key_lut()

OK, BEYOND_LOG, BAD_INTENSITY, BAD_PHASE, NOT_SORTED, DISORDER, WINDOW_FULL = range(7)


@numba.njit(cache=True, nogil=True)
def _block_slots(ts, ch, q0, m, c0, c1, dl0, dl1, ta0, ta1, off0, off1, inv0, inv1, per0, per1, hw0, hw1,  # type: ignore[no-untyped-def]
                 bf0, bf1, lr0, lr1, out):
    """Slot codes of tags ``q0 … q0+m−1``, whose detectors' intervals are fixed (anchor time
    ``ta``, period ``per``, ``inv = 1/per``, first slot ``bf`` as a float; ``lr``: the frame
    length when that interval is the last one, else +inf). No branch and no integer division:
    LLVM vectorises the loop (4 tags per AVX2 instruction). ``out[j]`` (float64; read back
    through an int64 view less ``_MAGIC``): 2^52 + 2·slot + detector for an accepted click,
    ``_F_REJECT`` (not a detector, outside the window or frame, before slot 0) or ``_F_EXACT``
    (decide with the exact division: :func:`_exact_code`). The code is formed as a double plus
    2^52, whose bits are 2^52's bits plus the integer code: AVX2 has no vector double → int64
    conversion, and LLVM converted lane by lane (`slot_sift` 64.3 → 58.5 ms on the bench stream,
    with :func:`_block_slots_one`). (The caller tests the timestamps' order while it finds the
    block's end.) Blocks whose two detectors share one interval (nearly all) take
    :func:`_block_slots_one` instead.

    Same slot as the slotter's ``floor(rel / per + 0.5)``, with one multiplication by ``inv``
    instead of the division. Write u = 2^-53, q = rel/per (exact), q_d = fl(q) (the slotter's
    quotient, correctly rounded: |q_d − q| ≤ u|q|) and q_m = fl(rel·fl(1/per)) (here:
    |q_m − q| ≤ (2u + u²)|q|). Adding 0.5 rounds each once more (≤ u(|q| + 1) each), so
    x_d = fl(q_d + 0.5) and x_m = fl(q_m + 0.5) differ by at most 6u(|q| + 1) < 2^-26 for
    |x_m| < 2^24. If x_m lies at least ``_TOL`` = 2^-20 away from every integer (its fractional
    part, computed with an error below 2^-52, is in [_TOL, 1 − _TOL]), x_d lies strictly between
    the same two integers and both floors agree. Otherwise (within 2^-20 slot of a rounding edge,
    about one tag in 500 000 at random phases, or |x_m| ≥ 2^24, or NaN) the tag takes the exact
    path. ``rel`` itself is the slotter's: ``t − ta`` converted through int32 is exact while it
    fits (else the exact path). Goldberg, "What every computer scientist should know about
    floating-point arithmetic", ACM Comput. Surv. 23 (1991), §1.2 and Theorem 2.
    """
    for j in range(m):
        u = U(q0 + j)
        c = ch[u]
        is1 = c == c1
        isd = is1 | (c == c0)
        dt = ts[u] - (dl1 if is1 else dl0) - (ta1 if is1 else ta0)
        fits = (dt >= -2147483648) & (dt < 2147483648)
        rel = float(np.int32(dt)) - (off1 if is1 else off0)
        x = rel * (inv1 if is1 else inv0) + 0.5
        r = np.floor(x)
        f = x - r
        sure = (f >= _TOL) & (f <= 1.0 - _TOL) & (abs(x) < _XMAX) & fits
        outside = abs(rel - r * (per1 if is1 else per0)) > (hw1 if is1 else hw0)
        sf = (bf1 if is1 else bf0) + r
        keep = (not outside) & (r < (lr1 if is1 else lr0)) & (sf >= 0.0)
        y = (sf + sf) + (_F_D1 if is1 else _F_D0)  # 2^52 + code, exact where kept (0 <= sf < 2^50)
        out[U(j)] = ((y if keep else _F_REJECT) if sure else _F_EXACT) if isd else _F_REJECT
    return


@intrinsic
def _as_double(typingctx, v):  # type: ignore[no-untyped-def]
    """The double whose bits are the int64 ``v`` (LLVM IR ``bitcast``)."""
    sig = types.float64(v)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_M_INT = np.int64(0x4338000000000000)
"""Bits of the double 1.5·2^52: ``_as_double(d + _M_INT)`` is exactly 1.5·2^52 + d for |d| < 2^51."""
_F_M = 1.5 * 2.0 ** 52


@numba.njit(cache=True, nogil=True)
def _block_slots_one(ts, ch, q0, m, c0, c1, A, K0, K1, inv, per, hw, bf, out):  # type: ignore[no-untyped-def]
    """:func:`_block_slots` for a block in which both detectors' tags lie in one anchor interval
    (``inv``, ``per``, first slot ``bf``), with one window half-width ``hw``, not the last
    interval of a frame-marked stream, and whose every tag is known (by the caller, from the
    block's first and last timestamps) to lie within 2^31 ps and ``_FAST_X`` slots of the anchor,
    whose first slot ``bf`` is at least that far above 0 (no tag before slot 0), both detectors'
    window offsets being whole picoseconds. The same codes, bit for bit: the same operations on the
    same values, less the per-tag tests that cannot fail here and the per-tag choice between the two
    detectors' interval constants (AVX2 blends: ~14 per 4 tags in :func:`_block_slots`, 2 here).

    ``rel = t − a_d − off_d`` (``a_d``: anchor time + detector d's delay) is formed from the int64
    ``t − A`` (``A = a_0 − bits(1.5·2^52)``), read as the double 1.5·2^52 + (t − a_0) (exact for
    |t − a_0| < 2^51), less the double ``K_d = 1.5·2^52 + (a_d − a_0) + off_d`` (a whole number below
    2^53: exact): one rounding of the same real number as the slotter's ``float(t − a_d) − off_d``,
    with no int64 → double conversion (AVX2 has none; LLVM packed to int32 and converted those).
    The code 2^52 + 2·(bf + r) + d is formed as 2r + G_d, G_d = 2^52 + 2·bf + d (all whole numbers
    below 2^53: every step exact), one constant and one addition fewer in the loop."""
    G0 = (bf + bf) + _F_D0
    G1 = (bf + bf) + _F_D1
    for j in range(m):
        u = U(q0 + j)
        c = ch[u]
        is1 = c == c1
        isd = is1 | (c == c0)
        rel = _as_double(ts[u] - A) - (K1 if is1 else K0)
        x = rel * inv + 0.5
        r = np.floor(x)
        f = x - r
        sure = (f >= _TOL) & (f <= 1.0 - _TOL)
        outside = abs(rel - r * per) > hw
        y = (r + r) + (G1 if is1 else G0)  # = 2·(bf + r) + 2^52 + d, every step exact
        out[U(j)] = ((_F_REJECT if outside else y) if sure else _F_EXACT) if isd else _F_REJECT
    return


@numba.njit(cache=True, nogil=True)
def _exact_code(t_raw, c, c1, delay, off, hw, i, anchor_t, base, per, na, last_span):  # type: ignore[no-untyped-def]
    """One tag's slot code by the slotter's own arithmetic (``slotting._assign_kernel``)."""
    d = np.int64(c == c1)
    t = t_raw - delay[d]
    rel = float(t - anchor_t[i]) - off[d]
    P = per[i]
    r = math.floor(rel / P + 0.5)
    if abs(rel - r * P) > hw[d]:
        return np.int64(-1)
    if last_span >= 0 and i == na - 1 and r >= last_span:
        return np.int64(-1)
    s = base[i] + np.int64(r)
    if s < 0:
        return np.int64(-1)
    return 2 * s + d


@numba.njit(cache=True, nogil=True)
def _ring_fill(codes, j, m, ts, ch, q0, c1, delay, off, hw, i0, i1, anchor_t, base, per, na, last_span,  # type: ignore[no-untyped-def]
               burst_period, burst_on, E, half, bm, smask):
    """Slot codes ``codes[j:m]`` → the ring ``bm`` (one byte per slot, bit 0 D0, bit 1 D1: repeated
    and double clicks combine by OR, as the slotter's sort + combine does; consecutive clicks go to
    different bytes, so their ORs do not wait on each other as ORs into one shared word did). Returns at the end of the
    block or at a click outside ``[E, E + half)`` (the caller moves the horizon): (j, slot, detector,
    outside)."""
    while j < m:
        v = codes[U(j)] - _MAGIC
        if v < 0:
            if v == -1:
                j += 1
                continue
            u = q0 + j
            c = ch[u]
            v = _exact_code(ts[u], c, c1, delay, off, hw, i1 if c == c1 else i0, anchor_t, base, per, na, last_span)
            if v < 0:
                j += 1
                continue
        s = v >> 1
        d = v & 1
        if burst_period > 0 and s % burst_period >= burst_on:
            j += 1
            continue
        if U(s - E) >= U(half):  # below the horizon, or beyond the ring's first half
            return j, s, d, True
        bm[U(s & smask)] |= np.uint8(1 + d)
        j += 1
    return j, np.int64(0), np.int64(0), False


@numba.njit(cache=True, nogil=True)
def _ring_fill_block(codes, m, E, half, bm, smask, pk):  # type: ignore[no-untyped-def]
    """:func:`_ring_fill` for a whole block in two branch-free passes, if every code of
    ``codes[:m]`` is ``_REJECT`` or a click in ``[E, E + half)`` (no exact division, no click
    that stops the block): a vectorised test of that, which also packs each code's ring byte
    ``slot & smask`` and value ``1 + detector`` into one word of ``pk`` (low and high 32 bits; a
    rejected tag: byte ``smask``, value 0), then ``bm[byte] |= value`` for each word (4
    instructions per tag; decoding the code there took 11). No branch per tag: the three
    data-dependent branches of :func:`_ring_fill` cost ~1 ns per tag even where all predicted.
    Returns False (nothing written to the ring) if some code is not of that kind."""
    lo = U(2 * E)
    span = U(2 * half)
    bad = np.int64(0)
    for j in range(m):
        v = codes[U(j)] - _MAGIC
        bad |= np.int64((v != _REJECT) & (U(v) - lo >= span))
        w = (U(v) >> U(1)) & U(smask) | (((U(v) & U(1)) + U(1)) << U(32))
        pk[U(j)] = w if v >= 0 else U(smask)
    if bad:
        return False
    for j in range(m):
        p = pk[U(j)]
        bm[p & U(0xFFFFFFFF)] |= np.uint8(p >> U(32))
    return True


@numba.njit(cache=True, nogil=True)
def _horizon(tau, delay, off, h, nxt, anchor_t, base, per):  # type: ignore[no-untyped-def]
    """A lower bound on the slot of any later tag of one detector (raw time >= ``tau``): its
    nearest slot at ``tau``, less 2 (slot positions computed from two neighbouring intervals can
    disagree by one near the anchor between them; a bound that is still too high shows up as a
    click below it, DISORDER). ``h``: anchor pointer (moves forward)."""
    t = tau - delay
    while nxt[U(h)] <= t:
        h += 1
    r = np.floor((float(t - anchor_t[U(h)]) - off) / per[U(h)] + 0.5)
    return base[U(h)] + np.int64(r) - 2, h


@intrinsic
def _nonzero_bits64(typingctx, arr, start):  # type: ignore[no-untyped-def]
    """One bit per byte of ``arr[start : start + 64]`` (uint8): bit k set iff byte k is nonzero.
    LLVM IR's own vector compare and bit cast (LLVM Language Reference: ``icmp`` on vectors,
    ``bitcast`` of ``<64 x i1>`` to ``i64``), which LLVM lowers to the target's instructions
    (two ``vpcmpeqb`` + ``vpmovmskb`` with AVX2). The caller keeps ``start + 64`` within ``arr``."""
    sig = types.uint64(arr, start)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        vty = ir.VectorType(ir.IntType(8), 64)
        v = builder.load(builder.bitcast(builder.gep(ary.data, [args[1]]), vty.as_pointer()), align=1)
        return builder.bitcast(builder.icmp_unsigned("!=", v, ir.Constant(vty, None)), ir.IntType(64))

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _group_mask(bm, g, gmask, sa, sb):  # type: ignore[no-untyped-def]
    """The clicked slots of ring group ``g`` (slots ``64g … 64g + 63``; ring ``bm``, one byte
    per slot) that lie in ``[sa, sb)``, one bit per slot (:func:`_nonzero_bits64`)."""
    m = _nonzero_bits64(bm, (g & gmask) << 6)
    if g == sa >> 6:
        m &= _ALL << U(sa & 63)
    if g == (sb - 1) >> 6 and (sb & 63) != 0:
        m &= (U(1) << U(sb & 63)) - U(1)
    return m


@numba.njit(cache=True, nogil=True)
def _clear_range(bm, sa, sb, gmask):  # type: ignore[no-untyped-def]
    """Clear slots ``[sa, sb)`` of the ring; returns how many of them were clicked."""
    k = 0
    for g in range(sa >> 6, ((sb - 1) >> 6) + 1):
        m = _group_mask(bm, g, gmask, sa, sb)
        rb = (g & gmask) << 6
        while m != 0:
            bm[U(rb + np.int64(trailing_zeros(m)))] = 0
            m &= m - U(1)
            k += 1
    return k


@numba.njit(cache=True, nogil=True)
def _next_clicked(bm, sa, sb, gmask):  # type: ignore[no-untyped-def]
    """First clicked slot in ``[sa, sb)``, or ``sb``."""
    for g in range(sa >> 6, ((sb - 1) >> 6) + 1):
        m = _group_mask(bm, g, gmask, sa, sb)
        if m != 0:
            return (g << 6) + np.int64(trailing_zeros(m))
    return sb


_DENSE_MIN = 8
"""Clicked slots of a 64-slot ring group from which :func:`_scan_sift` reads the group's log
bytes as a whole (:func:`_group_codes`) rather than four bytes per clicked slot."""
_DENSE_NK = 15
"""Most intensities per client for which :func:`_group_codes` applies: the intensity index fits 4
bits and the cell k_i·nk + k_j one byte."""


@intrinsic
def _popcount(typingctx, m):  # type: ignore[no-untyped-def]
    """Set bits of a uint64 (LLVM's ``llvm.ctpop``)."""
    sig = types.int64(m)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.ctpop", [i64])
        return builder.call(fn, [args[0]])

    return sig, codegen


@intrinsic
def _group_codes(typingctx, bm, rb, lki, lkj, lai, laj, w0, nk, ni, nj, hc):  # type: ignore[no-untyped-def]
    """The histogram index ``(k_i·nk + k_j)·256 + 16·a_i + 4·a_j + outcome`` of each of the 64
    slots ``w0 … w0 + 63`` (ring bytes from ``rb``; both clients' logs) into ``hc`` (uint16); returns
    a mask with bit k set iff slot ``w0 + k``'s log entries are in range (k_i < ni, k_j < nj, both
    phase indices <= 3; elsewhere the index is meaningless). Written as LLVM IR on 64-lane byte
    vectors (LLVM Language Reference: vector ``load``, ``and``, ``mul``, ``shl``, ``or``, ``icmp``,
    ``shufflevector``, ``bitcast``, ``store``), which LLVM lowers to the target's vector instructions:
    the cell k_i·nk + k_j and the low byte 16·a_i + 4·a_j + outcome are each one byte per slot
    (k_i is masked to 4 bits and multiplied in 16-bit lanes, two slots per lane: k_i·nk <= 225
    carries nothing into the neighbouring byte), and the two bytes are interleaved into the 16-bit
    index. The caller keeps ``w0 + 64`` within the logs, ``rb + 64`` within the ring, ``nk`` <= 15
    and ``ni``, ``nj`` <= 255."""
    sig = types.uint64(bm, rb, lki, lkj, lai, laj, w0, nk, ni, nj, hc)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a_bm, a_rb, a_x, a_y, a_ai, a_aj, a_w0, a_nk, a_ni, a_nj, a_hc = args
        t = signature.args
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v8, v16 = ir.VectorType(i8, 64), ir.VectorType(i16, 32)

        def load(k, arg, off):  # type: ignore[no-untyped-def]
            ary = context.make_array(t[k])(context, builder, arg)
            return builder.load(builder.bitcast(builder.gep(ary.data, [off]), v8.as_pointer()), align=1)

        def splat(val, vt, et, n):  # type: ignore[no-untyped-def]
            u = builder.insert_element(ir.Constant(vt, ir.Undefined), builder.trunc(val, et), ir.Constant(i32, 0))
            return builder.shuffle_vector(u, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(i32, n), None))

        def c8(v):  # type: ignore[no-untyped-def]
            return ir.Constant(v8, v)

        b, x, y, ai, aj = load(0, a_bm, a_rb), load(2, a_x, a_w0), load(3, a_y, a_w0), load(4, a_ai, a_w0), load(5, a_aj, a_w0)
        xk = builder.bitcast(builder.mul(builder.bitcast(builder.and_(x, c8(15)), v16), splat(a_nk, v16, i16, 32)), v8)
        k = builder.add(xk, y)  # (k_i·nk + k_j, exact for entries in range)
        t2 = builder.or_(builder.shl(builder.and_(ai, c8(3)), c8(2)), builder.and_(aj, c8(3)))
        low = builder.or_(builder.shl(t2, c8(2)), b)
        h = builder.shuffle_vector(low, k, ir.Constant(ir.VectorType(i32, 128), [v for j in range(64) for v in (j, 64 + j)]))
        out = context.make_array(t[10])(context, builder, a_hc)
        builder.store(h, builder.bitcast(out.data, ir.VectorType(i8, 128).as_pointer()), align=2)
        ok = builder.and_(builder.icmp_unsigned("<", x, splat(a_ni, v8, i8, 64)),
                          builder.icmp_unsigned("<", y, splat(a_nj, v8, i8, 64)))
        ok = builder.and_(ok, builder.icmp_unsigned("<", builder.or_(ai, aj), c8(4)))
        return builder.bitcast(ok, i64)

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _scan_sift(bm, sa, sb, gmask, lki, lkj, lai, laj, nlog, ni, nj, nk, hist, hb, klut, hc, out_s, out_o, key_s,  # type: ignore[no-untyped-def]
               key_bi, key_bj, o, ko):
    """Announce the clicked slots ``[sa, sb)`` of the ring (one pair, no frame end, no dropped
    range, inside the logs), in slot order, and sift them: both clients' choices, the histogram
    bin ``hist[hb + code]`` with code = (k_i·nk + k_j)·256 + 16·a_i + 4·a_j + outcome, the
    announcement at ``o``, and the key slot and key byte from ``klut[code]`` (:func:`_key_lut`,
    key only in cell k_i = k_j = 0) at ``ko`` — written without a branch, kept if the key
    position moves on. The key bytes are split into the two clients' bits once the pass is over
    (:func:`_split_key_bytes`). The slots' bytes are cleared. Returns (o, ko, status)."""
    dense = nk <= _DENSE_NK and ni <= 255 and nj <= 255
    for g in range(sa >> 6, ((sb - 1) >> 6) + 1):
        mm = _group_mask(bm, g, gmask, sa, sb)
        rb = (g & gmask) << 6
        w0 = g << 6
        if dense and w0 + 64 <= nlog and _popcount(mm) >= _DENSE_MIN:
            bad = mm & ~_group_codes(bm, rb, lki, lkj, lai, laj, w0, nk, ni, nj, hc)
            if bad != 0:  # the first clicked slot with a log entry out of range
                su = U(w0 + np.int64(trailing_zeros(bad)))
                return o, ko, BAD_INTENSITY if (lki[su] >= ni) | (lkj[su] >= nj) else BAD_PHASE
            while mm != 0:
                pz = np.int64(trailing_zeros(mm))
                mm &= mm - U(1)
                h = np.int64(hc[U(pz)])
                sl = w0 + pz
                bm[U(rb + pz)] = 0
                hist[U(hb + h)] += 1
                out_s[U(o)] = sl
                out_o[U(o)] = np.uint8(h & 3)
                o += 1
                kb = klut[U(h)]
                key_s[U(ko)] = sl
                key_bi[U(ko)] = kb
                ko += np.int64(kb >> np.uint8(3))
            continue
        while mm != 0:
            pz = np.int64(trailing_zeros(mm))
            mm &= mm - U(1)
            sl = w0 + pz
            b = np.int64(bm[U(rb + pz)])
            bm[U(rb + pz)] = 0
            su = U(sl)
            x = np.int64(lki[su])
            y = np.int64(lkj[su])
            ai = np.int64(lai[su])
            aj = np.int64(laj[su])
            if ((x - ni) & (y - nj) & ((ai | aj) - 4)) >= 0:  # one test: valid iff all three < 0
                return o, ko, BAD_INTENSITY if (x >= ni) | (y >= nj) else BAD_PHASE
            h = ((x * nk + y) << 8) | (ai << 4) | (aj << 2) | b
            hist[U(hb + h)] += 1
            out_s[U(o)] = sl
            out_o[U(o)] = b
            o += 1
            kb = klut[U(h)]
            key_s[U(ko)] = sl
            key_bi[U(ko)] = kb
            ko += np.int64(kb >> np.uint8(3))
    return o, ko, OK


@numba.njit(cache=True, nogil=True)
def _split_key_bytes(key_bi, key_bj, lo, hi):  # type: ignore[no-untyped-def]
    """The key bytes ``key_bi[lo:hi]`` (:func:`_scan_sift`) → Ci's bit (bit 0, left in ``key_bi``) and Cj's
    (bits 1–2, into ``key_bj``; 2|bit marks a double click): one vectorised pass per pair at the end
    (per announcement chunk, ~80 keys each, LLVM took its scalar loop: ~1 ms on the bench stream)."""
    for k in range(hi - lo):
        u = U(lo + k)
        kb = key_bi[u]
        key_bj[u] = (kb >> np.uint8(1)) & np.uint8(3)
        key_bi[u] = kb & np.uint8(1)


@numba.njit(cache=True, nogil=True, inline="always")
def _pair_logs(q, pair_ci, pair_cj, log_k, log_a, n_int):  # type: ignore[no-untyped-def]
    """Pair ``q``'s two clients' logs (Ci's and Cj's intensity and phase indices), the length
    all four share and each client's number of intensities — fetched once per change of pair,
    since list access is not free (both kernels)."""
    ci = pair_ci[q]
    cj = pair_cj[q]
    lki = log_k[ci]
    lkj = log_k[cj]
    lai = log_a[ci]
    laj = log_a[cj]
    nlog = min(lki.shape[0], lkj.shape[0], lai.shape[0], laj.shape[0])
    return lki, lkj, lai, laj, nlog, n_int[ci], n_int[cj]


@numba.njit(cache=True, nogil=True)
def _fused_kernel(ts, ch, c0, c1, delay, off, hw, anchor_t, nxt, base, per, inv, burst_period, burst_on,  # type: ignore[no-untyped-def]
                  last_span, drop, frame_pair, spf, pair_ci, pair_cj, n_int, log_k, log_a, nk, wbits, cap, out_s,
                  out_o, key_s, key_bi, key_bj, count, kcount, hist):
    """Tags → per-pair announcements, key slots and bits, and a histogram of the sifting cells in
    one pass over the tags, with no intermediate array beyond a ring of ``2^wbits`` slot bytes.

    Tags go in blocks within which both detectors' anchor intervals are fixed: slot codes for the
    block by :func:`_block_slots` (vectorised), then each accepted click → its bit in the ring
    (:func:`_ring_fill`). Slots below the horizon (:func:`_horizon`: no later tag can land there)
    are final: they are read from the ring in slot order, in segments of one pair and one frame
    outside dropped ranges, and announced and sifted (:func:`_scan_sift`).

    Outputs are pair-major: pair q writes ``[q·cap, q·cap + count[q])`` of ``out_s``/``out_o``,
    its key slots ``[q·cap, q·cap + kcount[q])``. Returns a status: OK, BEYOND_LOG (a slot beyond
    a client's log), BAD_INTENSITY, BAD_PHASE (a log entry out of range), NOT_SORTED (a timestamp
    decreases), DISORDER (a click below the horizon: one detector's slots go backwards, which
    inconsistent intervals can cause) or WINDOW_FULL (a click beyond the ring); after the last
    two the caller reruns with a larger ring or :func:`_sorted_kernel`.
    """
    n = ts.shape[0]
    na = anchor_t.shape[0]
    C = frame_pair.shape[0]
    nd = drop.shape[0]
    W = np.int64(1) << wbits
    half = W >> 1
    smask = W - 1
    gmask = (W >> 6) - 1
    bm = np.zeros(W, dtype=np.uint8)
    codes = np.empty(_BLOCK, dtype=np.int64)
    hc = np.empty(64, dtype=np.uint16)  # a ring group's histogram indices (_group_codes)
    codesf = codes.view(np.float64)  # written as doubles 2^52 + code, read as int64 less _MAGIC
    pk = np.empty(_BLOCK, dtype=np.uint64)  # a block's ring bytes and values (_ring_fill_block)
    klut = np.zeros(nk * nk * 256, dtype=np.uint8)  # _KEY_LUT by the whole histogram index: key only in cell (0, 0)
    for h in range(nk * nk * 256):
        if h & 255 < 64:
            klut[h] = _KEY_LUT[h & 63] if h < 256 else _KEY_LUT[h & 63] & 7
    big = np.iinfo(np.int64).max
    hstride = nk * nk * 256
    if na == 0:  # nothing can be placed: only the order check
        for i in range(1, n):
            if ts[i] < ts[i - 1]:
                return NOT_SORTED
        return OK
    # _block_slots_one: both window offsets whole ps (and small), K_d = 1.5·2^52 + (a_d − a_0) + off_d exact
    dd = delay[1] - delay[0]
    koff = (off[0] == np.floor(off[0]) and off[1] == np.floor(off[1]) and abs(off[0]) < 2.0 ** 40
            and abs(off[1]) < 2.0 ** 40 and abs(dd) < np.int64(1) << 40)
    K0 = _F_M + off[0] if koff else 0.0
    K1 = _F_M + (float(dd) + off[1]) if koff else 0.0
    i0 = np.int64(0)  # anchor pointers of the two detectors (they only move forward)
    i1 = np.int64(0)
    h0 = np.int64(0)  # and of the horizon
    h1 = np.int64(0)
    E = np.int64(0)  # every slot below E is final and announced
    q = np.int64(0)  # block start
    m = np.int64(0)  # block length
    j = np.int64(0)  # position in the block
    status = OK
    cur = np.int64(-1)
    thr = np.int64(0)  # announcement segments end there (frame end, dropped range, log end)
    fend = np.int64(0)
    dlo = big
    di = np.int64(0)
    nlog = np.int64(0)
    ni = np.int64(0)
    nj = np.int64(0)
    ob = np.int64(0)
    hb = np.int64(0)
    wcnt = np.int64(0)
    kcnt = np.int64(0)
    lki = log_k[0]
    lkj = log_k[0]
    lai = log_a[0]
    laj = log_a[0]
    while True:
        # ---- tags → ring, until a click outside [E, E + half) or the end
        out = False
        s = np.int64(0)
        d = np.int64(0)
        while True:
            if j >= m:
                q += m
                j = 0
                if q >= n:
                    m = 0
                    break
                tq = ts[q]
                while nxt[U(i0)] <= tq - delay[0]:
                    i0 += 1
                while nxt[U(i1)] <= tq - delay[1]:
                    i1 += 1
                lim0 = nxt[i0] + delay[0] if nxt[i0] != big else big
                lim1 = nxt[i1] + delay[1] if nxt[i1] != big else big
                lim = min(lim0, lim1)  # the tags before it keep both intervals
                e = min(q + _BLOCK, n)
                back = np.int64(q > 0 and ts[q] < ts[q - 1])  # a timestamp going backwards: counted with the
                ga = q + 1  # block end: it ends at the first tag at or after lim: the tags below it counted,
                while ga < e:  # _GALLOP at a time from q (vectorised; no branch on the data but the exit)
                    gb = min(ga + _GALLOP, e)
                    below = np.int64(0)
                    for k in range(ga, gb):
                        below += np.int64(ts[U(k)] < lim)
                        back |= np.int64(ts[U(k)] < ts[U(k - 1)])
                    if below < gb - ga:
                        e = ga + below
                        break
                    ga = gb
                if back:  # (tags up to the end of the last counted step: the block and maybe a few after it)
                    status = NOT_SORTED
                    break
                m = e - q
                if base[i0] < _BASE_MAX and base[i1] < _BASE_MAX and base[i0] > -_BASE_MAX and base[i1] > -_BASE_MAX:
                    lr0 = float(last_span) if last_span >= 0 and i0 == na - 1 else np.inf
                    lr1 = float(last_span) if last_span >= 0 and i1 == na - 1 else np.inf
                    if i0 == i1 and hw[0] == hw[1] and lr0 == np.inf and koff:  # one interval: the bounds per block
                        a0 = delay[0] + anchor_t[i0]
                        a1 = delay[1] + anchor_t[i0]
                        dmin = ts[q] - max(a0, a1)  # (the tags are non-decreasing, or the block fails below)
                        dmax = ts[q + m - 1] - min(a0, a1)
                        xb = ((float(max(abs(dmin), abs(dmax))) + max(abs(off[0]), abs(off[1])) + 1.0)
                              * abs(inv[i0]) + 1.0)
                        fast = (dmin >= -2147483648 and dmax < 2147483648 and xb < _FAST_X
                                and float(base[i0]) - xb - 1.0 >= 0.0)
                    else:
                        fast = False
                    if fast:
                        _block_slots_one(ts, ch, q, m, c0, c1, a0 - _M_INT, K0, K1, inv[i0], per[i0], hw[0],
                                               float(base[i0]), codesf)
                    else:
                        _block_slots(ts, ch, q, m, c0, c1, delay[0], delay[1], anchor_t[i0], anchor_t[i1],
                                           off[0], off[1], inv[i0], inv[i1], per[i0], per[i1], hw[0], hw[1],
                                           float(base[i0]), float(base[i1]), lr0, lr1, codesf)
                else:
                    codes[:m] = _MAGIC + _EXACT
                    for k in range(q, q + m):
                        if ch[k] != c0 and ch[k] != c1:
                            codes[k - q] = _MAGIC + _REJECT
            if j == 0 and burst_period <= 0 and _ring_fill_block(codes, m, E, half, bm, smask, pk):
                j = m
                continue
            j, s, d, out = _ring_fill(codes, j, m, ts, ch, q, c1, delay, off, hw, i0, i1, anchor_t, base, per, na,
                                      last_span, burst_period, burst_on, E, half, bm, smask)
            if out:
                break
        if status != OK:
            break
        # ---- the horizon; announce and sift the final slots [E, send)
        if out:
            H0, h0 = _horizon(ts[q + j], delay[0], off[0], h0, nxt, anchor_t, base, per)
            H1, h1 = _horizon(ts[q + j], delay[1], off[1], h1, nxt, anchor_t, base, per)
            hw_ = min(H0, H1) >> 5  # whole words only
        else:
            hw_ = (E + W) >> 5
        send = min(hw_, (E + W) >> 5) << 5  # (no bit is set at or beyond E + W)
        sa = E
        while sa < send:
            if sa >= thr:  # a new segment: skip to the next click, then drop range, frame, pair, log end
                sa = _next_clicked(bm, sa, send, gmask)
                if sa >= send:
                    break
                while di < nd and drop[di, 1] <= sa:
                    di += 1
                if di < nd and drop[di, 0] <= sa:  # dropped slots: never announced
                    sb = min(send, drop[di, 1])
                    _clear_range(bm, sa, sb, gmask)
                    sa = sb
                    continue
                dlo = drop[di, 0] if di < nd else big
                if sa >= fend or sa < fend - spf:
                    frame = sa // spf
                    fend = (frame + 1) * spf
                    qn = frame_pair[frame % C]
                    if qn != cur:
                        if cur >= 0:
                            count[cur] = wcnt
                            kcount[cur] = kcnt
                        cur = qn
                        lki, lkj, lai, laj, nlog, ni, nj = _pair_logs(cur, pair_ci, pair_cj, log_k, log_a, n_int)
                        ob = cur * cap
                        hb = cur * hstride
                        wcnt = count[cur]
                        kcnt = kcount[cur]
                if sa >= nlog:  # a click beyond the logs
                    status = BEYOND_LOG
                    break
                thr = min(fend, dlo, nlog)
            sb = min(send, thr, sa + _CHUNK)
            o, ko, status = _scan_sift(bm, sa, sb, gmask, lki, lkj, lai, laj, nlog, ni, nj, nk, hist, hb, klut, hc, out_s,
                                       out_o, key_s, key_bi, key_bj, ob + wcnt, ob + kcnt)
            wcnt = o - ob
            kcnt = ko - ob
            if status != OK:
                break
            sa = sb
        if status != OK:
            break
        if send > E:
            E = send
        if not out:
            break
        # ---- the click that stopped the tags
        if s < E:
            status = DISORDER
            break
        if s - E >= W:
            status = WINDOW_FULL
            break
        bm[U(s & smask)] |= np.uint8(1 + d)
        j += 1
    if cur >= 0:
        count[cur] = wcnt
        kcount[cur] = kcnt
    if status == OK:
        for pq in range(count.shape[0]):
            _split_key_bytes(key_bi, key_bj, pq * cap, pq * cap + kcount[pq])
    return status


@numba.njit(cache=True, nogil=True, inline="always")
def _pair_of(s, frame, fend, pair, frame_pair, spf, C):  # type: ignore[no-untyped-def]
    """Pair of slot ``s`` with a one-frame cache (frame, end of frame, pair): a division only
    when ``s`` leaves the cached frame (slots mostly come in order)."""
    if s >= fend or s < fend - spf:
        frame = s // spf
        fend = (frame + 1) * spf
        pair = frame_pair[frame % C]
    return frame, fend, pair


@numba.njit(cache=True, nogil=True)
def _sorted_kernel(ts, ch, c0, c1, delay0, delay1, anchor_t, anchor_k, per, mult, off, half_w,  # type: ignore[no-untyped-def]
                   burst_period, burst_on, last_span, drop, frame_pair, spf, pair_ci, pair_cj, n_int,
                   log_k, log_a, nk):
    """The fallback of :func:`_fused_kernel` for the streams it refuses (DISORDER, WINDOW_FULL,
    anchors out of order): the same output from per-detector slot arrays (binary-searched anchors,
    exact division), merged, or sorted when a detector's slots go backwards.

    Output arrays are pair-major: pair q's events are ``[start[q], start[q] + count[q])`` and its
    key slots ``[start[q], start[q] + kcount[q])`` (slot order), ``start[q] = q·(accepted
    detections)``. Returns (start, count, kcount, slots, outcomes, key_slots, key_bit_i,
    key_bit_j (2|bit marks a double click), clicks, errors_x2, doubles, error) with ``error`` OK,
    BEYOND_LOG, BAD_INTENSITY or BAD_PHASE.
    """
    n = ts.shape[0]
    P = pair_ci.shape[0]
    C = frame_pair.shape[0]
    # 1. per detector: slots of the accepted detections, in tag order (same arithmetic as
    #    slotting._assign_kernel; the anchor search starts from that detector's previous answer)
    na = anchor_t.shape[0]
    buf = np.empty((2, n + 1), dtype=np.int64)  # + 1: room for the merge's sentinel
    nd_ = np.zeros(2, dtype=np.int64)
    hint = np.zeros(2, dtype=np.int64)
    delay = np.array([delay0, delay1], dtype=np.int64)
    in_order = True
    if na > 0:
        for q in range(n):
            c = ch[q]
            if c != c0 and c != c1:
                continue
            d = np.int64(c == c1)  # no branch on which detector (they alternate at random)
            t = ts[q] - delay[d]
            # (indices cast to unsigned: they are never negative, and Numba then emits no
            # negative-index wraparound code)
            a = hint[d]
            if anchor_t[U(a)] > t:
                lo, hi = 0, a
            else:
                lo, hi = a + 1, na
                if lo < hi and anchor_t[U(lo)] > t:
                    hi = lo  # the usual case: still in the hint's interval
            while lo < hi:
                mid = (lo + hi) >> 1
                if anchor_t[U(mid)] <= t:
                    lo = mid + 1
                else:
                    hi = mid
            a = lo - 1 if lo > 0 else 0
            hint[d] = a
            rel = float(t - anchor_t[U(a)]) - off[d]
            Pa = per[U(a)]
            r = math.floor(rel / Pa + 0.5)
            if abs(rel - r * Pa) > half_w[d]:
                continue
            if last_span >= 0 and a == na - 1 and r >= last_span:
                continue
            s = anchor_k[U(a)] * mult + np.int64(r)
            if s < 0:
                continue
            if burst_period > 0 and s % burst_period >= burst_on:
                continue
            k = nd_[d]
            if k and s < buf[d, U(k - 1)]:
                in_order = False
            buf[d, U(k)] = s
            nd_[d] = k + 1
    n0 = nd_[0]
    n1 = nd_[1]
    s0 = buf[0]
    s1 = buf[1]
    if in_order:
        ob = np.empty(0, dtype=np.uint8)
        m_in = -1
    else:  # fallback: one stable sort of both streams (OR is order-free)
        allv = np.empty(n0 + n1, dtype=np.int64)
        allb = np.empty(n0 + n1, dtype=np.uint8)
        allv[:n0] = s0[:n0]
        allv[n0:] = s1[:n1]
        allb[:n0] = 1
        allb[n0:] = 2
        o = np.argsort(allv, kind="mergesort")
        for i in range(n0 + n1):
            s0[i] = allv[o[i]]
        ob = allb[o]
        m_in = n0 + n1
    # 2. merge + combine → clicked slots (outcome 1/2/3) in slot order, minus dropped slots;
    #    each one's pair (cached per frame), both clients' choices, statistics, key flag, bits
    # pair q writes from start[q] = q·(n0 + n1) on: only the pages written are ever touched
    m_in_all = n0 + n1
    start = np.arange(P, dtype=np.int64) * m_in_all
    count = np.zeros(P, dtype=np.int64)
    m_out = P * m_in_all
    out_s = np.empty(m_out, dtype=np.int64)
    out_o = np.empty(m_out, dtype=np.uint8)
    kcount = np.zeros(P, dtype=np.int64)
    key_s = np.empty(m_out, dtype=np.int64)
    key_bi = np.empty(m_out, dtype=np.uint8)
    key_bj = np.empty(m_out, dtype=np.uint8)
    clicks = np.zeros((P, nk, nk, 2, 2), dtype=np.int64)
    errors_x2 = np.zeros((P, nk, nk, 2, 2), dtype=np.int64)
    doubles = np.zeros((P, nk, nk, 2, 2), dtype=np.int64)
    hist = np.zeros((P, nk, nk, 2, 2, 4, 2), dtype=np.int64)
    frame = np.int64(0)
    fend = np.int64(0)
    q = np.int64(0)
    cur = np.int64(-1)
    lki = log_k[0]
    lkj = log_k[0]
    lai = log_a[0]
    laj = log_a[0]
    nlog = np.int64(0)
    ni = np.int64(0)
    nj = np.int64(0)
    error = 0
    i = 0
    j = 0
    di = 0
    nd = drop.shape[0]
    big = np.iinfo(np.int64).max
    if m_in < 0:
        s0[n0] = big  # sentinels: the merge needs no bounds tests
        s1[n1] = big
    while True:
        if m_in >= 0:
            if i >= m_in:
                break
            s = s0[i]
            b = ob[i]
            i += 1
            while i < m_in and s0[i] == s:
                b |= ob[i]
                i += 1
        else:
            u = s0[U(i)]
            v = s1[U(j)]
            s = min(u, v)
            if s == big:
                break
            e0 = u == s
            e1 = v == s
            b = np.uint8(e0) | (np.uint8(e1) << np.uint8(1))
            i += e0
            j += e1
            while s0[U(i)] == s:  # repeated clicks of one detector in one slot (rare)
                i += 1
            while s1[U(j)] == s:
                j += 1
        while di < nd and drop[di, 1] <= s:
            di += 1
        if di < nd and drop[di, 0] <= s:
            continue
        frame, fend, q = _pair_of(s, frame, fend, q, frame_pair, spf, C)
        if q != cur:  # a new pair's frame: fetch its clients' logs (list access is not free)
            cur = q
            lki, lkj, lai, laj, nlog, ni, nj = _pair_logs(q, pair_ci, pair_cj, log_k, log_a, n_int)
        if s >= nlog:
            error = 1
            break
        su = U(s)
        x = lki[su]
        y = lkj[su]
        ai = lai[su]
        aj = laj[su]
        if x >= ni or y >= nj:
            error = 2
            break
        if ai > 3 or aj > 3:
            error = 3
            break
        ba = ai & 1
        bb = aj & 1
        # one histogram bin per (pair, cell, outcome, bits differ): no data-dependent branches
        qu = U(q)
        hist[qu, x, y, ba, bb, b, ((ai ^ aj) >> 1) & 1] += 1
        k = (x | y | ba | bb) == 0
        w = U(start[qu] + count[qu])
        count[qu] += 1
        out_s[w] = s
        out_o[w] = b
        kw = U(start[qu] + kcount[qu])  # key slots compacted without a branch: always
        key_s[kw] = s  # written, kept only if the count moves on
        key_bi[kw] = ai >> 1
        key_bj[kw] = ((aj >> 1) ^ np.uint8(b == 2)) | (np.uint8(b == 3) << np.uint8(1))  # 2|bit: double click
        kcount[qu] += k
    # statistics from the histogram (same rules as sifting._counts_kernel): clicks, double clicks,
    # errors for equal bases outside the key cell: a double click ½, D0 with different bits or D1
    # with equal bits 1 (2·errors kept integer)
    for pq in range(P):
        for kx in range(nk):
            for ky in range(nk):
                for u0 in range(2):
                    for u1 in range(2):
                        h = hist[pq, kx, ky, u0, u1]
                        clicks[pq, kx, ky, u0, u1] = h[1:].sum()
                        doubles[pq, kx, ky, u0, u1] = h[3, 0] + h[3, 1]
                        if u0 == u1 and not (kx == 0 and ky == 0 and u0 == 0):
                            errors_x2[pq, kx, ky, u0, u1] = h[3, 0] + h[3, 1] + 2 * (h[1, 1] + h[2, 0])
    return start, count, kcount, out_s, out_o, key_s, key_bi, key_bj, clicks, errors_x2, doubles, error


def _compare_bits64(width: int, op: str, *, signed: bool):  # type: ignore[no-untyped-def]
    """The code generator of a "one bit per element" intrinsic: ``arr[start : start + 64]`` (``width``-bit
    integers) compared by ``op`` with the scalar third argument (truncated to ``width`` bits and splat over the 64
    elements), the ``<64 x i1>`` result bit cast to ``i64`` — as :func:`_nonzero_bits64`, with a scalar operand."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        it, i32 = ir.IntType(width), ir.IntType(32)
        vty = ir.VectorType(it, 64)
        v = builder.load(builder.bitcast(builder.gep(ary.data, [args[1]]), vty.as_pointer()), align=width // 8)
        u = builder.insert_element(ir.Constant(vty, ir.Undefined), builder.trunc(args[2], it), ir.Constant(i32, 0))
        cv = builder.shuffle_vector(u, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(i32, 64), None))
        cmp = builder.icmp_signed if signed else builder.icmp_unsigned
        return builder.bitcast(cmp(op, v, cv), ir.IntType(64))

    return codegen


@intrinsic
def _equal_bits64(typingctx, arr, start, c):  # type: ignore[no-untyped-def]
    """One bit per element of ``arr[start : start + 64]`` (int16): bit k set iff element k equals ``c``
    (taken as int16: the caller keeps it in range). LLVM IR's vector compare and bit cast (as
    :func:`_nonzero_bits64`; AVX2: four ``vpcmpeqw``, two ``vpacksswb``, two ``vpmovmskb``)."""
    return types.uint64(arr, start, c), _compare_bits64(16, "==", signed=True)


@numba.njit(cache=True, nogil=True)
def _channel_times(ts, ch, c, delay):  # type: ignore[no-untyped-def]
    """``ts[ch == c] - delay`` without the temporary mask. The tags of channel ``c`` (syncs,
    markers) are rare and far apart: their positions first, in one pass over the channels (per
    64-tag chunk, a mask of the matching tags by one vector compare, :func:`_equal_bits64`, and
    its set bits; the position buffer has room for every tag, of which only the pages written are
    ever touched), then their times, whose cache misses overlap as independent loads (read inside
    the scan, each missed alone: 4.2 → 1.3 ms for the bench's 20 000 syncs in 5·10^6 tags; a
    separate counting pass over the channels cost another ~1 ms; a scalar scan of each chunk with
    a match, instead of its mask's bits, 1.0 against 0.4 ms)."""
    n = ch.shape[0]
    if c < -32768 or c > 32767:  # no int16 channel matches
        return np.empty(0, dtype=np.int64)
    idx = np.empty(n, dtype=np.int64)
    k = 0
    for i0 in range(0, n - 63, 64):
        mk = _equal_bits64(ch, i0, c)
        while mk != 0:
            idx[U(k)] = i0 + np.int64(trailing_zeros(mk))
            k += 1
            mk &= mk - U(1)
    for i in range(n - n % 64 if n >= 64 else 0, n):
        if ch[U(i)] == c:
            idx[U(k)] = i
            k += 1
    out = np.empty(k, dtype=np.int64)
    for j in range(k):
        out[U(j)] = ts[U(idx[U(j)])] - delay
    return out


@intrinsic
def _at_least_bits64(typingctx, arr, start, c):  # type: ignore[no-untyped-def]
    """One bit per byte of ``arr[start : start + 64]`` (uint8): bit k set iff byte k >= ``c`` (unsigned; the
    caller keeps ``c`` in 0..255). LLVM IR's vector compare and bit cast, as :func:`_nonzero_bits64`."""
    return types.uint64(arr, start, c), _compare_bits64(8, ">=", signed=False)


@numba.njit(cache=True, nogil=True)
def _double_clicks_at(bj):  # type: ignore[no-untyped-def]
    """Positions, in order, of the entries >= 2 of ``bj`` (Cj's key bytes: 2|bit marks a double click):
    a count, then the positions, each pass one vector compare per 64 bytes (:func:`_at_least_bits64`) —
    numpy's ``bj >= 2``, count and masked assignment took ~0.12 ms per pair on the bench stream."""
    n = bj.shape[0]
    e = n - n % 64
    k = 0
    for i0 in range(0, e, 64):
        k += _popcount(_at_least_bits64(bj, i0, 2))
    for i in range(e, n):
        k += bj[i] >= 2
    pos = np.empty(k, dtype=np.int64)
    k = 0
    for i0 in range(0, e, 64):
        mk = _at_least_bits64(bj, i0, 2)
        while mk != 0:
            pos[U(k)] = i0 + np.int64(trailing_zeros(mk))
            k += 1
            mk &= mk - U(1)
    for i in range(e, n):
        if bj[i] >= 2:
            pos[U(k)] = i
            k += 1
    return pos


@numba.njit(cache=True, nogil=True)
def _cells(hist, P, nk):  # type: ignore[no-untyped-def]
    """``hist[pair, k_i, k_j, 16·a_i + 4·a_j + outcome]`` (256 bins per cell, the upper 192 unused) → (clicks, errors_x2, doubles) per pair and
    cell (k_i, k_j, basis_i, basis_j), with the rules of ``sifting._counts_kernel``: a double
    click counts ½ error, D0 with different bits or D1 with equal bits 1 error, for equal bases
    outside the key cell (2·errors kept integer)."""
    h = hist.reshape((P, nk, nk, 256))
    clicks = np.zeros((P, nk, nk, 2, 2), dtype=np.int64)
    errors_x2 = np.zeros((P, nk, nk, 2, 2), dtype=np.int64)
    doubles = np.zeros((P, nk, nk, 2, 2), dtype=np.int64)
    for q in range(P):
        for x in range(nk):
            for y in range(nk):
                for ai in range(4):
                    for aj in range(4):
                        ba = ai & 1
                        bb = aj & 1
                        differ = (ai >> 1) != (aj >> 1)
                        counted = ba == bb and not (x == 0 and y == 0 and ba == 0)
                        for b in range(1, 4):
                            v = h[q, x, y, 16 * ai + 4 * aj + b]
                            clicks[q, x, y, ba, bb] += v
                            if b == 3:
                                doubles[q, x, y, ba, bb] += v
                            if counted:
                                if b == 3:
                                    errors_x2[q, x, y, ba, bb] += v
                                elif (b == 1) == differ:
                                    errors_x2[q, x, y, ba, bb] += 2 * v
    return clicks, errors_x2, doubles


# --------------------------------------------------------------------------------------------


def _geometry(block: TagBlock, p: SlottingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anchors, interval periods and dropped ranges of a whole stream, exactly as a
    :class:`Slotter` fed this one block and finished finds them."""
    ts, ch = block.timestamps, block.channels
    step = _anchor_step(p)
    before_first = np.empty((0, 2), dtype=np.int64)  # frames before the first marker (missing markers)
    if p.marker_channel is not None:
        sl = Slotter(p)
        marker_t = _channel_times(ts, ch, p.marker_channel, p.marker_delay_ps)
        if p.slot0_from_sync and not p.time_zero_is_pulse_zero:  # slot 0 is the first sync tag (as in Slotter.push)
            sync_t = _channel_times(ts, ch, p.sync_channel, p.sync_delay_ps)
            if not sync_t.size and marker_t.size:
                raise QKDInputError(f"slot_sift: {marker_t.size} frame markers on channel {p.marker_channel} but no "
                                    f"sync tag on channel {p.sync_channel}: slot 0 (the first sync tag) is unknown, so "
                                    "the frames cannot be numbered; check time_tagger.sync_channel and the sync cable")
            sl.marker_origin = int(sync_t[0]) if sync_t.size else None
        anchor_t, anchor_k, anchor_ok = sl._anchor_markers(marker_t)
        before_first = sl.dropped_sync.ranges
        fallback = sl._period_est
    else:
        chain = _SyncChain(p)  # the slotter's sync anchors, all decided at once (the whole stream)
        sync_t = _channel_times(ts, ch, p.sync_channel, p.sync_delay_ps)
        anchor_t, anchor_k = chain.anchor(sync_t, 0, True, SlottingStats())
        chain.check_final(int(sync_t.size), "slot_sift")
        fallback = chain.period_est
        anchor_ok = np.ones(anchor_t.size, dtype=bool)
    per = _interval_periods(anchor_t, anchor_k, step, float(fallback))
    dropped = SlotRanges()
    n_a = anchor_t.size
    lost = block_lost_intervals(block, None)  # a block flagged overflow without intervals: all of it
    if n_a and lost.size:
        finite_w = [min(w, p.period_ps) for w in p.window_ps]
        reach = int(math.ceil(max(abs(o) for o in p.window_offset_ps) + max(finite_w) / 2.0))
        lo_t = lost[:, 0] - max(p.delays_ps) - reach
        hi_t = lost[:, 1] - min(p.delays_ps) + reach

        def position(t: np.ndarray) -> np.ndarray:
            a = np.maximum(np.searchsorted(anchor_t, t, side="right") - 1, 0)
            return anchor_k[a] * step + (t - anchor_t[a]) / per[a]

        for s0, s1 in zip(np.ceil(position(lo_t)).tolist(), (np.floor(position(hi_t)) + 1).tolist(), strict=True):
            dropped.add(max(int(s0), 0), int(s1))
    for s0, s1 in before_first.tolist():
        dropped.add(s0, s1)
    if p.marker_channel is not None and n_a:
        F = p.frame_slots
        for j in np.flatnonzero(~anchor_ok).tolist():
            end = int(anchor_k[j + 1]) * F if j + 1 < n_a else (int(anchor_k[j]) + 1) * F
            dropped.add(int(anchor_k[j]) * F, end)
    return anchor_t, anchor_k, per, dropped.ranges


_RING_MIN_BITS = 18
"""log2 of the smallest ring (256 kB of slot bytes, half of a Zen 3 core's L2): the horizon moves
once per half ring, and each move sends the block holding its click tag by tag through
:func:`_ring_fill`; 2^18 against 2^16 slots: `slot_sift` 33.7 → 33.3 and 34.4 → 34.0 ms on the
bench stream (CPU, min of 13–15 alternated; 2-vCPU AMD EPYC, session 41)."""


def _ring_bits(p: SlottingParams, per: np.ndarray) -> int:
    """log2 of the fused kernel's ring (in slots): at least ``_RING_MIN_BITS`` and 8× the largest distance, in
    slots, between the two detectors' views of one instant (their delays and window offsets)."""
    spread = abs((p.delays_ps[1] + p.window_offset_ps[1]) - (p.delays_ps[0] + p.window_offset_ps[0]))
    pmin = float(per.min()) if per.size else p.period_ps
    need = 8.0 * (spread / pmin + 64.0) if pmin > 0 and math.isfinite(pmin) else 2.0 ** 40
    return max(_RING_MIN_BITS, math.ceil(math.log2(min(need, 2.0 ** 40))))


_MAX_RING_BITS = 26


def slot_sift(block: TagBlock, params: SlottingParams, schedule: PairSchedule, logs: Mapping[str, DenseLog],
              setups: Mapping[str, ClientSetup], total_slots: int,
              rng: np.random.Generator | None = None, out: SlotSiftBuffers | None = None) -> SlotSiftResult:
    """Slot and sift a whole tag stream in one pass (module docstring).

    ``block``: the whole stream (int64 ps timestamps, non-decreasing; lost-data intervals);
    ``logs``/``setups``: every client of the schedule's pairs, by name; ``total_slots``: the
    acquisition's length in slots (each pair's ``n_slots`` is its share of it, as the pipeline
    counts it); ``rng``: Cj's squashing bits for double clicks in key slots (OS entropy if None).
    The outputs are views into buffers with room for every tag in every pair (address space
    only: the pages that are never written are never backed by memory): fresh ones, or ``out``'s
    (:class:`SlotSiftBuffers`: the result is then valid until the next call with ``out``).
    """
    if params.client_markers:
        raise QKDInputError("slot_sift: one frame-marker input per client is slotted pair by pair (PairSlotter); "
                            "expected marker_channel or none here, or use the two stages (make_slotter, sift_records)")
    clients = _check_inputs(block, schedule, logs, setups, total_slots)
    ts, ch = block.timestamps, block.channels
    n_log = min(logs[c].intensity_idx.size for c in clients)
    cidx = {c: i for i, c in enumerate(clients)}
    log_k = NumbaList([logs[c].intensity_idx for c in clients])  # no copies: the kernel reads the logs
    log_a = NumbaList([logs[c].phase_idx for c in clients])
    n_int = np.array([len(setups[c].intensities) for c in clients], dtype=np.int64)
    nk = int(n_int.max())
    P = len(schedule.pairs)
    p = params
    c0, c1 = np.int16(p.detector_channels[0]), np.int16(p.detector_channels[1])
    d0, d1 = np.int64(p.delays_ps[0]), np.int64(p.delays_ps[1])
    last_span = np.int64(p.frame_slots if p.marker_channel is not None else -1)
    frame_pair = schedule.frame_pair.astype(np.int64)
    spf = np.int64(schedule.slots_per_frame)
    pair_ci = np.array([cidx[a] for a, _ in schedule.pairs], dtype=np.int64)
    pair_cj = np.array([cidx[b] for _, b in schedule.pairs], dtype=np.int64)
    anchor_t, anchor_k, per, drop = _geometry(block, p)
    mult = _anchor_step(p)
    status = WINDOW_FULL
    if anchor_t.size < 2 or bool(np.all(anchor_t[1:] > anchor_t[:-1])):
        nxt = np.empty_like(anchor_t)
        nxt[:-1] = anchor_t[1:]
        nxt[-1:] = np.iinfo(np.int64).max
        base = anchor_k * np.int64(mult)
        inv = 1.0 / per
        cap = int(ts.size)
        out_s, out_o, key_s, key_bi, key_bj = out.take(P * cap) if out is not None else _new_outputs(P * cap)
        wbits = _ring_bits(p, per)
        while status == WINDOW_FULL and wbits <= _MAX_RING_BITS:
            count = np.zeros(P, dtype=np.int64)
            kcount = np.zeros(P, dtype=np.int64)
            hist = np.zeros(P * nk * nk * 256, dtype=np.int64)
            status = _fused_kernel(
                ts, ch, c0, c1, np.array([d0, d1], dtype=np.int64), np.asarray(p.window_offset_ps, dtype=np.float64),
                np.asarray(p.window_ps, dtype=np.float64) / 2.0, anchor_t, nxt, base, per, inv,
                np.int64(p.burst_period_slots), np.int64(p.burst_on_slots), last_span, drop, frame_pair, spf, pair_ci,
                pair_cj, n_int, log_k, log_a, np.int64(nk), np.int64(wbits), np.int64(cap), out_s, out_o, key_s, key_bi,
                key_bj, count, kcount, hist)
            wbits += 4
        if status in (OK, BEYOND_LOG, BAD_INTENSITY, BAD_PHASE, NOT_SORTED):
            start = np.arange(P, dtype=np.int64) * cap
            clicks, errors_x2, doubles = _cells(hist, P, nk)
    if status in (DISORDER, WINDOW_FULL):
        if ts.size > 1 and np.any(ts[1:] < ts[:-1]):
            status = NOT_SORTED
        else:
            start, count, kcount, out_s, out_o, key_s, key_bi, key_bj, clicks, errors_x2, doubles, status = _sorted_kernel(
                ts, ch, c0, c1, d0, d1, anchor_t, anchor_k, per, np.int64(mult),
                np.asarray(p.window_offset_ps, dtype=np.float64), np.asarray(p.window_ps, dtype=np.float64) / 2.0,
                np.int64(p.burst_period_slots), np.int64(p.burst_on_slots), last_span, drop, frame_pair, spf,
                pair_ci, pair_cj, n_int, log_k, log_a, nk)
    _raise_for_status(status, ts, n_log)
    return _package(schedule, setups, int(total_slots), start, count, kcount, out_s, out_o, key_s, key_bi, key_bj,
                    clicks, errors_x2, doubles, rng)


def _check_inputs(block: TagBlock, schedule: PairSchedule, logs: Mapping[str, DenseLog],
                  setups: Mapping[str, ClientSetup], total_slots: int) -> list[str]:
    """The schedule's clients, sorted, after one clear error for a bad argument of :func:`slot_sift`."""
    if not isinstance(block, TagBlock):
        raise QKDInputError(f"slot_sift: expected a TagBlock, got {type(block).__name__}")
    if int(total_slots) < 0:
        raise QKDInputError(f"slot_sift: total_slots must be >= 0, got {total_slots}")
    clients = sorted({c for pr in schedule.pairs for c in pr})
    for c in clients:
        if c not in logs or c not in setups:
            raise QKDInputError(f"slot_sift: no modulation log or setup for client {c} (have logs for {sorted(logs)})")
        if not isinstance(logs[c], DenseLog):
            raise QKDInputError(f"slot_sift: the log of {c} must be a DenseLog, got {type(logs[c]).__name__}")
    return clients


def _raise_for_status(status: int, ts: np.ndarray, n_log: int) -> None:
    """One clear error for a kernel status other than OK."""
    if status != OK and (status == NOT_SORTED or (ts.size > 1 and np.any(ts[1:] < ts[:-1]))):
        raise QKDInputError("slot_sift: TagBlock timestamps must be non-decreasing")
    if status == BEYOND_LOG:
        raise QKDInputError(f"slot_sift: a click lies beyond the modulation logs ({n_log} slots)")
    if status == BAD_INTENSITY:
        raise QKDInputError("slot_sift: a log's intensity index exceeds its client's number of intensities")
    if status == BAD_PHASE:
        raise QKDInputError("slot_sift: a log's phase index is not in 0..3")


def _package(schedule: PairSchedule, setups: Mapping[str, ClientSetup], total_slots: int, start: np.ndarray,
             count: np.ndarray, kcount: np.ndarray, out_s: np.ndarray, out_o: np.ndarray, key_s: np.ndarray,
             key_bi: np.ndarray, key_bj: np.ndarray, clicks: np.ndarray, errors_x2: np.ndarray, doubles: np.ndarray,
             rng: np.random.Generator | None) -> SlotSiftResult:
    """Each pair's announcements and sift result as views into the kernel's buffers; Cj squashes
    double clicks in key slots to random bits."""
    if rng is None:
        rng = np.random.default_rng(secrets.randbits(128))
    anns: dict[str, Announcements] = {}
    sifted: dict[str, SiftResult] = {}
    for q, (name, (ci, cj)) in enumerate(zip(schedule.names, schedule.pairs, strict=True)):
        lo, hi = int(start[q]), int(start[q] + count[q])
        ann = Announcements(name, out_s[lo:hi], out_o[lo:hi])
        klo, khi = lo, int(start[q] + kcount[q])
        bj = key_bj[klo:khi]  # 2|bit marks a double click: Cj squashes it to a random bit
        both = _double_clicks_at(bj)
        if both.size:
            bj[both] = squash_bits(rng, both.size)
        si, sj = setups[ci], setups[cj]
        ni, nj = len(si.intensities), len(sj.intensities)
        counts = PairCounts(name, schedule.slots_of_pair(name, total_slots), si.intensities, sj.intensities,
                            si.intensity_probs, sj.intensity_probs, si.basis_x_prob, sj.basis_x_prob,
                            clicks[q, :ni, :nj].copy(), errors_x2[q, :ni, :nj].copy(), doubles[q, :ni, :nj].copy())
        anns[name] = ann
        sifted[name] = SiftResult(name, key_s[klo:khi], key_bi[klo:khi], bj, counts)
    return SlotSiftResult(anns, sifted)
