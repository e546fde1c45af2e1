"""Verification hash: packed kernel vs reference, detection of differing keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.errors import QKDInputError
from labqfl.qkd.toeplitz import toeplitz_seed
from labqfl.qkd.verification import (
    hash_tag,
    hash_tag_reference,
    verification_tag_length,
    verify_keys,
)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 700), t=st.integers(1, 64))
def test_hash_tag_matches_reference(seed, n, t):
    t = min(t, n)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + t - 1, dtype=np.uint8)
    np.testing.assert_array_equal(hash_tag(x, s, t), hash_tag_reference(x, s, t))


def test_tag_length_from_eps_cor():
    assert verification_tag_length(1e-15) == 50
    assert verification_tag_length(0.5) == 1
    with pytest.raises(QKDInputError):
        verification_tag_length(0.0)


def test_equal_keys_pass_and_differing_keys_are_caught():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 100_000, dtype=np.uint8)
    assert verify_keys(a, a.copy(), 1e-12).ok
    caught = 0
    for _ in range(20):
        b = a.copy()
        b[rng.integers(0, a.size)] ^= 1
        caught += not verify_keys(a, b, 1e-12).ok
    assert caught == 20
    # with a fixed seed, a single-bit difference flips the tag iff that column of T is non-zero
    s = toeplitz_seed(a.size, 40)
    b = a.copy()
    b[5] ^= 1
    assert verify_keys(a, b, 1e-12, seed_bits=s).ok == (not s[(np.arange(40) - 5) % s.size].any())


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(QKDInputError, match="expected 10 bits, got 9"):
        verify_keys(np.zeros(10, np.uint8), np.zeros(9, np.uint8), 1e-10)
    with pytest.raises(QKDInputError, match="uint8"):
        verify_keys(np.zeros(10, np.int64), np.zeros(10, np.int64), 1e-10)
