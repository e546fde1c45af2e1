"""HEA QNNs under hardware noise: a batched density-matrix path, its PennyLane reference, and shots.

The circuit is the HEA of :class:`~labqfl.fl.models.hea.HEASpec` (same gate list, same wire order).
The noise model :class:`NoiseModel` places channels exactly like this — the PennyLane reference
:func:`pennylane_noisy_qnode` (``default.mixed``) and the torch path :func:`noisy_hea_expval` apply
the same sequence:

* input state preparation (``StatePrep`` / ``AmplitudeEmbedding``) is ideal (no channel);
* after **every single-qubit rotation** (each ``RY`` and each ``RZ``) on its qubit q:
  ``qml.DepolarizingChannel(p, q)`` then ``qml.AmplitudeDamping(γ, q)``;
* after **every CNOT** (c, t): the same two channels on c, then the same two on t;
* readout: the measured bit of wire 0 flips with probability r (symmetric confusion matrix
  [[1−r, r], [r, 1−r]]), which is ``qml.BitFlip(r, 0)`` right before measuring Z₀, so the
  readout expectation is (1 − 2r)·Tr(ρ Z₀).

Channels (Nielsen & Chuang, *Quantum Computation and Quantum Information*, §8.3; PennyLane's
Kraus operators): depolarizing K = {√(1−p) I, √(p/3) X, √(p/3) Y, √(p/3) Z} (p ∈ [0, 1]; p = 3/4
is the fully depolarizing channel); amplitude damping K₀ = [[1, 0], [0, √(1−γ)]], K₁ = [[0, √γ], [0, 0]].

**Fast path.** ρ is a (C, B, 2^n, 2^n) complex128 tensor: clients × examples, like the statevector
path. Both channels commute with RZ, so a layer is evaluated as one Kronecker unitary K = ⊗_q RZ·RY
applied as K ρ K† (batched matmuls), the doubled channel on every qubit, then per CNOT a row/column
permutation and the channel on its two qubits (:func:`hea_density_matrix`); a channel on one
qubit is an elementwise update of ρ's 2×2 block structure. Without gate noise the state stays pure
and the statevector kernel (:mod:`labqfl.fl.models._statevector`, adjoint gradients) is used.
Autograd gives exact gradients; agreement with ``default.mixed`` to 1e-10 (outputs and gradients)
is tested in ``tests/fl/models/test_noise.py``.

**Shots.** With ``shots = S`` the readout ⟨Z₀⟩ is estimated as f̂ = 1 − 2k/S, k ~ Binomial(S, (1 − f)/2),
f the exact noisy expectation (a seeded ``torch.Generator``). Gradients (``shot_grad``):

* ``"parameter-shift"`` (default; what hardware can do): ∂f/∂θ = [f(θ + π/2) − f(θ − π/2)]/2 for
  every RY/RZ angle (Mitarai et al., PRA 98, 032309 (2018); Schuld et al., PRA 99, 032331 (2019)),
  each shifted expectation itself estimated with S fresh shots. The rule is exact under the
  parameter-independent channels above (ρ(θ) stays a + b cos θ + c sin θ through linear maps), so the
  estimate is unbiased for ∂f, and 2(f̂ − t)·∂̂f — independent samples — is unbiased for ∇(f − t)².
  It costs 2P extra circuits of S shots per example and step.
* ``"straight-through"``: the forward value is the shot estimate, the backward pass is the exact
  density-matrix gradient of f (not available on hardware; cheap). Also unbiased for ∇(f − t)².
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

from labqfl.fl.models._statevector import statevector_expval
from labqfl.fl.models.hea import (
    Embedding,
    HEASpec,
    _single_qubit_unitaries,
    hea_template,
    hea_unitary,
    z0_signs,
)

ShotGrad = Literal["parameter-shift", "straight-through"]
SHOT_GRADS: tuple[str, ...] = ("parameter-shift", "straight-through")
_NOISE_KEYS = ("depolarizing", "amplitude_damping", "readout")


@dataclass(frozen=True)
class NoiseModel:
    """Per-gate depolarizing probability p, amplitude-damping γ, readout flip probability r (all in
    [0, 1]), and shots per expectation (``None``: exact expectation values)."""

    depolarizing: float = 0.0
    amplitude_damping: float = 0.0
    readout: float = 0.0
    shots: int | None = None
    shot_grad: ShotGrad = "parameter-shift"

    def __post_init__(self) -> None:
        for key in _NOISE_KEYS:
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"noise {key}={v!r} must be a probability in [0, 1]")
        if self.shots is not None and (isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 1):
            raise ValueError(f"shots must be a positive integer or None (exact), got {self.shots!r}")
        if self.shot_grad not in SHOT_GRADS:
            raise ValueError(f"shot_grad {self.shot_grad!r} unknown; expected one of {', '.join(SHOT_GRADS)}")

    @classmethod
    def parse(cls, text: str | None, shots: int | None = None, shot_grad: str = "parameter-shift") -> NoiseModel:
        """From ``"depolarizing=p,amplitude_damping=g,readout=r"`` (any subset; ``""``/``"none"``: no
        channels). Raises ValueError naming the bad item."""
        values: dict[str, float] = {}
        body = (text or "").strip()
        if body and body.lower() != "none":
            for item in body.split(","):
                key, sep, val = item.partition("=")
                key = key.strip()
                if not sep or key not in _NOISE_KEYS:
                    raise ValueError(f"--noise item {item.strip()!r}: expected key=value with key one of "
                                     f"{', '.join(_NOISE_KEYS)}")
                if key in values:
                    raise ValueError(f"--noise: {key} given twice")
                try:
                    values[key] = float(val)
                except ValueError:
                    raise ValueError(f"--noise {key}={val.strip()!r}: expected a number in [0, 1]") from None
        return cls(shots=shots, shot_grad=shot_grad, **values)  # type: ignore[arg-type]

    @property
    def gate_noise(self) -> bool:
        """Whether any channel follows the gates."""
        return self.depolarizing > 0 or self.amplitude_damping > 0

    def as_dict(self) -> dict[str, Any]:
        return {"depolarizing": self.depolarizing, "amplitude_damping": self.amplitude_damping,
                "readout": self.readout, "shots": self.shots,
                "shot_grad": self.shot_grad if self.shots is not None else None,
                "placement": "after every RY, RZ (its qubit) and CNOT (both qubits): depolarizing then "
                             "amplitude damping; readout: bit flip of wire 0 before measuring Z0"}


# --------------------------------------------------------------------------------------------
# PennyLane reference (default.mixed)
# --------------------------------------------------------------------------------------------
def _pl_noise(qml: Any, noise: NoiseModel, wire: int) -> None:
    if noise.depolarizing > 0:
        qml.DepolarizingChannel(noise.depolarizing, wires=wire)
    if noise.amplitude_damping > 0:
        qml.AmplitudeDamping(noise.amplitude_damping, wires=wire)


def noisy_hea_template(weights: Any, spec: HEASpec, noise: NoiseModel) -> None:
    """The HEA gates of ``spec`` with the channels of ``noise`` inside a PennyLane quantum function."""
    import pennylane as qml

    if not noise.gate_noise:
        hea_template(weights, spec)
        return
    for name, wires, idx in spec.gates():
        if name == "RY":
            assert idx is not None
            qml.RY(weights[idx], wires=wires[0])
        elif name == "RZ":
            assert idx is not None
            qml.RZ(weights[idx], wires=wires[0])
        else:
            qml.CNOT(wires=list(wires))
        for w in wires:
            _pl_noise(qml, noise, w)


def pennylane_noisy_qnode(spec: HEASpec, noise: NoiseModel, embedding: Embedding = "state", device: Any = None,
                          diff_method: str = "backprop") -> Callable[..., Any]:
    """PennyLane QNode ``f(inputs (B, 2^n), weights (L, n, 2)) -> ⟨Z₀⟩`` of the noisy HEA (exact
    expectation; ``noise.shots`` is ignored here). ``device`` defaults to ``default.mixed``."""
    import pennylane as qml

    dev = device if device is not None else qml.device("default.mixed", wires=spec.n_qubits)
    wires = list(range(spec.n_qubits))

    @qml.qnode(dev, interface="torch", diff_method=diff_method)
    def circuit(inputs: Any, weights: Any) -> Any:
        if embedding == "amplitude":
            qml.AmplitudeEmbedding(inputs, wires=wires, normalize=True)
        else:
            qml.StatePrep(inputs, wires=wires)
        noisy_hea_template(weights, spec, noise)
        if noise.readout > 0:
            qml.BitFlip(noise.readout, wires=0)
        return qml.expval(qml.PauliZ(0))

    def run(inputs: Any, weights: Any) -> Any:
        # default.mixed applies RZ through ``RZ.compute_eigvals``, which with torch builds
        # ``0.5j·θ × tensor([-1, 1])``: a 0-dim complex tensor times an int64 tensor promotes to torch's
        # *default* complex dtype — complex64 unless the default float dtype is float64 — so the
        # reference silently loses ~1e-9 (PennyLane 0.45.1, torch 2.13). Run it in float64.
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return circuit(inputs, weights)
        finally:
            torch.set_default_dtype(prev)

    run.qnode = circuit  # type: ignore[attr-defined]
    return run


# --------------------------------------------------------------------------------------------
# Torch batched density-matrix path
# --------------------------------------------------------------------------------------------
def _superop(kraus: torch.Tensor) -> torch.Tensor:
    """Superoperator S[..., i, j, k, l] = Σ_m K_m[i, k] conj(K_m[j, l]) of Kraus operators (..., M, 2, 2)."""
    return torch.einsum("...mik,...mjl->...ijkl", kraus, kraus.conj())


def _compose(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Superoperator of ``before`` then ``after`` (both (..., 2, 2, 2, 2))."""
    return torch.einsum("...ijkl,...klmn->...ijmn", after, before)


