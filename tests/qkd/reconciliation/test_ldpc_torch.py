"""The torch quasi-cyclic LDPC decoders (labqfl.qkd.ldpc_torch) on device "cpu": bit for bit the
Numba kernels' (L, R, sweeps), on a subset of frames too, the same reconciliation result through
``reconcile_ldpc(device=...)``, and one clear error for each bad argument.  No GPU needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labqfl.qkd import reconcile_ldpc
from labqfl.qkd.ldpc import AMIN_ALPHA, AMIN_GAMMA_HIGH, LdpcBob, build_code, minsum_weights
from labqfl.qkd.ldpc_qc import _bpx, qc_aminstar_frames, qc_minsum_frames
from labqfl.qkd.ldpc_torch import _bpx2, qc_decode_frames_torch
from labqfl.qkd.reconciliation import ReconciliationInputError

KERNELS = {"minsum": qc_minsum_frames, "amin": qc_aminstar_frames}


def _weights(code, rule):
    return minsum_weights(code) if rule == "minsum" else minsum_weights(code, AMIN_ALPHA, {}, AMIN_GAMMA_HIGH)


def _state(code, qbers, seed, *, warm=True):
    """Syndromes of random words and Bob's LLRs at each frame's QBER, with punctured (0, ties in
    |t|) and shortened (±50) symbols; R random (a warm start) except frame 0 (cold)."""
    rng = np.random.default_rng(seed)
    F = len(qbers)
    synd = np.empty((F, code.m), np.uint8)
    L = np.empty((F, code.n), np.float32)
    for f, q in enumerate(qbers):
        x = rng.integers(0, 2, code.n, dtype=np.uint8)
        y = x ^ (rng.random(code.n) < q).astype(np.uint8)
        L[f] = math.log((1 - q) / q) * (1.0 - 2.0 * y)
        L[f, rng.random(code.n) < 0.03] = 0.0
        short = rng.random(code.n) < 0.03
        L[f, short] = np.where(x[short] == 1, -50.0, 50.0)
        synd[f] = code.syndrome(x)
    R = (rng.standard_normal((F, code.edges)) * 0.4).astype(np.float32) if warm else np.zeros((F, code.edges),
                                                                                                  np.float32)
    R[0] = 0.0
    return synd, L, R


def _both(rule, code, synd, L, R, frames, max_iter):
    w = _weights(code, rule)
    base = (code.base_ptr, code.base_col, code.base_shift, code.z, synd)
    L1, R1, L2, R2 = L.copy(), R.copy(), L.copy(), R.copy()
    a = KERNELS[rule](*base, L1, R1, frames, w, max_iter)
    b = qc_decode_frames_torch(rule, *base, L2, R2, frames, w, max_iter, device="cpu")
    return a, b, (L1, R1), (L2, R2)


@pytest.mark.parametrize("rule", ["minsum", "amin"])
@pytest.mark.parametrize(("n", "rate", "z", "scale"), [(2048, 0.5, 64, 1.0), (1024, 0.7, 32, 0.5),
                                                       (4096, 0.8, 128, 0.25)])
def test_torch_decoder_is_the_numba_kernel_bit_for_bit(rule, n, rate, z, scale):
    code = build_code(n, rate, 0, z)
    # low QBER frames converge within a few sweeps (after different numbers), the 0.2 one never does
    qbers = [0.2] + [scale * q for q in (0.003, 0.01, 0.03, 0.06, 0.1)]
    synd, L, R = _state(code, qbers, seed=n + z)
    frames = np.arange(6, dtype=np.int64)
    a, b, (L1, R1), (L2, R2) = _both(rule, code, synd, L, R, frames, 25)
    assert b.dtype == np.int64 and np.array_equal(a, b)
    assert (a > 0).any() and (a == -1).any() and len(set(a[a > 0].tolist())) >= 2
    assert np.array_equal(L1, L2) and np.array_equal(R1, R2)
    assert not np.array_equal(L1, L)  # the decoders did write in place


@pytest.mark.parametrize("rule", ["minsum", "amin"])
def test_torch_decoder_on_a_subset_of_frames_leaves_the_others_alone(rule):
    code = build_code(2048, 0.6, 1, 64)
    synd, L, R = _state(code, [0.02, 0.3, 0.01, 0.04, 0.05], seed=7)
    frames = np.array([3, 0, 2], np.int64)
    a, b, (L1, R1), (L2, R2) = _both(rule, code, synd, L, R, frames, 12)
    assert np.array_equal(a, b)
    assert np.array_equal(L1, L2) and np.array_equal(R1, R2)
    for f in (1, 4):
        assert np.array_equal(L2[f], L[f]) and np.array_equal(R2[f], R[f])
    # a second call continues from the state the first one left (the protocol's warm start)
    a2, b2, (L3, R3), (L4, R4) = _both(rule, code, synd, L1, R1, np.array([1, 3], np.int64), 5)
    assert np.array_equal(a2, b2) and np.array_equal(L3, L4) and np.array_equal(R3, R4)


def test_torch_bpx_is_the_kernel_bpx_bit_for_bit():
    rng = np.random.default_rng(3)
    # around f's breakpoints (u = 1, 3.37), ties, zero and the kernels' initial 3e38
    grid = np.array([0.0, 0.5, 0.9998, 1.0, 1.0002, 3.0, 3.371, 3.3712, 7.0, 50.0, 3.0e38], np.float32)
    x = np.concatenate([np.repeat(grid, grid.size), rng.exponential(2.0, 4000).astype(np.float32)])
    y = np.concatenate([np.tile(grid, grid.size), rng.exponential(2.0, 4000).astype(np.float32)])
    S = torch.from_numpy(np.stack([x, y]).reshape(2, 1, -1))
    got = _bpx2(S, torch.from_numpy(y.reshape(1, -1)), torch.empty((2, 2, 1, x.size), dtype=torch.float32))
    want_xy = np.array([_bpx(p, q) for p, q in zip(x, y, strict=True)], np.float32)
    want_yy = np.array([_bpx(q, q) for q in y], np.float32)
    assert np.array_equal(got[0, 0].numpy(), want_xy) and np.array_equal(got[1, 0].numpy(), want_yy)
    assert (want_xy > 0).any() and (want_xy == 0).any()


def test_torch_decoder_no_sweeps_and_no_frames():
    code = build_code(1024, 0.5, 0, 32)
    synd, L, R = _state(code, [0.02, 0.02], seed=1)
    L0, R0 = L.copy(), R.copy()
    w = _weights(code, "minsum")
    base = (code.base_ptr, code.base_col, code.base_shift, code.z, synd)
    assert qc_decode_frames_torch("minsum", *base, L, R, np.arange(2), w, 0, device="cpu").tolist() == [-1, -1]
    assert qc_decode_frames_torch("amin", *base, L, R, np.zeros(0, np.int64), w, 5, device="cpu").size == 0
    assert np.array_equal(L, L0) and np.array_equal(R, R0)


@pytest.mark.parametrize(("qber", "decoder"), [(0.02, "amin"), (0.05, "minsum")])
def test_reconcile_ldpc_on_a_torch_device_gives_the_same_result(frame, qber, decoder):
    x, y = frame(30_000, qber, 11)
    a = reconcile_ldpc(x, y, qber, seed=5, code_n=8192, decoder=decoder)
    b = reconcile_ldpc(x, y, qber, seed=5, code_n=8192, decoder=decoder, device="cpu")
    assert np.array_equal(a.corrected, b.corrected)
    assert a.leaked_bits == b.leaked_bits and a.iterations == b.iterations
    assert np.array_equal(a.details["frame_ok"], b.details["frame_ok"])
    assert a.details["decode_attempts"] == b.details["decode_attempts"]
    assert a.details["frames"] >= 4 and sum(a.details["decode_attempts"]) > a.details["frames"]  # retries ran


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:99", "cpu:0", "", 0])
def test_bad_device_is_one_clear_error(frame, device):
    x, y = frame(1000, 0.03, 1)
    with pytest.raises(ReconciliationInputError, match=r"LDPC device.*(expected 'cpu', 'cuda' or 'cuda:N'|asked for)"):
        reconcile_ldpc(x, y, 0.03, device=device)  # type: ignore[arg-type]
    with pytest.raises(ReconciliationInputError, match="LDPC device"):
        LdpcBob(y, 0.03, device=device)  # type: ignore[arg-type]


def test_device_with_the_sum_product_decoder_is_one_clear_error(frame):
    x, y = frame(1000, 0.03, 1)
    with pytest.raises(ReconciliationInputError, match="needs a quasi-cyclic decoder .* got decoder 'bp'"):
        reconcile_ldpc(x, y, 0.03, decoder="bp", device="cpu")


def test_cuda_without_a_cuda_device_is_one_clear_error(frame, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x, y = frame(1000, 0.03, 1)
    with pytest.raises(ReconciliationInputError, match=r"LDPC device: 'cuda' asked for, but torch .* sees no CUDA"):
        reconcile_ldpc(x, y, 0.03, device="cuda")


def test_torch_decoder_rejects_bad_arguments():
    code = build_code(1024, 0.5, 0, 32)
    synd, L, R = _state(code, [0.02, 0.02], seed=1)
    w = _weights(code, "amin")
    fr = np.arange(2, dtype=np.int64)
    ok = dict(rule="amin", row_ptr=code.base_ptr, bcol=code.base_col, bshift=code.base_shift, Z=code.z,
              synd=synd, L=L, R=R, frames=fr, weight=w, max_iter=3)
    bad = [
        ({"rule": "bp"}, "rule must be one of"),
        ({"frames": np.array([0, 0])}, "distinct rows"),
        ({"frames": np.array([2])}, "distinct rows"),
        ({"L": L.astype(np.float64)}, "L must be float32"),
        ({"R": R[:, :-1]}, "R must be float32 of shape"),
        ({"synd": synd[:, :-1]}, "synd must be uint8"),
        ({"weight": w[:-1]}, "weight must be float32"),
        ({"bshift": code.base_shift + code.z}, r"shifts must lie in \[0, 32\)"),
        ({"bcol": np.where(np.arange(code.base_col.size) == 1, code.base_col[0], code.base_col)},
         "a base column appears twice in one base row"),
        ({"max_iter": 2.5}, "max_iter must be an integer"),
    ]
    for change, msg in bad:
        with pytest.raises(ReconciliationInputError, match=msg):
            qc_decode_frames_torch(**{**ok, **change}, device="cpu")
    Ln = L.copy()
    Ln[1, 5] = np.nan
    with pytest.raises(ReconciliationInputError, match="must not hold NaN"):
        qc_decode_frames_torch(**{**ok, "L": Ln}, device="cpu")
