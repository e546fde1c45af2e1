"""Slotting and sifting in one pass: time tags + both clients' modulation logs → per-pair
announcements, raw keys and :class:`~labqfl.contracts.types.PairCounts`.

Same rules and the same output as the two stages run one after the other on a whole tag stream —
:class:`~labqfl.qkd.slotting.Slotter` (push + finish), then
:func:`~labqfl.qkd.slotting.announcements_by_pair`, then
:func:`~labqfl.qkd.sifting.sift_records` per pair (in schedule order, one random generator for
the squashed double clicks) — which stay the reference (tests compare the two on random streams
with drift, dropped syncs, frame markers, lost-data intervals, dark counts and multi-click slots).

What is shared with the slotter, unchanged: the anchors (syncs: ``_anchor_syncs``; frame markers:
``Slotter._anchor_markers``), the period of every interval, the dropped ranges (frames that are
not kept, lost-data intervals widened by the detectors' delays and windows). What is fused into
one Numba kernel (:func:`_slot_sift_kernel`), per detector tag: delay correction, interval
lookup, nearest slot, window/frame/burst tests; then a linear merge of the two detectors'
streams (each is in slot order; a stable sort is the fallback when one is not) that combines
clicks of one slot into outcome 1/2/3, drops clicks in dropped slots, finds each slot's pair from
the schedule, looks both clients' choices up in their logs and tallies the sifting statistics
and key bits — no intermediate per-pair arrays, no per-pair log queries.

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
from numba.typed import List as NumbaList

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import Announcements, ModulationRecord, PairCounts
from labqfl.errors import QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.sifting import ClientSetup, SiftResult
from labqfl.qkd.slotting import (
    SlotRanges,
    Slotter,
    SlottingParams,
    _anchor_step,
    _anchor_syncs,
    _interval_periods,
)

__all__ = ["DenseLog", "SlotSiftResult", "slot_sift"]


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
        if self.intensity_idx.shape != self.phase_idx.shape:
            raise QKDInputError(f"DenseLog {self.client}: intensity_idx has {self.intensity_idx.size} slots, "
                                f"phase_idx {self.phase_idx.size}")

    def __repr__(self) -> str:  # the phase indices carry key bits: sizes only
        return f"DenseLog(client={self.client!r}, n_slots={self.intensity_idx.size})"

    __str__ = __repr__

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        return ModulationRecord(self.client, slots, self.intensity_idx[slots], self.phase_idx[slots])


@dataclass(frozen=True)
class SlotSiftResult:
    """Per pair (schedule order): the node's announcements and the sifting result."""

    announcements: dict[str, Announcements]
    sifted: dict[str, SiftResult]


# --------------------------------------------------------------------------------------------
# The kernel


U = np.uint64
"""Index cast in the kernels (see the note in :func:`_slot_sift_kernel`)."""


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
def _slot_sift_kernel(ts, ch, c0, c1, delay0, delay1, anchor_t, anchor_k, per, mult, off, half_w,  # type: ignore[no-untyped-def]
                      burst_period, burst_on, last_span, drop, frame_pair, spf, pair_ci, pair_cj, n_int,
                      log_k, log_a, nk):
    """Tags → per-pair announcements (slots, outcomes), key slots and bits, counts; one pass.

    Output arrays are pair-major: pair q's events are ``[start[q], start[q] + count[q])`` and its
    key slots ``[start[q], start[q] + kcount[q])`` (slot order), ``start[q] = q·(accepted
    detections)``: each pair has room for every click and only the memory pages actually written
    are ever touched. Returns (start, count, kcount, slots, outcomes, key_slots, key_bit_i,
    key_bit_j, key_double, clicks, errors_x2, doubles, error) with ``error`` 0 = fine, 1 = a slot
    beyond a log, 2 = an intensity index out of range, 3 = a phase index > 3.
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
    key_dbl = np.empty(m_out, dtype=np.bool_)
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
            ci = pair_ci[q]
            cj = pair_cj[q]
            lki = log_k[ci]
            lkj = log_k[cj]
            lai = log_a[ci]
            laj = log_a[cj]
            nlog = min(lki.shape[0], lkj.shape[0], lai.shape[0], laj.shape[0])
            ni = n_int[ci]
            nj = n_int[cj]
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
        key_bj[kw] = (aj >> 1) ^ np.uint8(b == 2)
        key_dbl[kw] = b == 3
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
    return start, count, kcount, out_s, out_o, key_s, key_bi, key_bj, key_dbl, clicks, errors_x2, doubles, error


# --------------------------------------------------------------------------------------------


def _geometry(block: TagBlock, p: SlottingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anchors, interval periods and dropped ranges of a whole stream, exactly as a
    :class:`Slotter` fed this one block and finished finds them."""
    ts, ch = block.timestamps, block.channels
    step = _anchor_step(p)
    if p.marker_channel is not None:
        sl = Slotter(p)
        anchor_t, anchor_k, anchor_ok = sl._anchor_markers(ts[ch == p.marker_channel] - p.marker_delay_ps)
        fallback = sl._period_est
    else:
        sync_t = ts[ch == p.sync_channel] - p.sync_delay_ps
        anchor_t, anchor_k, _, _, _, fallback, _, _ = _anchor_syncs(
            sync_t, False, np.int64(0), np.int64(0), float(p.period_ps), p.sync_divider, float(p.period_ps),
            float(p.gap_tolerance))
        anchor_ok = np.ones(anchor_t.size, dtype=bool)
    per = _interval_periods(anchor_t, anchor_k, step, float(fallback))
    dropped = SlotRanges()
    n_a = anchor_t.size
    lost = block.lost_intervals_ps
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
    if p.marker_channel is not None and n_a:
        F = p.frame_slots
        for j in np.flatnonzero(~anchor_ok).tolist():
            end = int(anchor_k[j + 1]) * F if j + 1 < n_a else (int(anchor_k[j]) + 1) * F
            dropped.add(int(anchor_k[j]) * F, end)
    return anchor_t, anchor_k, per, dropped.ranges


