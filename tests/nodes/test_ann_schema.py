"""A client checks every message the detector sends it on ``ann`` against its schema
(labqfl.nodes.client.ANN_MESSAGES) before it reads a field: an ``ann/chunks`` or ``ann/end`` with a field of no
known name (the slot gaps are the ``slot_`` fields of labqfl.nodes.wire.gap_fields, nothing else of that
prefix), without a field, or with one of another type, is one MessageError naming the detector, the kind and
the field; nothing is handed on and every pair the session fed fails at once. Before, unknown fields were
accepted (they cost the client memory and rode along), and an array field of a wider type was cast silently
(an int64 outcome of 257 became 1). The detector checks the clients' replies alike
(labqfl.nodes.detector.ANN_REPLIES).

Real client node C2 over mutual TLS (the fixtures of test_detector_lies)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from node_helpers import sibling

from labqfl.nodes.client import split_chunks
from labqfl.nodes.common import NodeError
from labqfl.nodes.detector import announce_to
from labqfl.qkd.messaging import Message, MessageError

_lies, _per_client = sibling("test_detector_lies", __file__), sibling("test_ann_per_client", __file__)
#: a real client node C2 armed for an acquisition, with an ``ann`` session opened by the detector
c2 = _lies.c2
WHO = "from detector detector on ann"


def _fields(**over: Any) -> dict[str, Any]:
    return {k: v for k, v in {**_lies._chunk(0, 4000).fields, **over}.items() if v is not None}


@pytest.mark.parametrize(("fields", "words"), [
    (_fields(junk=b"x" * 1000), "carries unknown field 'junk'"),
    (_fields(slot_extra=np.zeros(3, np.int64)), "carries unknown field 'slot_extra'"),
    (_fields(slots=np.zeros(0, np.int64)), "carries unknown field 'slots'"),
    (_fields(offsets=None), "lacks field 'offsets'"),
    (_fields(slot_big=None), "lacks field 'slot_big'"),
    (_fields(pairs=b"C1-C2"), "field 'pairs' is a bytes, expected str"),
    (_fields(dropped=0), "field 'dropped' is a int, expected a 1-D array"),
    (_fields(hi=4000.0), "field 'hi' is a float, expected int"),
])
def test_a_malformed_chunk_is_refused_naming_the_field_and_nothing_is_handed_on(c2, fields, words) -> None:
    feed = c2.a.j_pairs["C1-C2"].feed
    with pytest.raises(MessageError, match=re.escape(f"message 'ann/chunks' {WHO} {words}".replace(
            f"{WHO} field", f"{WHO}: field"))):
        c2.ch.request(Message("ann/chunks", fields))
    assert len(feed.pieces) == 0 and feed.arrived_hi == 0  # nothing cut, nothing handed on
    _lies._failed_at_once(c2, f"message 'ann/chunks' {WHO}")


@pytest.mark.parametrize(("msg", "words"), [
    (Message("ann/end", {"final": 4000, "reason": "x"}), "message 'ann/end' from detector detector on ann carries "
                                                         "unknown field 'reason'"),
    (Message("ann/end", {"final": "4000"}), "message 'ann/end' from detector detector on ann: field 'final' is a "
                                            "str, expected int"),
    (Message("ann/chunk", {}), "unexpected message 'ann/chunk' from detector detector on ann (expected one of "
                               "ann/chunks, ann/end)"),
])
def test_a_malformed_end_or_another_kind_is_refused(c2, msg, words) -> None:
    assert c2.ch.request(_lies._chunk(0, 4000)).kind == "ann/ok"  # positive control
    with pytest.raises(MessageError, match=re.escape(words)):
        c2.ch.request(msg)
    assert not c2.a.ann_done
    _lies._failed_at_once(c2, words[:30])


@pytest.mark.parametrize(("over", "what"), [
    ({"outcomes": np.array([1, 2, 257], np.int64)}, "field 'outcomes' is a 1-D array of int64 (expected an array of "
                                                   "uint8 or a narrower integer type)"),
    ({"offsets": np.array([0, 2, 3], np.float64)}, "field 'offsets' is a 1-D array of float64"),
    ({"dropped": np.array([0, 2], np.uint64)}, "field 'dropped' is a 1-D array of uint64"),
])
def test_an_array_of_a_wider_type_is_refused_not_cast(over, what) -> None:
    assert [c.pair for c in split_chunks(_per_client._msg())] == ["C1-C2", "C1-C3"]  # positive control
    with pytest.raises(MessageError) as e:
        split_chunks(_per_client._msg(**over))
    assert what in str(e.value) and str(e.value).startswith("ann/chunks: ")


class _Client:
    def __init__(self, rep: Message) -> None:
        self.rep = rep

    def request(self, msg: Message) -> Message:
        return self.rep


def test_the_detector_checks_each_client_s_reply() -> None:
    announce_to(_Client(Message("ann/ok", {})), Message("ann/end", {"final": 1}), "C2")  # positive control
    with pytest.raises(MessageError, match=re.escape("message 'ann/ok' from client C2 (ann reply to 'ann/end') "
                                                     "carries unknown field 'junk'")):
        announce_to(_Client(Message("ann/ok", {"junk": b"x"})), Message("ann/end", {"final": 1}), "C2")
    with pytest.raises(MessageError, match=re.escape("unexpected message 'ann/okay' from client C2")):
        announce_to(_Client(Message("ann/okay", {})), Message("ann/end", {"final": 1}), "C2")
    with pytest.raises(MessageError, match="lacks field 'reason'"):
        announce_to(_Client(Message("node/refused", {})), Message("ann/end", {"final": 1}), "C2")
    with pytest.raises(NodeError, match="client C2 refused ann/end: not armed"):
        announce_to(_Client(Message("node/refused", {"reason": "not armed"})), Message("ann/end", {"final": 1}), "C2")
