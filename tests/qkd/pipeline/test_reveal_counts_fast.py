"""The fused one-pass reveal_counts against its first implementation and against sift_counts
on the two full records (the counts both ends tally from public reveals must be the real ones)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.contracts.types import ModulationRecord
from labqfl.errors import QKDInputError
from labqfl.qkd.sifting import key_flags, reveal_counts, reveal_counts_reference, sift_counts


def _records(seed: int, n: int, ni: int, nj: int, p_key: float):
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(10 * n + 10, n, replace=False)).astype(np.int64)

    def rec(name: str, k: int) -> ModulationRecord:
        kk = np.where(rng.random(n) < p_key, 0, rng.integers(0, k, n)).astype(np.uint8)
        aa = np.where(rng.random(n) < p_key, rng.integers(0, 2, n) * 2, rng.integers(0, 4, n)).astype(np.uint8)
        return ModulationRecord(name, slots, kk, aa)

    return rec("C1", ni), rec("C2", nj), rng.choice(np.array([1, 2, 3], np.uint8), n, p=[0.49, 0.49, 0.02])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 3000), ni=st.integers(1, 4), nj=st.integers(1, 4),
       p_key=st.floats(0.0, 1.0))
def test_fused_reveal_counts_equal_the_reference_and_the_full_records(seed, n, ni, nj, p_key):
    ri, rj, outcomes = _records(seed, n, ni, nj, p_key)
    key = key_flags(ri) & key_flags(rj)
    test = ~key
    k_i, b_i = ri.intensity_idx[test], (ri.phase_idx[test] & 1).astype(np.uint8)
    k_j, b_j = rj.intensity_idx[test], (rj.phase_idx[test] & 1).astype(np.uint8)
    same = b_i == b_j
    bit_i = (ri.phase_idx[test][same] >> 1).astype(np.uint8)
    bit_j = (rj.phase_idx[test][same] >> 1).astype(np.uint8)
    args = (outcomes, key, (k_i, b_i, bit_i), (k_j, b_j, bit_j), same, ni, nj)
    fast, ref, full = reveal_counts(*args), reveal_counts_reference(*args), sift_counts(outcomes, ri, rj, ni, nj)
    for a, b, c in zip(fast, ref, full, strict=True):
        assert a.dtype == np.int64 and a.shape == (ni, nj, 2, 2)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_reveals_of_the_wrong_length_are_refused():
    ri, rj, outcomes = _records(1, 200, 3, 3, 0.5)
    key = key_flags(ri) & key_flags(rj)
    nt = int(np.count_nonzero(~key))
    z = np.zeros(nt, np.uint8)
    same = np.ones(nt, bool)
    with pytest.raises(QKDInputError, match="test slots"):
        reveal_counts(outcomes, key, (z, z, z), (z[:-1], z[:-1], z), same, 3, 3)
