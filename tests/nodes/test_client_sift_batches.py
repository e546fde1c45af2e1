"""A client node sifts the detector's chunks in batches (``DistillSettings.sift_batch_clicks``/
``_slots``, :class:`labqfl.nodes.client._SiftBatch`) and Cj hands its copy over as the same one
chunk (:meth:`labqfl.nodes.client._Feed.until`): the same block ends, sifted key bits at both
ends and counts as sifting every chunk on its own, and every block accepted at both ends (the
transcripts, with the announcements as local entries, agree). Ci's driver and Cj's responder run
in this process over an encoding, authenticating channel; the detector's chunks come from a
slotter fed with the simulator's tags, as the detector node cuts them."""

from __future__ import annotations

import hashlib
import itertools
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.contracts.schedule import PairSchedule
from labqfl.nodes import client
from labqfl.nodes.client import _Chunk, _IPair, _JPair, _JServed
from labqfl.qkd import twoparty
from labqfl.qkd.messaging import LocalChannel
from labqfl.qkd.pipeline import DistillSettings, _auth_bits_per_block, block_slots_for
from labqfl.qkd.slotting import SlottingParams, announcements_by_pair, make_slotter
from labqfl.qkd.twoparty import ProtocolSettings

DURATION = 0.1
_BLOCK_OPEN = twoparty.PairEndJ._block_open
_SIFT_CHUNK = twoparty.PairEndI.sift_chunk


@pytest.fixture(scope="module")
def acquisition(short_loop_seeded_station):
    """0.1 s of the default station on a short loop (seeded clients, pinned epoch), 10 ms tag
    blocks, slotted and split by pair as the detector node announces them."""
    cfg = short_loop_seeded_station
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(DURATION, 0.01))  # 10 ms tag blocks: several per pair batch
    schedule = PairSchedule.from_config(cfg)
    slotter = make_slotter(SlottingParams.from_config(cfg), schedule)
    chunks: list[_Chunk] = []
    prev = 0

    def announce(events: Any, lo: int, hi: int) -> None:
        for name, ann in announcements_by_pair(events, schedule).items():
            chunks.append(_Chunk(name, lo, hi, int(slotter.dropped_slots_of_pair(schedule, name, lo, hi)), ann))

    for b in blocks:
        events = slotter.push(b)
        if slotter.final_slots > prev:
            announce(events, prev, slotter.final_slots)
            prev = slotter.final_slots
    events = slotter.finish()
    final = max(int(round(DURATION * cfg.laser.rep_rate_hz)), slotter.last_emitted + 1)
    announce(events, prev, final)
    return cfg, schedule, tb.client_logs(), chunks, final


def _node(cfg: Any, schedule: PairSchedule, name: str, pair: str, settings: DistillSettings) -> Any:
    ci, cj = pair.split("-")
    s = settings
    return SimpleNamespace(
        name=name, cfg=cfg, schedule=schedule, settings=s, stopping=threading.Event(),
        proto=ProtocolSettings(engine=s.engine, params=s.params, auth_lanes=s.auth_lanes, qber_floor=s.qber_floor,
                               qber_default=s.qber_default),
        block_slots={pair: block_slots_for(cfg, (ci, cj), s.block_bits)}, streams_in=lambda _p: False)


