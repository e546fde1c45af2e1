"""Slotting: streaming slotter vs the pure-Python reference, known answers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qkdpp_helpers import D0, D1, SYNC, make_params, split_blocks, synth_stream

from labqfl.config import load_station_config
from labqfl.contracts.schedule import PairSchedule
from labqfl.errors import QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.slotting import (
    SlotEvents,
    Slotter,
    SlottingParams,
    announcements_by_pair,
    slot_tags,
    slot_tags_reference,
)


def _stream(p: SlottingParams, blocks: list[TagBlock]) -> tuple[SlotEvents, Slotter]:
    s = Slotter(p)
    outs = list(s.run(blocks))
    return SlotEvents(np.concatenate([o.slots for o in outs]), np.concatenate([o.outcomes for o in outs])), s


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_slots=st.integers(1, 3000), divider=st.sampled_from([1, 4, 16, 64]),
       drift=st.floats(-2e-4, 2e-4), drop=st.sampled_from([0.0, 0.2, 0.6]), n_blocks=st.integers(1, 9),
       jitter=st.sampled_from([0.0, 60.0, 400.0]), sync_delay=st.sampled_from([0, 5000, 25_000]))
def test_streaming_slotter_matches_reference_for_any_block_split(seed, n_slots, divider, drift, drop, n_blocks, jitter, sync_delay):
    rng = np.random.default_rng(seed)
    p = make_params(divider=divider, sync_delay=sync_delay, window=4000.0)
    ts, ch, _, _ = synth_stream(rng, p, n_slots, p_click=0.1, drift=drift, jitter_ps=jitter, drop_sync=drop)
    ref = slot_tags_reference(ts, ch, p)
    got, _ = _stream(p, split_blocks(rng, ts, ch, n_blocks))
    np.testing.assert_array_equal(got.slots, ref.slots)
    np.testing.assert_array_equal(got.outcomes, ref.outcomes)
    assert np.all(np.diff(got.slots) > 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), periods=st.sampled_from([1, 2, 5]), n_blocks=st.integers(1, 9),
       jitter=st.sampled_from([0.0, 400.0]))
def test_slotter_matches_reference_when_the_detectors_slots_cross(seed, periods, n_blocks, jitter):
    """D1's cable longer than D0's by more than a slot: in tag order the slots go backwards, so the placed
    slots are not in order and the slotter sorts them (the path an ordered stream never takes); the
    result is still the reference's."""
    from labqfl.qkd import slotting

    flags: list[bool] = []
    place = slotting._place_kernel

    def spy(*args):  # type: ignore[no-untyped-def]
        out = place(*args)
        flags.append(bool(out[-1]))
        return out

    rng = np.random.default_rng(seed)
    p = make_params(divider=16, delays=(3150, 3150 + periods * 10_000 + 2700), window=4000.0)
    ts, ch, _, _ = synth_stream(rng, p, 4000, p_click=0.3, jitter_ps=jitter)
    ref = slot_tags_reference(ts, ch, p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(slotting, "_place_kernel", spy)
        got, _ = _stream(p, split_blocks(rng, ts, ch, n_blocks))
    np.testing.assert_array_equal(got.slots, ref.slots)
    np.testing.assert_array_equal(got.outcomes, ref.outcomes)
    assert np.all(np.diff(got.slots) > 0)
    assert not all(flags), "the stream never put a slot before an earlier tag's"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), drift=st.floats(-1e-4, 1e-4), drop=st.sampled_from([0.0, 0.3, 0.7]))
def test_slotter_recovers_true_slots_under_drift_jitter_and_dropped_syncs(seed, drift, drop):
    rng = np.random.default_rng(seed)
    p = make_params(divider=32)
    ts, ch, slots, outcomes = synth_stream(rng, p, 20_000, drift=drift, jitter_ps=80.0, drop_sync=drop)
    got, s = _stream(p, split_blocks(rng, ts, ch, 5))
    np.testing.assert_array_equal(got.slots, slots)
    np.testing.assert_array_equal(got.outcomes, outcomes)
    assert s.stats.double_clicks == int(np.count_nonzero(outcomes == 3))