def channel_superop(noise: NoiseModel) -> torch.Tensor:
    """The per-gate channel (depolarizing then amplitude damping) as a (2, 2, 2, 2) complex128 superoperator."""
    p, g = noise.depolarizing, noise.amplitude_damping
    eye = np.eye(2)
    x = np.array([[0, 1], [1, 0]])
    y = np.array([[0, -1j], [1j, 0]])
    z = np.diag([1.0, -1.0])
    dep = np.stack([math.sqrt(1 - p) * eye, math.sqrt(p / 3) * x, math.sqrt(p / 3) * y, math.sqrt(p / 3) * z])
    ad = np.stack([np.diag([1.0, math.sqrt(1 - g)]), np.array([[0.0, math.sqrt(g)], [0.0, 0.0]])])
    return _compose(_superop(torch.as_tensor(ad, dtype=torch.complex128)),
                    _superop(torch.as_tensor(dep, dtype=torch.complex128)))


def _phase_covariant_coefficients(sup: torch.Tensor) -> tuple[complex, complex, complex, complex, complex, complex]:
    """(α, β, γ, δ, η₀₁, η₁₀) of a channel that maps ρ₀₀' = αρ₀₀ + βρ₁₁, ρ₁₁' = γρ₀₀ + δρ₁₁,
    ρ₀₁' = η₀₁ρ₀₁, ρ₁₀' = η₁₀ρ₁₀ (true of depolarizing, amplitude damping and their compositions)."""
    s = sup.detach().reshape(4, 4)
    keep = torch.zeros(4, 4, dtype=torch.bool)
    for i, j in ((0, 0), (0, 3), (3, 0), (3, 3), (1, 1), (2, 2)):
        keep[i, j] = True
    if float(s[~keep].abs().max()) > 1e-15:
        raise ValueError("channel is not phase-covariant; the block update does not apply")
    v = [complex(s[i, j]) for i, j in ((0, 0), (0, 3), (3, 0), (3, 3), (1, 1), (2, 2))]
    return v[0], v[1], v[2], v[3], v[4], v[5]


