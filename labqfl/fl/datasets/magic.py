"""Non-stabilizer ("magic") dataset: Clifford circuits doped with T gates, labelled by exact M2.

Default construction, ``"injected"`` (a T-doped |+⟩ register behind a shallow CNOT network)::

    |ψ⟩ = C · (⊗_{q ∈ A} T_q) · H^{⊗n} |0…0⟩

* every qubit starts in the stabilizer state |+⟩ = H|0⟩;
* a T gate acts on each qubit of a random set A of k *distinct* qubits (k uniform in ``t_range``,
  capped at ``n_qubits`` because a second T on the same qubit would make T² = S, a Clifford), turning
  |+⟩ into the magic state |T⟩ = T|+⟩ (the resource state of T-gate injection);
* C is a random circuit of ``n_clifford`` gates drawn from ``gate_set`` (default: CNOTs on random
  (control, target) pairs), drawn fresh for every state.

M2 is additive over tensor products and invariant under Clifford unitaries (Leone, Oliviero, Hamma,
PRL 128, 050402 (2022)), so a state with k injected T gates has M2 = k·log2(4/3) ≈ 0.415·k bits
exactly. The label is nonetheless taken from the M2 *recomputed* from the statevector
(:func:`labqfl.fl.datasets.measures.stabilizer_renyi_entropy`): 0 ("low magic") when
M2 ≤ ``m2_low``, 1 ("high magic") when M2 ≥ ``m2_high``; states in between are discarded. With the
defaults (0.5 and 1.2 bits) class 0 holds k ∈ {0, 1} and class 1 holds k ∈ {3, …, 6}.

Why this construction (measured in docs/experiments.md, section 3). The QNN output ⟨Z₀⟩ = Tr(Oρ) is
linear in ρ, so it can only separate classes whose *average* states differ. M2 is a 4-copy quantity,
and the Clifford group is a unitary 3-design, so behind a uniformly random Clifford the average of
ρ, ρ⊗ρ and ρ⊗ρ⊗ρ is the same for every pure state: no single-copy (or two-copy) readout can see
magic there. The earlier default — random H, S, CNOT gates with T gates at random positions on
|0…0⟩ — sits close to that regime (T acting on |0⟩ does nothing; random H/S frames average the
Pauli expectations of both classes to zero) and stalls at 55–70 % test accuracy. CNOT networks map
X-type Paulis to X-type Paulis and Z-type to Z-type, so the reference frame of the |+⟩/|T⟩ register
is kept while the magic is spread over several qubits: the classes' average states differ
(⟨T|Y|T⟩ = 1/√2 vs ⟨+|Y|+⟩ = 0), and how well a 6-qubit / 4-layer HEA picks that up is set by the
depth of the CNOT network. The earlier construction stays available as ``construction="doped"``
(:func:`doped_clifford_state`, starting from |0…0⟩).

Seeded numpy Generator streams, sequential generation (prefix-stable like NTangled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labqfl.fl.datasets.measures import stabilizer_renyi_entropy

_H = np.array([[1, 1], [1, -1]], dtype=np.complex128) / np.sqrt(2)
_S = np.diag([1, 1j]).astype(np.complex128)
_T = np.diag([1, np.exp(1j * np.pi / 4)]).astype(np.complex128)
_CLIFFORD_GATES = ("H", "S", "CNOT")
CONSTRUCTIONS = ("injected", "doped")
M2_T_STATE = float(np.log2(4.0 / 3.0))
"""M2 of the single-qubit magic state T|+⟩, in bits (Leone et al. 2022)."""


def apply_1q(psi: np.ndarray, u: np.ndarray, q: int, n: int) -> np.ndarray:
    """Apply a 2×2 unitary to wire ``q`` of a (2^n,) state (wire 0 = most significant bit)."""
    t = psi.reshape((1 << q, 2, -1))
    return np.einsum("ij,ajb->aib", u, t).reshape(-1)


def apply_cnot(psi: np.ndarray, c: int, t: int, n: int) -> np.ndarray:
    """Apply CNOT(control c, target t) to a (2^n,) state."""
    idx = np.arange(1 << n)
    cbit = (idx >> (n - 1 - c)) & 1
    return psi[idx ^ (cbit << (n - 1 - t))]


def _check_gate_set(gate_set: tuple[str, ...]) -> None:
    if not gate_set or any(g not in _CLIFFORD_GATES for g in gate_set):
        raise ValueError(f"gate_set must be a non-empty subset of H, S, CNOT, got {gate_set}")


def random_clifford_ops(rng: np.random.Generator, n: int, n_gates: int,
                        gate_set: tuple[str, ...] = _CLIFFORD_GATES) -> list[tuple[str, int, int]]:
    """``n_gates`` gates drawn uniformly from ``gate_set`` on random wires, as ``(name, wire, target)``
    tuples (target −1 for one-qubit gates; CNOT control ≠ target)."""
    _check_gate_set(gate_set)
    if "CNOT" in gate_set and n < 2:
        raise ValueError("CNOT needs at least 2 qubits")
    ops: list[tuple[str, int, int]] = []
    for kind in rng.integers(0, len(gate_set), size=n_gates):
        name = gate_set[int(kind)]
        if name == "CNOT":
            c, t = rng.choice(n, size=2, replace=False)
            ops.append(("CNOT", int(c), int(t)))
        else:
            ops.append((name, int(rng.integers(n)), -1))
    return ops


def apply_ops(psi: np.ndarray, ops: list[tuple[str, int, int]], n: int) -> np.ndarray:
    """Apply a gate list of H, S, T, CNOT (as from :func:`random_clifford_ops`) to a (2^n,) state."""
    for name, a, b in ops:
        if name == "CNOT":
            psi = apply_cnot(psi, a, b, n)
        else:
            psi = apply_1q(psi, {"H": _H, "S": _S, "T": _T}[name], a, n)
    return psi


def doped_clifford_state(rng: np.random.Generator, n: int, n_clifford: int, n_t: int,
                         gate_set: tuple[str, ...] = _CLIFFORD_GATES) -> np.ndarray:
    """One state from a random Clifford circuit of ``n_clifford`` gates drawn uniformly from
    ``gate_set`` (H, S, CNOT on random wires) with ``n_t`` T gates inserted at random positions,
    applied to |0…0⟩ (the ``"doped"`` construction). With ``n_t = 0`` it is a random stabilizer state."""
    ops = random_clifford_ops(rng, n, n_clifford, gate_set)
    for pos in np.sort(rng.integers(0, n_clifford + 1, size=n_t))[::-1]:
        ops.insert(int(pos), ("T", int(rng.integers(n)), -1))
    psi = np.zeros(1 << n, dtype=np.complex128)
    psi[0] = 1.0
    return apply_ops(psi, ops, n)


def t_injected_state(rng: np.random.Generator, n: int, n_t: int, n_clifford: int,
                     gate_set: tuple[str, ...] = ("CNOT",)) -> np.ndarray:
    """C · (⊗_{q∈A} T_q) |+⟩^{⊗n}: T on ``n_t`` distinct random qubits A, then ``n_clifford`` random
    gates from ``gate_set`` (the ``"injected"`` construction). (2^n,) complex128.

    M2 = n_t · log2(4/3) bits exactly (additivity and Clifford invariance of M2).
    """
    if not 0 <= n_t <= n:
        raise ValueError(f"n_t must be in [0, n_qubits={n}] (one T per qubit), got {n_t}")
    psi = np.full(1 << n, (1 << n) ** -0.5, dtype=np.complex128)  # |+⟩^{⊗n}
    targets = rng.choice(n, size=n_t, replace=False)
    ops = [("T", int(q), -1) for q in np.sort(targets)]
    ops += random_clifford_ops(rng, n, n_clifford, gate_set)
    return apply_ops(psi, ops, n)


@dataclass(frozen=True)
class MagicConfig:
    """Circuit and labelling settings; M2 thresholds in bits.

    ``construction``: ``"injected"`` (default; :func:`t_injected_state`) or ``"doped"``
    (:func:`doped_clifford_state`, the earlier construction). ``t_range``: inclusive range of the
    number of T gates (capped at ``n_qubits`` for ``"injected"``). ``n_clifford``: random Clifford
    gates per state, drawn from ``gate_set``.
    """

    n_qubits: int = 6
    n_clifford: int = 2
    t_range: tuple[int, int] = (0, 6)
    m2_low: float = 0.5
    m2_high: float = 1.2
    gate_set: tuple[str, ...] = ("CNOT",)
    construction: str = "injected"

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        if self.construction not in CONSTRUCTIONS:
            raise ValueError(f"construction must be one of {', '.join(CONSTRUCTIONS)}, got {self.construction!r}")
        if self.n_qubits < 1:
            raise ValueError(f"n_qubits must be ≥ 1, got {self.n_qubits}")
        if self.n_clifford < 0:
            raise ValueError(f"n_clifford must be ≥ 0, got {self.n_clifford}")
        lo, hi = self.t_range
        if not 0 <= lo <= hi:
            raise ValueError(f"t_range must satisfy 0 ≤ low ≤ high, got {self.t_range}")
        if self.construction == "injected" and lo > self.n_qubits:
            raise ValueError(f"t_range {self.t_range}: at most n_qubits={self.n_qubits} T gates can be injected")
        _check_gate_set(self.gate_set)
        if not self.m2_low < self.m2_high:
            raise ValueError(f"m2_low ({self.m2_low}) must be below m2_high ({self.m2_high})")

    def t_counts(self) -> tuple[int, int]:
        """Inclusive range of T-gate counts actually drawn (the cap at n_qubits applied)."""
        lo, hi = self.t_range
        return (lo, min(hi, self.n_qubits)) if self.construction == "injected" else (lo, hi)

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance of the generated dataset (for run metadata)."""
        if self.construction == "injected":
            gen = (f"|+>^{self.n_qubits}, T on k distinct random qubits (k uniform in {list(self.t_counts())}), "
                   f"then {self.n_clifford} random {'/'.join(self.gate_set)} gates")
        else:
            gen = (f"|0>^{self.n_qubits}, {self.n_clifford} random {'/'.join(self.gate_set)} gates doped with "
                   f"k T gates at random positions (k uniform in {list(self.t_range)})")
        return {"generator": f"Clifford circuits doped with T gates ({self.construction}): {gen}",
                "measure": "stabilizer Renyi entropy M2 (bits)", "construction": self.construction,
                "m2_low": self.m2_low, "m2_high": self.m2_high, "n_clifford": self.n_clifford,
                "t_range": list(self.t_range), "gate_set": list(self.gate_set), "n_qubits": self.n_qubits}


