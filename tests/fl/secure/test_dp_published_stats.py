"""Review s35 F2: under DP the in-process engine publishes no per-round training loss and no clipped
count (statistics of the clients' private data, outside the accountant), as the Flower engine: the
round's train loss is NaN (null in --json / metrics.json) and its clipped count 0. Without DP both
are reported as before."""

from __future__ import annotations

import json
import math

import numpy as np

from labqfl.fl.datasets.tasks import FederatedData
from labqfl.fl.dp import DPConfig, plan_dp
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.models.hea import HEASpec
from labqfl.fl.models.qnn import QNNModel
from labqfl.fl.secure import SecAggConfig
from labqfl.fl.training import LocalTrainConfig, run_federated
from labqfl.serialize import to_jsonable


def _toy() -> tuple[QNNModel, FederatedData]:
    rng = np.random.default_rng(7)
    parts = []
    for s in (10, 14, 12, 30):
        x = rng.normal(size=(s, 4))
        parts.append((x / np.linalg.norm(x, axis=1, keepdims=True), (x[:, 0] ** 2 > x[:, -1] ** 2).astype(np.int64)))
    return (QNNModel(HEASpec(2, 2), "amplitude", "toy"),
            FederatedData("toy", {"C1": parts[0], "C2": parts[1], "C3": parts[2]}, parts[3][0], parts[3][1], 2))


def _run(secagg: SecAggConfig, model: QNNModel, data: FederatedData) -> dict:
    res = run_federated(model, data, rounds=2, local=LocalTrainConfig(lr=0.2, batch_size=4), secagg=secagg,
                        key_source=CsprngKeySource(), seed=1)
    return json.loads(json.dumps(to_jsonable(res.summary())))  # as --json and metrics.json write it


def test_in_process_dp_run_publishes_no_train_loss_and_no_clipped_count() -> None:
    model, data = _toy()
    # an L2 clip so small that every client is clipped in every round: the count is not published
    plan = plan_dp(DPConfig(epsilon=50.0, l2_clip=1e-3), n_params=model.n_params, n_clients=3, q=32, rounds=2)
    s = _run(SecAggConfig(q=32, dp=plan), model, data)
    assert s["privacy"]["epsilon"] == plan.epsilon
    assert s["train_loss"] == [None, None]
    assert [r["train_loss"] for r in s["rounds"]] == [None, None]
    assert [r["clipped_values"] for r in s["rounds"]] == [0, 0]


def test_run_without_dp_still_reports_train_loss_and_clipped_count() -> None:
    model, data = _toy()
    s = _run(SecAggConfig(q=8, clip=1e-3), model, data)  # a tiny per-value clip: values are clipped
    assert all(isinstance(x, float) and math.isfinite(x) for x in s["train_loss"])
    assert all(r["clipped_values"] > 0 for r in s["rounds"]) and s["privacy"] is None