def _apply_channel(rho: torch.Tensor, coef: tuple[complex, ...], q: int, n: int) -> torch.Tensor:
    """Apply a phase-covariant single-qubit channel (:func:`_phase_covariant_coefficients`) on wire q
    of ρ (C, B, d, d): ρ' = ρ ⊙ M + flip_q(ρ) ⊙ W, two elementwise passes and a flip."""
    C, B, d = rho.shape[0], rho.shape[1], rho.shape[2]
    a, e = 1 << q, 1 << (n - 1 - q)
    al, be, ga, de, e01, e10 = coef
    r = rho.reshape(C, B, a, 2, e, a, 2, e)
    m = torch.tensor([[al, e01], [e10, de]], dtype=torch.complex128).reshape(2, 1, 1, 2, 1)
    w = torch.tensor([[be, 0.0], [0.0, ga]], dtype=torch.complex128).reshape(2, 1, 1, 2, 1)
    return (r * m + r.flip(3, 6) * w).reshape(C, B, d, d)


def _rotation_layers(weights: torch.Tensor, spec: HEASpec) -> torch.Tensor:
    """⊗_q RZ(φ_lq)·RY(θ_lq) per client and layer, (C, L, 2^n, 2^n) complex128 (no entangler)."""
    u1 = _single_qubit_unitaries(weights)  # (C, L, n, 2, 2)
    C, L = u1.shape[0], u1.shape[1]
    K = u1[:, :, 0]
    for q in range(1, spec.n_qubits):
        d = K.shape[-1]
        K = (K[:, :, :, None, :, None] * u1[:, :, q, None, :, None, :]).reshape(C, L, 2 * d, 2 * d)
    return K