def magic_state(rng: np.random.Generator, cfg: MagicConfig) -> np.ndarray:
    """One unlabelled state of ``cfg``'s construction, (2^n,) complex128."""
    lo, hi = cfg.t_counts()
    n_t = int(rng.integers(lo, hi + 1))
    if cfg.construction == "injected":
        return t_injected_state(rng, cfg.n_qubits, n_t, cfg.n_clifford, cfg.gate_set)
    return doped_clifford_state(rng, cfg.n_qubits, cfg.n_clifford, n_t, cfg.gate_set)


def magic_states(cfg: MagicConfig, seed: int, per_class: int, stream: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_class`` states of each class from the named stream (e.g. "train", "test").

    Returns (states (2·per_class, 2^n) complex128, labels int64 (class blocks 0 then 1), M2 values in
    bits). Candidates are drawn one by one from a Generator keyed by (seed, stream), so the first m
    states of a class are the same whatever the total requested.
    """
    cfg.validate()
    stream_id = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng([seed, 7003, stream_id])
    buckets: list[list[tuple[np.ndarray, float]]] = [[], []]
    for _ in range(200 * per_class + 1000):
        if min(len(b) for b in buckets) >= per_class:
            break
        psi = magic_state(rng, cfg)
        m2 = float(stabilizer_renyi_entropy(psi))
        k = int(m2_label(np.array(m2), cfg))
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
