"""Message encoding, leakage counting at the channel, authentication hook, stream transport."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.qkd.cascade import CascadeAlice, CascadeBob, CascadeSchedule
from labqfl.qkd.messaging import (
    LocalChannel,
    Message,
    MessageError,
    StreamChannel,
    decode_message,
    encode_message,
    serve_stream,
)


class HmacAuth:
    """Test authenticator (stands in for Wegman–Carter tags)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.tagged = 0

    def tag(self, payload: bytes) -> bytes:
        self.tagged += 1
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:16]

    def verify(self, payload: bytes, tag: bytes) -> None:
        if not hmac.compare_digest(self.tag(payload), tag):
            raise MessageError("bad tag")


class Echo:
    def handle(self, request: Message) -> Message:
        return Message("echo", dict(request.fields), request.disclosed.copy(), request.credit)


@settings(max_examples=40, deadline=None)
@given(bits=st.lists(st.integers(0, 1), max_size=200), ints=st.lists(st.integers(-2**40, 2**40), max_size=20),
       kind=st.text(max_size=20), credit_frac=st.floats(0, 1))
def test_messaging_encode_decode_roundtrip(bits, ints, kind, credit_frac):
    d = np.array(bits, dtype=np.uint8)
    msg = Message(kind, {"a": np.array(ints, dtype=np.int64), "x": 3, "f": 0.5, "s": "hé", "b": b"\x00\x01"},
                  d, int(credit_frac * d.size))
    back = decode_message(encode_message(msg))
    assert back.kind == kind and back.credit == msg.credit
    assert np.array_equal(back.disclosed, d)
    assert np.array_equal(back.fields["a"], msg.fields["a"])
    assert back.fields["x"] == 3 and back.fields["s"] == "hé" and back.fields["b"] == b"\x00\x01"


def test_messaging_decode_rejects_garbage_and_truncation():
    good = encode_message(Message("k", {"a": np.arange(5)}, np.ones(9, np.uint8)))
    with pytest.raises(MessageError):
        decode_message(b"nope" + good[4:])
    with pytest.raises(MessageError):
        decode_message(good[:-3])
    with pytest.raises(MessageError):
        decode_message(good + b"x")


def test_messaging_leakage_counted_at_channel_with_credit():
    ch = LocalChannel(Echo())
    ch.request(Message("q", {}, np.ones(10, np.uint8), credit=4))
    # request and echoed reply each disclose 10 bits with 4 credited
    assert ch.stats.leaked_bits == 12 and ch.stats.disclosed_bits == 20 and ch.stats.round_trips == 1
    with pytest.raises(MessageError):
        Message("q", {}, np.ones(3, np.uint8), credit=4)


def test_messaging_repr_hides_disclosed_bits():
    assert "0, 1" not in repr(Message("k", {}, np.array([0, 1, 1], np.uint8)))


def test_messaging_authenticator_tags_every_message_and_rejects_forgery():
    auth = HmacAuth(b"k" * 16)
    ch = LocalChannel(Echo(), auth)
    ch.request(Message("q", {"v": 1}, np.ones(3, np.uint8)))
    assert ch.stats.tags == 2 and ch.stats.tag_bytes == 32
    bad_peer = HmacAuth(b"x" * 16)
    with pytest.raises(MessageError):
        LocalChannel(Echo(), auth, bad_peer).request(Message("q"))


def test_messaging_cascade_over_socket_matches_in_process(frame):
    x, y = frame(3000, 0.03, 1)
    sched = CascadeSchedule.tuned(0.03)
    local = CascadeBob(y, 0.03, schedule=sched, seed=7).run(LocalChannel(CascadeAlice(x)))
    a, b = socket.socketpair()
    auth = HmacAuth(b"s" * 16)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("stats", serve_stream(b, CascadeAlice(x), auth)))
    t.start()
    try:
        remote = CascadeBob(y, 0.03, schedule=sched, seed=7).run(StreamChannel(a, auth))
    finally:
        a.close()
        t.join(10)
        b.close()
    assert np.array_equal(remote.corrected, local.corrected)
    assert remote.leaked_bits == local.leaked_bits == out["stats"].leaked_bits
    assert remote.tag_bytes > 0
