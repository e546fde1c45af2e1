"""The Distiller with clients that streamed to pattern generators (labqfl.qkd.pipeline._PlayedGate): a
log that answers for played frames only (PlayedChoiceLog) makes the Distiller drop the announced slots
of every frame either client of a pair did not play, count them as dropped slots, and — while the
records are still filling, as in a live acquisition — hold back the slots whose frames have no
verdict yet instead of sifting them. The outcome does not depend on when the verdicts arrive.

Pure simulator (no markers, so slotting itself drops nothing): every slot the Distiller drops here is
one the gate dropped."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.contracts.schedule import PairSchedule
from labqfl.instruments.interfaces import PlayedFrames
from labqfl.modulation import PlayedChoiceLog
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink

ROOT = Path(__file__).resolve().parents[2]
DUR = 0.04  # s: 4e6 slots
F = 65_536  # slots per frame of the pattern generators
N_FRAMES = -(-int(DUR * 1e8) // F)
LOST = {"C1": {10, 11, 12}, "C2": {30}}  # C1 stalled three frames, C2 one
SETTINGS = DistillSettings(block_bits=20_000, params=SecurityParameters(eps_sec=1e-4))


def _small_station() -> Any:
    path = ROOT / "tests" / "qkd" / "pipeline" / "qkdpp_helpers.py"
    spec = importlib.util.spec_from_file_location("_qkdpp_helpers", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.small_station()


@pytest.fixture(scope="module")
def acquisition() -> tuple[Any, list[Any], dict[str, Any]]:
    cfg = _small_station()
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(DUR, 0.005))
    return cfg, blocks, {c: tb.client_log(c) for c in cfg.client_names}


def _records() -> dict[str, PlayedFrames]:
    return {c: PlayedFrames(F) for c in ("C1", "C2")}


def _played_logs(logs: dict[str, Any], records: dict[str, PlayedFrames]) -> dict[str, Any]:
    """C1's and C2's logs answer for their played frames only (the others do not stream)."""
    return {c: PlayedChoiceLog(lg, records[c]) if c in records else lg for c, lg in logs.items()}


def _mark(records: dict[str, PlayedFrames], upto: int) -> None:
    """Verdicts for every frame below ``upto`` not yet recorded (in frame order, as a streamer records)."""
    for c, rec in records.items():
        for f in range(len(rec), min(upto, N_FRAMES)):
            rec.mark(f, f not in LOST[c])


def _distil(cfg: Any, blocks: list[Any], logs: dict[str, Any], records: dict[str, PlayedFrames],
            live: bool) -> tuple[Distiller, MemorySink, list[int]]:
    """Distil with played-only logs. ``live``: a frame's verdict arrives one block after its slots were
    acquired (a generator reports a frame once it has played it); else every verdict is known first."""
    if not live:
        _mark(records, N_FRAMES)
    sink = MemorySink()
    d = Distiller(cfg, _played_logs(logs, records), sink, SETTINGS,
                  rng=np.random.default_rng(3))
    sifted_upto: list[int] = []
    block_slots = int(round(0.005 * 1e8))
    for k, blk in enumerate(blocks):
        if live:
            _mark(records, (k * block_slots) // F)  # frames wholly acquired before this block
        d.push(blk)
        sifted_upto.append(d.n_slots)
    _mark(records, N_FRAMES)  # the streams end: every frame has its verdict
    d.finish(int(DUR * 1e8))
    return d, sink, sifted_upto


@pytest.fixture(scope="module")
def played_only(acquisition: Any) -> tuple[Distiller, MemorySink, list[int]]:
    """The acquisition distilled with played-only logs, every verdict known before the first block (one
    distillation, read by the tests below)."""
    cfg, blocks, logs = acquisition
    return _distil(cfg, blocks, logs, _records(), live=False)


def _unplayed_pair_slots(cfg: Any) -> int:
    sched = PairSchedule.from_config(cfg)
    frames = sorted(LOST["C1"] | LOST["C2"])
    return sum(sched.slots_of_pair("C1-C2", (f + 1) * F) - sched.slots_of_pair("C1-C2", f * F) for f in frames)


def test_slots_of_frames_a_client_did_not_play_are_dropped_and_counted(acquisition: Any, played_only: Any) -> None:
    cfg, blocks, logs = acquisition
    d, sink, _ = played_only
    r = d.pairs["C1-C2"].result
    assert r.dropped_slots == _unplayed_pair_slots(cfg) > 0
    assert r.n_slots == PairSchedule.from_config(cfg).slots_of_pair("C1-C2", int(DUR * 1e8))  # N stays fixed
    assert r.final_key_bits > 0 and sink.keys["C1-C2"]
    for a, b in sink.keys["C1-C2"]:
        assert np.array_equal(a, b)
    # the same data with every frame played sifts more: the dropped frames' clicks were there
    full = {c: PlayedFrames(F) for c in ("C1", "C2")}
    for rec in full.values():
        for f in range(N_FRAMES):
            rec.mark(f, True)
    d_all = Distiller(cfg, _played_logs(logs, full), MemorySink(), SETTINGS,
                      rng=np.random.default_rng(3))
    for blk in blocks:
        d_all.push(blk)
    d_all.finish(int(DUR * 1e8))
    assert d_all.pairs["C1-C2"].result.dropped_slots == 0
    assert d_all.pairs["C1-C2"].result.sifted_bits > r.sifted_bits


def test_live_verdicts_hold_slots_back_and_give_the_same_result(acquisition: Any, played_only: Any) -> None:
    """Verdicts arriving one block late (live streaming) change nothing: the slots of frames without a
    verdict wait, and the result equals the one with every verdict known before the first block."""
    cfg, blocks, logs = acquisition
    d_ref, _, _ = played_only
    d_live, sink, sifted_upto = _distil(cfg, blocks, logs, _records(), live=True)
    assert sifted_upto[0] == 0  # no verdict yet: nothing sifted
    assert all(n % F == 0 for n in sifted_upto[:-1])  # sifted up to whole frames with verdicts only
    ref, live = d_ref.pairs["C1-C2"].result, d_live.pairs["C1-C2"].result
    def seen(r: Any) -> tuple[Any, ...]:  # all that depends on which slots were sifted (not Cascade's shuffles)
        return (r.sifted_bits, r.dropped_slots, r.n_slots, r.key_errors, len(r.blocks), r.test_clicks, r.test_errors_x2)

    assert seen(live) == seen(ref)
    assert live.final_key_bits > 0
    for a, b in sink.keys["C1-C2"]:
        assert np.array_equal(a, b)


def test_a_frame_without_a_verdict_at_the_end_is_dropped(acquisition: Any) -> None:
    """A stream cut off before its generator reported a frame: the frame counts as not played."""
    cfg, blocks, logs = acquisition
    records = _records()
    d = Distiller(cfg, _played_logs(logs, records), MemorySink(), SETTINGS,
                  rng=np.random.default_rng(3))
    for c, rec in records.items():
        for f in range(N_FRAMES - 2):  # the last two frames never got a verdict
            rec.mark(f, f not in LOST[c])
    for blk in blocks:
        d.push(blk)
    res = d.finish(int(DUR * 1e8))["C1-C2"]
    sched = PairSchedule.from_config(cfg)
    tail = sched.slots_of_pair("C1-C2", int(DUR * 1e8)) - sched.slots_of_pair("C1-C2", (N_FRAMES - 2) * F)
    assert res.dropped_slots == _unplayed_pair_slots(cfg) + tail
