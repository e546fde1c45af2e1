"""The fast message codec against its first implementation: the same bytes for every message,
the same decoded message for every encoding, and the same error for every malformed one."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.qkd.messaging import (
    Message,
    MessageError,
    decode_message,
    decode_message_reference,
    encode_message,
    encode_message_reference,
)

_DT = ["u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", ">i4", ">f8", "<u2"]


@st.composite
def _values(draw):
    kind = draw(st.sampled_from(["int", "bool", "npint", "float", "npfloat", "str", "bytes", "array"]))
    if kind == "int":
        return draw(st.integers(-2**63, 2**63 - 1))
    if kind == "bool":
        return draw(st.booleans())
    if kind == "npint":
        return np.int32(draw(st.integers(-2**31, 2**31 - 1)))
    if kind == "float":
        return draw(st.floats(allow_nan=False))
    if kind == "npfloat":
        return np.float32(draw(st.floats(-1e6, 1e6, width=32)))
    if kind == "str":
        return draw(st.text(max_size=20))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    dt = np.dtype(draw(st.sampled_from(_DT)))
    n = draw(st.integers(0, 30))
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
    a = np.frombuffer(raw, dtype=dt).copy()
    return a[np.isfinite(a)] if dt.kind == "f" else a


@st.composite
def _messages(draw):
    fields = draw(st.dictionaries(st.text(min_size=1, max_size=8), _values(), max_size=6))
    bits = np.array(draw(st.lists(st.integers(0, 1), max_size=70)), dtype=np.uint8)
    credit = draw(st.integers(0, bits.size))
    return Message(draw(st.sampled_from(["sift/flags", "test/bits", "cascade/round", "é/ü"])), fields, bits, credit)


def _same_message(a: Message, b: Message) -> None:
    assert a.kind == b.kind and a.credit == b.credit and sorted(a.fields) == sorted(b.fields)
    np.testing.assert_array_equal(a.disclosed, b.disclosed)
    for k, v in a.fields.items():
        w = b.fields[k]
        assert type(v) is type(w)
        if isinstance(v, np.ndarray):
            assert v.dtype == w.dtype and v.tobytes() == w.tobytes()
        else:
            assert v == w


@settings(max_examples=200, deadline=None)
@given(msg=_messages())
def test_fast_codec_gives_the_reference_bytes_and_messages(msg):
    raw = encode_message(msg)
    assert raw == encode_message_reference(msg)
    _same_message(decode_message(raw), decode_message_reference(raw))
    _same_message(decode_message(bytearray(raw)), decode_message_reference(raw))


def _outcome(fn, raw):
    try:
        m = fn(raw)
    except MessageError as e:
        return ("error", str(e))
    return ("ok", encode_message(m))


@settings(max_examples=300, deadline=None)
@given(msg=_messages(), cut=st.integers(0, 400), flip=st.integers(0, 400), byte=st.integers(0, 255),
       tail=st.binary(max_size=3))
def test_fast_decoder_refuses_malformed_messages_as_the_reference_does(msg, cut, flip, byte, tail):
    """Truncated, altered and extended encodings: the same message or the same error."""
    raw = encode_message(msg)
    bad = bytearray(raw)
    if bad:
        bad[flip % len(bad)] = byte
    for cand in (raw[:cut % (len(raw) + 1)], bytes(bad), raw + tail):
        assert _outcome(decode_message, cand) == _outcome(decode_message_reference, cand)


def test_parts_join_to_the_encoding_and_a_memoryview_decodes_in_place_to_owned_arrays():
    """``encode_message_parts`` (array fields as views of the arrays, joined once by a transport) joins to
    the reference bytes, also for big-endian, strided and empty arrays; ``decode_message`` of a
    ``memoryview`` (a received frame's payload, not copied first) gives the same message, its arrays
    writable copies that outlive the buffer, its bytes fields ``bytes``."""
    import gc

    from labqfl.qkd.messaging import encode_message_parts

    arrays = [np.zeros(0, np.int64), np.arange(10, dtype=">i4"), np.arange(40, dtype=np.int64)[::3],
              np.arange(7, dtype=np.uint8), np.array([1.5, -2.5])]
    for a in arrays:
        m = Message("k/x", {"a": a, "b": b"xyz", "n": -5, "s": "hé"}, disclosed=np.array([1, 0, 1], np.uint8))
        raw = b"".join(encode_message_parts(m))
        assert raw == encode_message(m) == encode_message_reference(m)
        frame = bytearray(b"\x00\x00" + raw)
        got = decode_message(memoryview(bytes(frame))[2:])
        del frame
        gc.collect()
        np.testing.assert_array_equal(got.get("a"), a)
        assert got.get("a").flags.writeable and got.get("a").flags.owndata
        assert type(got.get("b")) is bytes and got.get("b") == b"xyz" and got.get("s") == "hé" and got.get("n") == -5
        np.testing.assert_array_equal(got.disclosed, [1, 0, 1])
    with pytest.raises(MessageError, match="trailing"):
        decode_message(memoryview(encode_message(Message("k/x", {})) + b"\x00"))
