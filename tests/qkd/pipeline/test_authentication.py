"""Wegman–Carter authentication: hash vs reference, tamper/inject/replay rejected, cost counted."""

from __future__ import annotations

import numpy as np
import pytest
from galois import GF
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.errors import AuthenticationError, InsufficientKeyError
from labqfl.qkd.authentication import (
    BitPool,
    WegmanCarterAuthenticator,
    gf64_mul,
    poly_hash,
    poly_hash_reference,
)
from labqfl.qkd.messaging import LocalChannel, Message, encode_message


def _pair(nbits: int = 4096, lanes: int = 1, seed: int = 0) -> tuple[WegmanCarterAuthenticator, WegmanCarterAuthenticator]:
    bits = np.random.default_rng(seed).integers(0, 2, nbits, dtype=np.uint8)
    return WegmanCarterAuthenticator(BitPool(bits), lanes), WegmanCarterAuthenticator(BitPool(bits.copy()), lanes)


def test_gf64_multiplication_matches_galois():
    field = GF(2**64, irreducible_poly="x^64 + x^4 + x^3 + x + 1")
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = (int(v) for v in rng.integers(0, 2**63, 2, dtype=np.int64))
        a |= 1 << 63
        assert gf64_mul(a, b) == int(field(a) * field(b))


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(max_size=200), key=st.integers(0, 2**64 - 1))
def test_poly_hash_matches_reference(payload, key):
    assert poly_hash(payload, key) == poly_hash_reference(payload, key)


def test_tags_verify_and_cost_is_counted():
    a, b = _pair(lanes=2)
    for msg in (b"hello", b"", b"x" * 1000):
        b.verify(msg, a.tag(msg))
    assert a.key_bits_used == b.key_bits_used == 128 + 3 * 128


def test_tampered_injected_and_replayed_messages_are_rejected():
    a, b = _pair()
    m = b"parities 0101"
    t = a.tag(m)
    with pytest.raises(AuthenticationError, match="tag mismatch"):
        b.verify(b"parities 0111", t)  # altered
    a, b = _pair()
    with pytest.raises(AuthenticationError):
        b.verify(b"injected", b"\x00" * 8)  # injected with a guessed tag
    a, b = _pair()
    t1 = a.tag(m)
    b.verify(m, t1)
    with pytest.raises(AuthenticationError):
        b.verify(m, t1)  # replay: checked against the next pad


class _Echo:
    def handle(self, request: Message) -> Message:
        return Message("echo/reply", {"n": int(request.get("n")) + 1})


class _Tamper:
    """Channel wrapper that flips one bit of every payload in flight (an active outsider)."""

    def __init__(self, auth: WegmanCarterAuthenticator) -> None:
        self.auth = auth

    def tag(self, payload: bytes) -> bytes:
        return self.auth.tag(payload)

    def verify(self, payload: bytes, tag: bytes) -> None:
        altered = bytearray(payload)
        altered[-1] ^= 1
        self.auth.verify(bytes(altered), tag)


def test_plugs_into_message_channel_and_blocks_an_active_attacker():
    a, b = _pair()
    ch = LocalChannel(_Echo(), authenticator=b, peer_authenticator=a)
    assert ch.request(Message("echo/req", {"n": 1})).get("n") == 2
    assert ch.stats.tags == 2 and ch.stats.tag_bytes == 16
    a, b = _pair()
    ch = LocalChannel(_Echo(), authenticator=b, peer_authenticator=_Tamper(a))
    with pytest.raises(AuthenticationError):
        ch.request(Message("echo/req", {"n": 1}))
    assert len(encode_message(Message("x"))) > 0


def test_pool_exhaustion_is_a_clear_error():
    a = WegmanCarterAuthenticator(BitPool(np.zeros(100, np.uint8)))
    with pytest.raises(InsufficientKeyError, match="holds 36 bits; 64 needed"):
        a.tag(b"m")


def test_a_transcript_above_its_cap_is_refused_at_that_end_and_the_bound_uses_the_cap():
    """Review s32 F1: ε_auth came from the transcript lengths seen, which an adversary chooses (fields no handler
    reads ride along up to the transport's limit). With a cap fixed before the block, an end refuses a transcript
    above it — even one its partner saw identically — after spending the same pads as its partner, and the bound
    is the cap's."""
    from labqfl.qkd.authentication import (
        TranscriptAuthenticator,
        confirm_transcripts,
        forgery_probability,
        transcript_forgery_probability,
        transcript_word_cap,
    )

    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2, 4096, dtype=np.uint8)
    cap = 64
    for size, refused in ((8 * 40, False), (8 * 80, True)):
        pi, pj = BitPool(bits.copy()), BitPool(bits.copy())
        ai, aj = TranscriptAuthenticator(pi, max_words=cap), TranscriptAuthenticator(pj, max_words=cap)
        for a in (ai, aj):
            a.absorb(0, bytes(size))
        if refused:
            with pytest.raises(AuthenticationError, match=r"above its cap of 64"):
                confirm_transcripts(ai, aj)
            assert aj.over_cap and ai.over_cap
            assert ai.key_bits_used == aj.key_bits_used == 128  # the hash key and one pad each: still in step
        else:
            eps = confirm_transcripts(ai, aj)
            assert eps == 2 * forgery_probability(cap) == transcript_forgery_probability(ai, aj, 2)
            assert ai.forgery_bound(2) == eps and ai.final_words < cap
            assert ai.key_bits_used == aj.key_bits_used
    assert transcript_word_cap(10**7) == 4 * 10**7 + 2**20
    with pytest.raises(Exception, match="max_words"):
        TranscriptAuthenticator(BitPool(bits.copy()), max_words=0)
