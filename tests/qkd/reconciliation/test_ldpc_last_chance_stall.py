"""The sum-product last chance's stall test (``_LAST_CHANCE_STALL``, docs/reconciliation.md session 41).

Every last-chance attempt starts cold (priors, zero messages), so stopping a failing one early changes
nothing but the sweeps it spends; an attempt that converges must never be stopped."""
from __future__ import annotations

import numpy as np

import labqfl.qkd.ldpc as ldpc_mod
from labqfl.qkd.ldpc import (
    _PHI,
    LdpcAlice,
    LdpcBob,
    LdpcPlan,
    _layered_bp,
    _layered_bp_stall,
    build_code,
)
from labqfl.qkd.messaging import LocalChannel

STALL = ldpc_mod._LAST_CHANCE_STALL  # the default, before a test patches it


def _hopeless(frame, monkeypatch, stall):
    """A frame far above what the code corrects: amin, amin, then one cold sum-product last chance."""
    monkeypatch.setattr(ldpc_mod, "_LAST_CHANCE_STALL", stall)
    x, y = frame(6000, 0.2, 4)
    plan = LdpcPlan(code_n=8192, rate=0.9, code_seed=0, d=10, start_revealed=0, step=10, max_reveal=20,
                    first_iter=5, retry_iter=5, z=128, decoder="amin")
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(1))
    return LdpcBob(y, 0.05, plan=plan).run(LocalChannel(alice)), alice


def test_failing_last_chance_stops_early_same_outcome(frame, monkeypatch):
    off, alice_off = _hopeless(frame, monkeypatch, (0, 0, 0.0))
    on, alice_on = _hopeless(frame, monkeypatch, STALL)
    assert not off.success and not on.success
    assert off.details["decode_attempts"] == on.details["decode_attempts"] == [3]
    assert off.leaked_bits == on.leaked_bits == alice_on.disclosed_bits == alice_off.disclosed_bits
    # stall off: the last chance spends its full 60 sweeps; with the test it stops at sweep first + every
    # or a few checks later (the hard decision's unsatisfied checks no longer fall)
    first, every, _ = STALL
    assert off.iterations - on.iterations >= ldpc_mod._LAST_CHANCE_ITER - first - 2 * every
    assert on.iterations < off.iterations


def test_stall_test_leaves_converging_sum_product_alone(frame):
    """A frame the sum-product decodes: the same sweeps and the same bits with the test on as off."""
    code = build_code(8192, 0.5, 0, 128)
    x, y = frame(code.n, 0.03, 7)
    synd = code.syndrome(x)
    llr = np.where(y == 0, 1.0, -1.0).astype(np.float32) * np.float32(np.log(0.97 / 0.03))
    L1, R1 = llr.copy(), np.zeros(code.edges, np.float32)
    L2, R2 = llr.copy(), np.zeros(code.edges, np.float32)
    a = _layered_bp(code.check_ptr, code.check_var, synd, L1, R1, 60, _PHI)
    b = _layered_bp_stall(code.check_ptr, code.check_var, synd, L2, R2, 60, _PHI, *STALL)
    assert a == b > 0
    assert np.array_equal(L1, L2) and np.array_equal(R1, R2)


def test_recorded_run_same_outputs_fewer_sweeps(monkeypatch):
    """test_ldpc_protocol_paths' recorded 4 %, 4096-bit run (two frames fail 19 attempts each, the last ones
    cold sum-product last chances that all fail): every output as recorded with the stall test off, but
    990 → 724 sweeps (266 = 14 × 19: each failing last chance stops at sweep 41 instead of 60)."""
    import hashlib

    from labqfl.bench import noisy_frame
    from labqfl.qkd.ldpc import plan_ldpc, reconcile_ldpc

    q, seed, code_n = 0.04, 1, 4096
    plan = plan_ldpc(q, code_n=code_n)
    x, y = noisy_frame(int(2.5 * plan.key_bits_per_frame), q, seed)
    out = {}
    for name, stall in (("off", (0, 0, 0.0)), ("on", STALL)):
        monkeypatch.setattr(ldpc_mod, "_LAST_CHANCE_STALL", stall)
        r = reconcile_ldpc(x, y, q, seed=seed, code_n=code_n)
        out[name] = (r.frame_errors, r.leaked_bits, r.iterations, r.messages, r.details["decode_attempts"],
                     r.details["revealed_at_success"], hashlib.sha256(r.corrected.tobytes()).hexdigest()[:16])
    assert out["off"] == (2, 3662, 990, 44, [19, 19, 1], [0, 0, 41], "7721e4386a16bc6d")
    assert out["on"] == (2, 3662, 724, 44, [19, 19, 1], [0, 0, 41], "7721e4386a16bc6d")
