"""The torch reference path of the HEA QNN agrees with PennyLane default.qubit (outputs and gradients);
the Numba kernel is checked against both in test_statevector.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labqfl.fl.models.hea import HEASpec, hea_expval, hea_unitary, pennylane_qnode


def _states(rng: np.random.Generator, count: int, n: int, real: bool = False) -> np.ndarray:
    s = rng.normal(size=(count, 1 << n))
    if not real:
        s = s + 1j * rng.normal(size=(count, 1 << n))
    return s / np.linalg.norm(s, axis=1, keepdims=True)


@pytest.mark.parametrize(("n", "layers", "embedding"), [(6, 4, "state"), (4, 3, "amplitude"), (2, 2, "state")])
def test_torch_path_matches_default_qubit_outputs_and_gradients(n: int, layers: int, embedding: str) -> None:
    rng = np.random.default_rng(n * 10 + layers)
    spec = HEASpec(n, layers)
    x = _states(rng, 5, n, real=embedding == "amplitude")
    if embedding == "amplitude":
        feats = x * 3.7  # AmplitudeEmbedding normalises; the torch path gets the normalised vector
    else:
        feats = x
    w = rng.uniform(0, 2 * np.pi, size=spec.weight_shape)
    coeffs = torch.as_tensor(rng.normal(size=5))

    w_pl = torch.tensor(w, requires_grad=True)
    out_pl = pennylane_qnode(spec, embedding)(torch.as_tensor(feats), w_pl)
    (out_pl * coeffs).sum().backward()

    w_t = torch.tensor(w[None], requires_grad=True)
    out_t = hea_expval(w_t, torch.as_tensor(x)[None], spec)[0]
    (out_t * coeffs).sum().backward()

    assert np.max(np.abs(out_pl.detach().numpy() - out_t.detach().numpy())) < 1e-10
    assert np.max(np.abs(w_pl.grad.numpy() - w_t.grad[0].numpy())) < 1e-10


def test_clients_are_batched_independently() -> None:
    rng = np.random.default_rng(3)
    spec = HEASpec(3, 2)
    w = torch.as_tensor(rng.uniform(0, 6, size=(3,) + spec.weight_shape))
    x = torch.as_tensor(_states(rng, 3 * 4, 3).reshape(3, 4, 8))
    together = hea_expval(w, x, spec)
    for c in range(3):
        alone = hea_expval(w[c:c + 1], x[c:c + 1], spec)[0]
        assert torch.allclose(together[c], alone, atol=1e-14)


def test_unitary_is_unitary() -> None:
    spec = HEASpec(4, 3)
    w = torch.as_tensor(np.random.default_rng(0).uniform(0, 6, size=(2,) + spec.weight_shape))
    U = hea_unitary(w, spec)
    eye = torch.eye(16, dtype=torch.complex128).expand(2, 16, 16)
    assert torch.allclose(U.conj().transpose(1, 2) @ U, eye, atol=1e-12)


def test_bad_weight_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="weights must have shape"):
        hea_unitary(torch.zeros(1, 2, 3, 2, dtype=torch.float64), HEASpec(4, 3))
