"""LDPC: code construction, Numba decoder vs numpy reference, blind protocol, leakage, failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.qkd import reconcile_ldpc
from labqfl.qkd.ldpc import (
    LdpcAlice,
    LdpcBob,
    LdpcPlan,
    build_code,
    decode_syndrome,
    decode_syndrome_reference,
    plan_ldpc,
)
from labqfl.qkd.messaging import LocalChannel


def test_ldpc_code_is_deterministic_and_well_formed():
    c1, c2 = build_code(2048, 0.7, 3), build_code(2048, 0.7, 3)
    assert c1 is c2  # cached
    cs = np.repeat(np.arange(c1.m), np.diff(c1.check_ptr))
    assert np.unique(cs * c1.n + c1.check_var).size == c1.edges  # no parallel edges
    assert np.all(np.diff(c1.var_ptr) >= 2)
    # untainted filler positions have pairwise disjoint check neighbourhoods
    seen = np.zeros(c1.m, int)
    for v in c1.untainted:
        seen[cs[c1.var_edge[c1.var_ptr[v]:c1.var_ptr[v + 1]]]] += 1
    assert seen.max() <= 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), q=st.floats(0.01, 0.12), iters=st.integers(1, 8))
def test_ldpc_fast_decoder_matches_numpy_reference(seed, q, iters):
    code = build_code(256, 0.5, 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, code.n, dtype=np.uint8)
    y = x ^ (rng.random(code.n) < q).astype(np.uint8)
    llr = math.log((1 - q) / q) * (1.0 - 2.0 * y)
    llr[rng.random(code.n) < 0.05] = 0.0  # some punctured symbols
    a = decode_syndrome(code, code.syndrome(x), llr, max_iter=iters)
    b = decode_syndrome_reference(code, code.syndrome(x), llr, max_iter=iters)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


def test_ldpc_reconcile_corrects_and_counts_leakage(frame):
    x, y = frame(40_000, 0.03, 2)
    res = reconcile_ldpc(x, y, 0.03, seed=5)
    assert res.success and res.frame_errors == 0
    assert np.array_equal(res.corrected, x)
    plan = plan_ldpc(0.03)
    code = build_code(plan.code_n, plan.rate, plan.code_seed)
    frames = res.details["frames"]
    # leakage = syndromes minus filler credit, plus revealed filler values (counted at the channel)
    assert frames * (code.m - plan.d) <= res.leaked_bits <= frames * code.m
    assert 1.0 < res.efficiency < 1.8


def test_ldpc_reports_failed_frames_instead_of_hiding_them(frame):
    x, y = frame(3000, 0.2, 4)  # far above what the chosen code can correct
    plan = LdpcPlan(code_n=4096, rate=0.9, code_seed=0, d=10, start_revealed=0, step=10)
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(1))
    res = LdpcBob(y, 0.01, plan=plan, max_iter=10).run(LocalChannel(alice))
    assert not res.success and res.frame_errors == 1
    assert not res.details["frame_ok"][0]
    assert alice.disclosed_bits == res.leaked_bits


def test_ldpc_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="dtype uint8"):
        reconcile_ldpc(np.zeros(5, np.int8), np.zeros(5, np.uint8), 0.02)
    with pytest.raises(ValueError, match="open interval"):
        reconcile_ldpc(np.zeros(5, np.uint8), np.zeros(5, np.uint8), 0.6)


def test_reconciliation_bench_entries_run_quick():
    from labqfl.bench import registry

    reg = registry()
    for name in ("cascade", "ldpc"):
        res = reg[name].fn(True)
        assert res.figure > 0 and res.baseline_figure > 0 and res.unit == "Mbit/s"