@lru_cache(maxsize=64)
def _cnot_flat_permutation(n: int, control: int, target: int) -> np.ndarray:
    """Index into ρ flattened (d·d,): (CNOT ρ CNOT)[i, j] = ρ[perm[i], perm[j]], wire 0 = most significant."""
    d = 1 << n
    idx = np.arange(d, dtype=np.int64)
    perm = idx ^ (((idx >> (n - 1 - control)) & 1) << (n - 1 - target))  # an involution
    return (perm[:, None] * d + perm[None, :]).reshape(-1)


def hea_density_matrix(weights: torch.Tensor, states: torch.Tensor, spec: HEASpec, noise: NoiseModel) -> torch.Tensor:
    """Output density matrices of the noisy HEA (before readout).

    ``weights``: (C, n_layers, n_qubits, 2) float64 radians; ``states``: (C, B, 2^n) normalised pure
    input states. Returns ρ (C, B, 2^n, 2^n) complex128, differentiable in ``weights``.

    Evaluation order (exactly the channel placement of the module doc, regrouped): both channels
    N = AD∘Dep commute with RZ (depolarizing commutes with every unitary; amplitude damping is
    phase-covariant), so a qubit's RY → N → RZ → N equals RZ·RY followed by N∘N. A layer is thus
    one Kronecker unitary K = ⊗_q RZ·RY applied as K ρ K† (two batched matmuls), N∘N on every
    qubit, then per CNOT a row/column permutation and N on its control and target.
    """
    if weights.ndim != 4 or tuple(weights.shape[1:]) != spec.weight_shape:
        raise ValueError(f"weights must have shape (C, {', '.join(map(str, spec.weight_shape))}), got {tuple(weights.shape)}")
    if states.ndim != 3 or states.shape[0] != weights.shape[0] or states.shape[2] != spec.dim:
        raise ValueError(f"states must have shape (C={weights.shape[0]}, B, {spec.dim}), got {tuple(states.shape)}")
    n, d = spec.n_qubits, spec.dim
    psi = states.to(torch.complex128)
    C, B = psi.shape[0], psi.shape[1]
    if not noise.gate_noise:  # a pure state all the way: U ψ
        out = psi @ hea_unitary(weights, spec).transpose(1, 2)
        return out[..., :, None] * out.conj()[..., None, :]
    chan = channel_superop(noise)
    c1 = _phase_covariant_coefficients(chan)
    c2 = _phase_covariant_coefficients(_compose(chan, chan))
    K = _rotation_layers(weights, spec)[:, :, None]  # (C, L, 1, d, d)
    rho = psi[..., :, None] * psi.conj()[..., None, :]
    for layer in range(spec.n_layers):
        k = K[:, layer]
        rho = k @ rho @ k.mH
        for q in range(n):
            rho = _apply_channel(rho, c2, q, n)
        for c, t in spec.entangler():
            flat = torch.as_tensor(_cnot_flat_permutation(n, c, t))
            rho = rho.reshape(C, B, d * d)[:, :, flat].reshape(C, B, d, d)
            rho = _apply_channel(rho, c1, c, n)
            rho = _apply_channel(rho, c1, t, n)
    return rho


