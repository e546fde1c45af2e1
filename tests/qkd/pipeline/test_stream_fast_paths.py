"""The streaming fast paths (issue 18 item 5) against the steps they replace, on random inputs:
the waiting detector tags put before a block's in the split (no concatenation), the slots combined in
the placing pass (no :func:`_combine` pass) and a sifting batch split by pair from its pushes' parts
(no joined copy). Each must give exactly the arrays (values and dtypes) of the old steps."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.config import load_station_config
from labqfl.contracts.schedule import PairSchedule
from labqfl.qkd import slotting
from labqfl.qkd.slotting import SlotEvents, announcements_by_pair


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(5))
def test_split_tags_after_equals_the_waiting_tags_then_the_blocks(seed):
    """``_split_tags_after(pend, block)``: the detector outputs are the waiting tags then the block's
    (as ``np.concatenate`` gave them); sync, marker, other and order flags as for the block alone."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 50, 4000)).astype(np.int64)
    ch = rng.integers(-1, 6, ts.size).astype(np.int16)
    for n_pend in (0, 1, 37):
        pend_t = np.sort(rng.integers(0, 10**6, n_pend)).astype(np.int64)
        pend_id = rng.integers(0, 2, n_pend).astype(np.int64)
        for use_markers in (False, True):
            args = (np.int64(1), np.int64(4), use_markers, np.int64(2), np.int64(3), np.int64(7), np.int64(9),
                    np.int64(11), np.int64(13))
            sy, mk, dt, di, other, back = slotting._split_tags(ts, ch, *args)
            sy2, mk2, dt2, di2, other2, back2 = slotting._split_tags_after(pend_t, pend_id, ts, ch, *args)
            _same(sy2, sy)
            _same(mk2, mk)
            _same(dt2, np.concatenate([pend_t, dt]))
            _same(di2, np.concatenate([pend_id, di]))
            assert (other2, back2) == (other, back)


def _place(det_t, det_id, held_s, held_b, anchor_t, per, off, combine, limit, all_ready):  # type: ignore[no-untyped-def]
    anchor_k = np.arange(anchor_t.size, dtype=np.int64) * 4
    return slotting._place_kernel(det_t, det_id, np.int64(limit), all_ready, held_s, held_b, anchor_t, anchor_k, per,
                                  np.int64(4), off, np.array([450.0, 450.0]), np.int64(0),
                                  np.int64(0), np.int64(-1), combine)


@pytest.mark.parametrize("seed", range(8))
def test_place_kernel_combining_in_its_pass_equals_sort_then_combine(seed):
    """Combined in the placing pass, then (when a slot went back) sorted and combined: exactly the slots
    and outcomes of placing one entry per detection, sorting and :func:`_combine` (the old steps), with
    held slots, double clicks in one slot, and D1's slots crossing D0's; the waiting tags and refusal
    counts unchanged."""
    rng = np.random.default_rng(seed)
    anchor_t = np.cumsum(rng.integers(3800, 4200, 300)).astype(np.int64)
    per = np.full(anchor_t.size, 1000.0)
    n = 5000
    det_t = np.sort(rng.integers(0, int(anchor_t[-1]) + 3000, n)).astype(np.int64)
    det_t[1::7] = det_t[0::7][: det_t[1::7].size]  # the same time twice: both detectors in one slot
    det_id = rng.integers(0, 2, n).astype(np.int64)
    off = np.zeros(2)
    if seed % 2:  # D1's slots cross D0's: placed slots go back in tag order
        det_t = det_t + np.where(det_id == 1, 2300, 0)
        off[1] = 300.0
    held_s = np.array([], np.int64) if seed % 4 < 2 else np.array([-5, -1], np.int64)
    held_b = np.ones(held_s.size, np.uint8) * 2
    limit, all_ready = (int(anchor_t[-5]), False) if seed % 3 else (0, True)
    s0, b0, pt0, pi0, *c0, ord0 = _place(det_t, det_id, held_s, held_b, anchor_t, per, off, False, limit, all_ready)
    s1, b1, pt1, pi1, *c1, ord1 = _place(det_t, det_id, held_s, held_b, anchor_t, per, off, True, limit, all_ready)
    o = np.argsort(s0, kind="stable")
    ref_s, ref_b = slotting._combine(s0[o], b0[o])
    if ord1:
        got_s, got_b = s1, b1
    else:
        o = np.argsort(s1, kind="stable")
        got_s, got_b = slotting._combine(s1[o], b1[o])
    _same(got_s, ref_s)
    _same(got_b, ref_b)
    _same(pt1, pt0)
    _same(pi1, pi0)
    assert c1 == c0 and ord1 == ord0
    assert np.any(ref_b == 3)  # double clicks were merged
    assert s1.size < s0.size
    assert ord1 == (seed % 2 == 0)  # crossing detectors are the unordered path


@pytest.mark.parametrize("seed", range(4))
def test_announcements_of_parts_equal_those_of_the_joined_events(seed):
    """A batch given as its pushes' outputs is split by pair exactly as their :meth:`SlotEvents.joined`:
    parts ending inside a frame, empty parts, one part, no part, unsorted slots."""
    cfg = load_station_config()
    sched = PairSchedule.from_config(cfg)
    rng = np.random.default_rng(seed)
    asc = np.unique(rng.integers(0, 40 * sched.slots_per_frame * sched.cycle_frames, 20_000)).astype(np.int64)
    for slots in (asc, rng.permutation(asc), asc[:0]):
        outcomes = rng.integers(1, 4, slots.size).astype(np.uint8)
        cuts = np.sort(rng.integers(0, slots.size + 1, 6))
        cuts[2] = cuts[1]  # an empty part
        bounds = [0, *cuts.tolist(), slots.size]
        for parts in ([SlotEvents(slots[a:b], outcomes[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)],
                      [SlotEvents(slots, outcomes)], []):
            ref = announcements_by_pair(SlotEvents.joined(parts), sched)
            got = announcements_by_pair(parts, sched)
            assert list(got) == list(ref) == list(sched.names)
            for name in sched.names:
                _same(got[name].slots, ref[name].slots)
                _same(got[name].outcomes, ref[name].outcomes)
