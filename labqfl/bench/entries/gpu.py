"""Benchmark ``gpu`` (issue 23 item 7): the accelerator paths on a CUDA GPU through torch, each
beside the default CPU kernel on the same machine and the same data.

* **Toeplitz** (10^7-bit blocks, m = 2.5·10^6): :func:`labqfl.qkd.toeplitz_torch.toeplitz_hash_torch`
  (cuFFT float64 with both rounding checks), end to end from numpy bits to numpy bits and with the
  data already on the device, against :func:`labqfl.qkd.toeplitz.toeplitz_hash` on one CPU thread
  (the per-core figure of ``labqfl bench toeplitz``) and on every CPU thread. Outputs compared bit
  for bit.
* **LDPC** (QBER 1, 2, 4, 6, 8 %, the default engine: quasi-cyclic A-min*, efficient preset): the
  whole blind protocol :func:`labqfl.qkd.ldpc.reconcile_ldpc` with the decoder on the GPU
  (``device="cuda"``, :mod:`labqfl.qkd.ldpc_torch`) against the Numba decoder on every CPU thread,
  same frames; the two must give the same corrected bits and disclose the same bits.
* **QNN** (6 qubits / 4 layers, MSE step): the torch statevector path
  (:func:`labqfl.fl.models.hea.hea_expval`, autograd) on the GPU against the Numba adjoint kernel
  (:func:`labqfl.fl.models._statevector.statevector_expval`) on the CPU, at the federated step
  ``labqfl train`` takes (4 clients × 16 examples) and at 4 clients × 8192 examples; gradients
  compared.

Headline: Toeplitz Mbit/s on the GPU (end to end) against one CPU core. Everything else is in
``details`` and in the tables. :func:`measure` takes the torch device, so the same code is checked
on ``"cpu"`` by the tests of a host without a GPU (tests/bench/test_gpu_bench.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

from labqfl.accel import cuda_name, synchronize, torch_device
from labqfl.bench import BenchResult, benchmark
from labqfl.bench import noisy_frame as _frame

LDPC_QBERS = (0.01, 0.02, 0.04, 0.06, 0.08)
LDPC_FRAMES = 512
"""Frames per QBER in the full run (≈ 29 Mbit): a GPU needs many frames in flight."""


def _best(fn: Callable[[], object], dev: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up, the device's queue drained each time."""
    fn()
    synchronize(dev)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def _toeplitz(dev: torch.device, quick: bool) -> dict[str, Any]:
    from labqfl.qkd.toeplitz import toeplitz_hash, toeplitz_seed
    from labqfl.qkd.toeplitz_torch import toeplitz_hash_torch

    n = 200_000 if quick else 10_000_000
    m = n // 4
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = toeplitz_seed(n, m)
    reps = 2 if quick else 5
    name = str(dev)
    t_dev = _best(lambda: toeplitz_hash_torch(x, s, m, device=name), dev, reps)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        t_cpu1 = _best(lambda: toeplitz_hash(x, s, m), torch.device("cpu"), reps)
        numba.set_num_threads(threads)
        t_cpu = _best(lambda: toeplitz_hash(x, s, m), torch.device("cpu"), reps)
    finally:
        numba.set_num_threads(threads)
    same = bool(np.array_equal(toeplitz_hash_torch(x, s, m, device=name), toeplitz_hash(x, s, m)))
    return {"n": n, "m": m, "mbit_s_device_end_to_end": n / t_dev / 1e6, "mbit_s_cpu_1_thread": n / t_cpu1 / 1e6,
            "mbit_s_cpu_all_threads": n / t_cpu / 1e6, "cpu_threads": threads, "bit_identical": same}


def _ldpc(dev: torch.device, quick: bool) -> list[dict[str, Any]]:
    from labqfl.qkd.ldpc import plan_ldpc, reconcile_ldpc

    rows = []
    qbers = (0.06,) if quick else LDPC_QBERS
    frames = 2 if quick else LDPC_FRAMES
    for i, q in enumerate(qbers):
        code_n = 4096 if quick else None
        plan = plan_ldpc(q, code_n=code_n)
        n = frames * plan.key_bits_per_frame
        x, y = _frame(n, q, 100 + i)
        kw: dict[str, Any] = {"seed": 5, "code_n": code_n} if quick else {"seed": 5}
        reconcile_ldpc(x[:2000], y[:2000], q, device=str(dev), **kw)  # code, kernels, device warm
        t0 = time.perf_counter()
        r_dev = reconcile_ldpc(x, y, q, device=str(dev), **kw)
        t_dev = time.perf_counter() - t0
        t0 = time.perf_counter()
        r_cpu = reconcile_ldpc(x, y, q, decoder="amin", **kw)  # the device runs amin (float kernels only)
        t_cpu = time.perf_counter() - t0
        nfr = r_cpu.details["frames"]
        rows.append({"qber": q, "bits": n, "frames": nfr, "backend": r_dev.details["decoder_backend"],
                     "mbit_s_device": n / t_dev / 1e6,
                     "mbit_s_cpu_all_threads": n / t_cpu / 1e6, "f": round(r_dev.efficiency, 4),
                     "fer": r_dev.frame_errors / nfr,
                     "same_as_cpu": bool(np.array_equal(r_dev.corrected, r_cpu.corrected)
                                         and r_dev.leaked_bits == r_cpu.leaked_bits
                                         and r_dev.frame_errors == r_cpu.frame_errors)})
    return rows