def noisy_hea_expval(weights: torch.Tensor, states: torch.Tensor, spec: HEASpec, noise: NoiseModel) -> torch.Tensor:
    """Exact readout expectation (1 − 2r)·Tr(ρ Z₀) per client and example, (C, B) float64."""
    if not noise.gate_noise:  # pure state: the statevector kernel (adjoint gradients)
        return (1.0 - 2.0 * noise.readout) * statevector_expval(weights, states, spec)
    rho = hea_density_matrix(weights, states, spec, noise)
    diag = torch.diagonal(rho, dim1=-2, dim2=-1).real
    return (1.0 - 2.0 * noise.readout) * (diag @ torch.as_tensor(z0_signs(spec.n_qubits)))


def sample_expval(exact: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """Shot estimate of a ±1 observable with mean ``exact``: 1 − 2k/S, k ~ Binomial(S, (1 − exact)/2)."""
    p_minus = ((1.0 - exact.detach()) / 2.0).clamp(0.0, 1.0)
    k = torch.binomial(torch.full_like(p_minus, float(shots)), p_minus, generator=generator)
    return 1.0 - 2.0 * k / shots


_SHIFT_CHUNK_ELEMENTS = 1 << 22  # complex entries of ρ per shifted batch (≈ 64 MiB)


def parameter_shift_jacobian(weights: torch.Tensor, states: torch.Tensor, spec: HEASpec, noise: NoiseModel,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """∂f/∂w by the parameter-shift rule, (C, B, L, n, 2) float64.

    Each shifted expectation f(w ± π/2·e_j) is exact when ``noise.shots`` is None, else a fresh
    S-shot estimate drawn with ``generator``. Shifted circuits run batched (chunked in memory)."""
    C, B = states.shape[0], states.shape[1]
    P = spec.n_params
    w = weights.detach().reshape(C, P)
    eye = torch.eye(P, dtype=w.dtype) * (math.pi / 2)
    shifted = torch.cat([w[:, None, :] + eye[None], w[:, None, :] - eye[None]], dim=1)  # (C, 2P, P)
    chunk = max(1, _SHIFT_CHUNK_ELEMENTS // max(1, C * B * spec.dim * spec.dim))
    vals = []
    with torch.no_grad():
        for s in range(0, 2 * P, chunk):
            ws = shifted[:, s:s + chunk]  # (C, k, P)
            k = ws.shape[1]
            st = states[:, None].expand(C, k, B, spec.dim).reshape(C * k, B, spec.dim)
            f = noisy_hea_expval(ws.reshape((C * k,) + spec.weight_shape), st, spec, noise).reshape(C, k, B)
            if noise.shots is not None:
                if generator is None:
                    raise ValueError("a generator is needed to sample shots")
                f = sample_expval(f, noise.shots, generator)
            vals.append(f)
    f_all = torch.cat(vals, dim=1)  # (C, 2P, B)
    jac = (f_all[:, :P] - f_all[:, P:]) / 2.0  # (C, P, B)
    return jac.transpose(1, 2).reshape((C, B) + spec.weight_shape)


class _ParameterShiftShots(torch.autograd.Function):
    """Forward: S-shot estimate of f; backward: S-shot parameter-shift estimate of ∂f/∂w."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, states: torch.Tensor, spec: HEASpec, noise: NoiseModel,
                generator: torch.Generator) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weights.detach(), states)
        ctx.spec, ctx.noise, ctx.generator = spec, noise, generator
        with torch.no_grad():
            exact = noisy_hea_expval(weights.detach(), states, spec, noise)
        assert noise.shots is not None
        return sample_expval(exact, noise.shots, generator)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        weights, states = ctx.saved_tensors
        jac = parameter_shift_jacobian(weights, states, ctx.spec, ctx.noise, ctx.generator)  # (C, B, L, n, 2)
        grad_w = torch.einsum("cb,cb...->c...", grad_out.to(jac.dtype), jac)
        return grad_w.to(weights.dtype), None, None, None, None


def shot_hea_expval(weights: torch.Tensor, states: torch.Tensor, spec: HEASpec, noise: NoiseModel,
                    generator: torch.Generator) -> torch.Tensor:
    """⟨Z₀⟩ estimated with ``noise.shots`` shots (C, B); gradients per ``noise.shot_grad`` (module doc).
    With ``noise.shots`` None this is :func:`noisy_hea_expval`."""
    if noise.shots is None:
        return noisy_hea_expval(weights, states, spec, noise)
    if noise.shot_grad == "straight-through" or not weights.requires_grad:
        exact = noisy_hea_expval(weights, states, spec, noise)
        return exact + (sample_expval(exact, noise.shots, generator) - exact).detach()
    out: torch.Tensor = _ParameterShiftShots.apply(weights, states, spec, noise, generator)  # type: ignore[no-untyped-call]
    return out


# --------------------------------------------------------------------------------------------
# Federated model
# --------------------------------------------------------------------------------------------
class NoisyQNNModel:
    """An HEA QNN (:class:`~labqfl.fl.models.qnn.QNNModel`) trained and evaluated under ``noise``.

    Same parameters, inputs, loss (MSE on the readout ⟨Z₀⟩) and labels as the ideal model; outputs
    come from the density-matrix path and, with shots, are shot estimates (training *and*
    evaluation, as on a device). Shots are drawn from a ``torch.Generator`` seeded by ``seed``, so a
    run is reproducible; ``shots_used`` counts every shot the model has spent (forward and shifts; a client's short last batch is padded to the batch size and counted).
    """

    dtype = torch.float64
    loss_name = "mse"

    def __init__(self, base: Any, noise: NoiseModel, seed: int = 0) -> None:
        self.base = base
        self.spec: HEASpec = base.spec
        self.embedding: Embedding = base.embedding
        self.noise = noise
        self.name = f"{base.name}-noisy"
        self.n_params = base.n_params
        self.generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 5150]).generate_state(1)[0]))
        self.shots_used = 0
        self._last: tuple[tuple[Any, ...], torch.Tensor] | None = None

    def init_params(self, seed: int) -> np.ndarray:
        return np.asarray(self.base.init_params(seed))

    def inputs_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.base.inputs_tensor(x))

    def outputs(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Readout ⟨Z₀⟩ (exact or shot estimate): params (C, P), x (C, B, 2^n) → (C, B) float64."""
        w = params.reshape((params.shape[0],) + self.spec.weight_shape)
        grad = torch.is_grad_enabled() and params.requires_grad
        key = (params, params._version, x, x._version)
        last = self._last
        if (not grad and last is not None and last[0][0] is params and last[0][2] is x
                and last[0][1] == key[1] and last[0][3] == key[3]):
            # ``evaluate`` asks for the loss and the labels of the same batch: one measurement
            # serves both, as on a device (no second set of shots)
            return last[1]
        if self.noise.shots is not None:
            circuits = x.shape[0] * x.shape[1]
            if grad and self.noise.shot_grad == "parameter-shift":
                circuits *= 1 + 2 * self.n_params
            self.shots_used += circuits * self.noise.shots
        out = shot_hea_expval(w, x, self.spec, self.noise, self.generator)
        self._last = None if grad else (key, out)
        return out

    def per_example_loss(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = 1.0 - 2.0 * y.to(torch.float64)
        return (self.outputs(params, x) - target) ** 2

    def predict(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.outputs(params, x) < 0).to(torch.int64)

    def qnode(self, **kwargs: Any) -> Any:
        """The PennyLane ``default.mixed`` QNode of this noisy circuit (exact expectation)."""
        return pennylane_noisy_qnode(self.spec, self.noise, self.embedding, **kwargs)


def noisy_qnn(base: Any, noise: NoiseModel, seed: int = 0) -> NoisyQNNModel:
    """Wrap a QNN model (``mnist_qnn()``, ``quantum_data_qnn()``) with a noise model; other models raise."""
    if not hasattr(base, "spec") or not isinstance(base.spec, HEASpec):
        raise ValueError(f"noise applies to the HEA QNN tasks only, not to model {getattr(base, 'name', base)!r}")
    return NoisyQNNModel(base, noise, seed)
