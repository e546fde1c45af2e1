"""Cascade's round trips: block parities asked ahead only for passes that certainly run, and two
bisection levels per round trip for the same parities (issue 16 item 8)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cascade_helpers import RecordingChannel

from labqfl.qkd.cascade import HALF, CascadeAlice, CascadeBob, CascadeSchedule, _last_certain
from labqfl.qkd.messaging import LocalChannel, Message


def _opened(log: list[tuple[Message, Message]]) -> list[int]:
    return [int(v) & 127 for req, _ in log if req.kind == "cascade/round" for v in np.asarray(req.get("open"))]


def test_last_certain_pass_follows_the_confirmation_rule():
    kind = np.array([0, 0, 1, 1, 1, 1, 1, 1], np.int64)
    assert _last_certain(kind, -1, 0, 3) == 4  # 2 affine passes, then 3 bipartitions must run
    assert _last_certain(kind, 3, 0, 3) == 6  # a bipartition that found an error: 3 more
    assert _last_certain(kind, 3, 2, 3) == 4  # 2 clean in a row: one more may end the run
    assert _last_certain(kind, 4, 3, 3) == 4  # complete: nothing more runs
    assert _last_certain(kind, 5, 0, 3) == 7  # capped by the last pass
    assert _last_certain(kind, -1, 0, 0) == 7  # no confirmation: every pass runs


@pytest.mark.parametrize("n,qber,seed", [(10_000, 0.02, 1), (10_000, 0.08, 2), (60_000, 0.005, 3),
                                         (3_000, 0.05, 4)])
def test_every_pass_whose_block_parities_were_asked_ahead_ran(frame, n, qber, seed):
    """No parity is disclosed for a pass the run does not reach: passes asked = passes run, each
    once, in order — also when bipartitions found errors and the run went past ``confirm``."""
    x, y = frame(n, qber, seed)
    ch = RecordingChannel(CascadeAlice(x))
    res = CascadeBob(y, qber, seed=seed).run(ch)
    assert np.array_equal(res.corrected, x)
    assert _opened(ch.log) == list(range(res.iterations))
    assert res.details["clean_confirmations"] == res.details["confirm"]


def test_a_frame_without_errors_takes_one_round_for_every_pass(frame):
    """All passes of an error-free frame (3 affine, 16 confirmations) in the first round."""
    x, _ = frame(600_000, 0.0, 1)
    res = CascadeBob(x.copy(), 0.01, seed=5).run(LocalChannel(CascadeAlice(x)))
    assert res.iterations == 3 + 16 and res.details["leaked_binary_search"] == 0
    assert res.round_trips == 3  # cascade/init, one cascade/round, cascade/done


@pytest.mark.parametrize("n,qber,seed", [(10_000, 0.02, 7), (100_000, 0.01, 8), (100_000, 0.05, 9)])
def test_two_level_rounds_need_far_fewer_round_trips_for_about_the_same_parities(frame, n, qber, seed):
    x, y = frame(n, qber, seed)
    one = dataclasses.replace(CascadeSchedule.for_frame(qber, n), two_level=False)
    r1 = CascadeBob(y, qber, seed=seed, schedule=one).run(LocalChannel(CascadeAlice(x)))
    alice = CascadeAlice(x)
    r2 = CascadeBob(y, qber, seed=seed).run(LocalChannel(alice))
    assert np.array_equal(r1.corrected, x) and np.array_equal(r2.corrected, x)
    assert r2.round_trips < 0.75 * r1.round_trips, (r1.round_trips, r2.round_trips)
    # same leak up to the searches that share rounds differently (grid: no change beyond 1 SE)
    assert abs(r2.leaked_bits - r1.leaked_bits) <= 0.01 * r1.leaked_bits
    assert alice.disclosed_bits == r2.leaked_bits


def test_bipartition_searches_use_two_levels_too_and_alice_accepts_every_query():
    """On a frame whose bipartitions find errors, Alice answers a second level for a good share of
    the queries, in affine and bipartition passes alike (decoded from Bob's flags and her first
    answers), and never refuses one (a next level is asked only inside halves of ≥ 2 bits)."""
    rng = np.random.default_rng(3)
    n, qber = 4_000, 0.08
    x = rng.integers(0, 2, n, dtype=np.uint8)
    y = x ^ (rng.random(n) < qber).astype(np.uint8)
    sched = CascadeSchedule((16, HALF, HALF, HALF, HALF, HALF, HALF), confirm=2)
    ch = RecordingChannel(CascadeAlice(x))
    res = CascadeBob(y, qber, seed=3, schedule=sched).run(ch)
    assert np.array_equal(res.corrected, x)
    queries = {0: 0, 1: 0}
    seconds = {0: 0, 1: 0}
    for req, rep in ch.log:
        if req.kind != "cascade/round":
            continue
        told = sum(sched_blocks - (1 if p > 0 else 0) for p, sched_blocks in
                   ((int(v) & 127, -(-n // 16) if int(v) & 127 == 0 else 2) for v in np.asarray(req.get("open"))))
        answers = rep.disclosed[told:].tolist()
        pos = 0
        for fq, _b, _lo, _hi, fl in np.asarray(req.get("query")).reshape(-1, 5).tolist():
            kind = 0 if fq & 127 == 0 else 1
            queries[kind] += 1
            left = answers[pos] != fl & 1
            pos += 1
            if fl & (2 if left else 4):
                seconds[kind] += 1
                pos += 1
        assert pos == len(answers)
    assert queries[1] > 0
    for kind in (0, 1):
        assert seconds[kind] > 0.3 * queries[kind], (kind, seconds, queries)