def _ldpc_kernels(dev: torch.device, quick: bool) -> dict[str, Any]:
    """The first decoding attempt of the blind protocol (QBER 2 %, every frame, the plan's first
    budget of sweeps) by each decoder on the same input: CPU kernel on every thread, torch on
    ``dev``, and the one-launch Numba CUDA kernel where Numba can launch it; outputs compared."""
    from labqfl.qkd.ldpc import AMIN_ALPHA, AMIN_GAMMA_HIGH, build_code, minsum_weights, plan_ldpc
    from labqfl.qkd.ldpc_cuda import cuda_decoder_available, qc_decode_frames_cuda
    from labqfl.qkd.ldpc_qc import qc_aminstar_frames
    from labqfl.qkd.ldpc_torch import qc_decode_frames_torch

    q = 0.02
    plan = plan_ldpc(q, code_n=4096 if quick else None)
    code = build_code(plan.code_n, plan.rate, plan.code_seed, plan.z)
    frames = 2 if quick else LDPC_FRAMES
    rng = np.random.default_rng(9)
    x = rng.integers(0, 2, (frames, code.n), dtype=np.uint8)
    y = x ^ (rng.random((frames, code.n)) < q).astype(np.uint8)
    synd = np.stack([code.syndrome(r) for r in x])
    L0 = (np.float32(np.log((1 - q) / q)) * (1 - 2 * y.astype(np.float32))).astype(np.float32)
    L0[:, code.untainted[:plan.d]] = 0.0  # filler: punctured at the first attempt
    w = minsum_weights(code, AMIN_ALPHA, {}, AMIN_GAMMA_HIGH)
    assert code.base_ptr is not None and code.base_col is not None and code.base_shift is not None
    base = (code.base_ptr, code.base_col, code.base_shift, code.z, synd)
    fr = np.arange(frames, dtype=np.int64)
    it = plan.first_iter
    runs: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
        "numba-cpu": lambda L, R, f: qc_aminstar_frames(*base, L, R, f, w, it),
        "torch": lambda L, R, f: qc_decode_frames_torch("amin", *base, L, R, f, w, it, device=str(dev))}
    if dev.type == "cuda" and cuda_decoder_available():
        runs["numba-cuda"] = lambda L, R, f: qc_decode_frames_cuda("amin", *base, L, R, f, w, it)
    out: dict[str, Any] = {"qber": q, "frames": frames, "sweeps": it, "code_n": code.n}
    ref = None
    for name, fn in runs.items():
        if name.startswith("numba"):  # warm-up: compile (torch needs none; its sweeps cost the same for 1 frame)
            fn(L0.copy(), np.zeros((frames, code.edges), np.float32), fr[:1])
        L, R = L0.copy(), np.zeros((frames, code.edges), np.float32)
        t0 = time.perf_counter()
        res = fn(L, R, fr)
        dt = time.perf_counter() - t0
        if ref is None:
            ref = (L, R, res)
        out[name] = {"s": dt, "mbit_s": frames * code.n / dt / 1e6, "converged": int((res > 0).sum()),
                     "same_as_cpu": bool(np.array_equal(L, ref[0]) and np.array_equal(R, ref[1])
                                         and np.array_equal(res, ref[2]))}
    return out


def _qnn_case(dev: torch.device, clients: int, batch: int, quick: bool) -> dict[str, Any]:
    from labqfl.fl.models._statevector import statevector_expval
    from labqfl.fl.models.hea import HEASpec, hea_expval

    spec = HEASpec(4, 2) if quick else HEASpec(6, 4)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(clients, batch, spec.dim)) + 1j * rng.normal(size=(clients, batch, spec.dim))
    states /= np.linalg.norm(states, axis=-1, keepdims=True)
    target = rng.choice([-1.0, 1.0], size=(clients, batch))
    w0 = rng.uniform(0, 2 * np.pi, size=(clients, *spec.weight_shape))
    st_cpu, tg_cpu = torch.as_tensor(states), torch.as_tensor(target)
    st_dev, tg_dev = st_cpu.to(dev), tg_cpu.to(dev)
    w_cpu = torch.tensor(w0, requires_grad=True)
    w_dev = torch.tensor(w0, device=dev, requires_grad=True)

    def step_cpu() -> None:
        w_cpu.grad = None
        ((statevector_expval(w_cpu, st_cpu, spec) - tg_cpu) ** 2).mean(dim=1).sum().backward()

    def step_dev() -> None:
        w_dev.grad = None
        ((hea_expval(w_dev, st_dev, spec) - tg_dev) ** 2).mean(dim=1).sum().backward()

    reps = 3 if quick else 20
    t_dev = _best(step_dev, dev, reps)
    t_cpu = _best(step_cpu, torch.device("cpu"), reps)
    step_cpu()
    step_dev()
    assert w_cpu.grad is not None and w_dev.grad is not None
    diff = float((w_dev.grad.cpu() - w_cpu.grad).abs().max())
    return {"clients": clients, "batch_per_client": batch, "n_qubits": spec.n_qubits, "n_layers": spec.n_layers,
            "ms_device": 1e3 * t_dev, "ms_cpu_kernel": 1e3 * t_cpu, "cpu_over_device": t_cpu / t_dev,
            "max_grad_difference": diff}


