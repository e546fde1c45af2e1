"""Sifting: fast path vs pure-Python reference, known answers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.contracts.types import Announcements, ModulationRecord
from labqfl.errors import QKDInputError
from labqfl.qkd.sifting import (
    ClientSetup,
    sift,
    sift_records,
    sift_reference,
    squash_bits,
    with_key_errors,
)

SETUP_I = ClientSetup("C1", (0.1, 0.02, 0.0), (0.8, 0.1, 0.1), 0.9)
SETUP_J = ClientSetup("C2", (0.1, 0.02, 0.0), (0.8, 0.1, 0.1), 0.9)


class ArrayLog:
    """A client's own log: seeded per-slot choices (stands in for the QRNG/AWG record)."""

    def __init__(self, client: str, seed: int, n: int) -> None:
        rng = np.random.default_rng(seed)
        self.client = client
        self.k = rng.choice(3, n, p=[0.6, 0.2, 0.2]).astype(np.uint8)
        self.a = rng.integers(0, 4, n).astype(np.uint8)
        self.a[rng.random(n) < 0.5] &= 2  # bias towards X

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        return ModulationRecord(self.client, slots, self.k[slots], self.a[slots])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400))
def test_sift_matches_reference(seed, n):
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(4 * n + 1, n, replace=False)).astype(np.int64)
    outcomes = rng.integers(1, 4, n).astype(np.uint8)
    li, lj = ArrayLog("C1", seed, 4 * n + 1), ArrayLog("C2", seed + 1, 4 * n + 1)
    ann = Announcements("C1-C2", slots, outcomes)
    res = sift(ann, li, lj, SETUP_I, SETUP_J, n_slots=4 * n + 1, rng=np.random.default_rng(7))
    ri, rj = li.choices(slots), lj.choices(slots)
    key_mask = (ri.intensity_idx == 0) & (ri.phase_idx % 2 == 0) & (rj.intensity_idx == 0) & (rj.phase_idx % 2 == 0)
    n_sq = int(np.count_nonzero(outcomes[key_mask] == 3))
    squash = squash_bits(np.random.default_rng(7), n_sq)
    k_idx, bi, bj, clicks, e2, dbl = sift_reference(outcomes, ri, rj, 3, 3, squash)
    np.testing.assert_array_equal(res.key_slots, slots[k_idx])
    np.testing.assert_array_equal(res.bits_i, bi)
    np.testing.assert_array_equal(res.bits_j, bj)
    np.testing.assert_array_equal(res.counts.clicks, clicks)
    np.testing.assert_array_equal(res.counts.errors_x2, e2)
    np.testing.assert_array_equal(res.counts.double_clicks, dbl)
    assert res.counts.clicks.sum() == n


def test_known_answer_rule():
    # slot 0: both signal X, bits 0/0, D0 -> key bits 0/0
    # slot 1: both signal X, Ci bit 1 (a=2), Cj bit 0, D1 -> Ci 1, Cj 0^1 = 1
    # slot 2: both signal X, bits equal, D1 -> key error (Ci 0, Cj 1)
    # slot 3: Y/Y decoy (k=1), equal bits (a=1,1), D1 -> test error, 2 in errors_x2
    # slot 4: Y/Y decoy, double click -> half error
    ri = ModulationRecord("C1", np.arange(5), np.array([0, 0, 0, 1, 1], np.uint8), np.array([0, 2, 0, 1, 3], np.uint8))
    rj = ModulationRecord("C2", np.arange(5), np.array([0, 0, 0, 1, 1], np.uint8), np.array([0, 0, 0, 1, 3], np.uint8))
    ann = Announcements("C1-C2", np.arange(5, dtype=np.int64), np.array([1, 2, 2, 2, 3], np.uint8))
    r = sift_records(ann, ri, rj, SETUP_I, SETUP_J, n_slots=100)
    assert r.bits_i.tolist() == [0, 1, 0]
    assert r.bits_j.tolist() == [0, 1, 1]
    assert r.counts.clicks[0, 0, 0, 0] == 3
    assert r.counts.errors_x2[1, 1, 1, 1] == 3
    assert r.counts.double_clicks[1, 1, 1, 1] == 1
    assert r.counts.errors_x2[0, 0, 0, 0] == 0
    assert with_key_errors(r.counts, 1).errors_x2[0, 0, 0, 0] == 2


