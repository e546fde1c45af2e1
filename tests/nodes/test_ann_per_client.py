"""The detection node announces each tag block to each client in one ``ann/chunks`` message
carrying all of that client's pairs (:func:`labqfl.nodes.detector.chunks_message`); the client
splits it (:func:`labqfl.nodes.client.split_chunks`) into exactly the per-pair chunks one
``ann/chunk`` per pair carried before, so every pair's transcript entries, sifting and keys are
unchanged. Bad messages are refused whole, with one error naming what did not add up; a detector
that tells the two clients of a pair different things still gets the block refused."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import Announcements
from labqfl.nodes.client import _Announced, _Chunk, _JPair, _JServed, split_chunks
from labqfl.nodes.detector import DetectorNode, chunks_message
from labqfl.qkd import twoparty
from labqfl.qkd.messaging import Message, MessageError, decode_message, encode_message
from labqfl.qkd.pipeline import DistillSettings, block_slots_for
from labqfl.qkd.slotting import SlottingParams, announcements_by_pair, make_slotter
from labqfl.qkd.twoparty import ProtocolSettings

DURATION = 0.05


class _Wire:
    """A client's ``ann`` session as the detector sees it: every request through the message codec."""

    def __init__(self) -> None:
        self.got: list[Message] = []

    def request(self, msg: Message) -> Message:
        self.got.append(decode_message(encode_message(msg)))
        return Message("ann/ok", {})


@pytest.fixture(scope="module")
def announced(short_loop_seeded_station):
    """0.05 s of the short-loop station in 10 ms tag blocks: per tag block the per-pair chunks (as
    the detector cut them before, one ``ann/chunk`` per pair and client) and what the detector node's
    ``_announce`` sends each client now."""
    cfg = short_loop_seeded_station
    tb = SagnacTestbed(cfg)
    schedule = PairSchedule.from_config(cfg)
    slotter = make_slotter(SlottingParams.from_config(cfg), schedule)
    det = object.__new__(DetectorNode)  # only what _announce uses: the schedule and the sending pool
    det.schedule = schedule
    det._pool = ThreadPoolExecutor(max_workers=len(cfg.client_names))
    wires = {c: _Wire() for c in cfg.client_names}
    blocks: list[dict[str, Any]] = []
    prev = 0
    for b in tb.stream(DURATION, 0.01):  # 10 ms tag blocks: several per acquisition
        events = slotter.push(b)
        hi = slotter.final_slots
        if hi > prev:
            ref = [_Chunk(name, prev, hi, int(slotter.dropped_slots_of_pair(schedule, name, prev, hi)), ann)
                   for name, ann in announcements_by_pair(events, schedule).items()]
            before = {c: len(w.got) for c, w in wires.items()}
            det._announce(wires, slotter, events, prev, hi)
            blocks.append({"ref": ref, "sent": {c: w.got[before[c]:] for c, w in wires.items()}})
            prev = hi
    det._pool.shutdown()
    return cfg, schedule, tb.client_logs(), blocks


def _same(a: _Chunk, b: _Chunk) -> bool:
    return (a.pair, a.lo, a.hi, a.dropped) == (b.pair, b.lo, b.hi, b.dropped) \
        and a.ann.pair == b.ann.pair and a.ann.slots.dtype == b.ann.slots.dtype == np.int64 \
        and a.ann.outcomes.dtype == b.ann.outcomes.dtype == np.uint8 \
        and np.array_equal(a.ann.slots, b.ann.slots) and np.array_equal(a.ann.outcomes, b.ann.outcomes)


def test_one_message_per_client_and_tag_block_splits_into_the_per_pair_chunks(announced):
    cfg, schedule, _, blocks = announced
    assert len(blocks) >= 4
    for blk in blocks:
        for c in cfg.client_names:
            sent = blk["sent"][c]
            assert [m.kind for m in sent] == ["ann/chunks"]  # one round trip per client and tag block
            mine = [r for r in blk["ref"] if c in r.pair.split("-")]
            got = split_chunks(sent[0])
            assert len(mine) == 3 and len(got) == len(mine)
            assert all(_same(g, r) for g, r in zip(got, mine, strict=True)), c
    assert sum(r.ann.slots.size for b in blocks for r in b["ref"]) > 1000  # clicks were announced


def test_the_ann_service_hands_each_pair_its_chunk_in_order(announced):
    cfg, _, _, blocks = announced
    c = "C2"  # Ci of C2-C3 and C2-C4, Cj of C1-C2
    i_pairs = {p: SimpleNamespace(inbox=queue.Queue()) for p in ("C2-C3", "C2-C4")}
    fed: list[_Chunk] = []
    acq = SimpleNamespace(i_pairs=i_pairs, j_pairs={"C1-C2": SimpleNamespace(feed=SimpleNamespace(add=fed.append))})
    served = _Announced(SimpleNamespace(name=c), acq)
    for blk in blocks:
        assert served.handle(blk["sent"][c][0]).kind == "ann/ok"
    for p, ip in i_pairs.items():
        got = [ip.inbox.get_nowait() for _ in range(ip.inbox.qsize())]
        ref = [r for b in blocks for r in b["ref"] if r.pair == p]
        assert len(got) == len(ref) == len(blocks) and all(_same(g, r) for g, r in zip(got, ref, strict=True)), p
    ref = [r for b in blocks for r in b["ref"] if r.pair == "C1-C2"]
    assert len(fed) == len(blocks) and all(_same(g, r) for g, r in zip(fed, ref, strict=True))


