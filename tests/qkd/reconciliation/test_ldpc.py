"""LDPC: code construction (random and quasi-cyclic), Numba decoders vs numpy references, blind
protocol, leakage, failures, frame-error rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from labqfl.qkd import reconcile_ldpc
from labqfl.qkd.ldpc import (
    _PHI,
    DEGREE_DISTRIBUTIONS,
    LdpcAlice,
    LdpcBob,
    LdpcPlan,
    _layered_bp,
    build_code,
    decode_syndrome,
    decode_syndrome_reference,
    minsum_weights,
    plan_ldpc,
)
from labqfl.qkd.ldpc_qc import qc_aminstar, qc_decode_reference, qc_minsum
from labqfl.qkd.messaging import LocalChannel, Message
from labqfl.qkd.reconciliation import binary_entropy


def _check_index(code):
    return np.repeat(np.arange(code.m), np.diff(code.check_ptr))


def test_ldpc_code_is_deterministic_and_well_formed():
    c1, c2 = build_code(2048, 0.7, 3), build_code(2048, 0.7, 3)
    assert c1 is c2  # cached
    cs = _check_index(c1)
    assert np.unique(cs * c1.n + c1.check_var).size == c1.edges  # no parallel edges
    assert np.all(np.diff(c1.var_ptr) >= 2)
    cd = np.diff(c1.check_ptr)
    assert np.mean(np.abs(cd - cd.mean()) <= 1) > 0.99  # concentrated check degrees
    # untainted filler positions have pairwise disjoint check neighbourhoods
    seen = np.zeros(c1.m, int)
    for v in c1.untainted:
        seen[cs[c1.var_edge[c1.var_ptr[v]:c1.var_ptr[v + 1]]]] += 1
    assert seen.max() <= 1


def test_ldpc_code_follows_degree_distribution_and_has_no_4_cycles():
    code = build_code(8192, 0.8, 0)
    assert code.forced_4cycles == 0
    H = sparse.csr_matrix((np.ones(code.edges, np.int32), (_check_index(code), code.check_var)),
                          shape=(code.m, code.n))
    overlap = (H.T @ H).tocoo()  # checks shared by each pair of variables
    off = overlap.row != overlap.col
    assert overlap.data[off].max() <= 1  # no two variables share two checks: girth >= 6
    deg = np.diff(code.var_ptr)
    lam = DEGREE_DISTRIBUTIONS[0.8]
    frac = {d: v / d for d, v in lam.items()}
    tot = sum(frac.values())
    for d, v in frac.items():
        assert abs(np.mean(deg == d) - v / tot) < 2e-3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), q=st.floats(0.01, 0.12), iters=st.integers(1, 6))
def test_ldpc_fast_decoder_matches_numpy_reference(seed, q, iters):
    code = build_code(256, 0.5, 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, code.n, dtype=np.uint8)
    y = x ^ (rng.random(code.n) < q).astype(np.uint8)
    llr = math.log((1 - q) / q) * (1.0 - 2.0 * y)
    llr[rng.random(code.n) < 0.05] = 0.0  # some punctured symbols
    llr[rng.random(code.n) < 0.05] *= 12.0  # some shortened ones
    a = decode_syndrome(code, code.syndrome(x), llr, max_iter=iters)
    b = decode_syndrome_reference(code, code.syndrome(x), llr, max_iter=iters)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


def test_ldpc_warm_start_continues_the_same_decoder_state():
    code = build_code(1024, 0.6, 2)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, code.n, dtype=np.uint8)
    y = x ^ (rng.random(code.n) < 0.15).astype(np.uint8)  # hard: does not converge quickly
    llr = (math.log(0.85 / 0.15) * (1.0 - 2.0 * y)).astype(np.float32)
    s = code.syndrome(x)
    L1, R1 = llr.copy(), np.zeros(code.edges, np.float32)
    _layered_bp(code.check_ptr, code.check_var, s, L1, R1, 5, _PHI)
    L2, R2 = llr.copy(), np.zeros(code.edges, np.float32)
    for _ in range(5):  # 5 one-iteration attempts, state kept in (L, R)
        _layered_bp(code.check_ptr, code.check_var, s, L2, R2, 1, _PHI)
    assert np.array_equal(L1, L2) and np.array_equal(R1, R2)


def test_ldpc_decoder_corrects_a_frame_below_threshold():
    code = build_code(4096, 0.5, 0)
    rng = np.random.default_rng(8)
    x = rng.integers(0, 2, code.n, dtype=np.uint8)
    y = x ^ (rng.random(code.n) < 0.06).astype(np.uint8)
    out, it = decode_syndrome(code, code.syndrome(x), math.log(0.94 / 0.06) * (1.0 - 2.0 * y), max_iter=80)
    assert it > 0 and np.array_equal(out, x)


def test_ldpc_decoder_rejects_bad_arguments():
    code = build_code(256, 0.5, 1)
    with pytest.raises(ValueError, match="uint8 syndrome"):
        decode_syndrome(code, np.zeros(code.m, np.int64), np.zeros(code.n))
    with pytest.raises(ValueError, match="LLRs"):
        decode_syndrome(code, np.zeros(code.m, np.uint8), np.zeros(code.n - 1))


@pytest.mark.parametrize("decoder", ["bp", "amin"])
def test_ldpc_plan_covers_qber_range(decoder):
    for q in (0.01, 0.02, 0.05, 0.08):
        pl = plan_ldpc(q, decoder=decoder, code_n=4096 if decoder == "bp" else None)
        code = build_code(pl.code_n, pl.rate, pl.code_seed, pl.z)
        h = binary_entropy(q)
        kpf = pl.key_bits_per_frame
        assert 0 < pl.d <= code.untainted.size
        assert (code.m - pl.d) / kpf <= 1.08 * h  # punctured end reaches below the start point
        assert (code.m - pl.d + pl.reveal_limit) / kpf >= 1.25 * h  # fallback reaches far enough
        assert pl.start_revealed <= pl.d < pl.reveal_limit


def test_ldpc_reconcile_corrects_and_counts_leakage(frame):
    plan = plan_ldpc(0.03)
    x, y = frame(2 * plan.key_bits_per_frame + 3000, 0.03, 2)  # two full frames and a partial one
    res = reconcile_ldpc(x, y, 0.03, seed=5)
    assert res.success and res.frame_errors == 0
    assert np.array_equal(res.corrected, x)
    code = build_code(plan.code_n, plan.rate, plan.code_seed, plan.z)
    frames = res.details["frames"]
    # leakage = syndromes minus filler credit, plus revealed filler values (counted at the channel)
    assert frames * (code.m - plan.d) <= res.leaked_bits <= frames * (code.m - plan.d + plan.reveal_limit)
    # a partial frame pays a whole syndrome; on full frames f is about 1.12
    full = reconcile_ldpc(x[:2 * plan.key_bits_per_frame], y[:2 * plan.key_bits_per_frame], 0.03, seed=6)
    assert full.success and 1.0 < full.efficiency < 1.2


def test_ldpc_reports_failed_frames_instead_of_hiding_them(frame):
    x, y = frame(3000, 0.2, 4)  # far above what the chosen code can correct
    plan = LdpcPlan(code_n=4096, rate=0.9, code_seed=0, d=10, start_revealed=0, step=10, max_reveal=30)
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(1))
    res = LdpcBob(y, 0.01, plan=plan, max_iter=10).run(LocalChannel(alice))
    assert not res.success and res.frame_errors == 1
    assert not res.details["frame_ok"][0]
    assert res.details["decode_attempts"] == [4]  # filler, then key-bit fallback, then give up
    assert np.array_equal(res.corrected, y)  # a failed frame is left as it was
    assert alice.disclosed_bits == res.leaked_bits


# ------------------------------------------------------------------ quasi-cyclic codes, min-sum, A-min*
def test_ldpc_qc_code_is_a_lifted_base_graph_without_4_cycles():
    code = build_code(65536, 0.8, 0, 256)
    assert code.quasi_cyclic and code.z == 256 and code.m == code.base_ptr.size * 256 - 256
    assert code is build_code(65536, 0.8, 0, 256)  # cached
    assert code.forced_4cycles == 0
    # the expanded parity-check matrix is the lifting of (base_col, base_shift) row by row
    cs = _check_index(code)
    z = code.z
    brow = np.repeat(np.arange(code.base_ptr.size - 1), np.diff(code.base_ptr))
    i = np.arange(z)
    want = {(int(r) * z + k, int(c) * z + (k + int(s)) % z)
            for r, c, s in zip(brow, code.base_col, code.base_shift, strict=True) for k in i}
    assert want == set(zip(cs.tolist(), code.check_var.tolist(), strict=True))
    H = sparse.csr_matrix((np.ones(code.edges, np.int32), (cs, code.check_var)), shape=(code.m, code.n))
    overlap = (H.T @ H).tocoo()
    assert overlap.data[overlap.row != overlap.col].max() <= 1  # girth >= 6
    # base column degrees follow the rate-0.8 table (node fractions within one base column)
    deg = np.bincount(code.base_col, minlength=code.n // z)
    lam = DEGREE_DISTRIBUTIONS[0.8]
    tot = sum(v / d for d, v in lam.items())
    for d, v in lam.items():
        assert abs(np.sum(deg == d) - (v / d / tot) * deg.size) <= 2


def test_ldpc_qc_code_rejects_bad_lifting():
    with pytest.raises(ValueError, match="lifting size"):
        build_code(1000, 0.5, 0, 64)
    with pytest.raises(ValueError, match="lifting size"):
        build_code(1024, 0.5, 0, 128)  # 8 base columns


def _noisy_qc(code, seed, q, extremes=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, code.n, dtype=np.uint8)
    y = x ^ (rng.random(code.n) < q).astype(np.uint8)
    llr = (math.log((1 - q) / q) * (1.0 - 2.0 * y)).astype(np.float32)
    if extremes:
        llr[rng.random(code.n) < 0.05] = 0.0  # some punctured symbols
        llr[rng.random(code.n) < 0.05] *= 12.0  # some very confident ones (right or wrong)
    return x, llr


def _run_qc(code, rule, synd, llr, iters):
    L = llr.copy()
    R = np.zeros(code.edges, np.float32)
    if rule == "minsum":
        w = minsum_weights(code)
        it = qc_minsum(code.base_ptr, code.base_col, code.base_shift, code.z, synd, L, R, w, iters,
                       np.empty((2, 4, code.z), np.float32))
    else:
        w = minsum_weights(code, 1.1, {}, 1.0)
        it = qc_aminstar(code.base_ptr, code.base_col, code.base_shift, code.z, synd, L, R, w, iters,
                         np.empty((2, 5, code.z), np.float32))
    return L, R, w, it


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), q=st.floats(0.01, 0.12), iters=st.integers(1, 5),
       rule=st.sampled_from(["minsum", "amin"]))
def test_ldpc_qc_decoders_match_numpy_reference(seed, q, iters, rule):
    code = build_code(512, 0.5, seed % 3, 16)  # 32 base columns, z = 16
    x, llr = _noisy_qc(code, seed, q)
    s = code.syndrome(x)
    L, _, w, it = _run_qc(code, rule, s, llr, iters)
    hard, it_ref = qc_decode_reference(code.base_ptr, code.base_col, code.base_shift, code.z, s, llr, w, iters,
                                       rule=rule)
    assert it == it_ref
    assert np.array_equal((L < 0).astype(np.uint8), hard)


@pytest.mark.parametrize("rule", ["minsum", "amin"])
def test_ldpc_qc_decoders_correct_below_threshold_and_warm_start(rule):
    code = build_code(8192, 0.5, 0, 128)
    x, llr = _noisy_qc(code, 4, 0.06, extremes=False)
    s = code.syndrome(x)
    L, _, _, it = _run_qc(code, rule, s, llr, 60)
    assert it > 0 and np.array_equal((L < 0).astype(np.uint8), x)
    # warm start: three 1-sweep calls continue exactly where one 3-sweep call ends
    y, llr = _noisy_qc(code, 5, 0.11)  # far above threshold: does not converge
    s = code.syndrome(y)
    L1, R1, w, it1 = _run_qc(code, rule, s, llr, 3)
    L2, R2 = llr.copy(), np.zeros(code.edges, np.float32)
    kern = qc_minsum if rule == "minsum" else qc_aminstar
    scratch = np.empty((2, 4 if rule == "minsum" else 5, code.z), np.float32)
    for _ in range(3):
        kern(code.base_ptr, code.base_col, code.base_shift, code.z, s, L2, R2, w, 1, scratch)
    assert it1 == -1 and np.array_equal(L1, L2) and np.array_equal(R1, R2)


@pytest.mark.parametrize("decoder", ["amin", "minsum"])
def test_ldpc_qc_reconcile_identical_keys_and_honest_leakage(frame, decoder):
    q = 0.05
    plan = plan_ldpc(q, decoder=decoder, code_n=16384, z=128)
    assert plan.decoder == decoder and plan.z == 128
    x, y = frame(3 * plan.key_bits_per_frame, q, 11)
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(2))
    res = LdpcBob(y, q, plan=plan).run(LocalChannel(alice))
    assert res.success and np.array_equal(res.corrected, x)
    code = build_code(plan.code_n, plan.rate, plan.code_seed, plan.z)
    # every disclosed bit counted: syndromes minus filler credit, plus every revealed value
    # (each frame is asked for reveal-order values only until it decodes)
    revealed = sum(res.details["revealed_at_success"])
    assert revealed >= 3 * plan.start_revealed
    assert res.leaked_bits == alice.disclosed_bits == 3 * (code.m - plan.d) + revealed
    assert res.efficiency == pytest.approx(res.leaked_bits / (x.size * binary_entropy(q)))
    assert res.details["mother_rate"] == plan.rate and res.details["code_n"] == 16384


def test_ldpc_qc_last_chance_runs_sum_product(frame, monkeypatch):
    """Once everything allowed is revealed, a quasi-cyclic frame gets one cold sum-product try."""
    import labqfl.qkd.ldpc as ldpc_mod

    calls = []
    real = ldpc_mod._decode_frames

    def spy(*args):
        calls.append(args[5].copy())  # the pending frames
        return real(*args)

    monkeypatch.setattr(ldpc_mod, "_decode_frames", spy)
    x, y = frame(6000, 0.2, 4)  # far above what the code corrects
    plan = LdpcPlan(code_n=8192, rate=0.9, code_seed=0, d=10, start_revealed=0, step=10, max_reveal=20,
                    first_iter=5, retry_iter=5, z=128, decoder="amin")
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(1))
    res = LdpcBob(y, 0.05, plan=plan).run(LocalChannel(alice))
    assert not res.success and res.details["decode_attempts"] == [3]  # amin, amin, last chance
    assert len(calls) == 1 and calls[0].tolist() == [0]
    assert res.leaked_bits == alice.disclosed_bits == build_code(8192, 0.9, 0, 128).m - 10 + 20


def test_ldpc_default_plan_frame_error_rate_at_4_percent(frame):
    """24 whole frames (1.5·10^6 bits, 60 000 errors) at QBER 4 %: no frame error, f < 1.16.

    With data and filler seeded the outcome is deterministic; a decoder with a true FER of 10 %
    would pass this with probability 0.9^24 ≈ 8 %."""
    q = 0.04
    plan = plan_ldpc(q)
    x, y = frame(24 * plan.key_bits_per_frame, q, 21)
    res = reconcile_ldpc(x, y, q, seed=3)
    assert res.frame_errors == 0 and np.array_equal(res.corrected, x)
    assert res.efficiency < 1.16


def test_ldpc_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="dtype uint8"):
        reconcile_ldpc(np.zeros(5, np.int8), np.zeros(5, np.uint8), 0.02)
    with pytest.raises(ValueError, match="open interval"):
        reconcile_ldpc(np.zeros(5, np.uint8), np.zeros(5, np.uint8), 0.6)
    with pytest.raises(ValueError, match="decoder must be one of"):
        plan_ldpc(0.02, decoder="gallager")


def test_reconciliation_bench_entries_run_quick():
    from labqfl.bench import registry

    reg = registry()
    for name in ("cascade", "ldpc"):
        res = reg[name].fn(True)
        assert res.figure > 0 and res.baseline_figure > 0 and res.unit == "Mbit/s"


def test_the_distillation_s_filler_comes_from_the_os_csprng(frame, monkeypatch):
    """The syndrome's credit of d bits per frame needs fresh uniform filler whose revealed values say
    nothing about the rest: the pipeline's ``LdpcAlice(bits)`` draws it from ``secrets`` (it was a
    PCG64 stream seeded once per block, whose revealed outputs fix the unrevealed ones)."""
    from labqfl.qkd import ldpc

    drawn: list[int] = []

    def token_bytes(n: int) -> bytes:
        drawn.append(n)
        return b"\xa5" * n  # 1010 0101 …

    monkeypatch.setattr(ldpc.secrets, "token_bytes", token_bytes)
    q = 0.05
    plan = plan_ldpc(q, decoder="minsum", code_n=16384, z=128)
    x, y = frame(2 * plan.key_bits_per_frame, q, 3)
    alice = LdpcAlice(x)
    alice.handle(Message("ldpc/init", {"N": x.size, "code_n": plan.code_n, "rate": plan.rate,
                                       "code_seed": plan.code_seed, "d": plan.d, "max_reveal": plan.d, "z": plan.z}))
    assert drawn == [(2 * plan.d + 7) // 8]
    pattern = np.unpackbits(np.frombuffer(b"\xa5" * drawn[0], np.uint8))[:2 * plan.d].reshape(2, plan.d)
    assert np.array_equal(alice._filler, pattern)


@pytest.mark.parametrize("q", [0.005, 0.006, 0.008, 0.011])
def test_low_qber_frames_decode(frame, q):
    """At the default station's QBER (0.5–0.9 %) the planner picked the nearest mother rate, 0.92–0.94,
    and the decoder converged to another codeword in most frames (measured, 96 frames: 53, 93, 61 of
    96 undecoded at 0.5, 0.6, 0.8 %; 10 at 1.1 %): `labqfl distill --engine ldpc` aborted whole
    blocks. Above the wanted rate 0.88 the rate now keeps a margin (labqfl.qkd.ldpc.mother_rate); construction 3
    (the default since session 43) takes its heavier rate-0.92 code below 0.55 % (ldpc._C3_HIGHEST)."""
    plan = plan_ldpc(q)
    assert plan.rate <= (0.92 if q < 0.0055 else 0.91)
    x, y = frame(24 * plan.key_bits_per_frame, q, 40 + int(1000 * q))
    res = reconcile_ldpc(x, y, q, seed=1)
    assert res.success and res.frame_errors == 0 and np.array_equal(res.corrected, x)
    assert res.efficiency < 1.5


def test_the_mother_rate_keeps_its_margin_only_at_high_rates():
    from labqfl.qkd.ldpc import mother_rate

    assert mother_rate(0.837) == 0.84 and mother_rate(0.6706) == 0.67 and mother_rate(0.88) == 0.88  # nearest
    assert mother_rate(0.9030) == 0.87 and mother_rate(0.9354) == 0.9 and mother_rate(0.99) == 0.91
