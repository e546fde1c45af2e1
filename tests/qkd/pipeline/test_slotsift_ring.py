"""The fused slot_sift's byte ring (many wraps, group and ring edges) and its reusable output
buffers (``out=``), against the two stages (Slotter → announcements_by_pair → sift_records)."""

from __future__ import annotations

import numpy as np
import pytest
from qkdpp_helpers import D0, D1, SYNC, make_params
from test_slotsift import SETUPS, add_noise, assert_same, dense_logs, two_stage

from labqfl.contracts.schedule import PairSchedule
from labqfl.errors import QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.slotsift import _RING_MIN_BITS, DenseLog, SlotSiftBuffers, _group_mask, slot_sift

RING = 1 << _RING_MIN_BITS  # the fused kernel's smallest ring, in slots (slotsift._ring_bits)


def ring_stream(rng: np.random.Generator, n_slots: int, p_click: float, channels: tuple[int, ...] = (D0, D1),
                n_lost: int = 3) -> tuple[TagBlock, np.ndarray]:
    """Clicks on a quarter of random slots plus every slot at a ring-group edge (≡ 63, 0 mod 64)
    and at a ring edge (≡ RING − 1, 0 mod RING), a third of them double clicks where both
    detectors are used, tags a few ps either side of the slot centre and of the half-slot
    rounding edge, dropped syncs, dark counts, repeated clicks and lost-data intervals."""
    p = make_params(divider=64, delays=(3150, 3420))
    T = int(p.period_ps)
    base = np.flatnonzero(rng.random(n_slots) < p_click)
    edges = np.arange(n_slots)
    edges = edges[(edges % 64 == 63) | (edges % 64 == 0) | (edges % RING == RING - 1) | (edges % RING == 0)]
    clicked = np.unique(np.concatenate([base, edges]))
    if len(channels) == 2:
        out = rng.choice(np.array([1, 2, 3], np.uint8), clicked.size, p=[0.35, 0.35, 0.3])
    else:
        out = np.full(clicked.size, 1 if channels[0] == D0 else 2, np.uint8)
    sync_slots = np.arange(0, n_slots, p.sync_divider)
    keep = rng.random(sync_slots.size) > 0.05
    keep[:2] = True
    ts = [sync_slots[keep] * T]
    ch = [np.full(int(keep.sum()), SYNC, np.int16)]
    for d, chan in ((0, D0), (1, D1)):
        sel = (out & (1 << d)) != 0
        near = rng.choice(np.array([0, T // 2 - 3, -(T // 2) + 3]), int(sel.sum()))  # centre or ±3 ps off the edge
        ts.append(clicked[sel] * T + p.delays_ps[d] + near + rng.integers(-2, 3, int(sel.sum())))
        ch.append(np.full(int(sel.sum()), chan, np.int16))
    t_all, c_all = np.concatenate(ts), np.concatenate(ch)
    o = np.argsort(t_all, kind="stable")
    starts = np.sort(rng.integers(T * 1000, max(T * (n_slots - 1000), T * 1001), n_lost))
    lost = np.stack([starts, starts + rng.integers(1, 300 * T, n_lost)], axis=1).astype(np.int64).reshape(-1, 2)
    block = add_noise(rng, t_all[o], c_all[o], n_dark=n_slots // 500, n_multi=n_slots // 200, lost=lost)
    return block, p


@pytest.mark.parametrize("seed", [31, 32])
def test_fused_matches_two_stages_over_many_ring_wraps(seed):  # type: ignore[no-untyped-def]
    # ~4.6 wraps of the smallest ring, dense clicks, frames of an odd length (segments start and
    # end inside ring groups), clicks on every group and ring edge
    rng = np.random.default_rng(seed)
    n_slots = RING * 46 // 10
    block, p = ring_stream(rng, n_slots, 0.25)
    sched = PairSchedule([("C1", "C2"), ("C2", "C3"), ("C1", "C3")], slots_per_frame=97, frames=[1, 2, 1])
    logs = dense_logs(rng, n_slots + 200)
    anns, res = two_stage([block], p, sched, logs, n_slots, seed)
    fused = slot_sift(block, p, sched, logs, SETUPS, n_slots, np.random.default_rng(seed))
    assert_same(fused, anns, res)
    slots = np.concatenate([a.slots for a in anns.values()])
    assert np.count_nonzero(slots % RING == RING - 1) >= 3 and np.count_nonzero(slots % 64 == 63) > 1000
    assert sum(int(np.count_nonzero(a.outcomes == 3)) for a in anns.values()) > n_slots // 40


@pytest.mark.parametrize("chan", [D0, D1])
def test_fused_matches_two_stages_with_one_detector_only(chan):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(40 + chan)
    n_slots = 150_000
    block, p = ring_stream(rng, n_slots, 0.1, channels=(chan,), n_lost=1)
    keep = (block.channels == chan) | (block.channels == SYNC)  # the dark counts of the other one too
    block = TagBlock(block.timestamps[keep], block.channels[keep], block.overflow, block.lost_intervals_ps)
    sched = PairSchedule([("C1", "C2"), ("C2", "C3")], slots_per_frame=4096)
    logs = dense_logs(rng, n_slots + 200)
    anns, res = two_stage([block], p, sched, logs, n_slots, 7)
    fused = slot_sift(block, p, sched, logs, SETUPS, n_slots, np.random.default_rng(7))
    assert_same(fused, anns, res)
    assert all(np.all(a.outcomes == (1 if chan == D0 else 2)) and a.slots.size > 1000 for a in anns.values())


def test_reused_buffers_give_the_two_stages_output_call_after_call():  # type: ignore[no-untyped-def]
    # one SlotSiftBuffers for a long, a short, an empty and a longer stream: each result equals
    # the two stages' and lies in the buffers (the second call overwrote the first's pages)
    rng = np.random.default_rng(50)
    sched = PairSchedule([("C1", "C2"), ("C2", "C3"), ("C1", "C3")], slots_per_frame=1000)
    bufs = SlotSiftBuffers()
    firsts = []
    for n_slots in (120_000, 30_000, 0, 200_000):
        if n_slots:
            block, p = ring_stream(rng, n_slots, 0.2, n_lost=1)
        else:
            p = make_params(divider=64, delays=(3150, 3420))
            block = TagBlock(np.empty(0, np.int64), np.empty(0, np.int16))
        logs = dense_logs(rng, n_slots + 200)
        anns, res = two_stage([block], p, sched, logs, n_slots, n_slots)
        fused = slot_sift(block, p, sched, logs, SETUPS, n_slots, np.random.default_rng(n_slots), out=bufs)
        assert_same(fused, anns, res)
        if n_slots:
            slots0 = fused.announcements["C1-C2"].slots
            assert np.shares_memory(slots0, bufs.take(1)[0])
            firsts.append(slots0)
    assert "size=" in repr(bufs) and str(fused.sifted["C1-C2"].bits_i[:1]) not in repr(bufs)
    # the buffers were reused by the short stream (same memory as the long one's result), and grew
    # for the longest: the first result's memory is no longer the buffers'
    assert np.shares_memory(firsts[0], firsts[1])
    assert not np.shares_memory(firsts[0], firsts[2])


def test_group_mask_marks_the_nonzero_slot_bytes_in_range():
    rng = np.random.default_rng(60)
    n_groups = 16
    size = 64 * n_groups
    ring = np.where(rng.random(size) < 0.3, rng.integers(1, 4, size), 0).astype(np.uint8)
    ring[64:128] = 3  # one full group, and one empty
    ring[128:192] = 0
    for _ in range(300):
        g = int(rng.integers(0, 3 * n_groups))  # groups beyond the ring wrap onto it (g mod n_groups)
        sa = int(rng.integers(64 * g - 70, 64 * g + 64))
        sb = int(rng.integers(max(sa, 64 * g) + 1, 64 * g + 140))  # [sa, sb) meets the group, as in the kernel
        got = int(_group_mask(ring, np.int64(g), np.int64(n_groups - 1), np.int64(sa), np.int64(sb)))
        want = 0
        for k in range(64):
            s = 64 * g + k
            if sa <= s < sb and ring[s % ring.size]:
                want |= 1 << k
        assert got == want, (g, sa, sb)


def test_branch_free_block_fill_equals_the_tag_by_tag_fill_or_declines():
    # _ring_fill_block: a block of slot codes (doubles 2^52 + 2·slot + detector, read as int64)
    # ORed into the ring as _ring_fill would, rejected tags leaving every byte as it was; a block
    # holding an exact-division code or a click outside [E, E + half) is declined untouched
    from labqfl.qkd.slotsift import _EXACT, _MAGIC, _REJECT, _ring_fill_block

    rng = np.random.default_rng(61)
    W, half, E = RING, RING // 2, 5 * RING + 123
    for trial in range(200):
        m = int(rng.integers(1, 300))
        s = E + rng.integers(0, half, m)
        code = 2 * s + rng.integers(0, 2, m)
        code[rng.random(m) < 0.1] = _REJECT
        ring = np.where(rng.random(W) < 0.05, rng.integers(1, 4, W), 0).astype(np.uint8)
        want = ring.copy()
        for v in code.tolist():
            if v >= 0:
                want[(v >> 1) & (W - 1)] |= 1 + (v & 1)
        spoil = trial % 3  # 0: a good block; 1: one exact-division code; 2: one click beyond the window
        if spoil == 1:
            code[rng.integers(0, m)] = _EXACT
        elif spoil == 2:
            code[rng.integers(0, m)] = 2 * (E + half + int(rng.integers(0, 5))) + 1
        before = ring.copy()
        ok = _ring_fill_block(code + _MAGIC, np.int64(m), np.int64(E), np.int64(half), ring, np.int64(W - 1),
                              np.empty(m, np.uint64))
        if spoil:
            assert not ok and np.array_equal(ring, before)
        else:
            assert ok and np.array_equal(ring, want)


@pytest.mark.parametrize("nk", [1, 2, 3, 15])
def test_group_codes_equal_the_per_slot_histogram_index(nk):  # type: ignore[no-untyped-def]
    # _group_codes (LLVM vector IR, byte lanes) against the per-slot formula of _scan_sift; its mask
    # marks the slots whose log entries are in range (intensity < the client's count, phase <= 3),
    # and an out-of-range entry (any byte value) leaves its neighbours' indices alone
    import numba

    from labqfl.qkd.slotsift import _group_codes

    @numba.njit
    def codes(bm, rb, lki, lkj, lai, laj, w0, nk, ni, nj, hc):  # type: ignore[no-untyped-def]
        return _group_codes(bm, rb, lki, lkj, lai, laj, w0, nk, ni, nj, hc)

    rng = np.random.default_rng(62 + nk)
    hc = np.empty(64, np.uint16)
    for _ in range(50):
        ni, nj = int(rng.integers(1, nk + 1)), int(rng.integers(1, nk + 1))
        n = 64 * 6
        lk = [np.where(rng.random(n) < 0.05, rng.integers(0, 256, n), rng.integers(0, c, n)).astype(np.uint8)
              for c in (ni, nj)]
        la = [np.where(rng.random(n) < 0.05, rng.integers(0, 256, n), rng.integers(0, 4, n)).astype(np.uint8)
              for _ in range(2)]
        ring = rng.integers(0, 4, 256).astype(np.uint8)
        w0, rb = 64 * int(rng.integers(0, 6)), 64 * int(rng.integers(0, 4))
        mask = codes(ring, np.int64(rb), lk[0], lk[1], la[0], la[1], np.int64(w0), np.int64(nk), np.int64(ni),
                     np.int64(nj), hc)
        x, y, ai, aj = (a[w0:w0 + 64].astype(np.int64) for a in (*lk, *la))
        b = ring[rb:rb + 64].astype(np.int64)
        ok = (x < ni) & (y < nj) & ((ai | aj) < 4)
        assert int(mask) == int(np.sum(ok.astype(np.uint64) << np.arange(64, dtype=np.uint64)))
        want = ((x * nk + y) << 8) | (ai << 4) | (aj << 2) | b
        assert np.array_equal(hc[ok], want[ok])


@pytest.mark.parametrize("bad", ["intensity", "phase", "phase first"])
def test_a_bad_log_entry_in_a_click_dense_group_is_refused(bad):  # type: ignore[no-untyped-def]
    # a clicked slot in a ring group with many clicks (its log bytes read per group) whose log
    # entry is out of range: one clear error, the first such slot in slot order deciding which
    rng = np.random.default_rng(63)
    n_slots = 60_000
    block, p = ring_stream(rng, n_slots, 0.4, n_lost=0)
    sched = PairSchedule([("C1", "C2"), ("C2", "C3")], slots_per_frame=4096)
    logs = dense_logs(rng, n_slots + 200)
    anns, _ = two_stage([block], p, sched, logs, n_slots, 1)
    slots = anns["C1-C2"].slots
    per_group = np.bincount(slots >> 6)
    dense = slots[per_group[slots >> 6] >= 20]
    assert dense.size > 100
    s1, s2 = int(dense[dense.size // 3]), int(dense[2 * dense.size // 3])
    k, a = logs["C2"].intensity_idx.copy(), logs["C2"].phase_idx.copy()
    if bad == "intensity":
        k[s1] = 7  # C2 has three intensities
    elif bad == "phase":
        a[s1] = 4
    else:
        a[s1], k[s2] = 5, 9
    logs["C2"] = DenseLog("C2", k, a)
    with pytest.raises(QKDInputError, match="intensity index" if bad == "intensity" else "phase index"):
        slot_sift(block, p, sched, logs, SETUPS, n_slots, np.random.default_rng(1))
