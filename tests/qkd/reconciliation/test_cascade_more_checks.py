"""Checks around verification continued after a failure (``ec/more``, docs/protocol.md §5), at the
level of single messages: every earlier tag is checked again on the key as corrected at a later
attempt (the ε_cor union bound counts attempt i as accepting differing keys only if t_0 + … + Δ_i
tag bits all collide), Cj refuses an ``ec/more`` out of order (a duplicate included), and Ci caps
the round trips of a continuation.  Fixed RNG seeds throughout: the same every time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from labqfl.qkd.cascade import CascadeBob, reconcile_cascade_verified
from labqfl.qkd.messaging import Message
from labqfl.qkd.reconciliation import ReconciliationResult
from labqfl.qkd.twoparty import PairEndI, PairEndJ, ProtocolSettings, _bits_field, _JBlock, _Refused
from labqfl.qkd.verification import hash_tag, verification_tag_plan

PLAN = verification_tag_plan(1e-15)  # (50, 3, 8, 1)


def _seed(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    return rng.integers(0, 2, n + t - 1, dtype=np.uint8)


def _colliding_seed(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
    """A seed whose t-bit tags of the differing keys ``x`` and ``y`` are equal (about 2^t tries)."""
    for _ in range(1 << (t + 8)):
        s = _seed(rng, x.size, t)
        if np.array_equal(hash_tag(x, s, t), hash_tag(y, s, t)):
            return s
    raise AssertionError(f"no {t}-bit collision found")


def _keys(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(7).integers(0, 2, n, dtype=np.uint8)
    y = x.copy()
    y[[3, 1500]] ^= 1  # two errors Bob's reconciliation missed
    return x, y


# ------------------------------------------------------------- every earlier tag is checked again
def _fake_j() -> SimpleNamespace:
    return SimpleNamespace(settings=ProtocolSettings(engine="cascade"),
                           key_length=lambda counts, n, errors, leak: SimpleNamespace(abort=False, key_length_bits=100))


def _second_request(x: np.ndarray, corrected: np.ndarray) -> tuple[_JBlock, Message]:
    """Cj's block after a failed first verification (Ci's t_0 tag of ``x`` under a fixed seed) and
    one continuation that left ``corrected``; and Ci's second verify/request, whose Δ_1-bit tag of
    ``x`` under the chosen seed collides with that of ``corrected``'s."""
    rng = np.random.default_rng(11)
    _, y = _keys(x.size)
    s0, s1 = _seed(rng, x.size, PLAN[0]), _colliding_seed(rng, x, y, PLAN[1])
    b = _JBlock()
    b.key, b.corrected, b.counts = y.copy(), corrected, object()
    b.tags = [(s0, hash_tag(x, s0, PLAN[0]))]
    b.mores, b.ec_done, b.bob = 1, True, object()
    return b, Message("verify/request", {"t": PLAN[1], "seed": _bits_field(s1)}, disclosed=hash_tag(x, s1, PLAN[1]))


def test_cj_refuses_a_key_whose_newest_tag_matches_but_whose_first_tag_does_not():
    x, y = _keys()
    b, req = _second_request(x, y)  # the continuation found nothing: Bob's key still differs
    assert np.array_equal(hash_tag(y, b.tags[0][0], PLAN[0]), b.tags[0][1]) is False
    rep = PairEndJ._verify_request(_fake_j(), b, req)
    assert rep.get("ok") == 0 and not b.verified and b.ell == 0
    # control: the same messages with the key corrected now pass (every tag matches)
    b, req = _second_request(x, x.copy())
    rep = PairEndJ._verify_request(_fake_j(), b, req)
    assert rep.get("ok") == 1 and b.verified and b.ell == 100