def test_bad_records_give_clear_errors():
    ann = Announcements("C1-C2", np.arange(3, dtype=np.int64), np.array([1, 2, 1], np.uint8))
    good = ModulationRecord("C1", np.arange(3), np.zeros(3, np.uint8), np.zeros(3, np.uint8))
    short = ModulationRecord("C2", np.arange(2), np.zeros(2, np.uint8), np.zeros(2, np.uint8))
    wrong = ModulationRecord("C2", np.arange(3), np.zeros(3, np.int64), np.zeros(3, np.uint8))
    with pytest.raises(QKDInputError, match="2 entries for 3"):
        sift_records(ann, good, short, SETUP_I, SETUP_J, 10)
    with pytest.raises(QKDInputError, match="uint8"):
        sift_records(ann, good, wrong, SETUP_I, SETUP_J, 10)
    bad_phase = ModulationRecord("C2", np.arange(3), np.zeros(3, np.uint8), np.full(3, 7, np.uint8))
    with pytest.raises(QKDInputError, match="0..3"):
        sift_records(ann, good, bad_phase, SETUP_I, SETUP_J, 10)
    with pytest.raises(QKDInputError, match="do not match pair"):
        sift(ann, ArrayLog("C3", 1, 5), ArrayLog("C2", 1, 5), SETUP_I, SETUP_J, 10)


def test_double_click_bits_do_not_depend_on_how_the_slots_are_chunked() -> None:
    """Cj's random bits for double clicks are the same whether its key slots are sifted in one chunk
    or in several (the Distiller's batches and live verdicts split them differently); with
    ``integers(0, 2, n, dtype=uint8)`` a split changed the bits."""
    from labqfl.contracts.types import OUTCOME_BOTH, OUTCOME_D0, ModulationRecord
    from labqfl.qkd.sifting import client_j_key

    gen = np.random.default_rng(7)
    n = 5000
    out = np.where(gen.random(n) < 0.3, OUTCOME_BOTH, OUTCOME_D0).astype(np.uint8)
    rec = ModulationRecord("C2", np.arange(n, dtype=np.int64), np.zeros(n, np.uint8),
                           gen.integers(0, 4, n).astype(np.uint8))
    mask = np.ones(n, dtype=bool)
    whole = client_j_key(rec, out, mask, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    cuts = [0, 3, 17, 1001, 2500, 2501, n]
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        sub = ModulationRecord("C2", rec.slots[lo:hi], rec.intensity_idx[lo:hi], rec.phase_idx[lo:hi])
        parts.append(client_j_key(sub, out[lo:hi], mask[lo:hi], rng))
    assert np.array_equal(np.concatenate(parts), whole)
    both = out == OUTCOME_BOTH
    assert abs(float((whole[both] ^ (rec.phase_idx[both] >> 1)).mean()) - 0.5) < 0.05


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float64])
def test_compress_equals_numpy_boolean_indexing(dtype):
    """The sifting's branch-free selection (key bits, test reveals) gives ``values[mask]`` exactly, in order,
    for random, empty, all-set and all-clear masks; arrays of different lengths are refused."""
    from labqfl.qkd.sifting import compress

    rng = np.random.default_rng(3)
    for n, p in ((0, 0.5), (1, 1.0), (1000, 0.74), (1000, 0.0), (1000, 1.0), (100_003, 0.26)):
        values = (rng.random(n) * 250).astype(dtype)
        mask = rng.random(n) < p
        got = compress(values, mask)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, values[mask])
    with pytest.raises(QKDInputError, match="expected equal 1-D shapes"):
        compress(np.zeros(5, np.uint8), np.ones(4, bool))


def test_announcement_digest_binds_every_field_of_the_entry_and_the_pair():
    """The two clients' digest (over the transcript entry, ≈ 1.3 bytes a slot): equal for equal announcements,
    different when one outcome, one slot, the slot range, the measured slots or the pair differ, and for a
    slot gap that needs the entry's escape (≥ 255) against one that does not."""
    from labqfl.contracts.types import Announcements
    from labqfl.qkd.sifting import announcement_digest
    from labqfl.qkd.transcript_entries import announcement_entry

    rng = np.random.default_rng(3)
    slots = np.cumsum(rng.integers(1, 90, 5000)).astype(np.int64) + 10**9
    outcomes = rng.integers(1, 4, slots.size).astype(np.uint8)

    def dig(s, o, lo=10**9, hi=10**10, n_slots=123_456, pair="C1-C2"):  # type: ignore[no-untyped-def]
        return announcement_digest(pair, announcement_entry(Announcements(pair, s, o), lo, hi, n_slots))

    base = dig(slots, outcomes)
    assert len(base) == 32 and base == dig(slots.copy(), outcomes.copy())
    o2 = outcomes.copy()
    o2[777] ^= 3
    s2 = slots.copy()
    s2[4000] += 1
    s3 = slots.copy()
    s3[10:] += 300  # a gap of ≥ 255: escaped in the entry
    others = [dig(slots, o2), dig(s2, outcomes), dig(s3, outcomes), dig(slots, outcomes, lo=10**9 + 1),
              dig(slots, outcomes, hi=10**10 - 1), dig(slots, outcomes, n_slots=123_457),
              dig(slots, outcomes, pair="C1-C3")]
    assert len({base, *others}) == len(others) + 1
