"""Sifting in batches of several tag blocks (DistillSettings.sift_batch_clicks/_slots) gives both
ends the same sifted key bits, counts and block boundaries as sifting after every push."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.errors import QKDInputError
from labqfl.qkd import pipeline, twoparty
from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink

_RUN_BLOCK, _BLOCK_OPEN = twoparty.PairEndI.run_block, twoparty.PairEndJ._block_open
_SIFT_CHUNK = twoparty.PairEndI.sift_chunk


@pytest.fixture(scope="module")
def acquisition(short_loop_seeded_station):
    """0.1 s of the default station on a short loop (seeded clients, pinned epoch), 10 ms tag blocks."""
    cfg = short_loop_seeded_station
    tb = SagnacTestbed(cfg)
    return cfg, list(tb.stream(0.1, 0.01)), tb.client_logs()  # 10 ms tag blocks: several per batch


def _sifted_blocks(acquisition, monkeypatch, **batch):
    """Per pair, per block: (slot range, a digest of Ci's and of Cj's sifted key bits, the counts
    both ends tallied), taken as each block starts its protocol; and the pairs' stream results.
    Each Cj end draws its double-click bits from its own generator (the Distiller seeds them from the
    OS, so two runs give other — equally fresh — bits); ``client_j_key`` takes one 64-bit draw per
    double click, so its bits do not depend on how the slots were batched, and the test seeds the
    Distiller's generators in a fixed order to compare the two runs bit for bit."""
    cfg, blocks, logs = acquisition
    seen: dict[str, list[tuple]] = {}
    real_i, real_j = _RUN_BLOCK, _BLOCK_OPEN
    seeds = itertools.count(1000)
    monkeypatch.setattr(pipeline.secrets, "randbits", lambda k: next(seeds))

    def run_block(self, ch, block_id, start, end, stop=None):
        b = self._blk
        bits = twoparty._joined(b.bits)
        c = b.counts
        seen.setdefault(self.pair, []).append(
            (start, end, b.n_ann, hashlib.sha256(bits.tobytes()).hexdigest(), c.n_slots, c.clicks.tobytes(),
             c.errors_x2.tobytes(), c.double_clicks.tobytes()))
        return real_i(self, ch, block_id, start, end, stop)

    def block_open(self, b, req):
        bits = twoparty._joined(b.bits)
        seen.setdefault(self.pair + "/j", []).append(
            (b.n_ann, b.n_slots, hashlib.sha256(bits.tobytes()).hexdigest(), b.counts.clicks.tobytes()))
        return real_j(self, b, req)

    chunks = [0]

    def sift_chunk(self, *a):
        chunks[0] += 1
        return _SIFT_CHUNK(self, *a)

    monkeypatch.setattr(twoparty.PairEndI, "sift_chunk", sift_chunk)
    monkeypatch.setattr(twoparty.PairEndI, "run_block", run_block)
    monkeypatch.setattr(twoparty.PairEndJ, "_block_open", block_open)
    monkeypatch.setitem(twoparty._J_HANDLERS, "block/open", block_open)
    d = Distiller(cfg, logs, MemorySink(), DistillSettings(block_bits=20_000, min_final_block_bits=2000, **batch),
                  rng=None)
    for b in blocks:
        d.push(b)
    res = d.finish(int(round(0.1 * cfg.laser.rep_rate_hz)))
    stream = {p: (r.n_slots, r.sifted_bits, r.dropped_slots, r.dropped_bits, dict(r.test_clicks),
                  dict(r.test_errors_x2), len(r.blocks)) for p, r in res.items()}
    return seen, stream, chunks[0]


def test_batched_sifting_gives_the_same_key_bits_and_counts_as_sifting_every_push(acquisition, monkeypatch):
    every, stream_every, pushed_every = _sifted_blocks(acquisition, monkeypatch, sift_batch_clicks=0, sift_batch_slots=0)
    batched, stream_batched, pushed_batched = _sifted_blocks(acquisition, monkeypatch)
    assert sum(len(v) for v in every.values()) >= 2 * 6 * 2  # several blocks per pair, both ends seen
    assert batched == every
    assert stream_batched == stream_every
    assert pushed_batched < pushed_every / 2  # the batches really were larger: fewer chunks sifted


def test_sift_batch_settings_are_validated():
    with pytest.raises(QKDInputError, match="sift_batch_clicks must be an integer >= 0"):
        DistillSettings(sift_batch_clicks=-1)
    with pytest.raises(QKDInputError, match="sift_batch_slots"):
        DistillSettings(sift_batch_slots=1.5)  # type: ignore[arg-type]

