"""The nodes' gap codec (:mod:`labqfl.nodes.wire`) and the two messages built on it: ``tags/block``
(optics → detector) and ``ann/chunks`` (detector → client). Exact round trips through the wire
encoding, edge cases of the width boundaries, and malformed messages refused naming the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labqfl.contracts.types import Announcements
from labqfl.instruments.base import TagBlock
from labqfl.nodes.client import split_chunks
from labqfl.nodes.detector import chunks_message
from labqfl.nodes.optics import block_fields, block_of
from labqfl.nodes.wire import decode_gaps, encode_channels, encode_gaps
from labqfl.qkd.messaging import Message, MessageError, decode_message, encode_message

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def _wire(kind: str, fields: dict[str, Any]) -> Message:
    return decode_message(encode_message(Message(kind, fields)))


def _roundtrip(v: np.ndarray, base: int = 0, **kw: Any) -> np.ndarray:
    got = decode_gaps(_wire("t/x", encode_gaps(v, base=base, prefix="v_", **kw)), base=base, prefix="v_")
    assert got.dtype == np.int64
    return got


EDGE_CASES = [
    np.zeros(0, np.int64),                                     # empty
    np.array([7], np.int64),                                   # one value
    np.array([0], np.int64),                                   # one value equal to the base
    np.array([255, 510, 511, 767], np.int64),                  # uint8 boundary: 255 fits, 256 does not
    np.array([0, 255, 511, 511 + 65535, 511 + 65535 + 65536], np.int64),  # uint8 / uint16 boundaries
    np.cumsum(np.array([2**32 - 1, 2**32, 1, 2**32 - 1], np.int64)),     # uint32 boundary
    np.array([5, 5, 5, 4, -3, -(1 << 40)], np.int64),          # repeats, descending, negative
    np.array([I64_MAX, I64_MIN, I64_MAX, 0, I64_MIN], np.int64),  # differences that wrap modulo 2^64
    np.array([1 << 62, (1 << 62) + 3], np.int64),              # huge first gap
]


@pytest.mark.parametrize("v", EDGE_CASES)
@pytest.mark.parametrize("dtype", [None, np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("base", [0, 17, I64_MIN, I64_MAX])
def test_edge_cases_round_trip_exactly_in_every_width(v, dtype, base):
    np.testing.assert_array_equal(_roundtrip(v, base, dtype=dtype), v)


def test_the_width_boundaries_decide_what_escapes():
    d255 = encode_gaps(np.array([255, 510], np.int64), dtype=np.uint8)
    assert d255["gaps"].tolist() == [255, 255] and d255["big_at"].size == 0
    d256 = encode_gaps(np.array([256, 257], np.int64), dtype=np.uint8)
    assert d256["big_at"].tolist() == [0] and d256["big"].tolist() == [256] and d256["gaps"].tolist() == [0, 1]
    neg = encode_gaps(np.array([3, 2], np.int64), dtype=np.uint32)
    assert neg["big_at"].tolist() == [1] and neg["big"].tolist() == [-1]
    assert encode_gaps(np.array([65535], np.int64))["gaps"].dtype == np.uint16  # 2 bytes < 1 + 16
    assert encode_gaps(np.array([2**32 - 1], np.int64))["gaps"].dtype == np.uint32
    # one large gap among many small ones: escaped, the narrow width kept
    v = np.cumsum(np.r_[np.ones(100, np.int64), 1 << 40, np.ones(100, np.int64)])
    f = encode_gaps(v)
    assert f["gaps"].dtype == np.uint8 and f["big_at"].tolist() == [100]


@pytest.mark.parametrize("seed", range(6))
def test_random_arrays_round_trip_exactly(seed):
    rng = np.random.default_rng(seed)
    asc = np.cumsum(rng.geometric(rng.choice([0.5, 0.01, 1e-3, 1e-5]), rng.integers(1, 5000)).astype(np.int64))
    cases = [asc, asc + int(rng.integers(0, 1 << 50)), rng.integers(I64_MIN, I64_MAX, 3000, dtype=np.int64),
             np.repeat(asc[:40], 3), asc[::-1].copy(), np.concatenate([asc, asc[: asc.size // 2]])]
    for v in cases:
        base = int(rng.integers(-(1 << 40), 1 << 40))
        np.testing.assert_array_equal(_roundtrip(v, base), v)


def _reference_fields(v: np.ndarray, base: int) -> dict[str, np.ndarray]:
    """The codec as first written in NumPy (an int64 array of differences, a mask per width, a cast):
    the fused kernels must give the same fields, width and escapes."""
    d = np.empty(v.size, np.int64)
    if v.size:
        np.subtract(v[:1], np.array([base], np.int64), out=d[:1])
        np.subtract(v[1:], v[:-1], out=d[1:])
    u = d.view(np.uint64)
    best: tuple[int, Any, np.ndarray] | None = None
    for t in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32)):
        if best is not None and best[0] <= v.size * t.itemsize:
            break
        big = u > np.iinfo(t).max
        cost = v.size * t.itemsize + 16 * int(np.count_nonzero(big))
        if best is None or cost < best[0]:
            best = (cost, t, big)
    assert best is not None
    _, t, big = best
    at = np.flatnonzero(big).astype(np.int64)
    gaps = d.astype(t)
    gaps[at] = 0
    return {"gaps": gaps, "big_at": at, "big": d[at]}


@pytest.mark.parametrize("seed", range(8))
def test_the_fused_codec_gives_the_fields_of_the_numpy_reference(seed):
    """Same width, gaps, escape positions and values as the NumPy codec it replaced, on ascending
    candidates, tags with frame jumps, descending and random arrays, and every edge case."""
    rng = np.random.default_rng(seed)
    asc = np.cumsum(rng.geometric(rng.choice([0.3, 0.01, 2e-5]), rng.integers(1, 40_000)).astype(np.int64))
    jumps = asc + np.repeat(rng.integers(0, 1 << 33, 8), -(-asc.size // 8))[:asc.size].cumsum()
    for v in [asc, jumps, asc[::-1].copy(), rng.integers(I64_MIN, I64_MAX, 500, dtype=np.int64), *EDGE_CASES]:
        base = int(rng.choice([0, int(v[0]) if v.size else 0, I64_MIN, I64_MAX]))
        got, ref = encode_gaps(v, base=base), _reference_fields(v, base)
        for k in ref:
            assert got[k].dtype == ref[k].dtype, k
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def _block(seed: int, n: int = 20000) -> TagBlock:
    rng = np.random.default_rng(seed)
    ts = 10**12 * seed + np.cumsum(rng.exponential(435_000, n).astype(np.int64))  # 2.3 M tags/s, ps
    return TagBlock(ts, rng.choice(np.array([1, 2, 3], np.int16), n))


@pytest.mark.parametrize("seed", range(3))
def test_a_tag_block_round_trips_exactly_in_about_five_bytes_a_tag(seed):
    b = _block(seed)
    fields = block_fields(b)
    got = block_of(_wire("tags/block", fields))
    assert got.timestamps.dtype == np.int64 and got.channels.dtype == np.int16
    np.testing.assert_array_equal(got.timestamps, b.timestamps)
    np.testing.assert_array_equal(got.channels, b.channels)
    new = len(encode_message(Message("tags/block", fields)))
    old = len(encode_message(Message("tags/block", {"ts": b.timestamps, "ch": b.channels})))
    assert fields["ts_gaps"].dtype == np.uint32 and fields["ch"].dtype == np.uint8
    assert new < 5.01 * b.timestamps.size + 200 and new < old / 1.9


def test_tag_blocks_with_odd_timestamps_or_channels_round_trip_exactly():
    ts = np.array([5, 5, 3, I64_MAX, I64_MIN, 0, 1 << 33], np.int64)  # ties, backwards, huge
    for ch in (np.array([0, 255, 1, 2, 3, 4, 5], np.int16), np.array([-1, 300, 1, 2, 3, 4, -32768], np.int16)):
        fields = block_fields(TagBlock(ts, ch))
        got = block_of(_wire("tags/block", fields))
        np.testing.assert_array_equal(got.timestamps, ts)
        np.testing.assert_array_equal(got.channels, ch)
    assert encode_channels(np.array([-1, 2], np.int16)).dtype == np.int16
    empty = block_of(_wire("tags/block", block_fields(TagBlock(np.zeros(0, np.int64), np.zeros(0, np.int16)))))
    assert empty.timestamps.size == 0 and empty.channels.size == 0


def test_a_plain_tag_block_is_read_as_it_is():
    b = _block(1, 50)
    got = block_of(Message("tags/block", {"ts": b.timestamps, "ch": b.channels}))
    np.testing.assert_array_equal(got.timestamps, b.timestamps)


def _ann_parts(rng: np.random.Generator, lo: int, hi: int, n_pairs: int) -> list[tuple[str, int, Announcements]]:
    parts = []
    for k in range(n_pairs):
        slots = np.flatnonzero(rng.random(hi - lo) < rng.choice([0.0, 0.01, 0.3])).astype(np.int64) + lo
        parts.append((f"C1-C{k + 2}", int(rng.integers(0, 5)),
                      Announcements(f"C1-C{k + 2}", slots, rng.integers(1, 4, slots.size).astype(np.uint8))))
    return parts


@pytest.mark.parametrize("seed", range(5))
def test_announcements_round_trip_exactly_through_the_wire(seed):
    rng = np.random.default_rng(seed)
    lo = int(rng.integers(0, 1 << 40))
    hi = lo + int(rng.integers(1, 200_000))
    parts = _ann_parts(rng, lo, hi, int(rng.integers(1, 4)))
    m = chunks_message(lo, hi, parts)
    got = split_chunks(decode_message(encode_message(m)))
    assert [c.pair for c in got] == [p[0] for p in parts]
    for c, (pair, dropped, ann) in zip(got, parts, strict=True):
        assert (c.lo, c.hi, c.dropped) == (lo, hi, dropped) and c.ann.pair == pair
        assert c.ann.slots.dtype == np.int64 and c.ann.outcomes.dtype == np.uint8
        np.testing.assert_array_equal(c.ann.slots, ann.slots)
        np.testing.assert_array_equal(c.ann.outcomes, ann.outcomes)
        # the transcript's local entry is built from these bytes: identical to the int64 slots sent before
        assert c.ann.slots.tobytes() == np.asarray(ann.slots, np.int64).tobytes()
    n = sum(p[2].slots.size for p in parts)
    if n > 1000:  # about two bytes a slot (gap + outcome) instead of nine
        assert len(encode_message(m)) < 2.05 * n + 100 * len(parts) + 200


def test_announcements_of_no_pair_one_slot_and_far_slots_round_trip():
    one = [("C1-C2", 0, Announcements("C1-C2", np.array([4], np.int64), np.array([2], np.uint8)))]
    far = [("C1-C2", 1, Announcements("C1-C2", np.array([10, 10 + 256, 10 + 65536 + 256, 1 << 45], np.int64),
                                      np.array([1, 2, 3, 1], np.uint8))),
           ("C1-C3", 0, Announcements("C1-C3", np.zeros(0, np.int64), np.zeros(0, np.uint8)))]
    for lo, hi, parts in ((4, 5, one), (10, (1 << 45) + 1, far)):  # (no pairs: never sent, refused)
        got = split_chunks(decode_message(encode_message(chunks_message(lo, hi, parts))))
        for c, p in zip(got, parts, strict=True):
            np.testing.assert_array_equal(c.ann.slots, p[2].slots)


_FIRST = np.r_[np.arange(3, 63), 400].astype(np.int64)  # 60 gaps of 1 byte, then one of 337


def _ann_msg(**over: Any) -> Message:
    parts = [("C1-C2", 0, Announcements("C1-C2", _FIRST, np.ones(61, np.uint8))),
             ("C1-C3", 2, Announcements("C1-C3", np.array([5], np.int64), np.array([3], np.uint8)))]
    m = chunks_message(0, 1000, parts)
    assert m.fields["slot_gaps"].dtype == np.uint8
    assert m.fields["slot_big_at"].tolist() == [60, 61]  # the gap of 337 and the second pair's first slot
    return Message(m.kind, {**m.fields, **over})


@pytest.mark.parametrize(("over", "what"), [
    ({"slot_big_at": np.array([60, 62], np.int64)}, "field 'slot_big_at': large gaps at positions from 60 to 62 of 62"),
    ({"slot_big_at": np.array([-1, 61], np.int64)}, "field 'slot_big_at'"),
    ({"slot_big_at": np.array([61, 60], np.int64)}, "expected ascending positions"),
    ({"slot_big_at": np.array([60, 60], np.int64)}, "expected ascending positions"),
    ({"slot_big": np.array([337], np.int64)}, "1 large gaps ('slot_big') at 2 positions ('slot_big_at')"),
    ({"slot_big": np.array([337, -395], np.int32)}, "field 'slot_big' is a 1-D array of int32"),
    ({"slot_gaps": np.ones(62, np.int64)}, "field 'slot_gaps' is a 1-D array of int64"),
    ({"slot_gaps": b"\x03\x06\x00\x00"}, "field 'slot_gaps' is a bytes"),
    ({"slot_gaps": np.ones(61, np.uint8)}, "of 61 values"),
    ({"slot_gaps": np.ones(63, np.uint8)}, "63 announced slots but 62 outcomes"),
])
def test_malformed_announcement_gaps_are_refused_naming_the_field(over, what):
    got = split_chunks(_ann_msg())  # positive control
    assert got[0].ann.slots.tolist() == _FIRST.tolist() and got[1].ann.slots.tolist() == [5]
    with pytest.raises(MessageError) as e:
        split_chunks(_ann_msg(**over))
    assert what in str(e.value) and str(e.value).startswith("ann/chunks: ")


def test_a_missing_gap_field_is_refused_naming_it():
    fields = dict(_ann_msg().fields)
    del fields["slot_big"]
    with pytest.raises(MessageError, match="lacks field 'slot_big'"):
        split_chunks(Message("ann/chunks", fields))


@pytest.mark.parametrize(("over", "what"), [
    ({"ch": np.array([1, 2], np.uint8)}, "3 timestamps but 2 channels in field 'ch'"),
    ({"ch": np.array([1, 2, 3], np.int32)}, "field 'ch' is a 1-D array of int32 (expected a 1-D array of uint8 or int16)"),
    ({"ts_big_at": np.array([3], np.int64), "ts_big": np.array([1], np.int64)}, "field 'ts_big_at': large gaps at positions from 3 to 3 of 3"),
    ({"ts_gaps": np.array([1, 2, 3], np.float64)}, "field 'ts_gaps' is a 1-D array of float64"),
])
def test_malformed_tag_blocks_are_refused_naming_the_field(over, what):
    fields = block_fields(TagBlock(np.array([10**9, 10**9 + 7, 10**9 + 99], np.int64), np.array([1, 2, 3], np.int16)))
    assert block_of(Message("tags/block", fields)).timestamps.tolist() == [10**9, 10**9 + 7, 10**9 + 99]
    with pytest.raises(MessageError) as e:
        block_of(Message("tags/block", {**fields, **over}))
    assert what in str(e.value) and str(e.value).startswith("tags/block: ")
