"""The CUDA LDPC kernel (labqfl.qkd.ldpc_cuda, issue 23 item 7) against the CPU kernels, bit for
bit: run in Numba's CUDA simulator in a subprocess (the simulator must be chosen before Numba is
imported), so it is checked on a host without a GPU. `labqfl bench gpu` repeats the comparison on
a real GPU with the whole blind protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labqfl.qkd.ldpc_cuda import qc_decode_frames_cuda
from labqfl.qkd.reconciliation import ReconciliationInputError

SCRIPT = Path(__file__).with_name("cuda_sim_check.py")


def test_the_kernel_in_the_cuda_simulator_equals_the_cpu_kernels_bit_for_bit():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines[-1] == {"wiped": True}  # the kernel that zeroes the posteriors before they are freed
    cases = lines[:-1]
    assert [(c["rule"], c["budget"]) for c in cases] == [("minsum", 2), ("minsum", 6), ("amin", 2), ("amin", 6)]
    for c in cases:
        assert c["cuda"] == c["cpu"], c
        assert c["L_equal"] and c["R_equal"] and c["R_nonzero"], c
    # the cases exercise both outcomes: frames that converge (at different sweeps) and one that never does
    results = {s for c in cases for s in c["cpu"]}
    assert -1 in results and len(results - {-1}) >= 2


def test_bad_arguments_and_no_gpu_get_one_clear_error(monkeypatch):
    import labqfl.qkd.ldpc_cuda as lc

    monkeypatch.setattr(lc, "cuda_decoder_problem", lambda: "Numba sees no CUDA device")  # so on a GPU host too
    args = (np.array([0, 1]), np.array([0]), np.array([0]), 4, np.zeros((1, 4), np.uint8),
            np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32), np.array([0]), np.ones(1, np.float32), 3)
    with pytest.raises(ReconciliationInputError, match="rule must be 'minsum' or 'amin', got 'bp'"):
        qc_decode_frames_cuda("bp", *args)
    with pytest.raises(ReconciliationInputError, match="lifting size Z must be 1..1024, got 2048"):
        qc_decode_frames_cuda("amin", *args[:3], 2048, *args[4:])
    with pytest.raises(ReconciliationInputError, match="CUDA LDPC decoder: Numba sees no CUDA device"):
        qc_decode_frames_cuda("amin", *args)


def test_the_result_names_the_decoder_that_ran():
    from labqfl.bench import noisy_frame
    from labqfl.qkd.ldpc import reconcile_ldpc

    x, y = noisy_frame(6000, 0.03, 4)
    cpu = reconcile_ldpc(x, y, 0.03, seed=1, code_n=8192, decoder="amin")
    on_torch = reconcile_ldpc(x, y, 0.03, seed=1, code_n=8192, device="cpu")
    assert cpu.details["decoder_backend"] == "numba-cpu" and on_torch.details["decoder_backend"] == "torch"
    assert np.array_equal(cpu.corrected, on_torch.corrected) and cpu.leaked_bits == on_torch.leaked_bits
    # the default decoder (amin16, 16-bit, CPU only) runs as amin on a device, and the result says so
    assert cpu.details["decoder"] == on_torch.details["decoder"] == "amin"
    assert cpu.details["decoder_backend_note"] is None
    assert on_torch.details["decoder_backend_note"] == "decoder 'amin16' (16-bit, CPU only) ran as 'amin' (float) on device 'cpu'"
    assert reconcile_ldpc(x, y, 0.03, seed=1, code_n=8192).details["decoder"] == "amin16"


def test_a_cuda_target_that_cannot_compile_is_named_and_the_torch_path_runs(monkeypatch):
    """The kernel needs Numba's CUDA target to compile; when it cannot (as on a GPU host whose
    numba-cuda predates its numpy), a CUDA device runs the torch path and the result says why."""
    import labqfl.qkd.ldpc_cuda as lc
    from labqfl.bench import noisy_frame
    from labqfl.qkd import ldpc_torch
    from labqfl.qkd.ldpc import LdpcAlice, LdpcBob, plan_ldpc
    from labqfl.qkd.messaging import LocalChannel

    def broken() -> None:
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    lc.cuda_decoder_problem.cache_clear()
    monkeypatch.setattr(lc.cuda, "is_available", lambda: True)
    monkeypatch.setattr(lc.cuda, "jit", lambda *a, **k: lambda fn: broken())
    problem = lc.cuda_decoder_problem()
    lc.cuda_decoder_problem.cache_clear()
    assert problem is not None and "cannot compile here (AttributeError" in problem and "row_stack" in problem
    monkeypatch.setattr(lc, "cuda_decoder_problem", lambda: problem)
    devices: list[str] = []
    real = ldpc_torch.qc_decode_frames_torch

    def on_cpu(*args, device):  # the CUDA device this host lacks: run the same call on "cpu"
        devices.append(device)
        return real(*args, device="cpu")

    monkeypatch.setattr(ldpc_torch, "qc_decode_frames_torch", on_cpu)
    x, y = noisy_frame(6000, 0.03, 4)
    bob = LdpcBob(y, 0.03, plan=plan_ldpc(0.03, code_n=8192, decoder="amin"))
    bob.device = "cuda"  # as if torch saw a GPU (the device check ran in __init__)
    res = bob.run(LocalChannel(LdpcAlice(x, filler_rng=np.random.default_rng(1))))
    assert res.details["decoder_backend"] == "torch" and res.details["decoder_backend_note"] == problem
    assert devices and set(devices) == {"cuda"} and res.success


def test_the_torch_decoder_wipes_its_state_and_keeps_the_callers_result(monkeypatch):
    from labqfl.qkd import ldpc_torch
    from labqfl.qkd.ldpc import build_code, minsum_weights
    from labqfl.qkd.ldpc_qc import qc_minsum_frames

    code = build_code(1024, 0.7, 1, 32)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2, (3, code.n), dtype=np.uint8)
    y = x ^ (rng.random((3, code.n)) < 0.01).astype(np.uint8)
    synd = np.stack([code.syndrome(r) for r in x])
    L0 = np.where(y == 1, -4.6, 4.6).astype(np.float32)
    w = minsum_weights(code)
    base = (code.base_ptr, code.base_col, code.base_shift, code.z, synd)
    La, Ra = L0.copy(), np.zeros((3, code.edges), np.float32)
    Lb, Rb = L0.copy(), np.zeros((3, code.edges), np.float32)
    wiped: list[object] = []
    real = ldpc_torch._wipe

    def record(*state):
        real(*state)
        wiped.extend(state)

    monkeypatch.setattr(ldpc_torch, "_wipe", record)
    ra = qc_minsum_frames(*base, La, Ra, np.arange(3), w, 20)
    rb = ldpc_torch.qc_decode_frames_torch("minsum", *base, Lb, Rb, np.arange(3), w, 20, device="cpu")
    assert np.array_equal(ra, rb) and np.array_equal(La, Lb) and np.array_equal(Ra, Rb) and (ra > 0).any()
    assert len(wiped) >= 4 and all(not t.any() for t in wiped)  # type: ignore[attr-defined]
