"""Hand-written statevector kernel for the HEA QNN: batched forward pass and adjoint gradient.

The circuit is the HEA of :class:`~labqfl.fl.models.hea.HEASpec` (input state, then per layer
``RY(θ_lq)`` and ``RZ(φ_lq)`` on every wire and the CNOT ring; readout ⟨Z₀⟩, wire 0 = most
significant bit, as in PennyLane). This module computes, for every client c and example b,

    f_cb = ⟨ψ_cb| U(w_c)† Z₀ U(w_c) |ψ_cb⟩   and, on request,   J_cb = ∂f_cb / ∂w_c  (all P angles)

in one Numba kernel, without Python per gate and without forming any 2^n × 2^n matrix:

* **Layout.** Examples sharing one weight set are processed in chunks of up to ``_WIDTH`` lanes;
  a chunk is one float64 array ``S[i, k, e]`` (amplitude i; k = real/imaginary part of the state
  φ and, for gradients, of the adjoint vector λ; example lane e innermost), so every gate update is
  a loop over contiguous example lanes that LLVM vectorises. The input state is transposed into
  that layout as it is loaded (the encoding layer is this one pass; amplitude embedding is the
  already-normalised feature vector, :meth:`~labqfl.fl.models.qnn.QNNModel.inputs_tensor`).
* **Forward.** Per layer: ``RY(θ_q) = [[c, −s], [s, c]]`` on the amplitude pairs
  (i, i + 2^(n−1−q)) of every wire (real coefficients), then the whole RZ layer — one diagonal
  D = ⊗_q diag(e^{−iφ_q/2}, e^{+iφ_q/2}), built per client by doubling — and the CNOT ring (one
  basis permutation) in a single pass ``new[i] = D[perm[i]]·old[perm[i]]``.
* **Adjoint gradient** (Jones & Gacon, "Efficient calculation of gradients in classical
  simulations of variational quantum algorithms", arXiv:2009.02823, the adjoint method): with
  |φ⟩ = U|ψ⟩ and |λ⟩ = Z₀|φ⟩, one backward sweep undoes the gates on both vectors; for a gate
  G(θ) = exp(−iθP/2) (P = Y or Z on one wire), with |φ⟩, |λ⟩ the vectors just after it,
  ∂f/∂θ = 2 Re⟨λ|(−i/2)P|φ⟩ = Im⟨λ|P|φ⟩. Gates on different wires commute, and ⟨λ|P_q|φ⟩ is
  unchanged when both vectors are transformed by a unitary that commutes with P_q, so per layer:
  undo the permutation and D (one pass), then for each wire q one pass over its pairs that adds
  Im⟨λ|Y_q|φ⟩ (∂/∂θ_q) and Im⟨λ|Z_q|φ⟩ (∂/∂φ_q) and undoes RY_q on φ and λ.

  The cost is one forward pass plus one backward pass over two vectors for all P derivatives of
  every example (parameter shift would need 2P forward passes).

:func:`statevector_expval` wraps the kernel as a torch ``autograd.Function`` (the Jacobian is
computed in the forward call when gradients are needed and contracted with the incoming gradient
in ``backward``). The torch path :func:`labqfl.fl.models.hea.hea_expval` stays the slow reference;
agreement with it and with PennyLane ``default.qubit`` to 1e-10 is tested in
``tests/fl/models/test_statevector.py``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch

from labqfl.fl.models.hea import HEASpec, _entangler_permutation, hea_expval

_WIDTH = 32  # examples per chunk: 2 vectors × 2^6 amplitudes × 32 lanes × 16 B = 64 KiB at 6 qubits
#: Below this many examples the kernel runs on one thread: a federated step of 4 × 16 examples is
#: ~0.3 ms of work, and waking a thread pool (on a machine shared with torch's pool) costs more.
PARALLEL_MIN_EXAMPLES = 1024


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _chunk(weights, states, c, b0, w, perm, want_jac, f, jac):  # type: ignore[no-untyped-def]
    """Forward (and adjoint backward) for examples b0 … b0+w−1 of client c; writes f and jac.

    ``S[i, k, e]``: amplitude i of example lane e; k = 0, 1 real and imaginary part of φ, k = 2, 3
    of λ.
    """
    L, n = weights.shape[1], weights.shape[2]
    d = 1 << n
    half = d >> 1
    k = 4 if want_jac else 2
    S = np.empty((d, k, w))
    T = np.empty((d, k, w))
    for e in range(w):  # encoding: the input state, transposed into lanes
        for i in range(d):
            v = states[c, b0 + e, i]
            S[i, 0, e] = v.real
            S[i, 1, e] = v.imag
    # per layer: RY half-angle cos/sin, and the RZ layer as one diagonal D = ⊗_q diag(e^{−iφ_q/2},
    # e^{+iφ_q/2}) read through the CNOT-ring permutation (dre + i dim)[i] = D[perm[i]]
    cy = np.empty((L, n))
    sy = np.empty((L, n))
    dre = np.empty((L, d))
    dim = np.empty((L, d))
    tr = np.empty(d)
    ti = np.empty(d)
    for ly in range(L):
        tr[0] = 1.0
        ti[0] = 0.0
        m = 1
        for q in range(n):
            cy[ly, q] = np.cos(0.5 * weights[c, ly, q, 0])
            sy[ly, q] = np.sin(0.5 * weights[c, ly, q, 0])
            ch = np.cos(0.5 * weights[c, ly, q, 1])
            sh = np.sin(0.5 * weights[c, ly, q, 1])
            for i in range(m - 1, -1, -1):  # wire q becomes the new least significant bit
                ar = tr[i]
                ai = ti[i]
                tr[2 * i] = ar * ch + ai * sh
                ti[2 * i] = ai * ch - ar * sh
                tr[2 * i + 1] = ar * ch - ai * sh
                ti[2 * i + 1] = ai * ch + ar * sh
            m *= 2
        for i in range(d):
            dre[ly, i] = tr[perm[i]]
            dim[ly, i] = ti[perm[i]]
    for ly in range(L):
        for q in range(n):  # RY(θ) = [[c, −s], [s, c]] on wire q
            stride = 1 << (n - 1 - q)
            cs = cy[ly, q]
            sn = sy[ly, q]
            for blk in range(0, d, 2 * stride):
                for i in range(blk, blk + stride):
                    j = i + stride
                    for e in range(w):
                        xr = S[i, 0, e]
                        xi = S[i, 1, e]
                        yr = S[j, 0, e]
                        yi = S[j, 1, e]
                        S[i, 0, e] = cs * xr - sn * yr
                        S[i, 1, e] = cs * xi - sn * yi
                        S[j, 0, e] = sn * xr + cs * yr
                        S[j, 1, e] = sn * xi + cs * yi
        for i in range(d):  # RZ layer and CNOT ring in one pass: new[i] = D[p]·old[p], p = perm[i]
            p = perm[i]
            dr = dre[ly, i]
            di = dim[ly, i]
            for e in range(w):
                xr = S[p, 0, e]
                xi = S[p, 1, e]
                T[i, 0, e] = dr * xr - di * xi
                T[i, 1, e] = dr * xi + di * xr
        S, T = T, S
    for e in range(w):
        f[c, b0 + e] = 0.0
    for i in range(d):
        z = 1.0 if i < half else -1.0
        for e in range(w):
            f[c, b0 + e] += z * (S[i, 0, e] * S[i, 0, e] + S[i, 1, e] * S[i, 1, e])
    if not want_jac:
        return
    for i in range(d):  # λ = Z₀ φ
        z = 1.0 if i < half else -1.0
        for e in range(w):
            S[i, 2, e] = z * S[i, 0, e]
            S[i, 3, e] = z * S[i, 1, e]
    dth = np.empty(w)
    dph = np.empty(w)
    for ly in range(L - 1, -1, -1):
        for i in range(d):  # undo the CNOT ring and the RZ layer on φ and λ: old[p] = conj(D[p])·new[i]
            p = perm[i]
            dr = dre[ly, i]
            di = dim[ly, i]
            for e in range(w):
                xr = S[i, 0, e]
                xi = S[i, 1, e]
                lr = S[i, 2, e]
                li = S[i, 3, e]
                T[p, 0, e] = dr * xr + di * xi
                T[p, 1, e] = dr * xi - di * xr
                T[p, 2, e] = dr * lr + di * li
                T[p, 3, e] = dr * li - di * lr
        S, T = T, S
        # Derivatives, wire by wire, as each RY is undone. ∂f/∂θ_q = Im⟨λ|Y_q|φ⟩ is taken on the
        # state right after RY_q: the RYs of one layer act on different wires and commute, so
        # undoing RY_q' (q' < q) on both vectors leaves it unchanged. ∂f/∂φ_q = Im⟨λ|Z_q|φ⟩ is due
        # right after the RZ layer; it is unchanged by the diagonal phase D (undone above) and by
        # RY on the other wires, so it is taken in the same pass, before RY_q is undone.
        for q in range(n):
            stride = 1 << (n - 1 - q)
            cs = cy[ly, q]
            sn = sy[ly, q]
            for e in range(w):
                dth[e] = 0.0
                dph[e] = 0.0
            for blk in range(0, d, 2 * stride):
                for i in range(blk, blk + stride):
                    j = i + stride
                    for e in range(w):
                        xr = S[i, 0, e]
                        xi = S[i, 1, e]
                        yr = S[j, 0, e]
                        yi = S[j, 1, e]
                        lxr = S[i, 2, e]
                        lxi = S[i, 3, e]
                        lyr = S[j, 2, e]
                        lyi = S[j, 3, e]
                        # Im[conj(λx)(−i y) + conj(λy)(i x)]  and  Im[conj(λx) x − conj(λy) y]
                        dth[e] += (lyr * xr + lyi * xi) - (lxr * yr + lxi * yi)
                        dph[e] += (lxr * xi - lxi * xr) - (lyr * yi - lyi * yr)
                        S[i, 0, e] = cs * xr + sn * yr  # RY(θ)† = [[c, s], [−s, c]]
                        S[i, 1, e] = cs * xi + sn * yi
                        S[j, 0, e] = cs * yr - sn * xr
                        S[j, 1, e] = cs * yi - sn * xi
                        S[i, 2, e] = cs * lxr + sn * lyr
                        S[i, 3, e] = cs * lxi + sn * lyi
                        S[j, 2, e] = cs * lyr - sn * lxr
                        S[j, 3, e] = cs * lyi - sn * lxi
            for e in range(w):
                jac[c, b0 + e, ly, q, 0] = dth[e]
                jac[c, b0 + e, ly, q, 1] = dph[e]


@numba.njit(cache=True, nogil=True)
def _hea_kernel(weights, states, perm, want_jac, f, jac):  # type: ignore[no-untyped-def]
    """All clients and examples, one thread: weights (C, L, n, 2) float64, states (C, B, 2^n) complex128."""
    C, B = states.shape[0], states.shape[1]
    per = (B + _WIDTH - 1) // _WIDTH
    for t in range(C * per):
        c = t // per
        b0 = (t - c * per) * _WIDTH
        _chunk(weights, states, c, b0, min(_WIDTH, B - b0), perm, want_jac, f, jac)


@numba.njit(cache=True, nogil=True, parallel=True)
def _hea_kernel_parallel(weights, states, perm, want_jac, f, jac):  # type: ignore[no-untyped-def]
    """As :func:`_hea_kernel`, the chunks spread over Numba's threads."""
    C, B = states.shape[0], states.shape[1]
    per = (B + _WIDTH - 1) // _WIDTH
    for t in numba.prange(C * per):
        c = t // per
        b0 = (t - c * per) * _WIDTH
        _chunk(weights, states, c, b0, min(_WIDTH, B - b0), perm, want_jac, f, jac)


