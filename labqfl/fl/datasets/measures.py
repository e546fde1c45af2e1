"""Exact state measures used to label the quantum datasets.

* **Concentratable entanglement** (Beckey, Gigena, Coles, Cerezo, PRL 127, 140501 (2021); used by
  NTangled, Schatzki et al., arXiv:2109.03400):  CE(ψ) = 1 − 2^(−n) Σ_{α ⊆ [n]} Tr ρ_α²,
  the sum over all 2^n subsets α (Tr ρ_∅² = 1). Product states give 0; the n-qubit GHZ state gives
  1/2 − 2^(−n) (every proper non-empty marginal of GHZ is maximally mixed on a classical bit,
  purity 1/2, so Σ = 2 + (2^n − 2)/2).
* **Stabilizer Rényi entropy** (Leone, Oliviero, Hamma, PRL 128, 050402 (2022)):
  M2(ψ) = −log2(2^(−n) Σ_{P ∈ {I,X,Y,Z}^n} ⟨ψ|P|ψ⟩⁴). Stabilizer states give 0; the single-qubit
  T state (|0⟩ + e^{iπ/4}|1⟩)/√2 gives log2(4/3). All 4^n expectations come from 2^n fast
  Walsh–Hadamard transforms: with P ∝ X^x Z^z, ⟨ψ|X^x Z^z|ψ⟩ = Σ_k ψ*_{k⊕x} ψ_k (−1)^{z·k}.

States are numpy arrays of shape (2^n,) or (B, 2^n), complex, wire 0 = most significant bit.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch


def _as_batch(states: np.ndarray) -> tuple[np.ndarray, int, bool]:
    psi = np.asarray(states, dtype=np.complex128)
    single = psi.ndim == 1
    if single:
        psi = psi[None]
    if psi.ndim != 2:
        raise ValueError(f"states must have shape (2^n,) or (B, 2^n), got {psi.shape}")
    d = psi.shape[1]
    n = d.bit_length() - 1
    if d < 2 or (1 << n) != d:
        raise ValueError(f"state length must be a power of two ≥ 2, got {d}")
    return psi, n, single


@lru_cache(maxsize=16)
def _subsets(n: int) -> list[tuple[int, ...]]:
    """All non-empty proper subsets α of range(n), in a fixed order."""
    return [a for r in range(1, n) for a in itertools.combinations(range(n), r)]


def subsystem_purities(states: np.ndarray) -> np.ndarray:
    """Tr ρ_α² for every non-empty proper subset α (order of :func:`_subsets`), shape (B, 2^n − 2)."""
    psi, n, _ = _as_batch(states)
    B = psi.shape[0]
    t = psi.reshape((B,) + (2,) * n)
    out = np.empty((B, len(_subsets(n))), dtype=np.float64)
    for i, a in enumerate(_subsets(n)):
        rest = tuple(q for q in range(n) if q not in a)
        m = np.transpose(t, (0,) + tuple(q + 1 for q in a) + tuple(q + 1 for q in rest))
        m = m.reshape(B, 1 << len(a), 1 << len(rest))
        if len(a) > len(rest):
            m = np.conj(np.transpose(m, (0, 2, 1)))
        rho = m @ np.conj(np.transpose(m, (0, 2, 1)))
        out[:, i] = np.sum(np.abs(rho) ** 2, axis=(1, 2))
    return out


def concentratable_entanglement(states: np.ndarray) -> np.ndarray | float:
    """CE = 1 − 2^(−n) Σ_α Tr ρ_α² (exact, from the statevector). Shape (B,) or a float for one state."""
    psi, n, single = _as_batch(states)
    norms = np.sum(np.abs(psi) ** 2, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-8):
        raise ValueError("states must be normalised (‖ψ‖ = 1)")
    total = 2.0 + subsystem_purities(psi).sum(axis=1)  # α = ∅ and α = [n] contribute 1 each
    ce = 1.0 - total / (1 << n)
    return float(ce[0]) if single else ce


_I_PLUS_SWAP = np.array([[2, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 2]], dtype=np.float64)


def _purity_sum_two_copy(phi: torch.Tensor, n: int) -> torch.Tensor:
    """Σ_α Tr ρ_α² = ⟨ψψ| ⊗_q (I + SWAP_q) |ψψ⟩ (Beckey et al. 2021, the swap-test form of CE).

    ``phi``: (B, 2^n) complex128. Expanding ⊗_q (I + SWAP_q) = Σ_α SWAP_α and using
    ⟨ψψ|SWAP_α|ψψ⟩ = Tr ρ_α² gives the sum over all 2^n subsets in n small contractions.
    """
    B = phi.shape[0]
    two = (phi[:, :, None] * phi[:, None, :]).reshape((B,) + (2,) * (2 * n))
    perm = (0,) + tuple(x for q in range(n) for x in (q + 1, n + q + 1))
    two = two.permute(perm).reshape(B, -1)
    m = torch.as_tensor(_I_PLUS_SWAP, dtype=torch.complex128)
    out = two
    for q in range(n):
        out = torch.einsum("ij,ajb->aib", m, out.reshape(B * (4**q), 4, -1)).reshape(B, -1)
    return (two.conj() * out).sum(dim=1).real


def concentratable_entanglement_torch(states: torch.Tensor) -> torch.Tensor:
    """Differentiable CE for a (B, 2^n) complex128 torch batch (used to train the NTangled generators)."""
    B, d = states.shape
    n = d.bit_length() - 1
    return 1.0 - _purity_sum_two_copy(states.to(torch.complex128), n) / d


def _fwht_last(a: np.ndarray, n: int) -> np.ndarray:
    """Unnormalised Walsh–Hadamard transform along the last axis (length 2^n)."""
    shape = a.shape
    h = a.reshape(shape[:-1] + (2,) * n)
    for k in range(n):
        ax = len(shape) - 1 + k
        x0 = np.take(h, 0, axis=ax)
        x1 = np.take(h, 1, axis=ax)
        h = np.stack([x0 + x1, x0 - x1], axis=ax)
    return h.reshape(shape)


def pauli_expectations_sq_sum4(states: np.ndarray) -> np.ndarray:
    """Σ_P ⟨ψ|P|ψ⟩⁴ over all 4^n Pauli strings, shape (B,), via 2^n Walsh–Hadamard transforms."""
    psi, n, _ = _as_batch(states)
    d = 1 << n
    k = np.arange(d)
    xor = k[None, :] ^ k[:, None]  # xor[x, k] = k ⊕ x
    f = np.conj(psi[:, xor]) * psi[:, None, :]  # (B, x, k): ψ*_{k⊕x} ψ_k
    e = _fwht_last(f, n)  # (B, x, z): Σ_k f (−1)^{z·k} = i^{-x·z}-phased ⟨X^x Z^z⟩
    return np.sum(np.abs(e) ** 4, axis=(1, 2))


def stabilizer_renyi_entropy(states: np.ndarray) -> np.ndarray | float:
    """M2 = −log2(2^(−n) Σ_P ⟨ψ|P|ψ⟩⁴) in bits. Shape (B,) or a float for one state."""
    psi, n, single = _as_batch(states)
    s = pauli_expectations_sq_sum4(psi)
    m2 = -np.log2(s / (1 << n))
    m2 = np.where(np.abs(m2) < 1e-12, 0.0, m2)
    return float(m2[0]) if single else m2


def stabilizer_renyi_entropy_reference(state: np.ndarray) -> float:
    """Slow reference for M2: builds every Pauli matrix explicitly (n ≤ 4)."""
    psi = np.asarray(state, dtype=np.complex128).ravel()
    n = psi.size.bit_length() - 1
    if n > 4:
        raise ValueError("reference M2 is for n ≤ 4 qubits")
    paulis = [np.eye(2), np.array([[0, 1], [1, 0]]), np.array([[0, -1j], [1j, 0]]), np.diag([1, -1])]
    total = 0.0
    for combo in itertools.product(paulis, repeat=n):
        P = np.array([[1.0]])
        for p in combo:
            P = np.kron(P, p)
        total += float(np.real(np.conj(psi) @ P @ psi)) ** 4
    return float(-np.log2(total / (1 << n)))


def concentratable_entanglement_reference(state: np.ndarray) -> float:
    """Slow reference for CE: explicit reduced density matrices by partial trace of |ψ⟩⟨ψ|."""
    psi = np.asarray(state, dtype=np.complex128).ravel()
    n = psi.size.bit_length() - 1
    rho = np.outer(psi, np.conj(psi)).reshape((2,) * (2 * n))
    total = 0.0
    for r in range(n + 1):
        for a in itertools.combinations(range(n), r):
            red = rho
            traced = [q for q in range(n) if q not in a]
            # trace out qubits from the highest index so axis numbers stay valid
            cur_n = n
            for q in sorted(traced, reverse=True):
                red = np.trace(red, axis1=q, axis2=q + cur_n)
                cur_n -= 1
            dA = 1 << len(a)
            red = red.reshape(dA, dA)
            total += float(np.real(np.trace(red @ red)))
    return 1.0 - total / (1 << n)
