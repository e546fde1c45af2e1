"""Hardware-efficient-ansatz (HEA) quantum neural networks: one circuit definition, two simulators.

The circuit (QuNetQFL, arXiv 2501.12709: 6 qubits / 4 layers for quantum data, 4 qubits / 3 layers
with amplitude embedding of 16 amplitudes for MNIST) is described once by :class:`HEASpec` and its
gate list :meth:`HEASpec.gates`:

* an input state |ψ⟩ on ``n`` qubits (``StatePrep`` of a quantum-data state, or
  ``AmplitudeEmbedding`` of a normalised feature vector);
* ``n_layers`` layers, each ``RY(w[l, q, 0])`` then ``RZ(w[l, q, 1])`` on every qubit ``q``, followed
  by a CNOT entangler ``(0,1), (1,2), …, (n-2, n-1)`` closed into a ring by ``(n-1, 0)`` when n > 2;
* readout ⟨Z₀⟩ ∈ [−1, 1] (wire 0 is the most significant bit of the basis index, as in PennyLane).

:func:`pennylane_qnode` builds a PennyLane QNode from that gate list — the reference, and the way to
other devices. Training runs the Numba kernel :func:`labqfl.fl.models._statevector.statevector_expval`
(adjoint gradients). :func:`hea_expval` is its slow reference: a batched statevector simulation in torch
(complex128) that batches *clients* (leading axis C, one weight set each) and *examples* (axis B).
Each layer is one 2^n × 2^n unitary (Kronecker product of the per-qubit RZ·RY, then the CNOT
permutation), so a forward pass is L small batched matmuls plus one (C, B, 2^n) × (C, 2^n, 2^n)
product; autograd gives exact gradients. Agreement with ``default.qubit`` to 1e-10 on outputs and
gradients is checked in ``tests/fl_models``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

Embedding = Literal["state", "amplitude"]


@dataclass(frozen=True)
class HEASpec:
    """Shape of an HEA circuit: ``n_qubits`` wires, ``n_layers`` layers of (RY, RZ) + CNOT ring."""

    n_qubits: int
    n_layers: int

    def __post_init__(self) -> None:
        if self.n_qubits < 1 or self.n_layers < 1:
            raise ValueError(f"HEASpec needs n_qubits ≥ 1 and n_layers ≥ 1, got {self.n_qubits}, {self.n_layers}")

    @property
    def dim(self) -> int:
        """Hilbert-space dimension 2^n."""
        return 1 << self.n_qubits

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        """Shape of one weight set: (n_layers, n_qubits, 2) angles in radians."""
        return (self.n_layers, self.n_qubits, 2)

    @property
    def n_params(self) -> int:
        return self.n_layers * self.n_qubits * 2

    def entangler(self) -> list[tuple[int, int]]:
        """CNOT (control, target) pairs of one layer, in application order."""
        n = self.n_qubits
        pairs = [(q, q + 1) for q in range(n - 1)]
        if n > 2:
            pairs.append((n - 1, 0))
        return pairs

    def gates(self) -> Iterator[tuple[str, tuple[int, ...], tuple[int, int, int] | None]]:
        """The circuit as a gate list: ``(name, wires, weight index or None)`` in time order."""
        for layer in range(self.n_layers):
            for q in range(self.n_qubits):
                yield ("RY", (q,), (layer, q, 0))
                yield ("RZ", (q,), (layer, q, 1))
            for c, t in self.entangler():
                yield ("CNOT", (c, t), None)


# --------------------------------------------------------------------------------------------
# PennyLane reference
# --------------------------------------------------------------------------------------------
def hea_template(weights: Any, spec: HEASpec) -> None:
    """Apply the HEA gates of ``spec`` inside a PennyLane quantum function.

    ``weights``: array of shape (n_layers, n_qubits, 2) (radians), any PennyLane interface.
    """
    import pennylane as qml

    for name, wires, idx in spec.gates():
        if name == "RY":
            assert idx is not None
            qml.RY(weights[idx], wires=wires[0])
        elif name == "RZ":
            assert idx is not None
            qml.RZ(weights[idx], wires=wires[0])
        else:
            qml.CNOT(wires=list(wires))


def pennylane_qnode(spec: HEASpec, embedding: Embedding = "state", device: Any = None,
                    diff_method: str = "backprop") -> Callable[..., Any]:
    """A PennyLane QNode ``f(inputs, weights) -> ⟨Z₀⟩`` for the HEA of ``spec``.

    ``inputs``: (B, 2^n) states (``embedding="state"``, ``qml.StatePrep``) or (B, 2^n) real features
    (``"amplitude"``, ``qml.AmplitudeEmbedding`` with ``normalize=True``); broadcasting over B.
    ``device`` defaults to ``default.qubit``; use any PennyLane device to run the same circuit elsewhere.
    """
    import pennylane as qml

    dev = device if device is not None else qml.device("default.qubit", wires=spec.n_qubits)
    wires = list(range(spec.n_qubits))

    @qml.qnode(dev, interface="torch", diff_method=diff_method)
    def circuit(inputs: Any, weights: Any) -> Any:
        if embedding == "amplitude":
            qml.AmplitudeEmbedding(inputs, wires=wires, normalize=True)
        else:
            qml.StatePrep(inputs, wires=wires)
        hea_template(weights, spec)
        return qml.expval(qml.PauliZ(0))

    return circuit


# --------------------------------------------------------------------------------------------
# Torch reference path
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _entangler_permutation(spec: HEASpec) -> np.ndarray:
    """Basis permutation of one layer's CNOT chain: (P ψ)[i] = ψ[perm[i]]."""
    n = spec.n_qubits
    idx = np.arange(spec.dim, dtype=np.int64)
    # Track where each input index goes: apply CNOTs to the bit strings in order.
    out = idx.copy()
    for c, t in spec.entangler():
        cbit = (out >> (n - 1 - c)) & 1
        out = out ^ (cbit << (n - 1 - t))
    perm = np.empty_like(out)
    perm[out] = idx  # new amplitude at position out[i] is the old one at i
    return perm


