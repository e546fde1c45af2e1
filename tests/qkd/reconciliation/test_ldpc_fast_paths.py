"""Session 39 (issue 23 item 3) fast paths of the LDPC engine against their plain references: the compiled
fixed-point quantiser, the quasi-cyclic syndrome, Bob's priors built without a per-frame loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labqfl.qkd import ldpc_batch as lb
from labqfl.qkd.ldpc import LdpcBob, _syndrome, build_code, plan_ldpc
from labqfl.qkd.ldpc_qc import qc_syndrome


def _quantise_reference(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, np.float64) * lb.SCALE), -lb.LMAX, lb.LMAX).astype(np.int16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantise_matches_the_numpy_chain(dtype):
    """Round half to even (k + 1/2)/64 ties, saturation at ±LMAX, any shape — the values of
    ``clip(rint(64·x))`` exactly."""
    rng = np.random.default_rng(5)
    ties = (np.arange(-600, 600) + 0.5) / lb.SCALE
    x = np.concatenate([rng.normal(0, 80, 20000), ties, [0.0, -0.0, 1e9, -1e9, 437.5, -437.5, 50.0, -50.0]])
    x = x.astype(dtype)
    ref = _quantise_reference(x)
    out = lb.quantise(x)
    assert out.dtype == np.int16 and out.shape == x.shape
    np.testing.assert_array_equal(out, ref)
    assert {int(out.max()), int(out.min())} == {lb.LMAX, -lb.LMAX}
    m = x[:2400].reshape(40, 60)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(lb.quantise(m), _quantise_reference(m))
    np.testing.assert_array_equal(lb.quantise(np.array([[1, -2]], np.int64)), np.array([[64, -128]], np.int16))


@pytest.mark.parametrize(("n", "rate", "z"), [(4096, 0.7, 64), (8192, 0.9, 128), (65536, 0.55, 256)])
def test_qc_syndrome_equals_the_sparse_rows(n, rate, z):
    """H·x by contiguous segments per base edge equals the CSR loop over each check's variables (and the
    code's ``syndrome`` takes it for a quasi-cyclic code)."""
    code = build_code(n, rate, 1, z)
    rng = np.random.default_rng(n)
    for word in (rng.integers(0, 2, code.n).astype(np.uint8), np.zeros(code.n, np.uint8),
                 np.ones(code.n, np.uint8)):
        ref = _syndrome(code.check_ptr, code.check_var, word)
        np.testing.assert_array_equal(qc_syndrome(code.base_ptr, code.base_col, code.base_shift, code.z, word), ref)
        np.testing.assert_array_equal(code.syndrome(word), ref)
    assert ref.size == code.m


def test_priors_equal_the_per_frame_loop():
    """Bob's priors: ±ln((1−q)/q) from his bits on the key positions, +50 on the last frame's padding, 0 on
    the filler — the per-frame loop's values, for a block that ends inside a frame."""
    q = 0.04
    plan = plan_ldpc(q, code_n=4096, z=64)
    code = build_code(plan.code_n, plan.rate, plan.code_seed, plan.z)
    kpf = code.n - plan.d
    N = 2 * kpf + 123
    bits = np.random.default_rng(2).integers(0, 2, N).astype(np.uint8)
    bob = LdpcBob(bits, q, plan=plan)
    from labqfl.qkd.ldpc import _layout

    keypos = _layout(code.n, code.rate, code.seed, plan.d, code.z)[0]
    out = bob._priors(3, code.n, kpf, keypos)
    L0 = np.float32(math.log((1 - q) / q))
    ref = np.zeros((3, code.n), np.float32)
    for f in range(3):
        chunk = bits[f * kpf:(f + 1) * kpf]
        ref[f, keypos] = 50.0
        ref[f, keypos[:chunk.size]] = np.where(chunk == 1, -L0, L0)
    np.testing.assert_array_equal(out, ref)
    assert out.dtype == np.float32 and (out[2] == 50.0).sum() == kpf - 123


