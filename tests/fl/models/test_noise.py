"""The noisy HEA QNN: the batched density-matrix path agrees with PennyLane ``default.mixed`` (outputs
and gradients, random circuits and noise), the channels do what they should, and the shot path is
unbiased (forward and parameter-shift gradients), seeded, and reachable from ``labqfl train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.fl.models.hea import HEASpec, hea_expval
from labqfl.fl.models.noisy import (
    NoiseModel,
    hea_density_matrix,
    noisy_hea_expval,
    noisy_qnn,
    parameter_shift_jacobian,
    pennylane_noisy_qnode,
    shot_hea_expval,
)
from labqfl.fl.models.qnn import mnist_qnn


def _states(rng: np.random.Generator, count: int, n: int, real: bool = False) -> np.ndarray:
    s = rng.normal(size=(count, 1 << n))
    if not real:
        s = s + 1j * rng.normal(size=(count, 1 << n))
    return s / np.linalg.norm(s, axis=-1, keepdims=True)


@pytest.mark.parametrize(("n", "layers", "embedding", "seed"),
                         [(1, 2, "state", 1), (2, 2, "state", 2), (3, 1, "amplitude", 3), (4, 1, "state", 4)])
def test_density_path_matches_default_mixed_outputs_and_gradients(n: int, layers: int, embedding: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = HEASpec(n, layers)
    p, g, r = rng.uniform(0.0, 0.4, size=3)
    noise = NoiseModel(depolarizing=float(p), amplitude_damping=float(g), readout=float(r))
    x = _states(rng, 3, n, real=embedding == "amplitude")
    feats = x * 2.3 if embedding == "amplitude" else x  # AmplitudeEmbedding normalises the features
    w = rng.uniform(0, 2 * np.pi, size=spec.weight_shape)
    coeffs = torch.as_tensor(rng.normal(size=3))

    w_pl = torch.tensor(w, requires_grad=True)
    out_pl = pennylane_noisy_qnode(spec, noise, embedding)(torch.as_tensor(feats), w_pl)
    (out_pl * coeffs).sum().backward()

    w_t = torch.tensor(w[None], requires_grad=True)
    out_t = noisy_hea_expval(w_t, torch.as_tensor(x)[None], spec, noise)[0]
    (out_t * coeffs).sum().backward()

    assert w_pl.grad is not None and w_t.grad is not None
    assert np.max(np.abs(out_pl.detach().numpy() - out_t.detach().numpy())) < 1e-10
    assert np.max(np.abs(w_pl.grad.numpy() - w_t.grad[0].numpy())) < 1e-10
    # the noise is not negligible here: the ideal circuit gives clearly different outputs
    ideal = hea_expval(w_t.detach(), torch.as_tensor(x)[None], spec)[0]
    assert float((ideal - out_t.detach()).abs().max()) > 1e-3


def test_output_is_a_density_matrix_and_clients_are_independent() -> None:
    rng = np.random.default_rng(5)
    spec = HEASpec(3, 2)
    noise = NoiseModel(depolarizing=0.1, amplitude_damping=0.2)
    w = torch.as_tensor(rng.uniform(0, 6, size=(2,) + spec.weight_shape))
    x = torch.as_tensor(_states(rng, 2 * 3, 3).reshape(2, 3, 8))
    rho = hea_density_matrix(w, x, spec, noise)
    tr = torch.diagonal(rho, dim1=-2, dim2=-1).sum(-1)
    assert torch.allclose(tr, torch.ones_like(tr), atol=1e-13)
    assert torch.allclose(rho, rho.mH, atol=1e-14)
    assert float(torch.linalg.eigvalsh(rho).min()) > -1e-13
    alone = hea_density_matrix(w[1:], x[1:], spec, noise)[0]
    assert torch.allclose(rho[1], alone, atol=1e-14)


def test_limiting_channels() -> None:
    """p = 3/4 depolarises every qubit after every gate: ⟨Z₀⟩ = 0; γ = 1 resets every qubit to |0⟩
    after every gate (the last ones included): ⟨Z₀⟩ = 1 − 2r."""
    rng = np.random.default_rng(6)
    spec = HEASpec(3, 2)
    w = torch.as_tensor(rng.uniform(0, 6, size=(1,) + spec.weight_shape))
    x = torch.as_tensor(_states(rng, 4, 3)[None])
    f_dep = noisy_hea_expval(w, x, spec, NoiseModel(depolarizing=0.75))
    assert float(f_dep.abs().max()) < 1e-14
    f_ad = noisy_hea_expval(w, x, spec, NoiseModel(amplitude_damping=1.0, readout=0.1))
    assert torch.allclose(f_ad, torch.full_like(f_ad, 0.8), atol=1e-14)


def test_parameter_shift_rule_is_exact_under_noise() -> None:
    rng = np.random.default_rng(7)
    spec = HEASpec(3, 2)
    noise = NoiseModel(depolarizing=0.05, amplitude_damping=0.1, readout=0.03)
    w = torch.tensor(rng.uniform(0, 6, size=(2,) + spec.weight_shape), requires_grad=True)
    x = torch.as_tensor(_states(rng, 2 * 3, 3).reshape(2, 3, 8))
    coeffs = torch.as_tensor(rng.normal(size=(2, 3)))
    (noisy_hea_expval(w, x, spec, noise) * coeffs).sum().backward()
    jac = parameter_shift_jacobian(w.detach(), x, spec, noise)  # exact shifted expectations
    ps = torch.einsum("cb,cb...->c...", coeffs, jac)
    assert w.grad is not None and float((ps - w.grad).abs().max()) < 1e-12


def test_shot_estimates_are_unbiased_with_the_binomial_variance() -> None:
    rng = np.random.default_rng(8)
    spec = HEASpec(2, 2)
    shots, reps = 200, 4000
    noise = NoiseModel(depolarizing=0.05, amplitude_damping=0.1, readout=0.05, shots=shots)
    w = torch.as_tensor(rng.uniform(0, 6, size=(1,) + spec.weight_shape))
    x = torch.as_tensor(_states(rng, 2, 2))
    f = noisy_hea_expval(w, x[None], spec, noise)[0]  # (2,) exact
    xs = x.repeat(reps, 1)[None]  # each example repeated: reps independent estimates
    est = shot_hea_expval(w, xs, spec, noise, torch.Generator().manual_seed(1))[0].reshape(reps, 2)
    var = (1 - f**2) / shots
    se = torch.sqrt(var / reps)
    assert torch.all((est.mean(0) - f).abs() < 5 * se), (est.mean(0), f)
    assert torch.all((est.var(0) / var - 1).abs() < 0.15)  # sample variance of 4000 draws: ±2.2 % s.d.
    assert set(np.unique(np.round((1 - est.numpy()) * shots / 2, 9))) <= set(range(shots + 1))  # k/S grid


def test_parameter_shift_gradient_with_shots_is_unbiased() -> None:
    rng = np.random.default_rng(9)
    spec = HEASpec(2, 1)
    shots, reps = 100, 3000
    noise = NoiseModel(depolarizing=0.05, amplitude_damping=0.05, readout=0.02, shots=shots)
    w0 = rng.uniform(0, 6, size=(1,) + spec.weight_shape)
    x = torch.as_tensor(_states(rng, 1, 2)).repeat(reps, 1)[None]  # (1, reps, 4)
    w = torch.tensor(w0, requires_grad=True)
    est = shot_hea_expval(w, x, spec, noise, torch.Generator().manual_seed(2))
    (grad_sum,) = torch.autograd.grad(est.sum(), w)
    w_exact = torch.tensor(w0, requires_grad=True)
    noisy_hea_expval(w_exact, x[:, :1], spec, noise).sum().backward()
    assert w_exact.grad is not None
    # per-repetition gradient estimates are (f̂₊ − f̂₋)/2 with Var ≤ 2·(1/S)/4; mean over reps
    se = np.sqrt(0.5 / shots / reps)
    diff = (grad_sum / reps - w_exact.grad).abs()
    assert float(diff.max()) < 5 * se, diff


def test_straight_through_backward_is_the_exact_gradient() -> None:
    rng = np.random.default_rng(10)
    spec = HEASpec(2, 2)
    noise = NoiseModel(depolarizing=0.02, readout=0.01, shots=50, shot_grad="straight-through")
    w0 = rng.uniform(0, 6, size=(1,) + spec.weight_shape)
    x = torch.as_tensor(_states(rng, 3, 2))[None]
    w = torch.tensor(w0, requires_grad=True)
    est = shot_hea_expval(w, x, spec, noise, torch.Generator().manual_seed(3))
    est.sum().backward()
    w_exact = torch.tensor(w0, requires_grad=True)
    exact = noisy_hea_expval(w_exact, x, spec, noise)
    exact.sum().backward()
    assert w.grad is not None and w_exact.grad is not None
    assert torch.allclose(w.grad, w_exact.grad, atol=1e-14)
    assert not torch.allclose(est.detach(), exact.detach())  # the forward value is the shot estimate


def test_noisy_model_shots_are_seeded() -> None:
    noise = NoiseModel(depolarizing=0.01, shots=20)
    x = mnist_qnn().inputs_tensor(np.random.default_rng(0).normal(size=(6, 16)))[None]
    params = torch.as_tensor(mnist_qnn().init_params(0)[None])
    a = noisy_qnn(mnist_qnn(), noise, seed=3).outputs(params, x)
    b = noisy_qnn(mnist_qnn(), noise, seed=3).outputs(params, x)
    c = noisy_qnn(mnist_qnn(), noise, seed=4).outputs(params, x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_spec_parsing_and_errors() -> None:
    n = NoiseModel.parse("depolarizing=0.01, amplitude_damping=0.02,readout=0.03", shots=100)
    assert (n.depolarizing, n.amplitude_damping, n.readout, n.shots) == (0.01, 0.02, 0.03, 100)
    assert NoiseModel.parse("none") == NoiseModel()
    for bad, word in (("depol=0.1", "depolarizing"), ("readout=2", "[0, 1]"), ("readout=x", "number"),
                      ("readout=0.1,readout=0.2", "twice")):
        with pytest.raises(ValueError, match=word):
            NoiseModel.parse(bad)
    with pytest.raises(ValueError, match="shots"):
        NoiseModel(shots=0)
    with pytest.raises(ValueError, match="shot_grad"):
        NoiseModel(shots=5, shot_grad="finite-difference")  # type: ignore[arg-type]


def test_train_with_noise_and_shots(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "magic", "--clients", "2", "--rounds", "1",
                                 "--samples-per-client", "4", "--test-size", "6", "--local-epochs", "1", "--batch-size", "4",
                                 "--noise", "depolarizing=0.01,amplitude_damping=0.01,readout=0.02", "--shots", "64",
                                 "--shot-grad", "straight-through", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["noise"]["depolarizing"] == 0.01 and d["noise"]["shots"] == 64
    assert d["noise"]["shot_grad"] == "straight-through"
    # 8 training circuits + 6 test circuits before and after the round, 64 shots each
    assert d["noise"]["shots_used"] == (8 + 2 * 6) * 64  # loss and labels of a test batch share one measurement
    assert d["model"].endswith("-noisy")


def test_train_noise_refused_for_lenet_and_bad_spec(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "mnist-lenet5", "--noise", "depolarizing=0.1", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "QNN" in r.output
    r = CliRunner().invoke(app, ["train", "--task", "mnist-qnn", "--noise", "dephasing=0.1", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "dephasing" in r.output


def test_qnn_noisy_benchmark_quick_runs() -> None:
    from labqfl.bench import registry

    res = registry()["qnn-noisy"].fn(True)
    assert res.figure > 0 and res.baseline_figure > 0
    assert res.details["max_grad_difference"] < 1e-10
