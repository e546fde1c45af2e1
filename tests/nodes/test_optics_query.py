"""The optics' ``mod/query``: the asked slots as a bitmap over runs or as one-byte gaps, decoded exactly by the client."""

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


def _bits_query(slots: np.ndarray, runs: np.ndarray) -> dict:
    from labqfl.nodes.wire import slot_bits, slot_bits_fields

    return slot_bits_fields(runs, slot_bits(slots, runs), slots.size)


@pytest.mark.parametrize("seed", range(6))
def test_a_query_as_a_bitmap_over_runs_round_trips_and_is_about_half_a_byte_per_slot(seed):
    """The Monte-Carlo's questions: the asked slots as one bit per slot of the client's runs (runs that
    begin and end anywhere inside a 64-slot word), read back exactly and in order by the client."""
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.choice(np.arange(1, 400_000), 2 * int(rng.integers(1, 8)), replace=False)) + (1 << 33)
    runs = edges.reshape(-1, 2)
    slots = np.concatenate([lo + np.flatnonzero(rng.random(hi - lo) < 0.27) for lo, hi in runs.tolist()])
    msg = Message("mod/query", _bits_query(slots, runs))
    got = query_slots(decode_message(encode_message(msg)))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, slots)
    assert len(encode_message(msg)) < 0.5 * slots.size + 16 * runs.shape[0] + 300


def test_a_malformed_bitmap_query_is_refused_naming_the_field():
    runs = np.array([[10, 300], [700, 900]], np.int64)
    slots = np.array([10, 64, 299, 700, 899], np.int64)
    good = _bits_query(slots, runs)
    np.testing.assert_array_equal(query_slots(Message("mod/query", dict(good))), slots)
    cases = {
        "not ascending": ({"runs": np.array([700, 900, 10, 300], np.int64)}, "field 'runs' is not ascending"),
        "empty run": ({"runs": np.array([10, 10, 700, 900], np.int64)}, "field 'runs' is not ascending"),
        "odd runs": ({"runs": np.array([10, 300, 700], np.int64)}, "expected pairs lo, hi"),
        "words": ({"bits": good["bits"][:-1]}, "words its runs span"),
        "outside": ({"bits": good["bits"] | np.uint64(1)}, "outside its run"),  # slot 0 < 10
        "count": ({"n": 4}, "field 'n' is 4 but the bits hold 5 slots"),
        "dtype": ({"bits": good["bits"].astype(np.int64)}, "expected a 1-D array of uint64"),
    }
    for change, match in cases.values():
        with pytest.raises(MessageError, match=match):
            query_slots(Message("mod/query", {**good, **change}))


def test_bitmap_words_full_empty_or_with_only_the_top_bit_read_back_exactly():
    """The decoder takes four bits per step with bit 63 forced (labqfl.nodes.wire._bits_slots): words with
    every bit set, none, only bit 63, or a count not a multiple of four still give exactly their slots."""
    base = 1 << 20
    runs = np.array([[base, base + 64 * 6]], np.int64)
    cases = [np.arange(64), np.zeros(0, np.int64), np.array([63]), np.array([0, 63]), np.array([1, 2, 3, 62, 63]),
             np.arange(0, 64, 3)]
    slots = np.concatenate([base + 64 * k + c for k, c in enumerate(cases)]).astype(np.int64)
    got = query_slots(decode_message(encode_message(Message("mod/query", _bits_query(slots, runs)))))
    np.testing.assert_array_equal(got, slots)


def _logs() -> list:
    from labqfl.sim_backends.qrng import CSPRNG_GENERATOR_V1, ClientQRNGLog, CsprngChoiceLog

    return [CsprngChoiceLog("C1", (0.891, 0.024, 0.085), 0.967),
            ClientQRNGLog("C2", seed=7, epoch=3, intensity_probs=(0.6, 0.3, 0.1), basis_x_prob=0.8),
            CsprngChoiceLog("C3", (0.7, 0.2, 0.1), 0.9, generator=CSPRNG_GENERATOR_V1)]


@pytest.mark.parametrize("seed", range(5))
def test_a_client_answers_a_bitmap_question_from_the_bitmap_with_the_codes_of_the_decoded_slots(seed):
    """``answer_codes`` answers a bitmap question from the runs' dense pattern gathered at the set bits
    (``codes_of_bitmap``, no decoded slots): the same codes, in the same order, as the client's log gives for
    the decoded slots — for the three generators (CSPRNG v2, whose ambiguous slots take their fine
    words after the gather, seeded, CSPRNG v1), on runs that start and end inside a 64-slot word, two runs that
    share a word, a run longer than one keystream piece (2^18 slots), a run with no asked slot, and word-sized
    runs at slot 0."""
    from labqfl.sim_backends.qrng import _RUN_SLOTS

    from labqfl.nodes.optics import answer_codes

    rng = np.random.default_rng(seed)
    base = int(rng.integers(0, 1 << 40))
    runs = np.array([[0, 64], [64, 100], [130, 140], [base + 5, base + 5 + _RUN_SLOTS + 777],
                     [base + _RUN_SLOTS + 900, base + _RUN_SLOTS + 1500], [base + 4 * _RUN_SLOTS, base + 4 * _RUN_SLOTS + 50]],
                    np.int64)
    p = float(rng.uniform(0.05, 0.5))
    slots = np.concatenate([lo + np.flatnonzero(rng.random(hi - lo) < p) for lo, hi in runs.tolist()[:-1]])
    msg = decode_message(encode_message(Message("mod/query", _bits_query(slots.astype(np.int64), runs))))
    for log_ in _logs():
        got = answer_codes(log_, msg)
        assert got.dtype == np.uint8 and got.size == slots.size
        np.testing.assert_array_equal(got, log_.codes(query_slots(msg)))


def test_answers_without_a_bitmap_path_and_malformed_bitmaps():
    """A gap-coded question, a log class without ``codes_of_bitmap`` and a wrapper that forwards attributes
    (``PlayedChoiceLog``: it refuses slots of frames that were not played) take the decoded slots; a malformed
    bitmap is refused before any code is computed, naming the field."""
    from labqfl.modulation import PlayedChoiceLog, record_from_table
    from labqfl.nodes.optics import answer_codes, encode_query_slots

    log_ = _logs()[0]
    slots = np.array([70, 71, 200, 70_000], np.int64)
    runs = np.array([[64, 300], [65_536, 70_100]], np.int64)
    want = log_.codes(slots)
    np.testing.assert_array_equal(answer_codes(log_, Message("mod/query", encode_query_slots(slots))), want)

    class Plain:  # a ModulationLog with choices only
        def choices(self, s):  # type: ignore[no-untyped-def]
            return log_.choices(s)

    bits = Message("mod/query", _bits_query(slots, runs))
    np.testing.assert_array_equal(answer_codes(Plain(), bits), want)
    played = PlayedChoiceLog(log_, record_from_table(np.array([[0, 1], [1, 0]]), 65_536))  # frame 1 lost
    with pytest.raises(ValueError, match="not played"):
        answer_codes(played, bits)
    bad = _bits_query(slots, runs)
    bad["bits"] = bad["bits"].copy()
    bad["bits"][-1] |= np.uint64(1) << np.uint64(63)  # slot 70 143: beyond the second run's end
    with pytest.raises(MessageError, match="outside its run"):
        answer_codes(log_, Message("mod/query", bad))
