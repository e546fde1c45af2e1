"""Local entries hashed as they arrive (``TranscriptAuthenticator.absorb_trailing``) give the digest of
absorbing them after every message, bit for bit; a pair end (``TranscriptEnd``) so holds nothing once the
pair's hash key is drawn, and its final tags are those of holding the entries until the block closes."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.errors import AuthenticationError, QKDInputError
from labqfl.qkd.authentication import BitPool, TranscriptAuthenticator, _gf64_pow, gf64_mul
from labqfl.qkd.twoparty import TranscriptEnd


def _pool(seed: int = 5) -> BitPool:
    return BitPool(np.random.default_rng(seed).integers(0, 2, 1 << 14, dtype=np.uint8))  # test key, not secret


def _entries(rng: np.random.Generator, n: int) -> list[tuple[int, bytes]]:
    """n entries of random directions (0, 1: messages; 2: local) and lengths 0 … 200 bytes (all paddings)."""
    out = []
    for _ in range(n):
        d = int(rng.integers(0, 3))
        out.append((d, rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()))
    return out


def test_gf64_pow_matches_repeated_products() -> None:
    k = 0x9E3779B97F4A7C15
    r = 1
    for m in range(40):
        assert _gf64_pow(k, m) == r
        r = gf64_mul(r, k)


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_trailing_digest_equals_messages_then_locals(seed: int, lanes: int) -> None:
    rng = np.random.default_rng(seed)
    entries = _entries(rng, 30)
    held, fast = TranscriptAuthenticator(_pool(), lanes), TranscriptAuthenticator(_pool(), lanes)
    first = (0, b"first message draws the key")
    held.absorb(*first)
    fast.absorb(*first)
    for d, p in entries:  # interleaved in time: messages go in order, locals into the trailing part
        if d == 2:
            fast.absorb_trailing(p)
        else:
            fast.absorb(d, p)
    for d, p in [e for e in entries if e[0] != 2] + [e for e in entries if e[0] == 2]:
        held.absorb(d, p)
    assert fast.messages == held.messages
    held.close()
    fast.close()
    assert fast.final_words == held.final_words
    assert fast.final_tag() == held.final_tag()
    # a second transcript on the same key starts clean (the trailing part too)
    for a in (held, fast):
        a.absorb(1, b"next block")
    fast.absorb_trailing(b"ann of the next block")
    held.absorb(2, b"ann of the next block")
    held.close()
    fast.close()
    assert fast.final_tag() == held.final_tag()


def test_one_local_byte_changed_fails_the_tags() -> None:
    a, b = TranscriptAuthenticator(_pool()), TranscriptAuthenticator(_pool())
    for t in (a, b):
        t.absorb(0, b"m")
    a.absorb_trailing(b"ann/" + bytes(40))
    b.absorb_trailing(b"ann/" + bytes(39) + b"\x01")
    a.close()
    b.close()
    with pytest.raises(AuthenticationError):
        b.check_final(a.final_tag())


def test_trailing_never_draws_the_key() -> None:
    t = TranscriptAuthenticator(_pool())
    with pytest.raises(QKDInputError, match="hash key already drawn"):
        t.absorb_trailing(b"ann")
    assert t.key_bits_used == 0


def test_pair_end_hashes_locals_on_arrival_with_the_tags_of_holding_them() -> None:
    """Two ends fed the same block, one the way a pair end works now (locals hashed as they arrive once
    the key is drawn), the other holding every local until close (the former behaviour, emulated by
    absorbing them at close): same final tags over three blocks, and nothing held after the first."""
    rng = np.random.default_rng(11)
    end = TranscriptEnd(TranscriptAuthenticator(_pool()), 0)
    ref = TranscriptAuthenticator(_pool())
    for block in range(3):
        entries = _entries(rng, 25)
        locals_ = []
        end.start()
        for d, p in entries:
            if d == 2:
                end.local(p)
                locals_.append(p)
            else:
                end.tag(p) if d == 0 else end.verify(p, b"")
                ref.absorb(d, p)
            if block:  # the key was drawn in block 0: nothing is held any more
                assert end.held_bytes() == 0
        for p in locals_:
            ref.absorb(2, p)
        end.close()
        ref.close()
        assert end.auth.final_tag() == ref.final_tag(), block
