"""Interleaved Cascade frames (issue 23 item 2): K frames share every message and every kernel
call, yet each frame runs exactly the one-frame protocol — same corrected bits, same parities —
and the leak counted on the channel is exactly the parities Alice disclosed."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.qkd.cascade import (
    CascadeAlice,
    CascadeBob,
    CascadeInconsistencyError,
    CascadeSchedule,
    frame_seeds,
    reconcile_cascade,
    split_frames,
)
from labqfl.qkd.messaging import LocalChannel, Message, MessageError


def test_split_frames_cuts_a_key_into_near_equal_frames_in_order():
    assert split_frames(10, None).tolist() == [10]
    assert split_frames(10, 10).tolist() == [10]
    assert split_frames(10, 4).tolist() == [4, 3, 3]
    sizes = split_frames(1_000_003, 1 << 18)
    assert sizes.sum() == 1_000_003 and sizes.max() - sizes.min() <= 1 and sizes.max() <= 1 << 18
    with pytest.raises(ValueError, match="frame_bits must be >= 1"):
        split_frames(10, 0)
    assert frame_seeds(2**63 - 1, 3).tolist() == [2**63 - 1, 0, 1]


@pytest.mark.parametrize("n,frame_bits,qber,seed", [(30_000, 10_000, 0.02, 1), (25_001, 6_000, 0.05, 2),
                                                    (40_000, 9_000, 0.08, 3), (12_000, 5_000, 0.01, 4)])
def test_interleaved_frames_equal_one_frame_runs(frame, n, frame_bits, qber, seed):
    """Frame f of an interleaved run = a one-frame run on its bits with seed + f: identical
    corrected bits and disclosed parities; every error corrected; the round trips are those of the
    slowest frame (plus nothing), not their sum."""
    x, y = frame(n, qber, seed)
    sizes = split_frames(n, frame_bits)
    sched = CascadeSchedule.for_frame(qber, int(sizes.min()))
    res = reconcile_cascade(x, y, qber, seed=seed, frame_bits=frame_bits)
    assert res.details["frames"] == sizes.size > 1
    assert np.array_equal(res.corrected, x)
    leak = top = trips = 0
    for f, (lo, hi) in enumerate(zip(np.cumsum(sizes) - sizes, np.cumsum(sizes), strict=True)):
        one = reconcile_cascade(x[lo:hi], y[lo:hi], qber, seed=seed + f, schedule=sched)
        assert np.array_equal(res.corrected[lo:hi], one.corrected)
        leak += one.leaked_bits
        top += one.details["leaked_block_parities"]
        trips = max(trips, one.round_trips)
    assert res.leaked_bits == leak
    assert res.details["leaked_block_parities"] == top
    assert res.round_trips == trips


class _CountingAlice(CascadeAlice):
    """Alice who also counts, message by message, the parity bits she puts on the wire."""

    def __init__(self, bits: np.ndarray) -> None:
        super().__init__(bits)
        self.sent = 0

    def handle(self, request: Message) -> Message:
        rep = super().handle(request)
        self.sent += int(rep.disclosed.size)
        return rep


@pytest.mark.parametrize("seed", [5, 6])
def test_counted_leak_is_every_parity_alice_disclosed_across_frames(frame, seed):
    x, y = frame(50_000, 0.03, seed)
    alice = _CountingAlice(x)
    res = CascadeBob(y, 0.03, seed=seed, frame_bits=12_000).run(LocalChannel(alice))
    assert np.array_equal(res.corrected, x)
    assert res.leaked_bits == alice.sent == alice.disclosed_bits
    assert res.leaked_bits == res.details["leaked_block_parities"] + res.details["leaked_binary_search"]


def test_residual_free_over_seeds_with_many_small_frames(frame):
    """50 interleaved 2 000-bit frames per run, 4 seeds: 0 residual errors."""
    for seed in range(4):
        x, y = frame(100_000, 0.04, 100 + seed)
        res = reconcile_cascade(x, y, 0.04, seed=seed, frame_bits=2_000)
        assert res.details["frames"] == 50
        assert np.array_equal(res.corrected, x)


class _FlipOnce:
    """Alice whose first reply carrying query parities has its last parity flipped."""

    def __init__(self, bits: np.ndarray) -> None:
        self.alice, self.done = CascadeAlice(bits), False

    def handle(self, req: Message) -> Message:
        rep = self.alice.handle(req)
        if rep.kind == "cascade/parities" and not self.done and rep.disclosed.size:
            d = rep.disclosed.copy()
            d[-1] ^= 1
            self.done = True
            return Message(rep.kind, rep.fields, d)
        return rep


def test_a_flipped_parity_in_an_interleaved_run_stops_bob(frame):
    x, y = frame(30_000, 0.02, 9)
    with pytest.raises(CascadeInconsistencyError, match="^cascade: inconsistent parities from Alice"):
        CascadeBob(y, 0.02, seed=9, frame_bits=10_000).run(LocalChannel(_FlipOnce(x)))


def test_alice_refuses_requests_outside_the_frames(frame):
    x, _ = frame(3_000, 0.02, 1)
    alice = CascadeAlice(x)
    sched = np.asarray(CascadeSchedule.for_frame(0.02, 1_000).block_sizes, np.int64)
    with pytest.raises(MessageError, match="frame lengths"):
        alice.handle(Message("cascade/init", {"n": 3_000, "frames": np.array([1_000, 1_000]),
                                              "seeds": np.array([1, 2]), "schedule": sched}))
    alice.handle(Message("cascade/init", {"n": 3_000, "frames": np.array([1_000, 2_000]),
                                          "seeds": np.array([1, 2]), "schedule": sched}))
    none = np.zeros(0, np.uint32)
    cases = {"does not exist": (np.array([2 * 128], np.uint32), none),
             "before pass 0": (np.array([1], np.uint32), none),
             "not revealed": (none, np.array([128, 0, 0, 2, 0], np.uint32))}
    for match, (opens, queries) in cases.items():
        with pytest.raises(MessageError, match=match):
            alice.handle(Message("cascade/round", {"open": opens, "query": queries}))
    rep = alice.handle(Message("cascade/round", {"open": np.array([0], np.uint32), "query": none}))
    assert rep.kind == "cascade/block-parities" and rep.disclosed.size > 0
    # (pass, block, lo, hi, flags): a range of < 2 bits, unknown flags, a next level inside a one-bit half
    for query in ([0, 0, 5, 6, 0], [0, 0, 4, 6, 8], [0, 0, 4, 6, 6], [0, 0, 4, 6, 7]):
        with pytest.raises(MessageError, match="block or range"):
            alice.handle(Message("cascade/round", {"open": none, "query": np.array(query, np.uint32)}))
    with pytest.raises(MessageError, match="multiple of 5"):
        alice.handle(Message("cascade/round", {"open": none, "query": np.array([0, 0, 4, 6], np.uint32)}))


def test_the_pair_protocol_reconciles_large_blocks_as_interleaved_frames():
    """Blocks of the pair protocol (labqfl.qkd.twoparty) use the interleaved path: a block of
    3·2^20 + 5 bits becomes 4 frames, each long enough for the frame schedule's third pass, with the
    link schedule (CascadeSchedule.for_link: the second pass halved, fewer round trips)."""
    from labqfl.qkd.cascade import PIPELINE_FRAME_BITS, THIRD_PASS_MIN_BITS
    from labqfl.qkd.twoparty import _bob

    bob = _bob("cascade", np.zeros(3 * PIPELINE_FRAME_BITS + 5, np.uint8), 0.02)
    assert bob.frames.size == 4 and int(bob.frames.min()) >= THIRD_PASS_MIN_BITS
    assert bob.schedule == CascadeSchedule.for_link(0.02, int(bob.frames.min()))
    assert bob.schedule.block_sizes[1] < CascadeSchedule.for_frame(0.02, int(bob.frames.min())).block_sizes[1]
    assert _bob("cascade", np.zeros(1000, np.uint8), 0.02).frames.tolist() == [1000]


@pytest.mark.parametrize("qber", [0.02, 0.06])
def test_frames_on_two_threads_give_the_one_thread_bits_parities_and_messages(frame, qber):
    """``threads`` only changes how many frames each side works on at once (issue 23 item 2)."""
    import numba

    x, y = frame(120_000, qber, 21)
    one = reconcile_cascade(x, y, qber, seed=4, frame_bits=15_000)
    before = numba.get_num_threads()
    two = reconcile_cascade(x, y, qber, seed=4, frame_bits=15_000, threads=2)
    assert numba.get_num_threads() == before  # the caller's setting is restored
    assert np.array_equal(two.corrected, x) and np.array_equal(one.corrected, x)
    assert (two.leaked_bits, two.round_trips, two.messages, two.details["leaked_binary_search"]) == \
        (one.leaked_bits, one.round_trips, one.messages, one.details["leaked_binary_search"])


def test_a_flipped_parity_stops_bob_on_two_threads_too(frame):
    x, y = frame(30_000, 0.02, 9)
    with pytest.raises(CascadeInconsistencyError, match="^cascade: inconsistent parities from Alice"):
        CascadeBob(y, 0.02, seed=9, frame_bits=10_000, threads=2).run(LocalChannel(_FlipOnce(x)))


def test_alice_on_two_threads_refuses_a_pass_before_pass_0_but_takes_both_in_one_request(frame):
    x, _ = frame(3_000, 0.02, 1)
    sched = np.asarray(CascadeSchedule.for_frame(0.02, 1_000).block_sizes, np.int64)
    init = Message("cascade/init", {"n": 3_000, "frames": np.array([1_000, 2_000]), "seeds": np.array([1, 2]),
                                    "schedule": sched})
    none = np.zeros(0, np.uint32)
    alice = CascadeAlice(x, threads=2)
    alice.handle(init)
    with pytest.raises(MessageError, match="before pass 0"):
        alice.handle(Message("cascade/round", {"open": np.array([0, 129], np.uint32), "query": none}))
    rep = alice.handle(Message("cascade/round", {"open": np.array([0, 128, 129, 1], np.uint32), "query": none}))
    serial = CascadeAlice(x)
    serial.handle(init)
    ref = serial.handle(Message("cascade/round", {"open": np.array([0, 128, 129, 1], np.uint32), "query": none}))
    assert np.array_equal(rep.disclosed, ref.disclosed) and rep.disclosed.size > 0


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_integer(frame, threads):
    from labqfl.qkd.reconciliation import ReconciliationInputError

    x, y = frame(2_000, 0.02, 1)
    with pytest.raises(ReconciliationInputError, match="threads must be a positive integer"):
        reconcile_cascade(x, y, 0.02, seed=1, threads=threads)


def _two_frame_alices(x, monkeypatch):
    """A serial Alice and a two-thread one that answers every request's queries frame-parallel
    (PARALLEL_QUERIES lowered to 2), both past cascade/init and pass 0 of both frames."""
    import labqfl.qkd.cascade as cascade

    monkeypatch.setattr(cascade, "PARALLEL_QUERIES", 2)
    sched = np.asarray(CascadeSchedule.for_frame(0.02, 1_000).block_sizes, np.int64)
    init = Message("cascade/init", {"n": 3_000, "frames": np.array([1_000, 2_000]), "seeds": np.array([1, 2]),
                                    "schedule": sched})
    opens = Message("cascade/round", {"open": np.array([0, 128], np.uint32), "query": np.zeros(0, np.uint32)})
    alices = (CascadeAlice(x), CascadeAlice(x, threads=2))
    for a in alices:
        a.handle(init)
        a.handle(opens)
    return alices


def test_alice_answers_the_frames_queries_in_parallel_as_in_request_order(frame, monkeypatch):
    """Frame-parallel answers are packed in request order: the same reply as the serial loop, for
    queries that come frame by frame and for queries that do not (answered in order)."""
    x, _ = frame(3_000, 0.02, 1)
    serial, parallel = _two_frame_alices(x, monkeypatch)
    rng = np.random.default_rng(3)
    q = np.array([[f * 128, b, 0, 16, fl] for f in (0, 1) for b in range(10) for fl in rng.integers(0, 8, 3)],
                 np.uint32)
    for rows in (q, q[rng.permutation(len(q))]):
        msg = Message("cascade/round", {"open": np.zeros(0, np.uint32), "query": rows.ravel()})
        a, b = serial.handle(msg), parallel.handle(msg)
        assert a.disclosed.size > len(rows) and np.array_equal(a.disclosed, b.disclosed)


def test_alice_refuses_a_bad_query_in_any_frame_of_a_parallel_round(frame, monkeypatch):
    x, _ = frame(3_000, 0.02, 1)
    serial, parallel = _two_frame_alices(x, monkeypatch)
    good = [[0, 0, 0, 16, 3], [0, 1, 0, 16, 5], [128, 0, 0, 16, 0], [128, 2, 0, 16, 6]]
    for bad, match in (([128, 1, 5, 6, 0], "block or range"), ([128 + 5, 0, 0, 16, 0], "not revealed"),
                       ([2 * 128, 0, 0, 16, 0], "not revealed")):
        for rows in (good + [bad], [bad] + good, good[:2] + [bad] + good[2:]):
            msg = Message("cascade/round", {"open": np.zeros(0, np.uint32), "query": np.array(rows, np.uint32).ravel()})
            for alice in (serial, parallel):
                with pytest.raises(MessageError, match=match):
                    alice.handle(msg)


@pytest.mark.parametrize("qber", [0.02, 0.06])
def test_a_run_whose_every_round_alice_answers_in_parallel_is_the_one_thread_run(frame, qber, monkeypatch):
    import labqfl.qkd.cascade as cascade

    x, y = frame(120_000, qber, 21)
    one = reconcile_cascade(x, y, qber, seed=4, frame_bits=15_000)
    monkeypatch.setattr(cascade, "PARALLEL_QUERIES", 2)
    two = reconcile_cascade(x, y, qber, seed=4, frame_bits=15_000, threads=2)
    assert np.array_equal(two.corrected, x) and np.array_equal(one.corrected, x)
    assert (two.leaked_bits, two.round_trips, two.messages) == (one.leaked_bits, one.round_trips, one.messages)
