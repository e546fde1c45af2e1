"""Review s39 lab LAB3 (the part left open): the end-check refusal over nodes names the key blocks each client stored
(``labqfl.nodes.launch.stored_from_refused``), each client's answer waited for at most ``STORED_ANSWER_S``. Its first
question (``ctl/wait``) told the client to wait for its pairs with the acquisition's ``timeout`` (900 s at the
default), so a client still distilling its block in hand for longer than the bound was named "not known (no answer
within … s)" although it was neither hung nor unable to read its store. Now the client is told to wait at most half
the bound and the second question not to wait at all: it answers from its store and the pair still distilling is
named so.

In process, no node: the operator's sessions call the client's own handler (``ClientNode.ctl_wait``, with
``ClientNode.stored_from``) on a stand-in node whose pair thread "distils" (sleeps) for a given time and then
stores its block."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from labqfl.nodes import launch
from labqfl.nodes.client import ClientNode
from labqfl.qkd.messaging import Message

ACQ = "nodes/acq-1"


class _Node:
    """A client node with one pair ``A-B`` (as Ci) whose block in hand takes ``distil_s`` to distil; the store
    holds ``blk-1`` and gets ``blk-2`` when that block ends."""

    def __init__(self, distil_s: float) -> None:
        self.rows = [{"block_id": "blk-1", "meta": {"acquisition": ACQ}}]
        self.store = SimpleNamespace(blocks=lambda pair: list(self.rows))
        self._pending_lock = threading.Lock()
        self._pending_records = lambda pair: []

        def distil() -> None:
            time.sleep(distil_s)
            self.rows.append({"block_id": "blk-2", "meta": {"acquisition": ACQ}})

        ip = SimpleNamespace(thread=threading.Thread(target=distil, daemon=True), failed=False, accepted_ids=[],
                             ch=None, result=SimpleNamespace(as_dict=lambda duration: {}))
        ip.thread.start()
        self.acqs = {ACQ: SimpleNamespace(i_pairs={"A-B": ip}, j_pairs={}, acq=ACQ, link_thread=None, streams=None,
                                          answered_slots=0, link_error="", instrument_faults=[])}

    def stored_from(self, a):  # type: ignore[no-untyped-def]
        return ClientNode.stored_from(self, a)  # type: ignore[arg-type]


class _Session:
    """The operator's ``ctl`` session to a node: each request handled by the client's ``ctl_wait``."""

    def __init__(self, node: _Node) -> None:
        self.node, self.aborted = node, False

    def request(self, msg: Message) -> Message:
        return ClientNode.ctl_wait(self.node, msg)  # type: ignore[arg-type]

    def abort(self) -> None:
        self.aborted = True


def test_a_client_still_distilling_answers_from_its_store_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 'client A: not known (no answer within 1 s)' (the client waited for its block up to 900 s)."""
    monkeypatch.setattr(launch, "STORED_ANSWER_S", 1.0)
    ctl = {"A": _Session(_Node(distil_s=4.0)), "B": _Session(_Node(distil_s=0.0))}
    t0 = time.monotonic()
    text = launch.stored_from_refused(ctl, ACQ, 1.0, 900.0)
    wall = time.monotonic() - t0
    assert "not known" not in text, text
    assert ("client A: pair A-B: blk-1 (and a block still being distilled when asked, not counted here)") in text, text
    assert "client B: pair A-B: blk-1, blk-2;" not in text and text.endswith("client B: pair A-B: blk-1, blk-2"), text
    assert not ctl["A"].aborted
    assert wall < 1.5, wall  # half the bound waited for A's block, then A answered at once


def test_a_block_that_ends_within_the_wait_is_still_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first question still waits for the block in hand (so a Cj's report includes its Ci's last commit)."""
    monkeypatch.setattr(launch, "STORED_ANSWER_S", 4.0)
    ctl = {"A": _Session(_Node(distil_s=0.3))}
    text = launch.stored_from_refused(ctl, ACQ, 1.0, 900.0)
    assert text.endswith("client A: pair A-B: blk-1, blk-2"), text