def test_bench_pairs_engines_frame_by_frame():
    """The LDPC bench's frame-by-frame comparison: more / fewer / same reveals on frames both decoded, frames
    only one decoded, the sign test, and whether the corrected blocks agree."""
    from labqfl.bench.entries.reconciliation import _paired

    x = np.zeros(10, np.uint8)
    a = {"_reveals": np.array([5, 5, 5, 5, 7, -1, 3]), "_corrected": x}
    b = {"_reveals": np.array([6, 6, 4, 5, 7, 9, -1]), "_corrected": x.copy()}
    p = _paired(a, b)
    assert (p["more_reveals"], p["fewer_reveals"], p["same_reveals"]) == (2, 1, 2)
    assert (p["only_first_decoded"], p["only_second_decoded"]) == (1, 1)
    assert p["sign_test_p"] == 1.0 and p["corrected_equal"]
    b["_corrected"] = np.ones(10, np.uint8)
    b["_reveals"] = np.array([9] * 7)
    p = _paired(a, b)
    assert not p["corrected_equal"] and p["more_reveals"] == 6 and p["sign_test_p"] == pytest.approx(2 / 64, abs=1e-4)


def _first_layer_messages(code, L0, w):
    Z = code.z
    L = L0.copy()
    R = np.zeros(code.edges, np.int16)
    S = np.zeros(code.m, np.int16)
    lb._sweep(code.base_ptr, code.base_col, code.base_shift, Z, 1, S, L, R, np.full(code.base_col.size, w, np.int16),
              np.empty((2, 5, Z), np.int16), np.empty(Z, np.int16))
    return R[:code.base_ptr[1] * Z]  # base row 0: computed from the priors alone (the first layer of the sweep)


def test_message_scale_is_one_plus_w_over_32():
    """Pass 2 writes sign · (m + ⌊w·m/32⌋) for the A-min* magnitude m (w = 0: m itself), so w = 2 is
    session 38's ⌊17·m/16⌋; the scale per mother rate is session 42's table ``ldpc_batch.WEIGHTS`` (w = 3,
    1.09375 ≈ the float 1.1, below 0.73)."""
    code = build_code(4096, 0.7, 3, 64)
    rng = np.random.default_rng(9)
    L0 = lb.quantise(rng.normal(8.0, 3.0, code.n))
    m0 = _first_layer_messages(code, L0, 0)
    assert (m0 != 0).sum() > m0.size // 2
    mag, sgn = np.abs(m0.astype(np.int64)), np.sign(m0)
    for w in (1, 2, 3):
        mw = _first_layer_messages(code, L0, w)
        np.testing.assert_array_equal(mw, sgn * (mag + (w * mag) // 32))
    np.testing.assert_array_equal(_first_layer_messages(code, L0, 2), sgn * ((17 * mag) // 16))
    rates = (0.5, 0.72, 0.73, 0.77, 0.78, 0.82, 0.83, 0.87, 0.88, 0.91)
    assert [lb.weight_for(r) for r in rates] == [3, 3, 2, 2, 1, 1, 2, 2, 1, 1]
    state = lb.BatchState(code, np.zeros((1, code.m), np.uint8), np.zeros((1, code.n), np.float32),
                          np.zeros((1, code.n), np.float32), 3, 0.95)
    assert (state.weight == 3).all()


def test_long_preset_plans_and_decodes_262144_bit_frames():
    """``preset="long"``: the efficient design points on n = 262 144 (z = 256) in steps of 0.005·h(Q); the
    bench's ``amin16-long`` engine decodes a frame at 4 % to Alice's bits."""
    from labqfl.bench.entries.reconciliation import ENGINES, _run
    from labqfl.qkd.reconciliation import binary_entropy

    q = 0.04
    long, eff = plan_ldpc(q, decoder="amin16", preset="long"), plan_ldpc(q, decoder="amin16")
    assert (long.code_n, long.z, eff.code_n) == (262144, 256, 65536)
    assert long.rate == eff.rate and long.first_iter == eff.first_iter and long.stall_every == eff.stall_every
    assert long.step == math.ceil(0.005 * binary_entropy(q) * long.key_bits_per_frame)
    assert plan_ldpc(q, decoder="bp", preset="long").code_n == 16384  # the random-code engine has no presets
    assert "amin16-long" in ENGINES
    r = _run("amin16-long", q, 1, 5)
    assert r["code_n"] == 262144 and r["frames"] == 1 and r["frame_errors"] == 0 and r["residual_bits"] == 0
    assert 1.0 < r["f"] < 1.2
