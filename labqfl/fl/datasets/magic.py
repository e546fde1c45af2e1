"""Non-stabilizer ("magic") dataset: Clifford circuits doped with T gates, labelled by exact M2.

A state is |ψ⟩ = C_m ⋯ C_1 |0…0⟩ where the gate list holds ``n_clifford`` random Clifford gates
(H, S, CNOT on random wires) and ``t`` T gates inserted at random positions (t drawn uniformly from
``t_range``). Stabilizer Rényi entropy M2 (Leone, Oliviero, Hamma, PRL 128, 050402 (2022)) is
computed exactly for every state (:func:`labqfl.fl.datasets.measures.stabilizer_renyi_entropy`); the
label is 0 ("low magic") when M2 ≤ ``m2_low`` and 1 ("high magic") when M2 ≥ ``m2_high``; states in
between are discarded, so every label follows from the recomputed M2 alone.

Seeded numpy Generator streams, sequential generation (prefix-stable like NTangled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labqfl.fl.datasets.measures import stabilizer_renyi_entropy

_H = np.array([[1, 1], [1, -1]], dtype=np.complex128) / np.sqrt(2)
_S = np.diag([1, 1j]).astype(np.complex128)
_T = np.diag([1, np.exp(1j * np.pi / 4)]).astype(np.complex128)


def apply_1q(psi: np.ndarray, u: np.ndarray, q: int, n: int) -> np.ndarray:
    """Apply a 2×2 unitary to wire ``q`` of a (2^n,) state (wire 0 = most significant bit)."""
    t = psi.reshape((1 << q, 2, -1))
    return np.einsum("ij,ajb->aib", u, t).reshape(-1)


def apply_cnot(psi: np.ndarray, c: int, t: int, n: int) -> np.ndarray:
    """Apply CNOT(control c, target t) to a (2^n,) state."""
    idx = np.arange(1 << n)
    cbit = (idx >> (n - 1 - c)) & 1
    return psi[idx ^ (cbit << (n - 1 - t))]


def doped_clifford_state(rng: np.random.Generator, n: int, n_clifford: int, n_t: int,
                         gate_set: tuple[str, ...] = ("H", "S", "CNOT")) -> np.ndarray:
    """One state from a random Clifford circuit of ``n_clifford`` gates drawn uniformly from
    ``gate_set`` (H, S, CNOT on random wires) with ``n_t`` T gates inserted at random positions,
    applied to |0…0⟩."""
    if not gate_set or any(g not in ("H", "S", "CNOT") for g in gate_set):
        raise ValueError(f"gate_set must be a non-empty subset of H, S, CNOT, got {gate_set}")
    kinds = rng.integers(0, len(gate_set), size=n_clifford)
    ops: list[tuple[str, int, int]] = []
    for kind in kinds:
        name = gate_set[int(kind)]
        if name == "CNOT":
            c, t = rng.choice(n, size=2, replace=False)
            ops.append(("CNOT", int(c), int(t)))
        else:
            ops.append((name, int(rng.integers(n)), -1))
    for pos in np.sort(rng.integers(0, n_clifford + 1, size=n_t))[::-1]:
        ops.insert(int(pos), ("T", int(rng.integers(n)), -1))
    psi = np.zeros(1 << n, dtype=np.complex128)
    psi[0] = 1.0
    for name, a, b in ops:
        if name == "CNOT":
            psi = apply_cnot(psi, a, b, n)
        else:
            psi = apply_1q(psi, {"H": _H, "S": _S, "T": _T}[name], a, n)
    return psi


@dataclass(frozen=True)
class MagicConfig:
    """Circuit and labelling settings; M2 thresholds in bits."""

    n_qubits: int = 6
    n_clifford: int = 4
    t_range: tuple[int, int] = (0, 6)
    m2_low: float = 0.45
    m2_high: float = 0.8
    gate_set: tuple[str, ...] = ("H", "S", "CNOT")


def magic_states(cfg: MagicConfig, seed: int, per_class: int, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_class`` states of each class from the named stream.

    Returns (states (2·per_class, 2^n) complex128, labels int64 (class blocks 0 then 1), M2 values).
    """
    if not cfg.m2_low < cfg.m2_high:
        raise ValueError(f"m2_low ({cfg.m2_low}) must be below m2_high ({cfg.m2_high})")
    stream_id = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng([seed, 7003, stream_id])
    buckets: list[list[tuple[np.ndarray, float]]] = [[], []]
    for _ in range(200 * per_class + 1000):
        if min(len(b) for b in buckets) >= per_class:
            break
        n_t = int(rng.integers(cfg.t_range[0], cfg.t_range[1] + 1))
        psi = doped_clifford_state(rng, cfg.n_qubits, cfg.n_clifford, n_t, cfg.gate_set)
        m2 = float(stabilizer_renyi_entropy(psi))
        k = 0 if m2 <= cfg.m2_low else 1 if m2 >= cfg.m2_high else -1
        if k >= 0 and len(buckets[k]) < per_class:
            buckets[k].append((psi, m2))
    else:
        raise RuntimeError("magic dataset: thresholds too strict, could not fill both classes")
    states = np.array([s for b in buckets for s, _ in b])
    m2s = np.array([m for b in buckets for _, m in b])
    labels = np.repeat(np.arange(2, dtype=np.int64), per_class)
    return states, labels, m2s


def m2_label(m2: np.ndarray, cfg: MagicConfig) -> np.ndarray:
    """Class of each M2 value: 0 if ≤ m2_low, 1 if ≥ m2_high, −1 in between."""
    m2 = np.asarray(m2, dtype=np.float64)
    return np.where(m2 <= cfg.m2_low, 0, np.where(m2 >= cfg.m2_high, 1, -1)).astype(np.int64)