def slot_sift(block: TagBlock, params: SlottingParams, schedule: PairSchedule, logs: Mapping[str, DenseLog],
              setups: Mapping[str, ClientSetup], total_slots: int,
              rng: np.random.Generator | None = None) -> SlotSiftResult:
    """Slot and sift a whole tag stream in one pass (module docstring).

    ``block``: the whole stream (int64 ps timestamps, non-decreasing; lost-data intervals);
    ``logs``/``setups``: every client of the schedule's pairs, by name; ``total_slots``: the
    acquisition's length in slots (each pair's ``n_slots`` is its share of it, as the pipeline
    counts it); ``rng``: Cj's squashing bits for double clicks in key slots (OS entropy if None).
    """
    if not isinstance(block, TagBlock):
        raise QKDInputError(f"slot_sift: expected a TagBlock, got {type(block).__name__}")
    ts, ch = block.timestamps, block.channels
    if ts.size > 1 and np.any(ts[1:] < ts[:-1]):
        raise QKDInputError("slot_sift: TagBlock timestamps must be non-decreasing")
    if int(total_slots) < 0:
        raise QKDInputError(f"slot_sift: total_slots must be >= 0, got {total_slots}")
    clients = sorted({c for pr in schedule.pairs for c in pr})
    for c in clients:
        if c not in logs or c not in setups:
            raise QKDInputError(f"slot_sift: no modulation log or setup for client {c} (have logs for {sorted(logs)})")
        if not isinstance(logs[c], DenseLog):
            raise QKDInputError(f"slot_sift: the log of {c} must be a DenseLog, got {type(logs[c]).__name__}")
    n_log = min(logs[c].intensity_idx.size for c in clients)
    cidx = {c: i for i, c in enumerate(clients)}
    log_k = NumbaList([logs[c].intensity_idx for c in clients])  # no copies: the kernel reads the logs
    log_a = NumbaList([logs[c].phase_idx for c in clients])
    n_int = np.array([len(setups[c].intensities) for c in clients], dtype=np.int64)
    nk = int(n_int.max())
    p = params
    anchor_t, anchor_k, per, drop = _geometry(block, p)
    start, count, kcount, s, o, key_s, key_bi, key_bj, key_dbl, clicks, errors_x2, doubles, error = _slot_sift_kernel(
        ts, ch, np.int16(p.detector_channels[0]), np.int16(p.detector_channels[1]), np.int64(p.delays_ps[0]),
        np.int64(p.delays_ps[1]), anchor_t, anchor_k, per, np.int64(_anchor_step(p)),
        np.asarray(p.window_offset_ps, dtype=np.float64), np.asarray(p.window_ps, dtype=np.float64) / 2.0,
        np.int64(p.burst_period_slots), np.int64(p.burst_on_slots),
        np.int64(p.frame_slots if p.marker_channel is not None else -1), drop,
        schedule.frame_pair.astype(np.int64), np.int64(schedule.slots_per_frame),
        np.array([cidx[a] for a, _ in schedule.pairs], dtype=np.int64),
        np.array([cidx[b] for _, b in schedule.pairs], dtype=np.int64), n_int, log_k, log_a, nk)
    if error == 1:
        raise QKDInputError(f"slot_sift: a click lies beyond the modulation logs ({n_log} slots)")
    if error == 2:
        raise QKDInputError("slot_sift: a log's intensity index exceeds its client's number of intensities")
    if error == 3:
        raise QKDInputError("slot_sift: a log's phase index is not in 0..3")
    if rng is None:
        rng = np.random.default_rng(secrets.randbits(128))
    anns: dict[str, Announcements] = {}
    sifted: dict[str, SiftResult] = {}
    for q, (name, (ci, cj)) in enumerate(zip(schedule.names, schedule.pairs, strict=True)):
        lo, hi = int(start[q]), int(start[q] + count[q])
        ann = Announcements(name, s[lo:hi], o[lo:hi])
        klo, khi = lo, int(start[q] + kcount[q])
        bj = key_bj[klo:khi].copy()
        both = key_dbl[klo:khi]
        nb = int(np.count_nonzero(both))
        if nb:
            bj[both] = rng.integers(0, 2, nb, dtype=np.uint8)
        si, sj = setups[ci], setups[cj]
        ni, nj = len(si.intensities), len(sj.intensities)
        counts = PairCounts(name, schedule.slots_of_pair(name, int(total_slots)), si.intensities, sj.intensities,
                            si.intensity_probs, sj.intensity_probs, si.basis_x_prob, sj.basis_x_prob,
                            clicks[q, :ni, :nj].copy(), errors_x2[q, :ni, :nj].copy(), doubles[q, :ni, :nj].copy())
        anns[name] = ann
        sifted[name] = SiftResult(name, key_s[klo:khi], key_bi[klo:khi], bj, counts)
    return SlotSiftResult(anns, sifted)
