"""Toeplitz privacy amplification: bit-for-bit agreement with randextract, exactness, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from galois import GF2
from hypothesis import given, settings
from hypothesis import strategies as st
from randextract import ToeplitzHashing

import labqfl.qkd.toeplitz as toeplitz_module
from labqfl.errors import QKDInputError
from labqfl.qkd import toeplitz_hash
from labqfl.qkd.toeplitz import (
    HAS_CLMUL,
    _pack_checked,
    _tfft_params,
    _toeplitz_gf2,
    _toeplitz_tfft,
    toeplitz_hash_fft,
    toeplitz_hash_gf2,
    toeplitz_hash_ntt,
    toeplitz_hash_reference,
    toeplitz_hash_tfft,
    toeplitz_seed,
    toeplitz_seed_length,
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 600), frac=st.floats(0.0, 1.0))
def test_matches_randextract_and_reference_bit_for_bit(seed, n, frac):
    m = max(1, int(round(frac * n)))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    ours = toeplitz_hash(x, s, m)
    theirs = np.asarray(ToeplitzHashing(n, m).extract(GF2(x), GF2(s))).astype(np.uint8)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, toeplitz_hash_reference(x, s, m))
    np.testing.assert_array_equal(ours, toeplitz_hash_ntt(x, s, m))
    np.testing.assert_array_equal(ours, toeplitz_hash_fft(x, s, m))
    assert ours.dtype == np.uint8 and ours.shape == (m,)


def test_known_answer_small_matrix():
    # T[i, j] = seed[(i - j) mod 4] for n = 3, m = 2: rows [s0 s3 s2], [s1 s0 s3]
    seed = np.array([1, 0, 1, 1], dtype=np.uint8)
    x = np.array([1, 1, 0], dtype=np.uint8)
    assert toeplitz_hash(x, seed, 2).tolist() == [(1 + 1) % 2, (0 + 1) % 2]


def test_fft_and_gf2_paths_are_exact_on_a_large_block_against_the_ntt():
    rng = np.random.default_rng(11)
    n, m = (1 << 20) + 37, 300_001
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = toeplitz_seed(n, m)
    ntt = toeplitz_hash_ntt(x, s, m)
    np.testing.assert_array_equal(toeplitz_hash_fft(x, s, m), ntt)
    np.testing.assert_array_equal(toeplitz_hash(x, s, m), ntt)


needs_clmul = pytest.mark.skipif(not HAS_CLMUL, reason="CPU has no pclmulqdq (toeplitz_hash uses the FFT path)")


@needs_clmul
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5000), frac=st.floats(0.0, 1.0), base=st.integers(1, 5))
def test_gf2_karatsuba_matches_the_reference_at_every_recursion_depth(seed, n, frac, base):
    # a tiny schoolbook threshold forces deep Karatsuba recursion and many tiles on small inputs
    m = max(1, int(round(frac * n)))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    expect = toeplitz_hash_reference(x, s, m) if n * m <= 4_000_000 else toeplitz_hash_fft(x, s, m)
    np.testing.assert_array_equal(_toeplitz_gf2(x, s, n, m, base), expect)


@needs_clmul
def test_gf2_path_on_a_block_with_recursion_and_several_tiles_against_fft():
    rng = np.random.default_rng(12)
    n, m = 3_000_017, 700_003
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = toeplitz_seed(n, m)
    fft = toeplitz_hash_fft(x, s, m)
    np.testing.assert_array_equal(toeplitz_hash_gf2(x, s, m), fft)
    np.testing.assert_array_equal(toeplitz_hash_tfft(x, s, m), fft)


@needs_clmul
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000), frac=st.floats(0.0, 1.0),
       k=st.integers(1, 5), extra_t=st.integers(0, 3), extra_sw=st.integers(0, 2))
def test_ternary_fft_matches_the_reference_for_any_transform_shape(seed, n, frac, k, extra_t, extra_sw):
    # every (K = 3^k points, L = t·3^(k−1), chunk 64·sw bits) that fits, not only the cost model's
    m = max(1, int(round(frac * n)))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    sw = -(-(n + m - 1) // (64 * 3**k)) + extra_sw
    t = -(-64 * sw // 3 ** (k - 1)) + extra_t
    expect = toeplitz_hash_reference(x, s, m)
    np.testing.assert_array_equal(_toeplitz_tfft(x, s, n, m, (k, t, sw)), expect)
    np.testing.assert_array_equal(_toeplitz_tfft(x, s, n, m), expect)


@needs_clmul
@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 127, 128, 129, 1000, 4097])
def test_every_path_agrees_at_edge_sizes(n):
    # n not a multiple of 64, the shortest output (ℓ = 1), ℓ = n − 1 and ℓ = n
    rng = np.random.default_rng(n)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    for m in sorted({1, max(1, n - 1), n}):
        s = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
        expect = toeplitz_hash_reference(x, s, m)
        theirs = np.asarray(ToeplitzHashing(n, m).extract(GF2(x), GF2(s))).astype(np.uint8)
        np.testing.assert_array_equal(theirs, expect)
        for path in (toeplitz_hash, toeplitz_hash_tfft, toeplitz_hash_gf2, toeplitz_hash_fft, toeplitz_hash_ntt):
            np.testing.assert_array_equal(path(x, s, m), expect, err_msg=f"{path.__name__} n={n} m={m}")


@needs_clmul
def test_ternary_fft_on_a_full_size_block_against_the_karatsuba_tiles():
    # the production shape (10^7 input bits, ℓ = n/4: K = 3^8 points, L = 2187) and an odd one
    rng = np.random.default_rng(13)
    for n, m in ((10_000_000, 2_500_000), (5_000_011, 4_999_999)):
        x = rng.integers(0, 2, n, dtype=np.uint8)
        s = toeplitz_seed(n, m)
        np.testing.assert_array_equal(toeplitz_hash(x, s, m), _toeplitz_gf2(x, s, n, m))
    assert _tfft_params(10_000_000, 2_500_000) == (8, 1, 30)


def test_ternary_fft_rejects_parameters_that_do_not_fit():
    x = np.zeros(1000, np.uint8)
    with pytest.raises(QKDInputError, match="do not fit"):
        _toeplitz_tfft(x, np.zeros(1999, np.uint8), 1000, 1000, (1, 64, 2))


def test_large_block_spot_rows_against_direct_parities():
    rng = np.random.default_rng(5)
    n, m = 3_000_000, 1_000_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    y = toeplitz_hash(x, s, m)
    L = n + m - 1
    j = np.arange(n)
    for i in (0, 1, 777, m - 1):
        assert y[i] == int(np.dot(s[(i - j) % L].astype(np.int64), x.astype(np.int64)) % 2)


def test_seed_comes_from_csprng_with_right_length():
    a, b = toeplitz_seed(1000, 100), toeplitz_seed(1000, 100)
    assert a.shape == (1099,) and a.dtype == np.uint8
    assert not np.array_equal(a, b)


def test_bad_inputs():
    x = np.zeros(10, np.uint8)
    with pytest.raises(QKDInputError, match="expected 14 bits, got 13"):
        toeplitz_hash(x, np.zeros(13, np.uint8), 5)
    with pytest.raises(QKDInputError, match="dtype uint8"):
        toeplitz_hash(x.astype(np.int32), np.zeros(14, np.uint8), 5)
    with pytest.raises(QKDInputError, match="out_len"):
        toeplitz_hash(x, np.zeros(20, np.uint8), 11)
    with pytest.raises(QKDInputError, match="0 or 1"):
        toeplitz_hash(np.full(10, 2, np.uint8), np.zeros(14, np.uint8), 5)


@needs_clmul
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(64, 2000), frac=st.floats(0.05, 1.0),
       block_bytes=st.sampled_from([0, 1, 600, 2000, 1 << 40]))
def test_ternary_fft_cache_blocking_at_every_split_level(seed, n, frac, block_bytes):
    # _TFFT_BLOCK_BYTES decides how many transform levels run over the whole arrays before the
    # block-by-block middle pass (0 → all of them, 2^40 → none); every split gives the same bits
    m = max(1, int(round(frac * n)))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    expect = toeplitz_hash_reference(x, s, m)
    old = toeplitz_module._TFFT_BLOCK_BYTES
    try:
        toeplitz_module._TFFT_BLOCK_BYTES = block_bytes
        got = _toeplitz_tfft(x, s, n, m)
    finally:
        toeplitz_module._TFFT_BLOCK_BYTES = old
    np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 100, 1001])
def test_packing_with_the_value_check_matches_packbits(n, offset):
    # the fused pack + check reads aligned 8-byte words where it can (offset 0) and copies otherwise
    rng = np.random.default_rng(n + 1000 * offset)
    buf = rng.integers(0, 2, n + offset, dtype=np.uint8)
    bits = buf[offset:]
    nwords = -(-n // 64) + 1
    expect = np.zeros(nwords * 8, np.uint8)
    expect[:-(-n // 8)] = np.packbits(bits, bitorder="little")
    np.testing.assert_array_equal(_pack_checked("bits", bits, nwords), expect.view(np.uint64))


@pytest.mark.parametrize("value", [2, 3, 0x80, 0xFF])
@pytest.mark.parametrize("where", [0, 5, 8, 1000, -1])
def test_large_block_path_rejects_a_non_bit_anywhere(value, where):
    # toeplitz_hash checks the values while packing on the ternary-FFT path: one bad byte in the
    # aligned body or the tail of either input is refused, naming the argument and the value
    n, m = 1003, 500
    for name in ("bits", "seed_bits"):
        x = np.zeros(n, np.uint8)
        s = np.zeros(n + m - 1, np.uint8)
        (x if name == "bits" else s)[where] = value
        with pytest.raises(QKDInputError, match=f"{name}: bits must be 0 or 1, found value {value}"):
            toeplitz_hash(x, s, m)
