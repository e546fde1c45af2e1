"""The Numba statevector kernel (adjoint gradients) agrees with the torch reference path and with
PennyLane default.qubit on random parameters and inputs, for several qubit counts and depths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labqfl.fl.models import _statevector
from labqfl.fl.models._statevector import hea_expval_jacobian, statevector_expval
from labqfl.fl.models.hea import HEASpec, hea_expval, pennylane_qnode
from labqfl.fl.models.qnn import mnist_qnn, quantum_data_qnn


def _states(rng: np.random.Generator, shape: tuple[int, ...], n: int, real: bool = False) -> np.ndarray:
    s = rng.normal(size=shape + (1 << n,))
    if not real:
        s = s + 1j * rng.normal(size=shape + (1 << n,))
    return s / np.linalg.norm(s, axis=-1, keepdims=True)


def _value_and_grad(fn, w0: np.ndarray, x: torch.Tensor, spec: HEASpec, coeffs: torch.Tensor):  # type: ignore[no-untyped-def]
    w = torch.tensor(w0, requires_grad=True)
    out = fn(w, x, spec)
    (out * coeffs).sum().backward()
    assert w.grad is not None
    return out.detach().numpy(), w.grad.numpy()


# (n qubits, layers, clients, examples per client): n = 1 has no entangler, n = 2 no ring closure;
# 70 examples span three kernel chunks with a short last one
@pytest.mark.parametrize(("n", "layers", "clients", "batch"),
                         [(6, 4, 4, 16), (4, 3, 2, 70), (3, 1, 3, 5), (2, 2, 2, 3), (1, 3, 2, 4), (5, 2, 1, 33)])
def test_kernel_matches_torch_reference(n: int, layers: int, clients: int, batch: int) -> None:
    rng = np.random.default_rng(100 * n + 10 * layers + batch)
    spec = HEASpec(n, layers)
    x = torch.as_tensor(_states(rng, (clients, batch), n))
    w0 = rng.uniform(-2 * np.pi, 4 * np.pi, size=(clients,) + spec.weight_shape)
    coeffs = torch.as_tensor(rng.normal(size=(clients, batch)))
    f_ref, g_ref = _value_and_grad(hea_expval, w0, x, spec, coeffs)
    f_k, g_k = _value_and_grad(statevector_expval, w0, x, spec, coeffs)
    assert np.max(np.abs(f_k - f_ref)) < 1e-12
    assert np.max(np.abs(g_k - g_ref)) < 1e-11
    assert np.max(np.abs(g_ref)) > 1e-3  # the comparison is not between two zero gradients


@pytest.mark.parametrize(("n", "layers", "embedding"), [(6, 4, "state"), (4, 3, "amplitude"), (3, 2, "state")])
def test_kernel_matches_default_qubit_outputs_and_gradients(n: int, layers: int, embedding: str) -> None:
    rng = np.random.default_rng(7 * n + layers)
    spec = HEASpec(n, layers)
    x = _states(rng, (6,), n, real=embedding == "amplitude")
    feats = x * 2.3 if embedding == "amplitude" else x  # AmplitudeEmbedding normalises
    w = rng.uniform(0, 2 * np.pi, size=spec.weight_shape)
    coeffs = torch.as_tensor(rng.normal(size=6))

    w_pl = torch.tensor(w, requires_grad=True)
    out_pl = pennylane_qnode(spec, embedding)(torch.as_tensor(feats), w_pl)
    (out_pl * coeffs).sum().backward()
    assert w_pl.grad is not None

    f_k, g_k = _value_and_grad(statevector_expval, w[None], torch.as_tensor(x)[None], spec, coeffs[None])
    assert np.max(np.abs(out_pl.detach().numpy() - f_k[0])) < 1e-10
    assert np.max(np.abs(w_pl.grad.numpy() - g_k[0])) < 1e-10


def test_per_example_jacobian_matches_autograd() -> None:
    rng = np.random.default_rng(11)
    spec = HEASpec(3, 2)
    x = _states(rng, (2, 3), 3)
    w0 = rng.uniform(0, 2 * np.pi, size=(2,) + spec.weight_shape)
    f, jac = hea_expval_jacobian(w0, x, spec)
    assert jac is not None and jac.shape == (2, 3) + spec.weight_shape
    for c in range(2):
        for b in range(3):
            w = torch.tensor(w0[c:c + 1], requires_grad=True)
            out = hea_expval(w, torch.as_tensor(x[c:c + 1, b:b + 1]), spec)[0, 0]
            out.backward()
            assert w.grad is not None
            assert abs(float(out.detach()) - f[c, b]) < 1e-12
            assert np.max(np.abs(w.grad[0].numpy() - jac[c, b])) < 1e-12


def test_parallel_kernel_equals_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    spec = HEASpec(4, 2)
    x = _states(rng, (3, 40), 4)
    w0 = rng.uniform(0, 2 * np.pi, size=(3,) + spec.weight_shape)
    f1, j1 = hea_expval_jacobian(w0, x, spec)
    monkeypatch.setattr(_statevector, "PARALLEL_MIN_EXAMPLES", 1)
    monkeypatch.setattr(_statevector.numba, "get_num_threads", lambda: 2)
    f2, j2 = hea_expval_jacobian(w0, x, spec)
    assert np.array_equal(f1, f2) and j1 is not None and j2 is not None and np.array_equal(j1, j2)


def test_values_without_gradient_match_and_need_no_graph() -> None:
    rng = np.random.default_rng(6)
    spec = HEASpec(4, 3)
    x = torch.as_tensor(_states(rng, (2, 9), 4))
    w = torch.tensor(rng.uniform(0, 6, size=(2,) + spec.weight_shape), requires_grad=True)
    with torch.no_grad():
        f = statevector_expval(w, x, spec)
    assert not f.requires_grad
    assert torch.allclose(f, hea_expval(w.detach(), x, spec), atol=1e-12, rtol=0)
    f_nograd_input = statevector_expval(w.detach(), x, spec)
    assert not f_nograd_input.requires_grad


def test_state_gradient_falls_back_to_the_reference_path() -> None:
    rng = np.random.default_rng(8)
    spec = HEASpec(2, 2)
    x = torch.tensor(_states(rng, (1, 3), 2), requires_grad=True)
    w = torch.as_tensor(rng.uniform(0, 6, size=(1,) + spec.weight_shape))
    statevector_expval(w, x, spec).sum().backward()
    assert x.grad is not None and float(x.grad.abs().max()) > 0


def test_models_train_through_the_kernel() -> None:
    """QNNModel.outputs is the kernel: its loss gradient equals the torch reference's."""
    rng = np.random.default_rng(9)
    for model, real in ((quantum_data_qnn(), False), (mnist_qnn(), True)):
        spec = model.spec
        raw = _states(rng, (12,), spec.n_qubits, real=real) * (3.0 if real else 1.0)
        x = model.inputs_tensor(raw).reshape(2, 6, spec.dim)
        y = torch.as_tensor(rng.integers(0, 2, size=(2, 6)))
        p0 = np.stack([model.init_params(1), model.init_params(2)])
        p = torch.tensor(p0, requires_grad=True)
        (g_model,) = torch.autograd.grad(model.per_example_loss(p, x, y).sum(), p)
        pr = torch.tensor(p0, requires_grad=True)
        ref = hea_expval(pr.reshape((2,) + spec.weight_shape), x, spec)
        (g_ref,) = torch.autograd.grad(((ref - (1.0 - 2.0 * y)) ** 2).sum(), pr)
        assert torch.allclose(g_model, g_ref, atol=1e-11, rtol=0)


def test_bad_shapes_are_refused() -> None:
    spec = HEASpec(3, 2)
    with pytest.raises(ValueError, match="weights must have shape"):
        statevector_expval(torch.zeros(1, 2, 2, 2, dtype=torch.float64), torch.zeros(1, 1, 8, dtype=torch.complex128), spec)
    with pytest.raises(ValueError, match="states must have shape"):
        statevector_expval(torch.zeros(1, 2, 3, 2, dtype=torch.float64), torch.zeros(2, 1, 8, dtype=torch.complex128), spec)
    with pytest.raises(ValueError, match="states must have shape"):
        hea_expval_jacobian(np.zeros((1, 2, 3, 2)), np.zeros((1, 1, 4), dtype=complex), spec)
