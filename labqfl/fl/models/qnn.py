"""HEA quantum neural networks as federated models (QuNetQFL: MSE loss on ⟨Z₀⟩, Adam).

Binary classification: the output f = ⟨Z₀⟩ ∈ [−1, 1] is regressed onto the target t = 1 − 2y
(label 0 → +1, label 1 → −1) with the squared error (f − t)²; the predicted label is 1 when f < 0.
Two configurations from the paper:

* :func:`quantum_data_qnn` — 6 qubits / 4 layers, input = a 6-qubit state (``StatePrep``);
* :func:`mnist_qnn` — 4 qubits / 3 layers, input = 16 amplitudes (``AmplitudeEmbedding``).

Training and evaluation use the Numba statevector kernel with adjoint gradients
(:func:`labqfl.fl.models._statevector.statevector_expval`); the torch path
(:func:`labqfl.fl.models.hea.hea_expval`) is its slow reference, and the PennyLane QNode of the same
circuit is :meth:`QNNModel.qnode`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from labqfl.fl.models._statevector import statevector_expval
from labqfl.fl.models.hea import Embedding, HEASpec, pennylane_qnode


class QNNModel:
    """HEA QNN with flat parameters (P = n_layers · n_qubits · 2 angles, radians)."""

    dtype = torch.float64
    loss_name = "mse"

    def __init__(self, spec: HEASpec, embedding: Embedding, name: str) -> None:
        self.spec = spec
        self.embedding = embedding
        self.name = name
        self.n_params = spec.n_params

    def init_params(self, seed: int) -> np.ndarray:
        """Angles uniform in [0, 2π), (P,) float64."""
        rng = np.random.default_rng([seed, 4242])
        return rng.uniform(0.0, 2.0 * np.pi, size=self.n_params)

    def inputs_tensor(self, x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.spec.dim:
            raise ValueError(f"{self.name}: inputs must have shape (N, {self.spec.dim}), got {x.shape}")
        if self.embedding == "amplitude":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms == 0, 1.0, norms)
        return torch.as_tensor(x.astype(np.complex128))

    def outputs(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """⟨Z₀⟩ per client and example: params (C, P), x (C, B, 2^n) → (C, B) float64."""
        w = params.reshape((params.shape[0],) + self.spec.weight_shape)
        return statevector_expval(w, x, self.spec)

    def per_example_loss(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = 1.0 - 2.0 * y.to(torch.float64)
        return (self.outputs(params, x) - target) ** 2

    def predict(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.outputs(params, x) < 0).to(torch.int64)

    def qnode(self, **kwargs: Any) -> Any:
        """The PennyLane QNode of this circuit, ``f(inputs (B, 2^n), weights (L, n, 2))``."""
        return pennylane_qnode(self.spec, self.embedding, **kwargs)


def quantum_data_qnn(n_qubits: int = 6, n_layers: int = 4) -> QNNModel:
    """The paper's QNN for quantum data: 6 qubits, 4 HEA layers, state input."""
    return QNNModel(HEASpec(n_qubits, n_layers), "state", f"hea-{n_qubits}q{n_layers}l")


def mnist_qnn(n_qubits: int = 4, n_layers: int = 3) -> QNNModel:
    """The paper's QNN for MNIST: 4 qubits, 3 HEA layers, amplitude embedding of 16 amplitudes."""
    return QNNModel(HEASpec(n_qubits, n_layers), "amplitude", f"hea-{n_qubits}q{n_layers}l-amp")