def test_known_answer_double_click_window_and_delays():
    p = make_params(period=1000.0, divider=4, delays=(300, 500), window=200.0)
    # syncs for slots 0,4,8,12; D0 at slot 5 (t=5000+300), D1 at slot 5 (5000+500) -> outcome 3;
    # D1 at slot 9 -> 2; D0 at slot 10 but 150 ps late (outside the ±100 ps window) -> dropped.
    ts = np.array([0, 4000, 5300, 5500, 8000, 9500, 10_450, 12_000], dtype=np.int64)
    ch = np.array([SYNC, SYNC, D0, D1, SYNC, D1, D0, SYNC], dtype=np.int16)
    ev = slot_tags(ts, ch, p)
    assert ev.slots.tolist() == [5, 9]
    assert ev.outcomes.tolist() == [3, 2]


def test_dropped_sync_inferred_from_gap():
    p = make_params(period=1000.0, divider=4, delays=(0, 0))
    ts = np.array([0, 4000, 16_000, 17_000, 20_000], dtype=np.int64)  # syncs for slots 8 and 12 lost
    ch = np.array([SYNC, SYNC, SYNC, D0, SYNC], dtype=np.int16)
    s = Slotter(p)
    ev = [*s.run([TagBlock(ts, ch)])]
    assert np.concatenate([e.slots for e in ev]).tolist() == [17]
    assert s.stats.dropped_syncs == 2


def test_burst_window_drops_clicks_outside_bursts():
    base = make_params(period=1000.0, divider=4, delays=(0, 0))
    p = SlottingParams(**{**base.__dict__, "burst_period_slots": 8, "burst_on_slots": 4})
    ts = np.array([0, 1000, 4000, 5000, 8000, 9000], dtype=np.int64)
    ch = np.array([SYNC, D0, SYNC, D0, SYNC, D1], dtype=np.int16)
    s = Slotter(p)
    ev = [*s.run([TagBlock(ts, ch)])]
    assert np.concatenate([e.slots for e in ev]).tolist() == [1, 9]
    assert s.stats.outside_burst == 1


def test_params_from_config_use_rep_rate_and_total_delays():
    cfg = load_station_config()
    cfg.time_tagger.input_delays_ps = {"D0": 100.0}
    p = SlottingParams.from_config(cfg)
    assert p.period_ps == pytest.approx(1e12 / cfg.laser.rep_rate_hz)
    loop = round(cfg.loop.fiber_refractive_index * sum(cfg.loop.segments_km) * 1e3 / 299_792_458.0 * 1e12)
    assert abs(p.delays_ps[0] - (loop + 3250)) <= 1 and abs(p.delays_ps[1] - (loop + 3420)) <= 1
    assert p.sync_divider == cfg.time_tagger.sync_divider
    assert p.detector_channels == (2, 3)


def test_announcements_split_by_schedule():
    sched = PairSchedule([("C1", "C2"), ("C1", "C3")], slots_per_frame=10)
    ev = SlotEvents(np.array([1, 12, 25, 33], dtype=np.int64), np.array([1, 2, 3, 1], dtype=np.uint8))
    ann = announcements_by_pair(ev, sched)
    assert ann["C1-C2"].slots.tolist() == [1, 25]
    assert ann["C1-C3"].slots.tolist() == [12, 33]
    assert ann["C1-C3"].outcomes.tolist() == [2, 1]


def test_bad_inputs_give_clear_errors():
    p = make_params()
    s = Slotter(p)
    with pytest.raises(QKDInputError, match="TagBlock"):
        s.push((np.zeros(3, np.int64), np.zeros(3, np.int16)))  # type: ignore[arg-type]
    with pytest.raises(QKDInputError, match="non-decreasing"):
        s.push(TagBlock(np.array([5, 1], np.int64), np.array([1, 1], np.int16)))
    with pytest.raises(TypeError, match="int64"):
        TagBlock(np.array([5, 1], np.int32), np.array([1, 1], np.int16))
    s2 = Slotter(p)
    s2.push(TagBlock(np.array([100], np.int64), np.array([1], np.int16)))
    with pytest.raises(QKDInputError, match="out of order"):
        s2.push(TagBlock(np.array([50], np.int64), np.array([1], np.int16)))
    with pytest.raises(QKDInputError, match="sync_divider"):
        make_params(divider=0)


