"""One frame-marker input per client (``time_tagger.marker_channels``, :class:`PairSlotter`): a frame
lost at one client drops only the pairs involving that client; the other pairs keep their slots,
every kept slot carries its true index, and the keys stay identical at both ends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qkdpp_helpers import D0, D1, SYNC, small_station, split_blocks

from labqfl.config import ConfigError, parse_station_config
from labqfl.contracts.schedule import PairSchedule
from labqfl.errors import QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.slotting import PairSlotter, SlotEvents, Slotter, SlottingParams, make_slotter

T = 10_000.0  # ps (100 MHz)
DELAYS = (3150, 3420)
F = 2048
PAIRS = [("C1", "C2"), ("C1", "C3"), ("C2", "C3")]
CHANNELS = {"C1": 5, "C2": 6, "C3": 7}
MARKER_DELAYS = {"C1": 900, "C2": 1_400, "C3": 2_100}


def cparams() -> SlottingParams:
    return SlottingParams(period_ps=T, sync_divider=64, sync_channel=SYNC, detector_channels=(D0, D1),
                          delays_ps=DELAYS, window_ps=(T, T), frame_slots=F,
                          client_markers=tuple((c, CHANNELS[c], MARKER_DELAYS[c]) for c in CHANNELS))


def stream(rng: np.random.Generator, n_frames: int, missing: dict[str, set[int]], *, drift: float = 0.0,
           t0: int = 987_654_321, p_click: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tags of ``n_frames`` frames from ``t0`` (slot ``s`` at ``t0 + s·T·(1 + drift)``): each client's marker
    on its own channel (with its own delay) at every frame start but its ``missing`` frames, syncs every 64
    slots, random clicks. Returns (timestamps, channels, true clicked slots, true outcomes)."""
    n = n_frames * F
    slots = np.arange(n, dtype=np.int64)

    def clock(s: np.ndarray) -> np.ndarray:
        return t0 + s.astype(np.float64) * T * (1.0 + drift)

    ts, ch = [], []
    for c, chan in CHANNELS.items():
        f = np.array([k for k in range(n_frames) if k not in missing.get(c, set())], dtype=np.int64)
        ts.append(np.round(clock(f * F)).astype(np.int64) + MARKER_DELAYS[c])
        ch.append(np.full(f.size, chan, np.int16))
    sync_s = slots[slots % 64 == 0]
    ts.append(np.round(clock(sync_s)).astype(np.int64))
    ch.append(np.full(sync_s.size, SYNC, np.int16))
    clicked = np.flatnonzero(rng.random(n) < p_click)
    out = rng.integers(1, 4, clicked.size).astype(np.uint8)
    for d, chan in ((0, D0), (1, D1)):
        sel = (out & (1 << d)) != 0
        t = clock(clicked[sel]) + DELAYS[d] + rng.normal(0.0, 50.0, int(sel.sum()))
        ts.append(np.round(t).astype(np.int64))
        ch.append(np.full(int(sel.sum()), chan, np.int16))
    t_all, c_all = np.concatenate(ts), np.concatenate(ch)
    order = np.argsort(t_all, kind="stable")
    return t_all[order], c_all[order], slots[clicked], out


def run(blocks: list[TagBlock], sched: PairSchedule) -> tuple[SlotEvents, PairSlotter]:
    s = make_slotter(cparams(), sched)
    assert isinstance(s, PairSlotter)
    outs = list(s.run(blocks))
    return SlotEvents(np.concatenate([o.slots for o in outs]), np.concatenate([o.outcomes for o in outs])), s


