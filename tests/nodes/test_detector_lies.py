"""The untrusted detector cannot take a client node down, and a broken announcement session fails the pairs at
once, naming the detector (review s32, F5 and F6).

F5: a 221-byte ``ann/chunks`` with slots ``[0, 2^62)`` passed ``split_chunks`` (only ``0 <= lo <= hi``); Cj cut it
into one piece per block end and Ci walked every block end with a round trip: days of CPU, an OOM kill. Now a
chunk must continue the last one and end within the acquisition's slots (``ctl/arm``'s duration, or for an
open-ended acquisition the time since ``ctl/arm`` at the repetition rate).
F6: when the ``ann`` session ended in error, the pair threads waited for the operator's timeout (>= 900 s) with
``failed=''``. Now every pair it fed fails at once with a reason naming the detector and the cause.
"""

from __future__ import annotations

import json
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_helpers import armed_client, disarm

from labqfl.contracts.types import Announcements
from labqfl.net import NodeCredentials
from labqfl.nodes.client import ClientNode, _Acq
from labqfl.nodes.common import NodeError, open_session
from labqfl.nodes.detector import chunks_message
from labqfl.qkd.messaging import Message, MessageError

ACQ = "nodes/00000000-0000-4000-8000-0000000000f5"


@pytest.fixture()
def c2(tmp_path: Path) -> Any:
    """A real client node C2 armed for ``ACQ`` with 10 000 slots (as ``ctl/arm`` with a duration leaves it: its
    pair threads waiting), and an ``ann`` session opened with the detector's certificate."""
    c = armed_client(tmp_path, "C2", ACQ, certs_for=("detector", "ctl"), serve=True)
    ch = open_session(c.node.server.address, NodeCredentials.load(c.certs, "detector"), "C2", "ann",
                      fields={"acq": ACQ}, timeout_s=30)
    yield types.SimpleNamespace(node=c.node, a=c.a, ch=ch)
    ch.close()
    disarm(c, served=True)


def _chunk(lo: int, hi: int) -> Message:
    """An empty chunk for C1-C2 only (C2's pair threads as Ci see nothing until the session ends)."""
    return chunks_message(lo, hi, [("C1-C2", 0, Announcements("C1-C2", np.zeros(0, np.int64), np.zeros(0, np.uint8)))])


def _results(node: ClientNode) -> dict[str, Any]:
    rep = node.ctl_wait(Message("ctl/wait", {"acq": ACQ, "timeout": 5.0}))
    return {p: (r["done"], r["failed"]) for p, r in json.loads(str(rep.get("results"))).items()}


def _failed_at_once(c2: Any, cause: str) -> None:
    t0 = time.monotonic()
    res = _results(c2.node)
    assert time.monotonic() - t0 < 2.0
    want = f"announcements from detector node 'detector' lost: {cause}"
    assert set(res) == {"C2-C3", "C2-C4"} and all(done and want in failed for done, failed in res.values()), res
    feed = c2.a.j_pairs["C1-C2"].feed
    with pytest.raises(NodeError, match=f"pair C1-C2: {want}"):  # Cj: Ci's next request that needs more is refused
        feed.until_hi(c2.a.j_pairs["C1-C2"].new_end(), 5000)


def test_a_chunk_beyond_the_acquisition_is_refused_naming_the_detector_and_fails_the_pairs(c2) -> None:
    assert c2.ch.request(_chunk(0, 4000)).kind == "ann/ok"  # positive control: within the acquisition
    assert len(_chunk(4000, 1 << 40).fields) and len(c2.a.j_pairs["C1-C2"].feed.pieces) >= 1
    before = len(c2.a.j_pairs["C1-C2"].feed.pieces)
    with pytest.raises(MessageError, match=r"ann/chunks from detector detector: slots up to 1099511627776, beyond "
                                           r"slot 10501 \(expected at most the acquisition's 10000 slots \(\+5%\)\)"):
        c2.ch.request(_chunk(4000, 1 << 40))
    assert len(c2.a.j_pairs["C1-C2"].feed.pieces) == before  # nothing cut, nothing handed on
    _failed_at_once(c2, "ann/chunks from detector detector: slots up to 1099511627776")


def test_a_chunk_that_does_not_continue_the_last_is_refused(c2) -> None:
    assert c2.ch.request(_chunk(0, 4000)).kind == "ann/ok"
    with pytest.raises(MessageError, match=r"slots from 0, but its announcements so far end at slot 4000 \(expected "
                                           r"each chunk to continue the last\)"):
        c2.ch.request(_chunk(0, 4000))  # the same chunk again: every block end walked twice
    _failed_at_once(c2, "ann/chunks from detector detector: slots from 0")


def test_an_end_beyond_the_acquisition_is_refused(c2) -> None:
    with pytest.raises(MessageError, match=r"ann/end from detector detector: slots up to 4611686018427387904"):
        c2.ch.request(Message("ann/end", {"final": 1 << 62}))
    _failed_at_once(c2, "ann/end from detector detector")


def test_a_malformed_field_is_named(c2) -> None:
    m = _chunk(0, 10)
    with pytest.raises(MessageError, match=r"message 'ann/chunks' from detector detector on ann: field 'lo' is a str, "
                                           r"expected int"):
        c2.ch.request(Message(m.kind, {**m.fields, "lo": "1e3"}))
    _failed_at_once(c2, "message 'ann/chunks' from detector detector on ann: field 'lo' is a str")


@pytest.mark.parametrize("how", ["abort", "close"])
def test_a_lost_announcement_session_fails_every_pair_at_once(c2, how) -> None:
    assert c2.ch.request(_chunk(0, 4000)).kind == "ann/ok"
    getattr(c2.ch, how)()  # a reset connection / a detector that stopped without ann/end
    deadline = time.monotonic() + 5
    while not c2.a.ended.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    _failed_at_once(c2, "session" if how == "close" else "")


def test_an_announcement_session_that_ended_normally_fails_nothing(c2) -> None:
    assert c2.ch.request(_chunk(0, 4000)).kind == "ann/ok"
    assert c2.ch.request(Message("ann/end", {"final": 10_000})).kind == "ann/ok"
    c2.ch.close()
    time.sleep(0.2)
    assert all(not ip.lost for ip in c2.a.i_pairs.values()) and not c2.a.j_pairs["C1-C2"].feed.lost


def test_the_open_ended_bound_follows_the_clock() -> None:
    a = _Acq(ACQ, types.SimpleNamespace(), {})
    a.rep_rate_hz, a.armed_at = 1e6, time.monotonic() - 5.0
    n, why = a.slot_bound()
    assert 20e6 <= n <= 20.5e6 and "open-ended" in why  # (2 x 5 s + 10 s) at 1 MHz
