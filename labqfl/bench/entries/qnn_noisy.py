"""Benchmark ``qnn-noisy``: one noisy QNN training step (forward + backward of the MSE loss on a batch)
with labqfl's batched torch density-matrix path vs PennyLane ``default.mixed`` (backprop, torch
interface, broadcasting over examples, one call per client) on the same noisy HEA circuit
(6 qubits / 4 layers, state input; depolarizing and amplitude damping after every gate, readout
bit flip; :mod:`labqfl.fl.models.noisy`) and the same batch."""

from __future__ import annotations

import numpy as np
import torch

from labqfl.bench import BenchResult, benchmark
from labqfl.bench.entries.qnn import _median_time


@benchmark("qnn-noisy", "Noisy federated QNN training step (6 qubits, 4 HEA layers, depolarizing 0.01 + amplitude "
           "damping 0.01 after every gate, readout 0.02; 4 clients x 16 examples, as `labqfl train --noise` runs "
           "it): torch density-matrix path (clients and examples batched) vs PennyLane default.mixed (broadcast "
           "over examples, one call per client)", target="faster than default.mixed (ratio > 1)")
def qnn_noisy_step(quick: bool) -> BenchResult:
    from labqfl.fl.models.hea import HEASpec
    from labqfl.fl.models.noisy import NoiseModel, noisy_hea_expval, pennylane_noisy_qnode

    spec = HEASpec(6, 4) if not quick else HEASpec(3, 1)
    clients, batch = (4, 16) if not quick else (2, 3)
    noise = NoiseModel(depolarizing=0.01, amplitude_damping=0.01, readout=0.02)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(clients, batch, spec.dim)) + 1j * rng.normal(size=(clients, batch, spec.dim))
    states /= np.linalg.norm(states, axis=-1, keepdims=True)
    target = torch.as_tensor(rng.choice([-1.0, 1.0], size=(clients, batch)))
    w0 = rng.uniform(0, 2 * np.pi, size=(clients, *spec.weight_shape))
    st = torch.as_tensor(states)
    w_fast = torch.tensor(w0, requires_grad=True)

    def fast() -> None:  # one step for every client at once (independent per-client losses)
        w_fast.grad = None
        loss = ((noisy_hea_expval(w_fast, st, spec, noise) - target) ** 2).mean(dim=1).sum()
        loss.backward()

    qnode = pennylane_noisy_qnode(spec, noise, "state")
    w_pl = [torch.tensor(w0[c], requires_grad=True) for c in range(clients)]

    def pennylane() -> None:  # the same step: broadcasting over examples, a call per client
        for c in range(clients):
            w_pl[c].grad = None
            loss = ((qnode(st[c], w_pl[c]) - target[c]) ** 2).mean()
            loss.backward()

    repeats = 2 if quick else 3
    min_s = 0.0 if quick else 2.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides single-threaded, as in the `qnn` entry
    try:
        t_fast = _median_time(fast, repeats, min_s)
        t_pl = _median_time(pennylane, repeats, min_s)
    finally:
        torch.set_num_threads(threads)
    fast()
    pennylane()
    assert w_fast.grad is not None and all(w.grad is not None for w in w_pl)
    grad_err = max(float((w_fast.grad[c] - w_pl[c].grad).abs().max()) for c in range(clients))  # type: ignore[operator]
    return BenchResult(
        figure=1.0 / t_fast, unit="federated steps/s", baseline="PennyLane default.mixed (broadcast, backprop)",
        baseline_figure=1.0 / t_pl, target="> 1×", passed=t_pl / t_fast > 1.0,
        details={"n_qubits": spec.n_qubits, "n_layers": spec.n_layers, "clients": clients, "batch_per_client": batch,
                 "noise": {k: v for k, v in noise.as_dict().items() if k != "placement"},
                 "ms_per_step_torch": 1e3 * t_fast, "ms_per_step_pennylane": 1e3 * t_pl,
                 "max_grad_difference": grad_err, "torch_threads": 1},
    )