def expected(slots: np.ndarray, outc: np.ndarray, sched: PairSchedule,
             lost: dict[str, set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """True clicks without those in frames lost for one of the two clients of the pair scheduled there."""
    pair = sched.pair_index(slots)
    frame = slots // F
    drop = np.zeros(slots.shape, dtype=bool)
    for c, frames in lost.items():
        involved = np.array([c in pr for pr in sched.pairs])
        drop |= involved[pair] & np.isin(frame, sorted(frames))
    return slots[~drop], outc[~drop]


def test_a_frame_lost_at_c1_drops_only_c1s_pairs() -> None:
    """C1 loses frames 0 (its first: the others' markers still place its frame 1), 3, 4 and 7; C3 loses
    frame 11. Pairs C1-C2 and C1-C3 lose their slots in C1's lost frames, C2-C3 keeps every one of its
    frames but C3's; each kept click has its true slot index and outcome."""
    rng = np.random.default_rng(11)
    sched = PairSchedule(PAIRS, slots_per_frame=F)
    lost = {"C1": {0, 3, 4, 7}, "C3": {11}}
    ts, ch, slots, outc = stream(rng, 14, lost, drift=40e-6)
    got, s = run(split_blocks(rng, ts, ch, 5), sched)
    # C1 lost frame 3 and 4: the frame before its gap (2) is dropped with them (its closing marker missing)
    dropped = {"C1": {0, 2, 3, 4, 6, 7}, "C3": {10, 11}}
    want_s, want_o = expected(slots, outc, sched, dropped)
    np.testing.assert_array_equal(got.slots, want_s)
    np.testing.assert_array_equal(got.outcomes, want_o)
    # frame f belongs to pair f mod 3: C2-C3 owns frames 2, 5, 8, 11, …: only C3's frames 10/11 touch it
    n_last = s.final_slots
    assert s.dropped_slots_of_pair(sched, "C2-C3", 0, n_last) == F  # frame 11 (frame 10 is C1-C2's)
    assert s.dropped_slots_of_pair(sched, "C1-C2", 0, n_last) == 3 * F  # frames 0, 3, 6
    assert s.dropped_slots_of_pair(sched, "C1-C3", 0, n_last) == 3 * F  # frames 4, 7, 10
    assert s.stats.dropped_slots_sync == s.dropped.count(0, n_last) == 7 * F
    assert s.stats.missing_markers == 5 and s.stats.marker_tags == 3 * 14 - 5
    assert s.stats.clicked_slots == got.slots.size


@pytest.mark.parametrize("lost", [(0,), (0, 1, 2)])
def test_first_frames_lost_at_every_client_are_dropped_not_renumbered(lost: tuple[int, ...]) -> None:
    """Frame 0's (or frames 0-2's) marker is lost on every client's input: no marker anywhere places
    them, but slot 0 (the first sync tag) does. Those frames are dropped and counted for every pair,
    every later slot is numbered as with all markers present (bit-identical); C3 also lost frame 4."""
    rng = np.random.default_rng(13)
    sched = PairSchedule(PAIRS, slots_per_frame=F)
    ts, ch, slots, outc = stream(rng, 9, {"C3": {4}}, drift=-25e-6, p_click=0.05)
    full, _ = run(split_blocks(np.random.default_rng(2), ts, ch, 3), sched)
    drop = np.zeros(ts.size, dtype=bool)
    for chan in CHANNELS.values():
        drop[np.flatnonzero(ch == chan)[list(lost)]] = True
    got, s = run(split_blocks(rng, ts[~drop], ch[~drop], 4), sched)
    n = len(lost)
    want_s, want_o = expected(slots, outc, sched, {c: set(lost) for c in CHANNELS} | {"C3": {*lost, 3, 4}})
    np.testing.assert_array_equal(got.slots, want_s)
    np.testing.assert_array_equal(got.outcomes, want_o)
    later = full.slots >= n * F
    np.testing.assert_array_equal(got.slots, full.slots[later])
    np.testing.assert_array_equal(got.outcomes, full.outcomes[later])
    assert s.stats.missing_markers == 3 * n + 1 and s.stats.spurious_markers == 0
    # frames 0..n-1 for every pair, plus frame 4 (C1-C3's): C3 lost it. Frame 3, whose closing marker
    # C3 lost, is C1-C2's: kept for it
    assert s.stats.dropped_slots_sync == s.dropped.count(0, s.final_slots) == (n + 1) * F
    for name in sched.names:
        assert s.dropped_slots_of_pair(sched, name, 0, n * F) == sum(1 for f in range(n) if f % 3 == sched.names.index(name)) * F


def test_the_single_marker_input_drops_that_frame_for_every_pair() -> None:
    """The AND of all clients' markers on one input (``marker_channel``): C1's lost frame is gone for all
    pairs, also C2-C3's (what per-client markers avoid)."""
    rng = np.random.default_rng(12)
    sched = PairSchedule(PAIRS, slots_per_frame=F)
    ts, ch, slots, outc = stream(rng, 9, {"C1": {5}})
    # the AND: keep channel 5 (C1's) as the one marker input, at C1's marker times
    keep = (ch != 6) & (ch != 7)
    p = SlottingParams(period_ps=T, sync_divider=64, sync_channel=SYNC, detector_channels=(D0, D1), delays_ps=DELAYS,
                       window_ps=(T, T), frame_slots=F, marker_channel=5, marker_delay_ps=MARKER_DELAYS["C1"])
    one = Slotter(p)
    outs = list(one.run([TagBlock(ts[keep], ch[keep])]))
    assert one.dropped_slots_of_pair(sched, "C2-C3", 0, one.final_slots) == F  # frame 5 is C2-C3's
    got, s = run([TagBlock(ts, ch)], sched)
    assert s.dropped_slots_of_pair(sched, "C2-C3", 0, s.final_slots) == 0
    assert sum(o.slots.size for o in outs) < got.slots.size


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), drift=st.floats(-9e-5, 9e-5), n_blocks=st.integers(1, 6),
       lost1=st.sets(st.integers(0, 8), max_size=3), lost2=st.sets(st.integers(1, 8), max_size=2))
