"""A lost first sync tag without frame markers (review s34): slot 0 was the first sync tag seen, so losing it
shifted every slot by the sync divider D and every key block aborted at an error rate near 1/2. With the
station's ``time_tagger.time_zero_is_pulse_zero`` (the tagger's time 0 is the laser's pulse 0) the first
anchor is sync ``round(t/(D·T))``: lost first syncs shift nothing, in the Slotter (any block cuts), the
reference and the fused slot-and-sift pass; frame markers are numbered from time 0 too; a tagger whose time 0
is not pulse 0 is one error naming the setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from qkdpp_helpers import SYNC, make_params, split_blocks, synth_stream
from test_slotsift import SETUPS, assert_same, dense_logs, two_stage
from test_sync_markers import marker_stream, mparams

from labqfl.config import load_station_config
from labqfl.contracts.schedule import PairSchedule
from labqfl.errors import QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.slotsift import slot_sift
from labqfl.qkd.slotting import SlotEvents, Slotter, SlottingParams, slot_tags_reference

N_SYNCS = 60


def _slot(p: SlottingParams, blocks: list[TagBlock]) -> SlotEvents:
    return SlotEvents.joined(list(Slotter(p).run(blocks)))


def _stream(divider: int, lost: list[int], seed: int = 1):  # type: ignore[no-untyped-def]
    """A clean stream from pulse 0 at tagger time 0 (drift 5e-5, jitter 80 ps, dark-free) with the sync tags of
    index ``lost`` removed; its true clicks."""
    p = make_params(divider=divider)
    ts, ch, slots, outcomes = synth_stream(np.random.default_rng(seed), p, divider * N_SYNCS,
                                           p_click=min(0.2, 200 / divider), drift=5e-5, jitter_ps=80.0)
    keep = np.ones(ts.size, dtype=bool)
    keep[np.flatnonzero(ch == SYNC)[lost]] = False
    return p, ts[keep], ch[keep], slots, outcomes


@pytest.mark.parametrize("divider", [64, 1024])
@pytest.mark.parametrize("lost", [[0], [0, 1, 2]])
def test_lost_first_syncs_shift_no_slot_with_time_zero_is_pulse_zero(divider, lost):  # type: ignore[no-untyped-def]
    p, ts, ch, slots, outcomes = _stream(divider, lost)
    on = dataclasses.replace(p, time_zero_is_pulse_zero=True)
    for seed in range(3):  # any block cuts
        got = _slot(on, split_blocks(np.random.default_rng(seed), ts, ch, 6))
        np.testing.assert_array_equal(got.slots, slots)  # every click at its true slot (before: true − D·len(lost))
        np.testing.assert_array_equal(got.outcomes, outcomes)
    ref = slot_tags_reference(ts, ch, on)
    np.testing.assert_array_equal(ref.slots, slots)
    # without the setting slot 0 is the first sync seen: the documented failure, every slot shifted
    off = _slot(p, [TagBlock(ts, ch)])
    shift = divider * len(lost)
    np.testing.assert_array_equal(off.slots, slots[slots >= shift] - shift)


@pytest.mark.parametrize("divider", [64, 1024])
def test_fused_pass_takes_the_same_anchors(divider):  # type: ignore[no-untyped-def]
    p, ts, ch, _, _ = _stream(divider, [0], seed=4)
    on = dataclasses.replace(p, time_zero_is_pulse_zero=True)
    sched = PairSchedule([("C1", "C2"), ("C2", "C3")], slots_per_frame=7)
    n = divider * N_SYNCS
    logs = dense_logs(np.random.default_rng(1), n + 100)
    anns, res = two_stage([TagBlock(ts, ch)], on, sched, logs, n, 2)
    fused = slot_sift(TagBlock(ts, ch), on, sched, logs, SETUPS, n, np.random.default_rng(2))
    assert_same(fused, anns, res)
    _, ts0, ch0, _, _ = _stream(divider, [], seed=4)  # the same stream with its first sync
    clean = slot_sift(TagBlock(ts0, ch0), on, sched, logs, SETUPS, n, np.random.default_rng(2))
    for pair in sched.names:
        np.testing.assert_array_equal(fused.sifted[pair].key_slots, clean.sifted[pair].key_slots)
        assert fused.sifted[pair].key_slots.size > 0


def test_a_stray_before_a_lost_first_sync_still_numbers_from_time_zero():
    """A stray sync (0.3 sync period before the lost first one's successor) starts the chain, the next true
    sync re-locks it: the re-locked first anchor also takes its index from its time."""
    p, ts, ch, slots, outcomes = _stream(64, [0], seed=5)
    on = dataclasses.replace(p, time_zero_is_pulse_zero=True)
    first = int(ts[ch == SYNC][0])
    t = np.concatenate([ts, [first - int(0.3 * 64 * p.period_ps)]])
    c = np.concatenate([ch, [SYNC]]).astype(np.int16)
    o = np.argsort(t, kind="stable")
    s = Slotter(on)
    got = SlotEvents.joined(list(s.run([TagBlock(t[o], c[o])])))
    np.testing.assert_array_equal(got.slots, slots)
    assert s.stats.sync_relocks == 1
    np.testing.assert_array_equal(slot_tags_reference(t[o], c[o], on).slots, slots)


@pytest.mark.parametrize("offset_syncs", [0.4, -3.0, 1e6 + 0.5])
def test_a_tagger_whose_time_0_is_not_pulse_0_is_one_error(offset_syncs):  # type: ignore[no-untyped-def]
    p, ts, ch, _, _ = _stream(64, [])
    on = dataclasses.replace(p, time_zero_is_pulse_zero=True)
    moved = ts + np.int64(round(offset_syncs * 64 * p.period_ps))
    msg = "time_tagger.time_zero_is_pulse_zero is set, but the first sync tag"
    with pytest.raises(QKDInputError, match=msg):
        _slot(on, split_blocks(np.random.default_rng(1), moved, ch, 4))
    with pytest.raises(QKDInputError, match=msg):
        slot_sift(TagBlock(moved, ch), on, PairSchedule([("C1", "C2")], slots_per_frame=7),
                  dense_logs(np.random.default_rng(1), 64 * N_SYNCS), SETUPS, 64 * N_SYNCS)
    # without the setting the same stream slots from its first sync (the tagger's offset does not matter)
    np.testing.assert_array_equal(_slot(p, [TagBlock(moved, ch)]).slots, _slot(p, [TagBlock(ts, ch)]).slots)


def test_markers_numbered_from_time_zero_keep_frames_when_frame_0_marker_and_syncs_are_lost():
    """With the syncs thinned by the conditional filter (slot0_from_sync False) a lost frame-0 marker used to
    renumber every frame (documented limit); with time_zero_is_pulse_zero frame 0 is at tagger time 0."""
    F = 4096
    p = mparams(frame_slots=F, slot0_from_sync=False)
    ts, ch, slots, outcomes = marker_stream(np.random.default_rng(3), p, 6, t0=0, missing=(0,), dark_before=0)
    ts, ch = ts[ch != SYNC], ch[ch != SYNC]  # the filter passed no sync here
    on = dataclasses.replace(p, time_zero_is_pulse_zero=True)
    s = Slotter(on)
    got = SlotEvents.joined(list(s.run(split_blocks(np.random.default_rng(2), ts, ch, 5))))
    truth = dict(zip(slots.tolist(), outcomes.tolist(), strict=True))
    assert got.slots.size > 0 and got.slots.min() >= F
    assert all(truth.get(a) == b for a, b in zip(got.slots.tolist(), got.outcomes.tolist(), strict=True))
    assert s.stats.missing_markers >= 1
    sched = PairSchedule([("C1", "C2"), ("C1", "C3")], slots_per_frame=F // 4)
    logs = dense_logs(np.random.default_rng(4), 7 * F)
    anns, res = two_stage([TagBlock(ts, ch)], on, sched, logs, 6 * F, 5)
    assert_same(slot_sift(TagBlock(ts, ch), on, sched, logs, SETUPS, 6 * F, np.random.default_rng(5)), anns, res)
    off = SlotEvents.joined(list(Slotter(p).run([TagBlock(ts, ch)])))
    assert off.slots.min() < F  # before: frame 1's marker was frame 0


def test_markers_off_the_grid_of_time_zero_are_one_error():
    F = 4096
    p = mparams(frame_slots=F, time_zero_is_pulse_zero=True)
    ts, ch, _, _ = marker_stream(np.random.default_rng(3), p, 20, t0=int(0.5 * F * 10_000), dark_before=0)
    with pytest.raises(QKDInputError, match="time_zero_is_pulse_zero is set, but the first 16 frame markers"):
        Slotter(p).push(TagBlock(ts, ch))


def test_station_setting_reaches_the_slotter():
    cfg = load_station_config()
    assert cfg.time_tagger.time_zero_is_pulse_zero  # the embedded simulated station: its tagger starts at pulse 0
    assert SlottingParams.from_config(cfg).time_zero_is_pulse_zero
    cfg.time_tagger.time_zero_is_pulse_zero = False
    assert not SlottingParams.from_config(cfg).time_zero_is_pulse_zero
    # the emulated-hardware example stands for a lab's file (tagger started before the clock): not set
    ex = Path(__file__).resolve().parents[3] / "examples" / "station_emulated_hardware.toml"
    assert not load_station_config(ex).time_tagger.time_zero_is_pulse_zero


def _first_sync_lost_seed(cfg, n: int = 40) -> int:  # type: ignore[no-untyped-def]
    """The first simulation seed from 12345 on whose acquisition 0 loses its first sync tag (a few syncs each)."""
    from labqfl.sim_backends import SagnacTestbed

    D, rep = cfg.time_tagger.sync_divider, cfg.laser.rep_rate_hz
    for seed in range(12345, 12345 + n):
        cfg.simulation.seed = seed
        blocks = list(SagnacTestbed(cfg).stream(4 * D / rep))
        sync = np.concatenate([b.timestamps[b.channels == cfg.time_tagger.sync_channel] for b in blocks])
        if sync.size and sync[0] >= D * 1e12 / rep:
            return seed
    raise AssertionError(f"no seed of {n} lost the first sync at sync_drop_prob {cfg.simulation.faults.sync_drop_prob}")


def test_embedded_station_with_sync_drops_and_a_lost_first_sync_gives_key():
    """End to end on the embedded station (the pipeline tests' small one-pair cut of it, 0.1 s): 30 % of the
    sync tags lost, the first one among them; slotting numbers from the simulated tagger's time 0 and the
    block gives key. The same data with the setting off: every slot shifted by D, the block aborts at an
    error rate near 1/2 and the reason names the setting."""
    from labqfl.sim_backends import SagnacTestbed
    from qkdpp_helpers import small_station

    from labqfl.qkd.estimation import SecurityParameters
    from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream

    cfg = small_station()
    assert cfg.time_tagger.time_zero_is_pulse_zero and not cfg.time_tagger.marker_inputs()
    cfg.simulation.faults.sync_drop_prob = 0.3
    cfg.simulation.seed = _first_sync_lost_seed(cfg)
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(0.1))
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    settings = DistillSettings(block_bits=1_000_000, params=SecurityParameters(eps_sec=1e-4))
    res, d = distill_stream(cfg, blocks, logs, MemorySink(), settings)
    r = res["C1-C2"]
    assert d.slotter.stats.dropped_syncs > 0.25 * d.slotter.stats.sync_tags
    assert r.final_key_bits > 0 and r.aborted_blocks == 0, [b.abort_reason for b in r.blocks]
    assert max(b.qber_key for b in r.blocks) < 0.05
    off = cfg.model_copy(deep=True)
    off.time_tagger.time_zero_is_pulse_zero = False
    res_off, _ = distill_stream(off, blocks, logs, MemorySink(), settings)
    bad = res_off["C1-C2"]
    assert bad.final_key_bits == 0 and bad.aborted_blocks >= 1
    reason = bad.blocks[0].abort_reason
    assert abs(bad.blocks[0].qber_key - 0.5) < 0.03 and "time_tagger.time_zero_is_pulse_zero" in reason, reason


def test_client_markers_numbered_from_time_zero_without_syncs():
    """One marker input per client (PairSlotter), the syncs filtered out and frame 0's marker lost at every
    client: with time_zero_is_pulse_zero every client's chain still starts at frame 1 (before: the earliest
    marker was frame 0, every frame renumbered)."""
    from test_client_markers import PAIRS, cparams, expected
    from test_client_markers import stream as client_stream

    from labqfl.qkd.slotting import PairSlotter, make_slotter

    F = cparams().frame_slots
    sched = PairSchedule(PAIRS, slots_per_frame=F)
    lost = {c: {0} for c in ("C1", "C2", "C3")}
    ts, ch, slots, outc = client_stream(np.random.default_rng(8), 6, lost, t0=0)
    ts, ch = ts[ch != SYNC], ch[ch != SYNC]
    for flag, want_first in ((True, F), (False, 0)):
        p = dataclasses.replace(cparams(), slot0_from_sync=False, time_zero_is_pulse_zero=flag)
        s = make_slotter(p, sched)
        assert isinstance(s, PairSlotter)
        got = SlotEvents.joined(list(s.run(split_blocks(np.random.default_rng(3), ts, ch, 4))))
        assert got.slots.min() // F * F == want_first
        if flag:
            want_s, want_o = expected(slots, outc, sched, lost)
            keep = want_s < s.final_slots
            np.testing.assert_array_equal(got.slots, want_s[keep])
            np.testing.assert_array_equal(got.outcomes, want_o[keep])
