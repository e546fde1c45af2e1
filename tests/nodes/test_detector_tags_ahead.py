"""The detector asks the optics for the next tag block while it works on the current one
(``DetectorNode._optics_blocks``): the blocks keep their order, at most ``TAGS_AHEAD`` are asked
ahead, an error of the optics reaches the consumer, and a consumer that stops early aborts the
session and leaves no thread behind."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from labqfl.instruments.base import TagBlock
from labqfl.nodes.common import NodeError, ok
from labqfl.nodes.detector import TAGS_AHEAD, DetectorNode
from labqfl.nodes.optics import block_fields
from labqfl.qkd.messaging import Message, MessageError


class FakeTags:
    """An ``optics/tags`` session: ``n`` blocks (block k holds one tag at time k), then ``tags/end``;
    ``fail_at``: the request that fails instead; ``hold``: requests wait for it before answering."""

    def __init__(self, n: int, fail_at: int | None = None, hold: threading.Event | None = None) -> None:
        self.n, self.fail_at, self.hold = n, fail_at, hold
        self.asked = 0
        self.aborted = self.closed = False
        self.threads: set[str] = set()

    def request(self, msg: Message) -> Message:
        assert msg.kind == "tags/next"
        self.threads.add(threading.current_thread().name)
        k = self.asked
        self.asked += 1
        if self.hold is not None:
            while not self.hold.wait(0.01):
                if self.aborted:
                    raise MessageError("session optics/tags aborted by this node")
        if k == self.fail_at:
            raise MessageError("node optics ended session optics/tags: INTERNAL: the Monte-Carlo failed")
        if k >= self.n:
            return ok("tags/end", n_slots=1000)
        return ok("tags/block", **block_fields(TagBlock(np.array([k], np.int64), np.array([1], np.int16))))

    def abort(self) -> None:
        self.aborted = True


def _blocks(tags: FakeTags, end: dict[str, int]):  # type: ignore[no-untyped-def]
    ended: list[FakeTags] = []
    node = SimpleNamespace(optics_name="optics", _session=lambda *a: tags,
                           _end_session=lambda ch: (ended.append(ch), setattr(ch, "closed", True)))
    return DetectorNode._optics_blocks(node, "optics", "acq-1", 1.0, 0.1, end)  # type: ignore[arg-type]


def _wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_the_next_block_is_asked_for_while_the_consumer_holds_this_one_and_the_order_is_kept():
    tags, end = FakeTags(5), {}
    gen = _blocks(tags, end)
    first = next(gen)
    assert int(first.timestamps[0]) == 0
    # the consumer has not asked for block 1, yet the optics was asked for it: one block ahead, not more
    assert _wait_for(lambda: tags.asked == 1 + TAGS_AHEAD)
    time.sleep(0.05)
    assert tags.asked == 1 + TAGS_AHEAD
    assert all(not t.startswith("MainThread") for t in tags.threads)  # asked by the fetching thread
    rest = [int(b.timestamps[0]) for b in gen]
    assert rest == [1, 2, 3, 4] and end == {"n_slots": 1000}
    assert tags.closed and not tags.aborted


def test_an_error_of_the_optics_reaches_the_consumer_after_the_blocks_before_it():
    tags = FakeTags(5, fail_at=2)
    gen = _blocks(tags, {})
    got = [int(next(gen).timestamps[0]), int(next(gen).timestamps[0])]
    with pytest.raises(MessageError, match="Monte-Carlo failed"):
        next(gen)
    assert got == [0, 1] and tags.closed


def test_a_consumer_that_stops_early_aborts_the_session_and_leaves_no_thread():
    hold = threading.Event()
    tags = FakeTags(100, hold=hold)
    before = {t.name for t in threading.enumerate()}
    gen = _blocks(tags, {})
    hold.set()
    next(gen)
    hold.clear()  # the request of the block ahead now hangs, as an optics that does not answer
    assert _wait_for(lambda: tags.asked == 2)
    gen.close()  # e.g. a client's session failed: the detector's loop ends
    assert tags.aborted and tags.closed
    assert {t.name for t in threading.enumerate()} - before == set()


def test_a_bad_reply_is_refused_by_name():
    class Odd(FakeTags):
        def request(self, msg: Message) -> Message:
            return ok("tags/what")

    with pytest.raises(NodeError, match="optics answered 'tags/what' to tags/next"):
        next(_blocks(Odd(1), {}))