def hea_expval_jacobian(weights: np.ndarray, states: np.ndarray, spec: HEASpec,
                        want_jac: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """⟨Z₀⟩ (C, B) and, with ``want_jac``, its Jacobian (C, B, n_layers, n_qubits, 2), both float64.

    ``weights``: (C, n_layers, n_qubits, 2) float64 radians; ``states``: (C, B, 2^n) normalised
    input states (cast to complex128). Numpy in, numpy out (the kernel of :func:`statevector_expval`).
    """
    w = np.ascontiguousarray(weights, dtype=np.float64)
    s = np.ascontiguousarray(states, dtype=np.complex128)
    if w.ndim != 4 or w.shape[1:] != spec.weight_shape:
        raise ValueError(f"weights must have shape (C, {', '.join(map(str, spec.weight_shape))}), got {w.shape}")
    if s.ndim != 3 or s.shape[0] != w.shape[0] or s.shape[2] != spec.dim:
        raise ValueError(f"states must have shape (C={w.shape[0]}, B, {spec.dim}), got {s.shape}")
    C, B = s.shape[0], s.shape[1]
    f = np.empty((C, B))
    jac = np.empty((C, B) + spec.weight_shape) if want_jac else np.empty((1, 1, 1, 1, 1))
    if B:
        parallel = C * B >= PARALLEL_MIN_EXAMPLES and numba.get_num_threads() > 1
        kernel = _hea_kernel_parallel if parallel else _hea_kernel
        kernel(w, s, _entangler_permutation(spec), want_jac, f, jac)
    return f, (jac if want_jac else None)


class _StatevectorExpval(torch.autograd.Function):
    """Forward: kernel values (and Jacobian when ``weights`` needs a gradient); backward: Jᵀ·g."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, states: torch.Tensor, spec: HEASpec) -> torch.Tensor:  # type: ignore[override]
        want = bool(ctx.needs_input_grad[0])
        f, jac = hea_expval_jacobian(weights.detach().numpy(), states.detach().resolve_conj().numpy(), spec, want)
        if jac is not None:
            ctx.save_for_backward(torch.from_numpy(jac))
        return torch.from_numpy(f)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        (jac,) = ctx.saved_tensors
        # a plain loop contraction (numpy's two-operand einsum): a BLAS/torch batched matmul this
        # small wakes a thread pool, which on a loaded machine costs milliseconds
        g = np.einsum("cb,cb...->c...", grad_out.detach().to(torch.float64).numpy(), jac.numpy())
        return torch.from_numpy(g), None, None


def statevector_expval(weights: torch.Tensor, states: torch.Tensor, spec: HEASpec) -> torch.Tensor:
    """⟨Z₀⟩ of the HEA output for every client and example, by the Numba kernel (module doc).

    Same contract as :func:`labqfl.fl.models.hea.hea_expval`: ``weights`` (C, n_layers, n_qubits, 2)
    float64, ``states`` (C, B, 2^n) normalised; returns (C, B) float64, differentiable in
    ``weights`` (adjoint method). A gradient with respect to ``states`` is not provided by the
    kernel; when ``states`` requires one, the torch reference path is used instead.
    """
    if weights.ndim != 4 or tuple(weights.shape[1:]) != spec.weight_shape:
        raise ValueError(f"weights must have shape (C, {', '.join(map(str, spec.weight_shape))}), got {tuple(weights.shape)}")
    if states.ndim != 3 or states.shape[0] != weights.shape[0] or states.shape[2] != spec.dim:
        raise ValueError(f"states must have shape (C={weights.shape[0]}, B, {spec.dim}), got {tuple(states.shape)}")
    if states.requires_grad or weights.dtype != torch.float64 or weights.device.type != "cpu":
        return hea_expval(weights, states, spec)
    if not (torch.is_grad_enabled() and weights.requires_grad):  # values only: no adjoint sweep
        f, _ = hea_expval_jacobian(weights.detach().numpy(), states.detach().resolve_conj().numpy(), spec, False)
        return torch.from_numpy(f)
    out: torch.Tensor = _StatevectorExpval.apply(weights, states, spec)  # type: ignore[no-untyped-call]
    return out
