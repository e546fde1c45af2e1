"""Cascade: fast kernels vs the pure-Python reference, invariants, leakage, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.qkd import reconcile_cascade
from labqfl.qkd.cascade import (
    HALF,
    CascadeAlice,
    CascadeBob,
    CascadeSchedule,
    _build_passes,
    cascade_reference,
)
from labqfl.qkd.messaging import LocalChannel
from labqfl.qkd.reconciliation import ReconciliationInputError, binary_entropy


def block_parities(bits: np.ndarray, n: int, seed: int, sched: CascadeSchedule,
                   passes: int | None = None) -> list[np.ndarray]:
    """Parities of every block of the first ``passes`` passes (default all), from the pass definitions."""
    P = _build_passes(n, seed, sched.block_sizes)
    out = []
    for q in range(P.npasses if passes is None else passes):
        P.ensure(q)
        if P.kind[q] == 1:
            member = np.array([(int(P.masks[q, i // 64]) >> (i % 64)) & 1 for i in range(n)])
            out.append(np.array([bits[member == 0].sum() % 2, bits[member == 1].sum() % 2]))
        else:
            order = (int(P.c[q]) + int(P.a[q]) * np.arange(n, dtype=np.int64)) % n
            k = int(P.k[q])
            out.append(np.array([bits[order[s:s + k]].sum() % 2 for s in range(0, n, k)]))
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), qber=st.floats(0.01, 0.2), seed=st.integers(0, 2**31),
       data_seed=st.integers(0, 2**31), which=st.sampled_from(["original", "tuned", "frame"]))
def test_cascade_fast_and_reference_both_obey_cascade_invariants(n, qber, seed, data_seed, which):
    rng = np.random.default_rng(data_seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    y = x ^ (rng.random(n) < qber).astype(np.uint8)
    sched = {"original": CascadeSchedule.original(qber), "tuned": CascadeSchedule.tuned(qber),
             "frame": CascadeSchedule.for_frame(qber, n)}[which]
    fast = reconcile_cascade(x, y, qber, seed=seed, schedule=sched)
    ref = cascade_reference(x, y, qber, seed=seed, schedule=sched)
    for res in (fast, ref):
        passes = res.iterations  # each stops after `confirm` clean bipartitions (may differ)
        flipped = res.corrected != y
        assert not np.any(flipped & (x == y)), "Cascade flipped a bit that was correct"
        assert res.corrected_errors == int(flipped.sum())
        # termination invariant: every block of every pass run has Alice's parity
        for pa, pb in zip(block_parities(x, n, seed, sched, passes),
                          block_parities(res.corrected, n, seed, sched, passes), strict=True):
            assert np.array_equal(pa, pb)
    if np.array_equal(fast.corrected, x) and np.array_equal(ref.corrected, x):
        assert np.array_equal(fast.corrected, ref.corrected)
    # every block parity is disclosed except the last block of each pass after the first
    errors = int((x != y).sum())
    for res in (fast, ref):
        told = sum(len(b) for b in block_parities(x, n, seed, sched, res.iterations)) - (res.iterations - 1)
        assert told <= res.leaked_bits <= told + 3 * errors * (int(np.log2(max(n, 2))) + 2)
        if res is fast:
            assert res.details["leaked_block_parities"] == told


def test_cascade_known_frame_corrects_everything_with_good_efficiency(frame):
    x, y = frame(100_000, 0.02, 3)
    res = reconcile_cascade(x, y, 0.02, seed=11)
    assert np.array_equal(res.corrected, x)
    assert res.corrected_errors == 2000
    assert res.leaked_bits == res.details["leaked_block_parities"] + res.details["leaked_binary_search"]
    assert 1.0 < res.efficiency < 1.10
    assert res.success and res.frame_errors == 0


def test_cascade_reference_matches_fast_on_mid_sized_frame(frame):
    x, y = frame(20_000, 0.02, 5)
    fast = reconcile_cascade(x, y, 0.02, seed=2)
    ref = cascade_reference(x, y, 0.02, seed=2)
    assert np.array_equal(fast.corrected, x) and np.array_equal(ref.corrected, x)
    # searches in bipartition passes wait for lower passes, as in the reference: leaks within 2 %
    assert abs(fast.leaked_bits - ref.leaked_bits) < 0.02 * ref.leaked_bits


def test_cascade_same_seed_is_deterministic_and_leak_counted_by_alice(frame):
    x, y = frame(5000, 0.05, 9)
    alice = CascadeAlice(x)
    r1 = CascadeBob(y, 0.05, seed=4).run(LocalChannel(alice))
    r2 = reconcile_cascade(x, y, 0.05, seed=4)
    assert np.array_equal(r1.corrected, r2.corrected) and r1.leaked_bits == r2.leaked_bits
    assert alice.disclosed_bits == r1.leaked_bits and alice.finished


def test_cascade_original_schedule(frame):
    x, y = frame(20_000, 0.03, 8)
    res = reconcile_cascade(x, y, 0.03, seed=1, schedule="original")
    assert res.details["block_sizes"] == [25, 50, 100, 200]
    assert res.corrected_errors > 550
    assert res.efficiency > 1.0


def test_cascade_tuned_schedule_follows_martinez_mateo_opt8():
    s = CascadeSchedule.tuned(0.02)
    assert s.block_sizes[:3] == (64, 512, 4096) and s.block_sizes[3:] == (HALF,) * 11


def test_cascade_no_errors_leaks_only_block_parities(frame):
    x, _ = frame(1000, 0.0, 1)
    res = reconcile_cascade(x, x.copy(), 0.01, seed=3)
    assert np.array_equal(res.corrected, x) and res.details["leaked_binary_search"] == 0
    # pass 0: all of its blocks; every later pass: all blocks but the last (implied by the key parity)
    nb = [len(b) for b in block_parities(x, 1000, 3, CascadeSchedule(tuple(res.details["block_sizes"])))]
    assert res.leaked_bits == nb[0] + sum(k - 1 for k in nb[1:])


@pytest.mark.parametrize("alice,bob,qber,match", [
    (np.zeros(4, np.int64), np.zeros(4, np.uint8), 0.1, "dtype uint8"),
    (np.zeros(4, np.uint8), np.zeros(5, np.uint8), 0.1, "differ in length"),
    (np.array([0, 2], np.uint8), np.zeros(2, np.uint8), 0.1, "only 0 and 1"),
    (np.zeros(4, np.uint8), np.zeros(4, np.uint8), 0.0, "open interval"),
    (np.zeros(4, np.uint8), np.zeros(4, np.uint8), 0.5, "open interval"),
    (np.zeros(0, np.uint8), np.zeros(0, np.uint8), 0.1, "empty"),
    ([0, 1], np.zeros(2, np.uint8), 0.1, "numpy uint8"),
])
def test_cascade_bad_inputs_raise_value_error(alice, bob, qber, match):
    with pytest.raises(ValueError, match=match):
        reconcile_cascade(alice, bob, qber)
    assert issubclass(ReconciliationInputError, ValueError)


def test_cascade_binary_entropy():
    assert binary_entropy(0.5) == 1.0 and binary_entropy(0.0) == 0.0
    assert abs(binary_entropy(0.02) - 0.1414) < 1e-4