def _msg(**over: Any) -> Message:
    parts = [("C1-C2", 0, Announcements("C1-C2", np.array([3, 9], np.int64), np.array([1, 2], np.uint8))),
             ("C1-C3", 2, Announcements("C1-C3", np.array([5], np.int64), np.array([3], np.uint8)))]
    m = chunks_message(0, 12, parts)
    return Message(m.kind, {**m.fields, **over})


@pytest.mark.parametrize(("over", "what"), [
    ({"offsets": np.array([0, 1, 2], np.int64)}, "offsets [0, 1, 2] do not split the 3 announced slots among 2 pairs"),
    ({"offsets": np.array([0, 3], np.int64)}, "offsets [0, 3] do not split the 3 announced slots among 2 pairs"),
    ({"offsets": np.array([0, 3, 2, 3], np.int64)}, "expected 3 non-decreasing offsets from 0 to 3"),
    ({"outcomes": np.array([1, 2], np.uint8)}, "3 announced slots but 2 outcomes"),
    ({"dropped": np.array([0], np.int64)}, "dropped counts [0] for 2 pairs"),
    ({"pairs": "C1-C2,C1-C2"}, "pair names 'C1-C2,C1-C2' are empty or repeated"),
    ({"lo": 13}, "slot range [13, 12)"),
])
def test_a_message_that_does_not_add_up_is_refused_naming_what(over, what):
    assert [c.pair for c in split_chunks(_msg())] == ["C1-C2", "C1-C3"]  # positive control
    with pytest.raises(MessageError) as e:
        split_chunks(_msg(**over))
    assert what in str(e.value) and str(e.value).startswith("ann/chunks: ")


def test_a_pair_the_client_is_not_in_is_refused_and_nothing_is_handed_on():
    inbox: queue.Queue[Any] = queue.Queue()
    acq = SimpleNamespace(i_pairs={"C1-C2": SimpleNamespace(inbox=inbox)}, j_pairs={})
    served = _Announced(SimpleNamespace(name="C1"), acq)
    with pytest.raises(MessageError, match=r"ann/chunks: client C1 is not in pair\(s\) C1-C3 \(its pairs: C1-C2\)"):
        served.handle(_msg())
    assert inbox.empty()  # the whole message refused, not its first pair


def test_a_detector_telling_the_two_clients_different_things_gets_the_block_refused(announced):
    """Cj's copy of C1-C2 comes out of its own per-client message with one outcome changed: when
    Ci confirms the announcements it received, Cj refuses the block (positive control: the true copy)."""
    cfg, schedule, logs, blocks = announced
    pair, ci, cj = "C1-C2", "C1", "C2"
    blk = next(b for b in blocks if next(r for r in b["ref"] if r.pair == pair).ann.slots.size)
    (mine,) = [r for r in split_chunks(blk["sent"][ci][0]) if r.pair == pair]  # what Ci received
    m = blk["sent"][cj][0]
    k = str(m.get("pairs")).split(",").index(pair)
    outcomes = m.get("outcomes").copy()
    outcomes[int(m.get("offsets")[k])] ^= 3  # D0 <-> D1 on the pair's first click, in Cj's message only
    lying = Message(m.kind, {**m.fields, "outcomes": outcomes})
    s = DistillSettings(block_bits=200_000)
    node = SimpleNamespace(name=cj, cfg=cfg, schedule=schedule, settings=s,
                           proto=ProtocolSettings(engine=s.engine, params=s.params, auth_lanes=s.auth_lanes,
                                                  qber_floor=s.qber_floor, qber_default=s.qber_default),
                           block_slots={pair: block_slots_for(cfg, (ci, cj), s.block_bits)})
    n_slots = schedule.slots_of_pair(pair, mine.hi) - schedule.slots_of_pair(pair, mine.lo)
    confirm = Message("ann/confirm", {"lo": mine.lo, "hi": mine.hi, "n": int(mine.ann.slots.size),
                                      "n_slots": int(n_slots), "digest": twoparty.announcement_digest(
                                          pair, twoparty.announcement_entry(mine.ann, mine.lo, mine.hi, n_slots))})
    replies = {}
    for what, msg in (("true", m), ("lying", lying)):
        jp = _JPair(node, SimpleNamespace(log=logs[cj]), pair, ci)
        end = jp.new_end()
        for c in split_chunks(msg):
            if c.pair == pair:
                jp.feed.add(c)
        jp.feed.end()
        replies[what] = _JServed(jp, end).handle(confirm)
    assert replies["true"].kind == "ann/ok"
    assert replies["lying"].kind == twoparty.REFUSED
    assert "differ between the two clients" in str(replies["lying"].get("reason"))
