"""Benchmark ``qnn``: one QNN training step (forward + backward of the MSE loss on a batch) with
labqfl's batched torch statevector path vs PennyLane ``default.qubit`` with parameter broadcasting
(backprop, torch interface) on the same HEA circuit (6 qubits / 4 layers, state input) and batch."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from labqfl.bench import BenchResult, benchmark


def _median_time(fn: Callable[[], None], repeats: int, min_s: float) -> float:
    fn()  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + min_s
    while len(times) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50 * repeats:
            break
    return float(np.median(times))


@benchmark("qnn", "QNN training step (6 qubits, 4 HEA layers, batch 64): torch fast path vs PennyLane default.qubit",
           target="≥ 10× faster than default.qubit with broadcasting")
def qnn_step(quick: bool) -> BenchResult:
    from labqfl.fl.models.hea import HEASpec, hea_expval, pennylane_qnode

    spec = HEASpec(6, 4) if not quick else HEASpec(4, 2)
    batch = 64 if not quick else 8
    rng = np.random.default_rng(0)
    states = rng.normal(size=(batch, spec.dim)) + 1j * rng.normal(size=(batch, spec.dim))
    states /= np.linalg.norm(states, axis=1, keepdims=True)
    target = torch.as_tensor(rng.choice([-1.0, 1.0], size=batch))
    w0 = rng.uniform(0, 2 * np.pi, size=spec.weight_shape)
    st = torch.as_tensor(states)

    w_fast = torch.tensor(w0[None], requires_grad=True)

    def fast() -> None:
        w_fast.grad = None
        loss = ((hea_expval(w_fast, st[None], spec)[0] - target) ** 2).mean()
        loss.backward()

    qnode = pennylane_qnode(spec, "state")
    w_pl = torch.tensor(w0, requires_grad=True)

    def pennylane() -> None:
        w_pl.grad = None
        loss = ((qnode(st, w_pl) - target) ** 2).mean()
        loss.backward()

    repeats = 3 if quick else 10
    # One core for both sides: with tensors this small, torch's intra-op threads only add
    # contention (on a shared 2-core machine a 2-thread run was 70x slower than 1 thread).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t_fast = _median_time(fast, repeats, 0.05 if quick else 1.0)
        t_pl = _median_time(pennylane, repeats, 0.05 if quick else 1.0)
    finally:
        torch.set_num_threads(threads)
    # agreement on this very step (same loss, same gradient)
    fast()
    pennylane()
    assert w_fast.grad is not None and w_pl.grad is not None
    grad_err = float((w_fast.grad[0] - w_pl.grad).abs().max())
    steps_fast, steps_pl = 1.0 / t_fast, 1.0 / t_pl
    return BenchResult(
        figure=steps_fast, unit="steps/s", baseline="PennyLane default.qubit (broadcast, backprop)",
        baseline_figure=steps_pl, target="≥ 10×", passed=steps_fast / steps_pl >= 10.0,
        details={"n_qubits": spec.n_qubits, "n_layers": spec.n_layers, "batch": batch,
                 "ms_per_step_torch": 1e3 * t_fast, "ms_per_step_pennylane": 1e3 * t_pl,
                 "max_grad_difference": grad_err, "torch_threads": 1},
    )
