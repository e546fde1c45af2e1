"""Distiller.sift_held: the clicks held for the next sifting batch are sifted at once (the
``pipeline`` benchmark charges them to the pushes), with the same key bits, counts and block
boundaries as leaving them for the batch or for finish()."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.qkd import pipeline, twoparty
from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink

_RUN_BLOCK = twoparty.PairEndI.run_block


@pytest.fixture(scope="module")
def acquisition(short_loop_seeded_station):
    cfg = short_loop_seeded_station
    tb = SagnacTestbed(cfg)
    return cfg, list(tb.stream(0.06, 0.01)), tb.client_logs()


def _run(acquisition, monkeypatch, every: int | None):
    """Per pair: each block's (slot range, digest of Ci's sifted bits) as it starts its protocol, and
    the pair's stream counts; ``every``: call sift_held after every ``every``-th push (None: never).
    Returns also the clicks held after the last push."""
    cfg, blocks, logs = acquisition
    seen: dict[str, list[tuple]] = {}
    seeds = itertools.count(1000)  # the Cj ends' squashing generators, same in both runs
    monkeypatch.setattr(pipeline.secrets, "randbits", lambda k: next(seeds))

    def run_block(self, ch, block_id, start, end, stop=None):
        bits = twoparty._joined(self._blk.bits)
        seen.setdefault(self.pair, []).append((start, end, hashlib.sha256(bits.tobytes()).hexdigest()))
        return _RUN_BLOCK(self, ch, block_id, start, end, stop)

    monkeypatch.setattr(twoparty.PairEndI, "run_block", run_block)
    d = Distiller(cfg, logs, MemorySink(), DistillSettings(block_bits=10_000, min_final_block_bits=1000))
    closed = []
    for k, b in enumerate(blocks, 1):
        closed += d.push(b)
        if every is not None and k % every == 0:
            closed += d.sift_held()
    held = d._batch_clicks
    res = d.finish(int(round(0.06 * cfg.laser.rep_rate_hz)))
    stream = {p: (r.n_slots, r.sifted_bits, r.dropped_slots, r.dropped_bits, dict(r.test_clicks),
                  dict(r.test_errors_x2), len(r.blocks)) for p, r in res.items()}
    return seen, stream, held, len(closed)


def test_sift_held_sifts_every_held_click_and_changes_no_key_bit_or_count(acquisition, monkeypatch):
    seen_0, stream_0, held_0, _ = _run(acquisition, monkeypatch, None)
    seen_1, stream_1, held_1, closed_1 = _run(acquisition, monkeypatch, 1)
    seen_2, stream_2, _, _ = _run(acquisition, monkeypatch, 2)
    assert held_0 > 0  # the default batch (10^6 clicks) holds the whole short run until finish
    assert held_1 == 0  # sift_held after the last push left nothing for finish
    assert closed_1 > 0  # blocks closed while streaming
    assert sum(len(v) for v in seen_0.values()) >= 6 * 2
    assert seen_1 == seen_0 and seen_2 == seen_0
    assert stream_1 == stream_0 and stream_2 == stream_0


def test_sift_held_takes_nothing_once_finished_or_with_nothing_held(acquisition):
    cfg, blocks, logs = acquisition
    d = Distiller(cfg, logs, MemorySink(), DistillSettings(block_bits=10_000, min_final_block_bits=1000))
    assert d.sift_held() == []  # nothing pushed
    d.push(blocks[0])
    d.sift_held()
    assert d._batch_clicks == 0 and d.sift_held() == []
    d.finish()
    assert d.sift_held() == []