@lru_cache(maxsize=32)
def z0_signs(n_qubits: int) -> np.ndarray:
    """Eigenvalues of Z on wire 0 per basis index, shape (2^n,), float64 (+1 for bit 0 = 0)."""
    idx = np.arange(1 << n_qubits)
    return 1.0 - 2.0 * ((idx >> (n_qubits - 1)) & 1).astype(np.float64)


def _single_qubit_unitaries(weights: torch.Tensor) -> torch.Tensor:
    """RZ(φ)·RY(θ) for weights (..., 2) = (θ, φ): returns (..., 2, 2) complex128."""
    theta = weights[..., 0].to(torch.complex128)
    phi = weights[..., 1].to(torch.complex128)
    c = torch.cos(theta / 2)
    s = torch.sin(theta / 2)
    em = torch.exp(-0.5j * phi)
    ep = torch.exp(0.5j * phi)
    row0 = torch.stack([em * c, -em * s], dim=-1)
    row1 = torch.stack([ep * s, ep * c], dim=-1)
    return torch.stack([row0, row1], dim=-2)


@lru_cache(maxsize=32)
def _basis_bits(n_qubits: int) -> np.ndarray:
    """bits[i, q] = value of wire q in basis index i (wire 0 = most significant), shape (2^n, n)."""
    idx = np.arange(1 << n_qubits)
    return ((idx[:, None] >> (n_qubits - 1 - np.arange(n_qubits))[None, :]) & 1).astype(np.int64)


def hea_unitary(weights: torch.Tensor, spec: HEASpec) -> torch.Tensor:
    """The full circuit unitary per client.

    ``weights``: (C, n_layers, n_qubits, 2) float64 radians. Returns (C, 2^n, 2^n) complex128 with
    U acting on column vectors in PennyLane's wire order (wire 0 = most significant bit).
    Each layer's Kronecker product ⊗_q u_q is built by broadcast outer products for all clients
    and layers at once, its rows permuted by the CNOT ring, and the layers multiplied.
    """
    if weights.ndim != 4 or tuple(weights.shape[1:]) != spec.weight_shape:
        raise ValueError(f"weights must have shape (C, {', '.join(map(str, spec.weight_shape))}), got {tuple(weights.shape)}")
    perm = torch.as_tensor(_entangler_permutation(spec), device=weights.device)
    u1 = _single_qubit_unitaries(weights)  # (C, L, n, 2, 2)
    C, L = u1.shape[0], u1.shape[1]
    K = u1[:, :, 0]
    for q in range(1, spec.n_qubits):
        d = K.shape[-1]
        K = (K[:, :, :, None, :, None] * u1[:, :, q, None, :, None, :]).reshape(C, L, 2 * d, 2 * d)
    K = K[:, :, perm, :]  # rows permuted by the CNOT ring
    U = K[:, 0]
    for layer in range(1, spec.n_layers):
        U = K[:, layer] @ U
    return U


def hea_expval(weights: torch.Tensor, states: torch.Tensor, spec: HEASpec) -> torch.Tensor:
    """⟨Z₀⟩ of the HEA output for every client and example.

    ``weights``: (C, n_layers, n_qubits, 2) float64; ``states``: (C, B, 2^n) normalised input states
    (real or complex; cast to complex128). Returns (C, B) float64, differentiable in ``weights``.
    """
    if states.ndim != 3 or states.shape[0] != weights.shape[0] or states.shape[2] != spec.dim:
        raise ValueError(f"states must have shape (C={weights.shape[0]}, B, {spec.dim}), got {tuple(states.shape)}")
    U = hea_unitary(weights, spec)
    psi = states.to(torch.complex128)
    out = psi @ U.transpose(1, 2)  # (C, B, d): rows are U ψ
    probs = out.real**2 + out.imag**2
    return probs @ torch.as_tensor(z0_signs(spec.n_qubits), device=out.device)


def amplitude_normalise(features: np.ndarray) -> np.ndarray:
    """L2-normalise feature rows (…, 2^n) for amplitude embedding; zero rows raise ValueError."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("amplitude embedding needs non-zero feature vectors (found an all-zero row)")
    return x / norms