@pytest.mark.parametrize("seed", range(6))
def test_assign_kernel_finds_the_anchor_of_the_binary_search_in_any_tag_order(seed):
    """The galloping search from the previous answer gives exactly the anchor (and so the slot) of a
    binary search over all anchors, whether the detections come in time order, nearly so (two
    detectors' delays) or shuffled, including times before the first anchor, on an anchor and after
    the last."""
    from labqfl.qkd.slotting import _assign_kernel

    rng = np.random.default_rng(seed)
    anchor_t = np.cumsum(rng.integers(1, 5000, 400)).astype(np.int64)
    anchor_k = np.arange(anchor_t.size, dtype=np.int64) * 3
    per = rng.uniform(900.0, 1100.0, anchor_t.size)
    t = rng.integers(-3000, int(anchor_t[-1]) + 9000, 6000).astype(np.int64)
    t[:50] = anchor_t[rng.integers(0, anchor_t.size, 50)]
    orders = [np.sort(t), np.sort(t) + rng.integers(-700, 700, t.size), rng.permutation(t)]
    for det_t in orders:
        det_id = rng.integers(0, 2, det_t.size).astype(np.int64)
        args = (anchor_k, per, np.int64(3), np.array([0.0, 150.0]), np.array([500.0, 500.0]), np.int64(0),
                np.int64(0), np.int64(-1))
        got = _assign_kernel(det_t, det_id, anchor_t, *args)
        a = np.maximum(np.searchsorted(anchor_t, det_t, side="right") - 1, 0)
        rel = (det_t - anchor_t[a]).astype(np.float64) - np.array([0.0, 150.0])[det_id]
        r = np.floor(rel / per[a] + 0.5)
        keep = np.abs(rel - r * per[a]) <= 500.0
        s = anchor_k[a] * 3 + r.astype(np.int64)
        keep &= s >= 0
        np.testing.assert_array_equal(got[0], s[keep])
        np.testing.assert_array_equal(got[1], (1 << det_id[keep]).astype(np.uint8))


def test_split_tags_equals_the_channel_masks():
    """One pass over a block gives the sync, marker and detector tags (less their delays) and the
    count of other tags that the per-channel masks gave, a channel that is two roles counting for both;
    a step back in time is reported."""
    from labqfl.qkd.slotting import _split_tags

    rng = np.random.default_rng(4)
    ts = np.cumsum(rng.integers(0, 50, 5000)).astype(np.int64)
    for sync, marker, d0, d1 in ((1, 4, 2, 3), (1, 1, 2, 3), (2, 4, 2, 3), (1, 4, 3, 3)):
        ch = rng.integers(-1, 6, ts.size).astype(np.int16)
        for use_markers in (False, True):
            sy, mk, dt, di, other, back = _split_tags(ts, ch, np.int64(sync), np.int64(marker), use_markers,
                                                      np.int64(d0), np.int64(d1), np.int64(7), np.int64(9),
                                                      np.int64(11), np.int64(13))
            is_m = (ch == marker) if use_markers else np.zeros(ch.shape, bool)
            is_det = (ch == d0) | (ch == d1)
            np.testing.assert_array_equal(sy, ts[ch == sync] - 7)
            np.testing.assert_array_equal(mk, ts[is_m] - 9)
            ids = (ch == d1)[is_det].astype(np.int64)
            np.testing.assert_array_equal(di, ids)
            np.testing.assert_array_equal(dt, ts[is_det] - np.where(ids == 1, 13, 11))
            assert other == int(np.count_nonzero(~((ch == sync) | is_m | is_det))) and not back
    assert _split_tags(np.array([5, 4], np.int64), np.array([1, 1], np.int16), np.int64(1), np.int64(0), False,
                       np.int64(2), np.int64(3), np.int64(0), np.int64(0), np.int64(0), np.int64(0))[5]


@pytest.mark.parametrize("seed", range(4))
def test_announcements_by_pair_equal_the_schedules_pair_index(seed):
    """Each pair's announcements are exactly the events whose slot :meth:`PairSchedule.pair_index`
    gives that pair, in their given order: ascending slots (a frame looked up once), unsorted ones and
    slots far apart; outcomes travel with their slots."""
    cfg = load_station_config()
    sched = PairSchedule.from_config(cfg)
    rng = np.random.default_rng(seed)
    asc = np.unique(rng.integers(0, 40 * sched.slots_per_frame * sched.cycle_frames, 20_000)).astype(np.int64)
    for slots in (asc, rng.permutation(asc), rng.integers(0, 1 << 50, 300).astype(np.int64), asc[:0]):
        ev = SlotEvents(slots, rng.integers(1, 4, slots.size).astype(np.uint8))
        ann = announcements_by_pair(ev, sched)
        pidx = sched.pair_index(slots)
        assert list(ann) == list(sched.names)
        for i, name in enumerate(sched.names):
            np.testing.assert_array_equal(ann[name].slots, slots[pidx == i])
            np.testing.assert_array_equal(ann[name].outcomes, ev.outcomes[pidx == i])