def measure(dev: torch.device, quick: bool) -> dict[str, Any]:
    """All three paths on ``dev`` beside the CPU kernels (module docstring)."""
    qnn = [_qnn_case(dev, 4, 16 if not quick else 4, quick), _qnn_case(dev, 4, 8192 if not quick else 64, quick)]
    return {"device": str(dev), "device_name": cuda_name() if dev.type == "cuda" else "cpu",
            "toeplitz": _toeplitz(dev, quick), "ldpc_kernels": _ldpc_kernels(dev, quick), "ldpc": _ldpc(dev, quick),
            "qnn": qnn}


def _tables(d: dict[str, Any]) -> list[dict[str, Any]]:
    t = d["toeplitz"]
    k = d["ldpc_kernels"]
    return [
        {"title": f"Toeplitz, n = {t['n']:,}, m = {t['m']:,} (Mbit/s of input)",
         "columns": ["device end to end", "CPU 1 thread", f"CPU {t['cpu_threads']} threads", "bit-identical"],
         "rows": [[f"{t['mbit_s_device_end_to_end']:.0f}", f"{t['mbit_s_cpu_1_thread']:.0f}",
                   f"{t['mbit_s_cpu_all_threads']:.0f}", t["bit_identical"]]]},
        {"title": "LDPC blind reconciliation, A-min*, efficient preset (Mbit/s)",
         "columns": ["QBER", "frames", "device", "backend", "CPU all threads", "f", "FER", "same as CPU"],
         "rows": [[f"{r['qber']:.0%}", r["frames"], f"{r['mbit_s_device']:.2f}", r["backend"],
                   f"{r['mbit_s_cpu_all_threads']:.2f}", r["f"], r["fer"], r["same_as_cpu"]] for r in d["ldpc"]]},
        {"title": (f"LDPC first attempt, QBER {k['qber']:.0%}, {k['frames']} frames of {k['code_n']} bits, "
                   f"{k['sweeps']} A-min* sweeps (Mbit/s of frame)"),
         "columns": ["decoder", "s", "Mbit/s", "frames converged", "same as CPU kernel"],
         "rows": [[name, f"{k[name]['s']:.3f}", f"{k[name]['mbit_s']:.2f}", k[name]["converged"],
                   k[name]["same_as_cpu"]] for name in ("numba-cpu", "torch", "numba-cuda") if name in k]},
        {"title": "QNN step, MSE forward + backward (ms)",
         "columns": ["clients × examples", "device (torch)", "CPU (Numba kernel)", "CPU / device", "max |Δgrad|"],
         "rows": [[f"{r['clients']} × {r['batch_per_client']}", f"{r['ms_device']:.3f}", f"{r['ms_cpu_kernel']:.3f}",
                   f"{r['cpu_over_device']:.2f}", f"{r['max_grad_difference']:.1e}"] for r in d["qnn"]]},
    ]


def _needs_cuda() -> str | None:
    return None if torch.cuda.is_available() else f"needs a CUDA device (torch {torch.__version__} sees none)"


@benchmark("gpu", "Toeplitz (10^7-bit blocks), LDPC (QBER 1-8 %) and the QNN step on a CUDA GPU through torch, each "
           "beside the CPU kernel on the same machine and data (runs only where torch sees a CUDA device)",
           target="report GPU figures beside the CPU figures; identical outputs", requires=_needs_cuda)
def gpu(quick: bool) -> BenchResult:
    dev = torch_device("cuda", what="labqfl bench gpu")
    d = measure(dev, quick)
    t = d["toeplitz"]
    kernels = [v for v in d["ldpc_kernels"].values() if isinstance(v, dict)]
    agree = (t["bit_identical"] and all(r["same_as_cpu"] for r in d["ldpc"]) and all(v["same_as_cpu"] for v in kernels)
             and all(r["max_grad_difference"] <= 1e-10 for r in d["qnn"]))
    d["tables"] = _tables(d)
    return BenchResult(figure=t["mbit_s_device_end_to_end"], unit="Mbit/s (Toeplitz input)",
                       baseline="CPU Toeplitz, one thread (labqfl bench toeplitz)",
                       baseline_figure=t["mbit_s_cpu_1_thread"], passed=agree, details=d)
