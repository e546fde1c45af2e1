"""Distributed DP on the Flower engine (in-process Grid): the same plan and the same ε accounting as
the in-process engine for the same settings, and the clients' discrete Gaussian noise present in
the aggregate with the variance the plan promises (chi-square, through self-masks and a dropout)."""

from __future__ import annotations

import dataclasses

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from labqfl.fl.dp import DPConfig, DPPlan, plan_dp
from labqfl.fl.flower.client import make_client_app, train_update
from labqfl.fl.flower.engine import dp_spec_fields
from labqfl.fl.flower.server import LabqflServer, flower_summary
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.training import run_federated


def test_flower_dp_reports_the_same_epsilon_as_the_in_process_engine(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=32, rounds=3, keys="csprng", seed=2,
                               dp_epsilon=6.0, dp_delta=1e-6, dp_honest=2)
    plan = spec.dp_plan()
    # the plan is plan_dp with the settings `labqfl train --dp-epsilon 6 --dp-delta 1e-6 --dp-honest 2` uses
    assert plan == plan_dp(DPConfig(epsilon=6.0, delta=1e-6, honest=2, l2_clip=spec.clip),
                           n_params=spec.model().n_params, n_clients=4, q=32, rounds=3)
    assert DPPlan.from_dict(plan.as_dict()) == plan
    srv = LabqflServer(spec)
    res = srv.run(local_grid(make_client_app(), spec.names))
    local = run_federated(spec.model(), spec.data(), rounds=3, local=spec.local(), secagg=spec.secagg(),
                          key_source=CsprngKeySource(), seed=spec.seed)
    assert res.privacy == local.privacy == plan.privacy()
    flower_eps = [m.privacy_epsilon_spent for m in res.rounds]
    assert flower_eps == [m.privacy_epsilon_spent for m in local.rounds]
    assert [f["privacy_epsilon_spent"] for f in flower_summary(srv.rounds)] == flower_eps
    for r, eps in enumerate(flower_eps, start=1):  # the accountant library's own number, round by round
        acc = dp_accounting.rdp.RdpAccountant()
        acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1 / plan.epsilon_round_zcdp), r))
        assert eps == acc.get_epsilon(1e-6)
    assert flower_eps[0] < flower_eps[1] < flower_eps[2] == res.privacy["epsilon"] <= 6.0
    # uploads are the padded d' words of q bits, and the key follows the words
    assert res.rounds[0].upload_bits_per_client == 32 * plan.d_pad
    assert srv.rounds[0].key_bits_per_pair == 32 * plan.d_pad


def test_flower_dp_noise_enters_the_aggregate_with_the_planned_variance(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=6, q=32, rounds=1, keys="csprng", seed=4,
                               graph="ring-4", self_masks=True, dp_epsilon=8.0)
    plan = spec.dp_plan()
    srv = LabqflServer(spec)
    srv.run(local_grid(make_client_app(), spec.names, crash={"C3": 1}))
    fr = srv.rounds[0]
    assert fr.dropped_after_masking == ["C3"] and fr.self_masks
    survivors = [c for c in spec.names if c != "C3"]
    g = spec.model().init_params(spec.seed)
    clipped = []
    for c in survivors:  # each survivor's update, L2-clipped as the mechanism clips it
        u, _, _ = train_update(spec, c, g, 1)
        clipped.append(u * min(1.0, plan.l2_clip / float(np.linalg.norm(u))))
    residual = fr.aggregate - np.mean(clipped, axis=0)
    # the aggregate is the survivors' mean plus γ/N_s times the rotated sum of their N_s noise vectors
    # (variance σ² per word; the rounding adds ≤ 1/4 per word, 10^-16 of σ² here); the rotation is
    # orthonormal, so each of the P coordinates has variance γ²σ²/N_s and Σ residual²/var is χ²(P)
    var = plan.gamma**2 * plan.sigma**2 / len(survivors)
    t = float(np.sum(residual**2) / var)
    dof = plan.n_params
    assert stats.chi2.sf(t, dof) > 1e-6, f"noise too large: χ² = {t:.1f} with {dof} dof"
    assert stats.chi2.cdf(t, dof) > 1e-6, f"noise missing or too small: χ² = {t:.3g} with {dof} dof"


def test_flower_dp_settings_are_checked(mnist_dir) -> None:
    from labqfl.errors import ConfigError

    with pytest.raises(ConfigError, match="dp_epsilon and dp_clip must be ≥ 0"):
        FlowerSpec(task="mnist-qnn", dp_epsilon=-1.0)
    with pytest.raises(ConfigError, match="bit budget too small for DP"):
        FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=50, dp_epsilon=0.01).dp_plan()
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=32, dp_epsilon=3.0)
    assert dataclasses.replace(spec, dp_epsilon=0.0).dp_plan() is None and spec.dp_plan() is not None
    assert FlowerSpec.from_config(spec.to_config()).dp_plan() == spec.dp_plan()  # the plan survives the message
    # `labqfl train --engine flower --dp-epsilon …` hands run_federated_flower the CLI's plan: the
    # spec fields rebuild exactly that plan on the Flower side
    cli_plan = plan_dp(DPConfig(epsilon=3.0, delta=1e-6, honest=2, l2_clip=0.5), n_params=spec.model().n_params,
                       n_clients=4, q=32, rounds=2)
    rebuilt = dataclasses.replace(spec, rounds=2, **dp_spec_fields(cli_plan))
    assert rebuilt.dp_plan() == cli_plan and dp_spec_fields(None) == {}


def test_flower_dp_round_with_fewer_survivors_than_the_honest_clients_assumed_is_aborted(local_grid, mnist_dir) -> None:
    """The Flower server refuses, like the in-process engine, a DP round that lost a client when H > 1
    (σ is sized for H honest clients' noise; 4 clients, H = 3, one lost after masking: review s35 F1)."""
    from labqfl.errors import SecureAggregationError

    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=32, rounds=1, keys="csprng", seed=3,
                               dp_epsilon=8.0, dp_honest=3)
    srv = LabqflServer(spec)
    with pytest.raises(SecureAggregationError, match=r"round 1 aborted: 3 survivor\(s\) after dropouts \['C3'\], "
                                                     r"all 4 clients of the DP plan needed: its noise is sized for H = 3"):
        srv.run(local_grid(make_client_app(), spec.names, crash={"C3": 1}))
