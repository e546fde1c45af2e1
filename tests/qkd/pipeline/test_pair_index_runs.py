"""PairSchedule.pair_index on sorted slots by the frames' runs (no per-slot division): the same
array as the per-slot formula frame_pair[(s // F) mod W], and the run path is taken for the ends'
announcements (each end checks every announced slot's pair, twoparty.announcement_problem)."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.contracts.schedule import PairSchedule

_PAIRS = [("C1", "C2"), ("C1", "C3"), ("C2", "C3")]


def _formula(sch: PairSchedule, s: np.ndarray) -> np.ndarray:
    return sch.frame_pair[(np.asarray(s, np.int64) // sch.slots_per_frame) % sch.cycle_frames]


@pytest.mark.parametrize("frames", [None, [3, 1, 2]])
@pytest.mark.parametrize("F", [1, 7, 64, 65_536])
def test_runs_equal_the_per_slot_formula(frames, F):
    sch = PairSchedule(_PAIRS, F, frames)
    rng = np.random.default_rng(F)
    for _ in range(60):
        n = int(rng.integers(0, 3000))
        span = int(rng.choice([n + 1, 10 * n + 1, 100 * F + 1, 10**12]))
        start = int(rng.integers(0, 10**9))
        s = start + np.sort(rng.integers(0, span, n)).astype(np.int64)  # repeats allowed (non-decreasing)
        if rng.random() < 0.3:
            s = rng.permutation(s)  # unsorted: the formula
        if rng.random() < 0.2 and n:
            s = s - start - int(rng.integers(0, 5 * F))  # negative slots too
        got = sch.pair_index(s)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, _formula(sch, s))


def test_scalars_lists_and_short_arrays_keep_the_formula():
    sch = PairSchedule(_PAIRS, 10, [2, 1, 1])
    assert int(sch.pair_index(np.int64(25))) == int(_formula(sch, np.int64(25)))
    np.testing.assert_array_equal(sch.pair_index([0, 10, 20, 30, 40]), _formula(sch, [0, 10, 20, 30, 40]))
    two_d = np.arange(200, dtype=np.int64).reshape(20, 10)
    np.testing.assert_array_equal(sch.pair_index(two_d), _formula(sch, two_d))


def test_dense_sorted_announcements_take_the_frames_runs(monkeypatch):
    """A 400 000-click chunk of one sifting batch is indexed by its frames' runs (one search of
    the ~760 frame boundaries), not slot by slot."""
    from labqfl.contracts import schedule

    sch = PairSchedule(_PAIRS, 65_536, None)
    s = np.sort(np.random.default_rng(1).choice(50_000_000, 400_000, replace=False)).astype(np.int64)
    want = _formula(sch, s)
    searched = []

    class Np:
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(np, name)

        def searchsorted(self, a, v, *args, **kw):  # type: ignore[no-untyped-def]
            searched.append(np.size(v))
            return np.searchsorted(a, v, *args, **kw)

    monkeypatch.setattr(schedule, "np", Np())
    np.testing.assert_array_equal(sch.pair_index(s), want)
    assert searched == [50_000_000 // 65_536]
