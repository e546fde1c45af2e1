"""Toeplitz hashing on a torch device (issue 23 item 7): bit for bit with randextract and the CPU
paths, the exact fallback when a rounding check fails, and clear errors. Runs on "cpu"; the same
code runs on CUDA (`labqfl bench gpu`), where a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from galois import GF2
from hypothesis import given, settings
from hypothesis import strategies as st
from randextract import ToeplitzHashing

import labqfl.qkd.toeplitz_torch as tt
from labqfl.errors import QKDInputError
from labqfl.qkd.toeplitz import toeplitz_hash, toeplitz_hash_reference, toeplitz_seed
from labqfl.qkd.toeplitz_torch import toeplitz_hash_torch


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 600), frac=st.floats(0.0, 1.0))
def test_matches_randextract_and_the_reference_bit_for_bit(seed, n, frac):
    rng = np.random.default_rng(seed)
    m = max(1, int(frac * n))
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    got = toeplitz_hash_torch(x, s, m, device="cpu")
    assert got.dtype == np.uint8 and got.shape == (m,)
    assert np.array_equal(got, toeplitz_hash_reference(x, s, m))
    assert np.array_equal(got, np.asarray(ToeplitzHashing(n, m).extract(GF2(x), GF2(s)), dtype=np.uint8))


def test_a_large_block_equals_the_default_cpu_path():
    rng = np.random.default_rng(7)
    n, m = 1_000_003, 250_001
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = toeplitz_seed(n, m)
    assert np.array_equal(toeplitz_hash_torch(x, s, m), toeplitz_hash(x, s, m))


def test_falls_back_to_the_exact_path_when_either_rounding_check_fails(monkeypatch):
    rng = np.random.default_rng(3)
    n, m = 5000, 1200
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    want = toeplitz_hash_reference(x, s, m)
    calls: list[int] = []

    def exact(bits, seed_bits, out_len):
        calls.append(out_len)
        return toeplitz_hash(bits, seed_bits, out_len)

    monkeypatch.setattr(tt, "toeplitz_hash", exact)
    # a-priori bound too large: the FFT is not even tried
    with monkeypatch.context() as mp:
        mp.setattr(tt, "fft_rounding_bound", lambda *a: 0.3)
        assert np.array_equal(toeplitz_hash_torch(x, s, m), want)
    assert calls == [m]
    # a-posteriori: sums 0.3 away from an integer would round wrongly half the time; refused
    irfft = torch.fft.irfft
    with monkeypatch.context() as mp:
        mp.setattr(torch.fft, "irfft", lambda *a, **k: irfft(*a, **k) + 0.3)
        assert np.array_equal(toeplitz_hash_torch(x, s, m), want)
    assert calls == [m, m]
    assert np.array_equal(toeplitz_hash_torch(x, s, m), want) and calls == [m, m]


def test_bad_inputs_get_one_clear_error():
    x = np.zeros(10, np.uint8)
    s = np.zeros(14, np.uint8)
    with pytest.raises(QKDInputError, match="seed_bits: expected only 0/1"):
        toeplitz_hash_torch(x, np.full(14, 2, np.uint8), 5)
    with pytest.raises(QKDInputError, match="bits: expected only 0/1"):
        toeplitz_hash_torch(np.full(10, 3, np.uint8), s, 5)
    with pytest.raises(QKDInputError, match="out_len"):
        toeplitz_hash_torch(x, s, 11)
    with pytest.raises(QKDInputError, match="expected 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        toeplitz_hash_torch(x, s, 5, device="gpu")


def test_cuda_without_a_gpu_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on a GPU host too
    with pytest.raises(QKDInputError, match="sees no CUDA device"):
        toeplitz_hash_torch(np.zeros(10, np.uint8), np.zeros(14, np.uint8), 5, device="cuda")


def test_device_buffers_holding_key_material_are_zeroed(monkeypatch):
    """The input bits, their spectrum, the convolution and the output are wiped on the device
    before torch may reuse the memory (the result handed back is a host copy)."""
    rng = np.random.default_rng(5)
    n, m = 4000, 1000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    seen: list[torch.Tensor] = []
    irfft, rfft = torch.fft.irfft, torch.fft.rfft

    def keep(fn):
        def wrapped(*a, **k):
            seen.append(a[0])  # the inputs (the bits as floats, the product spectrum)
            out = fn(*a, **k)
            seen.append(out)
            return out
        return wrapped

    monkeypatch.setattr(torch.fft, "rfft", keep(rfft))
    monkeypatch.setattr(torch.fft, "irfft", keep(irfft))
    x0 = x.copy()
    got = toeplitz_hash_torch(x, s, m)
    assert np.array_equal(x, x0)  # the caller's bits are not wiped
    assert np.array_equal(got, toeplitz_hash_reference(x, s, m)) and got.any()
    secret = [seen[0], seen[1], seen[4], seen[5]]  # bits (float), their spectrum, product spectrum, convolution
    assert all(t.abs().max().item() == 0 for t in secret)