def _run_pair(acquisition: Any, pair: str, monkeypatch: pytest.MonkeyPatch, **batch: int) -> dict[str, Any]:
    """Ci's driver and Cj's feed and responder of ``pair`` over the whole acquisition: per block
    (slot range, Ci's announcements, digests of Ci's and Cj's sifted key bits, Ci's counts) as the
    block starts, whether both ends accepted it with the same final key, and the sifting exchanges."""
    cfg, schedule, logs, chunks, final = acquisition
    ci, cj = pair.split("-")
    settings = DistillSettings(block_bits=20_000, min_final_block_bits=2000, **batch)
    seeds = itertools.count(1000)  # Cj's squashing generator: the same in both runs
    monkeypatch.setattr(client.secrets, "randbits", lambda k: next(seeds))
    ip = _IPair(_node(cfg, schedule, ci, pair, settings), SimpleNamespace(log=logs[ci], acq="test", peers={}), pair, cj)
    jp = _JPair(_node(cfg, schedule, cj, pair, settings), SimpleNamespace(log=logs[cj]), pair, ci)
    end_j = jp.new_end()
    ip.ch = LocalChannel(_JServed(jp, end_j), authenticator=ip.end.tx, peer_authenticator=end_j.tx)
    seen: dict[str, list[Any]] = {"i": [], "j": [], "outcomes": []}
    sifted = [0]

    def block_open(self: Any, b: Any, req: Any) -> Any:
        seen["j"].append((b.n_ann, b.n_slots, hashlib.sha256(twoparty._joined(b.bits).tobytes()).hexdigest(),
                          b.counts.clicks.tobytes(), b.counts.errors_x2.tobytes(), b.counts.double_clicks.tobytes()))
        return _BLOCK_OPEN(self, b, req)

    def sift_chunk(self: Any, *a: Any) -> Any:
        sifted[0] += 1
        return _SIFT_CHUNK(self, *a)

    monkeypatch.setitem(twoparty._J_HANDLERS, "block/open", block_open)
    monkeypatch.setattr(twoparty.PairEndI, "sift_chunk", sift_chunk)

    def block(end: int) -> None:  # Ci's _block without the key stores: the same pads at both ends
        start, ip.block_start = ip.block_start, end
        ip.block_index += 1
        b = ip.end._blk
        c = b.counts
        seen["i"].append((start, end, b.n_ann, hashlib.sha256(twoparty._joined(b.bits).tobytes()).hexdigest(),
                          c.n_slots, c.clicks.tobytes(), c.errors_x2.tobytes(), c.double_clicks.tobytes()))
        pads = np.random.default_rng(end).integers(0, 2, _auth_bits_per_block(settings.auth_lanes, first=True),
                                                   dtype=np.uint8)
        ip.supply.load(pads)
        jp.supply.load(pads)
        oi = ip.end.run_block(ip.ch, f"block-{start}", start, end)
        oj = end_j.outcomes.pop()
        same_key = oi.final is None and oj.final is None or (
            oi.final is not None and oj.final is not None and np.array_equal(oi.final, oj.final))
        seen["outcomes"].append((oi.accepted == oj.accepted, oi.verified and oj.verified, oi.ell == oj.ell, same_key,
                                 oi.reason, oj.reason))

    def drop(end: int) -> None:  # Ci's _drop: block/skip at Cj
        ip.result.dropped_bits += ip.end.n_bits
        ip.end.drop_block(ip.ch)
        jp.feed.discard(end)
        ip.block_index += 1
        ip.block_start = end

    monkeypatch.setattr(ip, "_block", block)
    monkeypatch.setattr(ip, "_drop", drop)
    for c in chunks:
        if c.pair == pair:
            jp.feed.add(c)  # the detector's copy to Cj first: Cj's feed waits for nothing
            ip._add(c)
    jp.feed.end()
    if ip.batch.chunks:
        ip._chunk(ip.batch.take())
    ip._final(final)
    r = ip.result
    seen["stream"] = (r.n_slots, r.sifted_bits, r.dropped_slots, r.dropped_bits, dict(r.test_clicks),
                      dict(r.test_errors_x2))
    seen["sifted_chunks"] = sifted[0]
    return seen


@pytest.mark.parametrize("pair", ["C1-C2", "C2-C4"])
def test_batched_sifting_at_a_client_node_gives_the_same_blocks_bits_and_counts(acquisition, monkeypatch, pair):
    every = _run_pair(acquisition, pair, monkeypatch, sift_batch_clicks=0, sift_batch_slots=0)
    batched = _run_pair(acquisition, pair, monkeypatch)  # the defaults: 60 000 clicks or 5e6 slots per pair
    assert len(every["i"]) >= 2  # several blocks of the pair
    for run in (every, batched):  # both ends reach the same outcome; their transcript tags agree
        assert all(all(o[:4]) for o in run["outcomes"]), run["outcomes"]
        assert not any("transcript authentication failed" in o[4] + o[5] for o in run["outcomes"]), run["outcomes"]
    for k in ("i", "j", "stream"):
        assert batched[k] == every[k], k
    assert batched["sifted_chunks"] < every["sifted_chunks"] / 2  # the batches were larger: fewer exchanges


def test_cj_refuses_an_announcement_range_that_its_pieces_do_not_tile(acquisition, monkeypatch):
    """Ci refers to a range that does not start at a piece of Cj's copy: Cj hands its pieces over
    as they came, finds no announcements at that slot and refuses the block."""
    cfg, schedule, logs, chunks, _ = acquisition
    pair = "C1-C2"
    ci, cj = pair.split("-")
    settings = DistillSettings(block_bits=20_000)
    jp = _JPair(_node(cfg, schedule, cj, pair, settings), SimpleNamespace(log=logs[cj]), pair, ci)
    end_j = jp.new_end()
    mine = [c for c in chunks if c.pair == pair][:3]
    for c in mine:
        jp.feed.add(c)
    lo, hi = mine[0].lo + 1, mine[1].hi
    served = _JServed(jp, end_j)
    rep = served.handle(twoparty.Message("ann/confirm", {"lo": lo, "hi": hi, "n": 1, "n_slots": 1, "digest": b""}))
    assert rep.kind == twoparty.REFUSED
    assert "no announcements" in str(rep.get("reason"))
