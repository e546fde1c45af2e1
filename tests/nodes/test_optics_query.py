"""The optics' ``mod/query``: the asked slots as one-byte gaps, decoded exactly by the client."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.nodes.optics import encode_query_slots, query_slots
from labqfl.qkd.messaging import Message, MessageError, decode_message, encode_message


def _roundtrip(slots: np.ndarray) -> np.ndarray:
    msg = Message("mod/query", encode_query_slots(slots))
    return query_slots(decode_message(encode_message(msg)))


@pytest.mark.parametrize("seed", range(8))
def test_asked_slots_round_trip_exactly_through_the_wire(seed):
    """Ascending candidates with frame jumps (the testbed's queries), slot 0 first, huge slots,
    and arbitrary int64 arrays (repeats, descending, negative) all come back as they were."""
    rng = np.random.default_rng(seed)
    frames = np.sort(rng.choice(50, 6, replace=False)) * 65536
    asc = np.unique(np.concatenate([f + np.flatnonzero(rng.random(65536) < 0.27) for f in frames]))
    cases = [asc, asc + (1 << 40), np.concatenate([[0], asc + 1]), np.zeros(0, np.int64),
             rng.integers(-(1 << 62), 1 << 62, 500), np.repeat(asc[:50], 3), asc[::-1].copy()]
    for s in cases:
        got = _roundtrip(s.astype(np.int64))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, s)


def test_a_query_of_ascending_candidates_is_about_one_byte_per_slot():
    rng = np.random.default_rng(1)
    slots = np.concatenate([f * 65536 + np.flatnonzero(rng.random(65536) < 0.27) for f in (0, 2, 4, 6)])
    fields = encode_query_slots(slots)
    wire = len(encode_message(Message("mod/query", fields)))
    assert fields["big"].size <= 4 and wire < 1.01 * slots.size + 200
    assert wire < len(encode_message(Message("mod/query", {"slots": slots}))) / 7


def test_a_query_with_large_gaps_outside_the_slots_is_refused():
    fields = encode_query_slots(np.array([5, 10, 1000], np.int64))
    fields["big_at"] = np.array([7], np.int64)
    with pytest.raises(MessageError, match="large gaps"):
        query_slots(Message("mod/query", fields))


def test_a_query_with_plain_slots_is_read_as_it_is():
    s = np.array([3, 1, 4, 1, 5], np.int64)
    np.testing.assert_array_equal(query_slots(Message("mod/query", {"slots": s})), s)


def test_the_optics_refuses_an_answer_with_a_level_the_client_does_not_have_or_the_wrong_count():
    """A client's answer on its modulator link is drive codes k·4 + a, one per asked slot. A code whose
    level k the client's station entry does not have (the Monte-Carlo's probability table holds no row
    for it) and an answer of the wrong length are refused, each naming what was wrong; a valid answer
    comes back as sent."""
    from labqfl.nodes.common import NodeError
    from labqfl.nodes.optics import ModulatorLink

    def answer(codes: list[int], asked: int = 3) -> np.ndarray:
        link = ModulatorLink("C2", levels=3)
        wait = link.ask(np.arange(asked, dtype=np.int64))
        link.handle(Message("mod/applied", {"codes": np.array(codes, np.uint8)}))
        return wait()

    np.testing.assert_array_equal(answer([0, 5, 11]), [0, 5, 11])  # levels 0, 1, 2 (k·4 + a ≤ 11)
    with pytest.raises(NodeError, match=r"C2 answered intensity level 3 \(code 12\).*below its 3 levels"):
        answer([0, 12, 1])
    with pytest.raises(NodeError, match="C2 answered 2 codes for 3 slots"):
        answer([0, 1])
