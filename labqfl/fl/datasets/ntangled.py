"""NTangled-style entanglement dataset (Schatzki, Arrasmith, Coles, Cerezo, arXiv:2109.03400).

Each class k has a *generator*: a hardware-efficient circuit G_k (layers of RY·RZ on every qubit
followed by a ring of ZZ(θ) = exp(−iθ/2 Z⊗Z) entanglers, trainable angles) trained so that its
outputs on Haar-random product inputs have concentratable entanglement close to a target CE_k
(NTangled uses CE ∈ {0.05, 0.15, 0.25, 0.35}). States of class k are G_k|product⟩; the label is
*exact*: every state's CE is recomputed from its statevector and a state is kept only if
|CE − CE_k| ≤ ``tol`` (``tol`` below half the gap between targets, so the CE bands do not overlap).

All randomness is seeded (numpy Generator streams keyed by seed, class and split), generation is
sequential, so the first m states of a stream are the same whatever the total requested.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from labqfl.fl.datasets.measures import (
    concentratable_entanglement,
    concentratable_entanglement_torch,
)
from labqfl.log import get_logger

log = get_logger(__name__)


def product_states(rng: np.random.Generator, count: int, n_qubits: int, polar_max: float = np.pi) -> np.ndarray:
    """``count`` random n-qubit product states, shape (count, 2^n) complex128.

    Each qubit is uniform on the Bloch-sphere cap of polar angle ≤ ``polar_max`` around |0⟩
    (``polar_max = π``: Haar-random single-qubit states).
    """
    u = rng.uniform(size=(count, n_qubits))
    a = np.arccos(1.0 - u * (1.0 - np.cos(polar_max)))
    b = rng.uniform(0.0, 2.0 * np.pi, size=(count, n_qubits))
    q = np.stack([np.cos(a / 2), np.exp(1j * b) * np.sin(a / 2)], axis=-1)
    s = q[:, 0]
    for i in range(1, n_qubits):
        s = np.einsum("bi,bj->bij", s, q[:, i]).reshape(count, -1)
    return s.astype(np.complex128)


@lru_cache(maxsize=8)
def _zz_table(n: int) -> np.ndarray:
    """Z_a Z_b eigenvalues per basis index for ring edges (q, q+1 mod n): shape (2^n, n_edges)."""
    idx = np.arange(1 << n)
    z = 1 - 2 * ((idx[:, None] >> (n - 1 - np.arange(n)[None, :])) & 1)
    edges = [(q, (q + 1) % n) for q in range(n)] if n > 2 else [(0, 1)]
    return np.stack([z[:, a] * z[:, b] for a, b in edges], axis=1).astype(np.float64)


def generator_unitary(rot: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
    """Unitary of the generator circuit. ``rot``: (D, n, 2) RY/RZ angles, ``ent``: (D, n_edges) ZZ angles.

    Returns (2^n, 2^n) complex128 (wire 0 = most significant bit).
    """
    from labqfl.fl.models.hea import _single_qubit_unitaries

    D, n, _ = rot.shape
    zz = torch.as_tensor(_zz_table(n)).to(torch.complex128)
    U: torch.Tensor | None = None
    for layer in range(D):
        us = _single_qubit_unitaries(rot[layer])
        K = us[0]
        for q in range(1, n):
            K = torch.einsum("ij,kl->ikjl", K, us[q]).reshape(K.shape[0] * 2, -1)
        phase = torch.exp(-0.5j * (zz @ ent[layer].to(torch.complex128)))
        L = phase[:, None] * K
        U = L if U is None else L @ U
    assert U is not None
    return U


@dataclass(frozen=True)
class NTangledConfig:
    """Generator and labelling settings. CE targets are dimensionless in [0, 1)."""

    n_qubits: int = 6
    targets: tuple[float, ...] = (0.15, 0.35)
    tol: float = 0.05
    generator_layers: int = 2
    train_steps: int = 120
    train_batch: int = 32
    lr: float = 0.05
    input_polar_max: float = 1.5


@lru_cache(maxsize=8)
def train_generators(cfg: NTangledConfig, seed: int) -> tuple[tuple[np.ndarray, ...], tuple[float, ...]]:
    """Train one generator per CE target (Adam on mean (CE − target)²). Returns the unitaries and the
    mean CE each reached on 512 fresh product inputs. Deterministic for (cfg, seed)."""
    if not 0 < cfg.tol < min(np.diff(sorted(cfg.targets)), default=1.0) / 2 + 1e-12:
        raise ValueError(f"tol={cfg.tol} must be in (0, half the smallest gap between CE targets)")
    unitaries: list[np.ndarray] = []
    reached: list[float] = []
    n_edges = _zz_table(cfg.n_qubits).shape[1]
    for k, target in enumerate(cfg.targets):
        rng = np.random.default_rng([seed, 7001, k])
        rot = torch.tensor(rng.normal(0.0, 0.05, size=(cfg.generator_layers, cfg.n_qubits, 2)), requires_grad=True)
        ent = torch.tensor(rng.normal(0.0, 0.05, size=(cfg.generator_layers, n_edges)), requires_grad=True)
        opt = torch.optim.Adam([rot, ent], lr=cfg.lr)
        for _ in range(cfg.train_steps):
            inputs = torch.as_tensor(product_states(rng, cfg.train_batch, cfg.n_qubits, cfg.input_polar_max))
            out = inputs @ generator_unitary(rot, ent).T
            loss = ((concentratable_entanglement_torch(out) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        U = generator_unitary(rot, ent).detach().numpy()
        check = product_states(rng, 512, cfg.n_qubits, cfg.input_polar_max) @ U.T
        reached.append(float(np.mean(concentratable_entanglement(check))))
        unitaries.append(U)
        log.info("NTangled generator %d: target CE %.3f, mean CE %.3f", k, target, reached[-1])
    return tuple(unitaries), tuple(reached)


def ntangled_states(cfg: NTangledConfig, seed: int, per_class: int, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_class`` states of every class from the named stream (e.g. "train", "test").

    Returns (states (K·per_class, 2^n) complex128, labels (…,) int64, CE values (…,) float64), classes
    in blocks. Each state's exact CE lies within ``cfg.tol`` of its class target.
    """
    unitaries, _ = train_generators(cfg, seed)
    states, labels, ces = [], [], []
    stream_id = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    for k, (U, target) in enumerate(zip(unitaries, cfg.targets, strict=True)):
        rng = np.random.default_rng([seed, 7002, k, stream_id])
        got_s: list[np.ndarray] = []
        got_c: list[np.ndarray] = []
        have = 0
        for _ in range(10_000):
            if have >= per_class:
                break
            cand = product_states(rng, 256, cfg.n_qubits, cfg.input_polar_max) @ U.T
            ce = np.asarray(concentratable_entanglement(cand))
            keep = np.abs(ce - target) <= cfg.tol
            got_s.append(cand[keep])
            got_c.append(ce[keep])
            have += int(keep.sum())
        else:
            raise RuntimeError(f"NTangled class {k}: could not draw {per_class} states within tolerance")
        states.append(np.concatenate(got_s)[:per_class])
        ces.append(np.concatenate(got_c)[:per_class])
        labels.append(np.full(per_class, k, dtype=np.int64))
    return np.concatenate(states), np.concatenate(labels), np.concatenate(ces)


def ce_label(ce: np.ndarray, cfg: NTangledConfig) -> np.ndarray:
    """Class index of each CE value by its band |CE − target_k| ≤ tol; −1 outside every band."""
    ce = np.asarray(ce, dtype=np.float64)
    out = np.full(ce.shape, -1, dtype=np.int64)
    for k, t in enumerate(cfg.targets):
        out[np.abs(ce - t) <= cfg.tol] = k
    return out
