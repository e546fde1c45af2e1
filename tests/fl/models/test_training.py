"""Federated engine: batched local training equals per-client torch Adam; the loop is seeded."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from labqfl.fl.datasets.tasks import FederatedData
from labqfl.fl.keysource import make_key_source
from labqfl.fl.models.hea import HEASpec
from labqfl.fl.models.qnn import QNNModel
from labqfl.fl.secure import SecAggConfig
from labqfl.fl.training import LocalTrainConfig, evaluate, local_train, local_updates, run_federated


def _toy_data(rng: np.random.Generator, sizes: list[int], n: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for s in sizes:
        x = rng.normal(size=(s, 1 << n))
        y = (x[:, 0] ** 2 > x[:, -1] ** 2).astype(np.int64)
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True), y))
    return out


def _reference_client(model: QNNModel, g: np.ndarray, x: np.ndarray, y: np.ndarray, cfg: LocalTrainConfig, seed: list[int]) -> np.ndarray:
    """One client alone with torch.optim.Adam and the same batch order."""
    p = torch.tensor(g[None].copy(), requires_grad=True)
    opt = torch.optim.Adam([p], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    r = np.random.default_rng(seed)
    xt = model.inputs_tensor(x)
    yt = torch.as_tensor(y)
    for _ in range(cfg.epochs):
        perm = r.permutation(len(y))
        for i in range(0, len(y), cfg.batch_size):
            b = torch.as_tensor(perm[i:i + cfg.batch_size])
            opt.zero_grad()
            model.per_example_loss(p, xt[b][None], yt[b][None]).mean().backward()
            opt.step()
    return p.detach().numpy()[0]


def test_batched_local_training_equals_per_client_adam(rng: np.random.Generator) -> None:
    model = QNNModel(HEASpec(2, 2), "amplitude", "toy")
    data = _toy_data(rng, [7, 12, 3])  # unequal sizes → padded batches and idle clients
    cfg = LocalTrainConfig(epochs=2, lr=0.1, batch_size=4, client_chunk=2)
    g = model.init_params(0)
    seeds = [[5, 1, i] for i in range(3)]
    new, losses = local_train(model, g, data, cfg, seeds)
    for i, (x, y) in enumerate(data):
        ref = _reference_client(model, g, x, y, cfg, seeds[i])
        # Adam divides by √v: last-bit differences of near-zero gradients are amplified, hence 1e-8
        assert np.max(np.abs(new[i] - ref)) < 1e-8
    assert losses.shape == (3,) and np.all(losses >= 0)


def test_updates_are_local_minus_global(rng: np.random.Generator) -> None:
    model = QNNModel(HEASpec(2, 1), "amplitude", "toy")
    data = dict(zip(["C1", "C2"], _toy_data(rng, [5, 5]), strict=True))
    g = model.init_params(1)
    ups, _ = local_updates(model, g, data, LocalTrainConfig(lr=0.1, batch_size=5), seed=3, round_index=1)
    new, _ = local_train(model, g, list(data.values()), LocalTrainConfig(lr=0.1, batch_size=5), [[3, 1, 0], [3, 1, 1]])
    assert np.allclose(ups["C1"], new[0] - g) and ups["C1"].dtype == np.float64


def _plain_average(updates, weights, cfg, key_source, *, round_index, rng, dropped=()):  # type: ignore[no-untyped-def]
    names = list(updates)
    w = np.array([weights[c] for c in names])
    agg = np.average(np.stack([updates[c] for c in names]), axis=0, weights=w)
    return SimpleNamespace(aggregate=agg, key_bits_per_pair={}, key_bits_total=0,
                           upload_bits_per_client=32 * agg.size, baseline_upload_bits_per_client=32 * agg.size,
                           key_source="none")


def _fed_data(rng: np.random.Generator) -> FederatedData:
    parts = _toy_data(rng, [20, 20, 20, 40])
    return FederatedData("toy", {"C1": parts[0], "C2": parts[1], "C3": parts[2]}, parts[3][0], parts[3][1], 2)


def test_federated_loop_learns_and_reports(rng: np.random.Generator) -> None:
    model = QNNModel(HEASpec(2, 2), "amplitude", "toy")
    data = _fed_data(rng)
    seen = []
    res = run_federated(model, data, rounds=4, local=LocalTrainConfig(lr=0.1, batch_size=8), secagg=None,
                        key_source="none", seed=0, progress=seen.append, secure_round_fn=_plain_average)
    assert [m.round for m in seen] == [1, 2, 3, 4]
    assert res.rounds[-1].test_loss < res.initial_loss
    s = res.summary()
    assert s["final_test_accuracy"] == res.rounds[-1].test_accuracy and len(s["test_accuracy"]) == 4


def test_secure_loop_is_seeded_and_counts_bits(rng: np.random.Generator) -> None:
    model = QNNModel(HEASpec(2, 2), "amplitude", "toy")
    data = _fed_data(rng)
    kw = {"rounds": 2, "local": LocalTrainConfig(lr=0.1, batch_size=8),
          "secagg": SecAggConfig(q=8, clip=1.0, rounding="stochastic"), "seed": 4}
    a = run_federated(model, data, key_source=make_key_source("csprng"), **kw)
    b = run_federated(model, data, key_source=make_key_source("csprng"), **kw)
    assert np.array_equal(a.final_params, b.final_params)  # masks differ, they cancel exactly
    s = a.summary()
    assert s["key_source"] == "csprng" and s["pairs"] == 3
    assert s["key_bits_per_pair_per_round"] == 8 * model.n_params
    assert s["upload_bits_per_client_per_round"] == 8 * model.n_params
    assert s["baseline_upload_bits_per_client_per_round"] == 32 * model.n_params
    assert s["communication_saving"] == pytest.approx(0.75)


def test_evaluate_counts_accuracy() -> None:
    model = QNNModel(HEASpec(1, 1), "amplitude", "toy")
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss, acc = evaluate(model, np.zeros(2), x, np.array([0, 1]))  # identity circuit: ⟨Z⟩ = ±1
    assert acc == 1.0 and loss == pytest.approx(0.0, abs=1e-12)