def test_the_in_process_verification_refuses_a_key_whose_newest_tag_matches_but_not_the_first(monkeypatch):
    """reconcile_cascade_verified: the continuations find nothing (the first run's missed error stays),
    and attempt 1's seed makes its Δ_1-bit tags collide: only the first tag tells the keys apart."""
    import labqfl.qkd.toeplitz as toeplitz

    x = np.random.default_rng(5).integers(0, 2, 10_000, dtype=np.uint8)
    bob_now: list[np.ndarray] = []
    real_run = CascadeBob.run

    def run(self, channel):  # the first run misses one error (bit 0), for certain
        r = real_run(self, channel)
        c = np.array(r.corrected, dtype=np.uint8, copy=True)
        c[0] ^= 1
        bob_now.append(c)
        return ReconciliationResult(corrected=c, leaked_bits=r.leaked_bits, qber=r.qber, method=r.method,
                                    round_trips=r.round_trips, messages=r.messages, details=r.details)

    def more(self, channel, confirm=8):  # a continuation that finds nothing
        return ReconciliationResult(corrected=bob_now[-1], leaked_bits=0, qber=0.01, method="none")

    rng = np.random.default_rng(13)
    seeds: list[int] = []

    def seed(n, t):
        seeds.append(t)
        if len(seeds) == 2:  # attempt 1: Δ_1 bits that collide on Alice's and Bob's keys
            return _colliding_seed(rng, x, bob_now[-1], t)
        return _seed(rng, n, t)

    monkeypatch.setattr(CascadeBob, "run", run)
    monkeypatch.setattr(CascadeBob, "more", more)
    monkeypatch.setattr(toeplitz, "toeplitz_seed", seed)
    y = x.copy()
    y[np.random.default_rng(6).choice(x.size, 100, replace=False)] ^= 1
    r = reconcile_cascade_verified(x, y, 0.01, seed=3)
    assert seeds[:2] == [PLAN[0], PLAN[1]]
    assert not r.success and r.frame_errors == 1 and r.details["attempts"] == len(PLAN)


# ------------------------------------------------------------------------ Cj's ec/more order
def _j_block(tags: int, mores: int, *, verified: bool = False) -> _JBlock:
    b = _JBlock()
    b.key = np.zeros(10_000, np.uint8)
    b.corrected, b.bob, b.verified = b.key.copy(), object(), verified
    b.tags = [(None, None)] * tags
    b.mores, b.ec_done, b.leak = mores, True, 100
    return b


def _ec_more(b: _JBlock, attempt: int, started: list) -> Message:
    fake = SimpleNamespace(settings=ProtocolSettings(engine="cascade"),
                           _start_bob=lambda blk, f: (started.append(1), Message("ec/done", {}))[1])
    return PairEndJ._ec_more(fake, b, Message("ec/more", {"attempt": attempt}))


def test_a_duplicate_ec_more_after_the_continuation_finished_is_refused_at_once():
    """Before: a second ``ec/more {attempt: 1}`` before the next verify/request started Bob again
    and counted Δ_1 twice (the block was refused only one message later)."""
    started: list = []
    b = _j_block(tags=1, mores=0)
    _ec_more(b, 1, started)
    assert (b.mores, b.leak_before, len(started)) == (1, 100 + PLAN[1], 1)
    b.ec_done, b.leak = True, b.leak_before + 30  # the continuation's ec/done
    with pytest.raises(_Refused, match=r"ec/more \(attempt 1\) out of order"):
        _ec_more(b, 1, started)
    assert (b.mores, b.leak, len(started)) == (1, 100 + PLAN[1] + 30, 1)  # nothing counted, Bob not run


@pytest.mark.parametrize("tags, mores, attempt, verified", [
    (0, 0, 0, False),  # before any verification
    (0, 0, 1, False),  # before any verification, claiming attempt 1
    (1, 0, 2, False),  # skipping an attempt
    (2, 1, 1, False),  # an earlier attempt again
    (1, 0, 1, True),  # after the block verified
    (len(PLAN), len(PLAN) - 1, len(PLAN), False),  # beyond the plan's last attempt
])
def test_cj_refuses_an_ec_more_out_of_order(tags, mores, attempt, verified):
    started: list = []
    b = _j_block(tags, mores, verified=verified)
    with pytest.raises(_Refused, match=r"ec/more \(attempt \d\) out of order"):
        _ec_more(b, attempt, started)
    assert not started and b.mores == mores


# ------------------------------------------------------------------------ Ci's round-trip cap
def test_ci_refuses_a_continuation_that_never_ends():
    """A misbehaving Cj's Bob asking round after round: Ci refuses after n round trips (before: no
    cap, Ci's Alice answered for ever)."""
    n, asked = 64, []

    def request(ch, msg):
        asked.append(msg.kind)
        if len(asked) > 100 * n:
            raise AssertionError("no cap on the round trips of a continuation")
        return Message("cascade/round", {})

    fake = SimpleNamespace(_request=request)
    alice = SimpleNamespace(handle=lambda rep: SimpleNamespace(kind="cascade/parities", leaked_bits=0))
    with pytest.raises(_Refused, match=f"more than {n} round trips"):
        PairEndI._more(fake, None, alice, 1, SimpleNamespace(n=n, errors=0))
    assert len(asked) == n + 1  # the ec/more and n answers
