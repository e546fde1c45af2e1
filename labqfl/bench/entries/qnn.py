"""Benchmark ``qnn``: one federated QNN training step (forward + backward of the MSE loss on a batch
for every client) with labqfl's Numba statevector kernel (adjoint gradients,
:mod:`labqfl.fl.models._statevector`) vs PennyLane ``default.qubit`` with parameter broadcasting
(backprop, torch interface) on the same HEA circuit (6 qubits / 4 layers, state input) and the same
batch. The previous torch statevector path (:func:`labqfl.fl.models.hea.hea_expval`, now the slow
reference) is timed beside them. Both thread settings are reported: one thread for every library
(the headline), and each library's default thread count."""

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


def _time_steps(fast: Callable[[], None], pennylane: Callable[[], None], torch_path: Callable[[], None],
                fast_single: Callable[[], None], pennylane_single: Callable[[], None],
                quick: bool) -> tuple[float, float, float, float, float, float, float, int, int]:
    """Median step times: kernel, PennyLane, torch reference, single-client kernel and PennyLane at one
    thread each, then kernel and PennyLane at the libraries' default thread counts (restored after);
    also returns those default torch and Numba thread counts."""
    import numba

    repeats = 3 if quick else 10
    min_s = 0.05 if quick else 1.0
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        # headline: one thread for every library, side by side
        torch.set_num_threads(1)
        numba.set_num_threads(1)
        t_fast = _median_time(fast, repeats, min_s)
        t_pl = _median_time(pennylane, repeats, min_s)
        t_torch = _median_time(torch_path, repeats, min_s)
        t_fast1 = _median_time(fast_single, repeats, min_s)
        t_pl1 = _median_time(pennylane_single, repeats, min_s)
        # each library at its default thread count (the kernel stays on one thread below
        # PARALLEL_MIN_EXAMPLES examples; torch/PennyLane use torch's intra-op pool)
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)
        t_fast_d = _median_time(fast, repeats, min_s / 2)
        t_pl_d = _median_time(pennylane, 2 if quick else 3, min_s / 2)
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)
    return t_fast, t_pl, t_torch, t_fast1, t_pl1, t_fast_d, t_pl_d, torch_threads, numba_threads


@benchmark("qnn", "Federated QNN training step (6 qubits, 4 HEA layers; 4 clients x 16 examples, as `labqfl train` "
           "runs it): Numba statevector kernel with adjoint gradients (clients and examples batched) vs PennyLane "
           "default.qubit (broadcast over examples, one call per client); one thread each",
           target="≥ 100× faster than default.qubit with broadcasting")
def qnn_step(quick: bool) -> BenchResult:
    from labqfl.fl.models._statevector import statevector_expval
    from labqfl.fl.models.hea import HEASpec, hea_expval, pennylane_qnode

    spec = HEASpec(6, 4) if not quick else HEASpec(4, 2)
    clients, batch = (4, 16) if not quick else (2, 4)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(clients, batch, spec.dim)) + 1j * rng.normal(size=(clients, batch, spec.dim))
    states /= np.linalg.norm(states, axis=-1, keepdims=True)
    target = torch.as_tensor(rng.choice([-1.0, 1.0], size=(clients, batch)))
    w0 = rng.uniform(0, 2 * np.pi, size=(clients, *spec.weight_shape))
    st = torch.as_tensor(states)
    w_fast = torch.tensor(w0, requires_grad=True)
    w_torch = torch.tensor(w0, requires_grad=True)

    def fast() -> None:  # one step for every client at once (independent per-client losses)
        w_fast.grad = None
        loss = ((statevector_expval(w_fast, st, spec) - target) ** 2).mean(dim=1).sum()
        loss.backward()

    def torch_path() -> None:  # the same step on the torch reference path
        w_torch.grad = None
        loss = ((hea_expval(w_torch, st, spec) - target) ** 2).mean(dim=1).sum()
        loss.backward()

    qnode = pennylane_qnode(spec, "state")
    w_pl = [torch.tensor(w0[c], requires_grad=True) for c in range(clients)]

    def pennylane() -> None:  # the same step: broadcasting over examples, a call per client
        for c in range(clients):
            w_pl[c].grad = None
            loss = ((qnode(st[c], w_pl[c]) - target[c]) ** 2).mean()
            loss.backward()

    # The single-client, batch-64 step, for reference (same circuit).
    st64 = st.reshape(1, clients * batch, spec.dim)
    t64 = target.reshape(1, -1)
    w1 = torch.tensor(w0[:1], requires_grad=True)
    w1_pl = torch.tensor(w0[0], requires_grad=True)

    def fast_single() -> None:
        w1.grad = None
        ((statevector_expval(w1, st64, spec) - t64) ** 2).mean().backward()

    def pennylane_single() -> None:
        w1_pl.grad = None
        ((qnode(st64[0], w1_pl) - t64[0]) ** 2).mean().backward()

    t = _time_steps(fast, pennylane, torch_path, fast_single, pennylane_single, quick)
    t_fast, t_pl, t_torch, t_fast1, t_pl1, t_fast_d, t_pl_d, torch_threads, numba_threads = t
    # agreement on this very step (same losses, same gradients)
    fast()
    torch_path()
    pennylane()
    assert w_fast.grad is not None and w_torch.grad is not None and all(w.grad is not None for w in w_pl)
    grad_err = max(float((w_fast.grad[c] - w_pl[c].grad).abs().max()) for c in range(clients))  # type: ignore[operator]
    grad_err_torch = max(float((w_torch.grad[c] - w_pl[c].grad).abs().max()) for c in range(clients))  # type: ignore[operator]
    steps_fast, steps_pl = 1.0 / t_fast, 1.0 / t_pl
    return BenchResult(
        figure=steps_fast, unit="federated steps/s", baseline="PennyLane default.qubit (broadcast, backprop)",
        baseline_figure=steps_pl, target="≥ 100×", passed=steps_fast / steps_pl >= 100.0,
        details={"n_qubits": spec.n_qubits, "n_layers": spec.n_layers, "clients": clients, "batch_per_client": batch,
                 "ms_per_step_kernel": 1e3 * t_fast, "ms_per_step_pennylane": 1e3 * t_pl,
                 "ms_per_step_torch_reference": 1e3 * t_torch, "kernel_vs_torch_reference": t_torch / t_fast,
                 "single_client_batch": clients * batch, "single_client_ms_kernel": 1e3 * t_fast1,
                 "single_client_ms_pennylane": 1e3 * t_pl1, "single_client_ratio": t_pl1 / t_fast1,
                 "threads": 1,
                 "default_threads": {"torch": torch_threads, "numba": numba_threads,
                                     "ms_per_step_kernel": 1e3 * t_fast_d, "ms_per_step_pennylane": 1e3 * t_pl_d,
                                     "ratio": t_pl_d / t_fast_d},
                 "max_grad_difference": grad_err, "max_grad_difference_torch_reference": grad_err_torch},
    )
