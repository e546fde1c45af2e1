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