def test_per_client_markers_never_give_a_wrong_slot_and_do_not_depend_on_block_cuts(seed, drift, n_blocks, lost1,
                                                                                      lost2):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    sched = PairSchedule(PAIRS, slots_per_frame=F)
    ts, ch, slots, outc = stream(rng, 10, {"C1": lost1, "C2": lost2}, drift=drift, p_click=0.05)
    whole, s1 = run([TagBlock(ts, ch)], sched)
    cut, s2 = run(split_blocks(rng, ts, ch, n_blocks), sched)
    np.testing.assert_array_equal(cut.slots, whole.slots)
    np.testing.assert_array_equal(cut.outcomes, whole.outcomes)
    assert vars(s1.stats) == vars(s2.stats)
    truth = dict(zip(slots.tolist(), outc.tolist(), strict=True))
    for sl, o in zip(cut.slots.tolist(), cut.outcomes.tolist(), strict=True):
        assert truth.get(sl) == o
    # a frame C3 marked and that is scheduled for C2-C3 is dropped only if C2 lost (or could not close) it
    pair = sched.pair_index(slots)
    c23 = (pair == 2) & (slots < s2.final_slots)
    frames_c2 = {f for f in range(10) if f in lost2 or f + 1 in lost2}
    kept = c23 & ~np.isin(slots // F, sorted(frames_c2))
    assert np.all(np.isin(slots[kept], cut.slots))
    # every true click before the end is announced or in a slot dropped for its pair
    missed = ~np.isin(slots, cut.slots) & (slots < s2.final_slots)
    assert np.all(s2.dropped.contains(slots[missed]))


def test_station_marker_channels_and_bad_values() -> None:
    cfg = small_station()
    d = cfg.model_dump()
    d["time_tagger"].update(marker_channels={"C1": 5, "C2": 6, "C3": 7, "C4": 8}, frame_slots=F,
                            cable_delays_ps={**d["time_tagger"]["cable_delays_ps"], "marker.C2": 1_400.0})
    good = parse_station_config(d, "t")
    p = SlottingParams.from_config(good)
    assert p.marker_channel is None and p.frame_slots == F
    assert p.client_markers == (("C1", 5, 0), ("C2", 6, 1_400), ("C3", 7, 0), ("C4", 8, 0))
    assert good.time_tagger.marker_inputs()["marker.C3"] == 7
    with pytest.raises(ConfigError, match="one channel per client"):
        parse_station_config({**d, "time_tagger": {**d["time_tagger"], "marker_channels": {"C1": 5, "C2": 6}}}, "t")
    with pytest.raises(ConfigError, match="not both"):
        parse_station_config({**d, "time_tagger": {**d["time_tagger"], "marker_channel": 9}}, "t")
    with pytest.raises(ConfigError, match="distinct"):
        parse_station_config({**d, "time_tagger": {**d["time_tagger"],
                                                   "marker_channels": {"C1": 2, "C2": 6, "C3": 7, "C4": 8}}}, "t")
    with pytest.raises(QKDInputError, match="PairSlotter"):
        Slotter(cparams())
    with pytest.raises(QKDInputError, match="no frame-marker channel for client"):
        PairSlotter(cparams(), PairSchedule([("C1", "C4")], slots_per_frame=F))


def test_distilled_pairs_keep_their_frames_when_another_client_loses_one() -> None:
    """The simulated station with one marker input per client, C1's markers removed for 3 frames: the
    Distiller drops those frames for C1-C2 and C1-C3 only (C2-C3 drops nothing), every pair's keys are
    identical at both ends."""
    from labqfl.sim_backends import SagnacTestbed

    from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream

    cfg = small_station()
    cfg.schedule.pairs = PAIRS
    cfg.time_tagger.marker_channels = {"C1": 5, "C2": 6, "C3": 7, "C4": 8}
    cfg.time_tagger.frame_slots = cfg.schedule.slots_per_frame = 16_384
    cfg.time_tagger.cable_delays_ps["marker.C2"] = 1_200.0
    cfg = parse_station_config(cfg.model_dump(), "client-markers")
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(0.15, 0.01))  # 1.5·10^7 slots, 916 frames: ~5·10^6 slots per pair
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    ts = np.concatenate([b.timestamps for b in blocks])
    ch = np.concatenate([b.channels for b in blocks])
    for c, chan in (("C1", 5), ("C2", 6), ("C3", 7)):
        assert np.count_nonzero(ch == chan) == 916, c  # every client marks every frame
    lost = (30, 31, 32)  # C1-C2, C1-C3, C2-C3's frames (frame f → pair f mod 3)
    m1 = np.flatnonzero(ch == 5)
    keep = np.ones(ts.size, dtype=bool)
    keep[m1[list(lost)]] = False
    cut = np.linspace(0, int(keep.sum()), 16).astype(int)
    ts, ch = ts[keep], ch[keep]
    blocks = [TagBlock(ts[a:b], ch[a:b]) for a, b in zip(cut[:-1], cut[1:], strict=True)]
    sink = MemorySink()
    res, d = distill_stream(cfg, blocks, logs, sink, DistillSettings(block_bits=200_000),
                            total_slots=15_000_000)
    F16 = 16_384
    # C1 lost frames 30-32: frame 29 loses its closing marker too; C2-C3's frame 32 stays
    assert res["C2-C3"].dropped_slots == 0
    assert res["C1-C2"].dropped_slots == 1 * F16  # frame 30 (29 is C2-C3's, kept: C1 not in it)
    assert res["C1-C3"].dropped_slots == 1 * F16  # frame 31
    assert d.slotter.stats.missing_markers == 3
    for name, r in res.items():
        assert r.final_key_bits > 0, name
        for ka, kb in sink.keys[name]:
            np.testing.assert_array_equal(ka, kb)
