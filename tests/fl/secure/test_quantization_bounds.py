"""Review s35 F3/F4: the stated quantisation-error and effective-weight bounds, derived in
labqfl.fl.quantize's docstring (N_s·c/ΣM_s and N_s/ΣM_s over the clients summed), hold through
secure_round with dropouts and unequal weights, where the old claims (c/L, 1/(N·L)) fail; a client
whose weight share is below 1/(N·L) gets 0 levels, which the plan lists and ``labqfl train`` warns
about; the effective weights are in the round's accounting and the run's summary."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from labqfl.errors import SecureAggregationError
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.quantize import decode_error_bound, effective_weight_bound
from labqfl.fl.secure import SecAggConfig, secure_round

NAMES = ["C1", "C2", "C3", "C4"]


def test_effective_weights_bound_and_zero_levels_of_a_skewed_federation() -> None:
    cfg = SecAggConfig(q=8)  # N = 4: b = 6, L = 63
    plan = cfg.quantization(dict(zip(NAMES, [0.9883, 0.0039, 0.0039, 0.0039], strict=True)))
    assert plan is not None and plan["levels"] == {"C1": 249, "C2": 0, "C3": 0, "C4": 0}
    assert plan["zero_level_clients"] == ["C2", "C3", "C4"]
    # the old claim "within 1/(N·L)" fails; the derived bound (≤ (N−1)/(N·L − N + 1) here) holds
    assert plan["max_weight_error"] == pytest.approx(0.0117, abs=1e-4)
    assert plan["max_weight_error"] > 1 / (4 * 63)
    assert plan["max_weight_error"] <= 3 / (4 * 63 - 3) <= plan["weight_error_bound"]
    problem = cfg.zero_levels_problem(plan)
    assert problem is not None and problem.startswith("client(s) C2, C3, C4 get 0 quantisation levels at q = 8")
    assert "in no round's aggregate" in problem and "A larger q (16 or 32)" in problem
    assert cfg.zero_levels_problem(cfg.quantization(dict.fromkeys(NAMES, 5.0))) is None


@pytest.mark.parametrize("seed", range(12))
def test_decoded_average_is_within_the_derived_bounds_with_dropouts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = [8, 16, 32][seed % 3]
    names = [f"C{i}" for i in range(1, int(rng.integers(3, 9)))]
    w = dict(zip(names, rng.choice([1.0, 3.0, 10.0, 1000.0], len(names)), strict=True))
    cfg = SecAggConfig(q=q, clip=0.5)
    lost = [c for c in names[2:] if rng.random() < 0.4]
    x = {c: rng.uniform(-0.5, 0.5, 200) for c in names}
    r = secure_round(x, w, cfg, CsprngKeySource(), round_index=1, rng=np.random.default_rng(0), dropped=lost)
    plan = cfg.quantization(w)
    assert plan is not None
    surv = list(r.survivors)
    m = np.array([plan["levels"][c] for c in surv])
    eff = np.array([r.effective_weights[c] for c in surv])
    target = np.sum([eff[i] * x[c] for i, c in enumerate(surv)], axis=0)
    assert np.max(np.abs(r.aggregate - target)) <= decode_error_bound(m, 0.5) * (1 + 1e-9)
    fed = np.array([w[c] for c in surv]) / sum(w[c] for c in surv)
    assert np.max(np.abs(eff - fed)) <= effective_weight_bound(m)
    assert r.accounting()["effective_weights"] == r.effective_weights


def test_heavy_clients_lost_break_the_old_c_over_l_bound_not_the_derived_one() -> None:
    """The review's case: weights 10, 10, 1000, 1000 at q = 16 (b = 14), C3 and C4 lost after masking."""
    w = dict(zip(NAMES, [10.0, 10.0, 1000.0, 1000.0], strict=True))
    cfg = SecAggConfig(q=16, clip=1.0)
    x = {c: np.random.default_rng(i).uniform(-1, 1, 2000) for i, c in enumerate(NAMES)}
    r = secure_round(x, w, cfg, CsprngKeySource(), round_index=1, rng=np.random.default_rng(0), dropped=["C3", "C4"])
    err = np.max(np.abs(r.aggregate - (x["C1"] + x["C2"]) / 2))
    c_over_l = 1.0 / (2**14 - 1)
    assert err > 10 * c_over_l
    assert err <= decode_error_bound([324, 324], 1.0) == pytest.approx(50.6 * c_over_l, rel=1e-3)


def test_survivors_with_no_levels_abort_before_any_key_reveal() -> None:
    w = dict(zip(NAMES, [10_000.0, 1.0, 1.0, 1.0], strict=True))
    with pytest.raises(SecureAggregationError, match=r"^round 2 aborted before any key reveal: the surviving clients "
                                                     r"\['C2', 'C3', 'C4'\] all have 0 quantisation levels"):
        secure_round({c: np.zeros(5) for c in NAMES}, w, SecAggConfig(q=8), CsprngKeySource(), round_index=2,
                     rng=np.random.default_rng(0), dropped=["C1"])


def test_labqfl_train_warns_at_planning_and_reports_the_levels(caplog: pytest.LogCaptureFixture) -> None:
    from labqfl.app.training import TrainingSettings, TrainingSetup

    setup = TrainingSetup(TrainingSettings(task="mnist-qnn", clients=4, q=8, non_iid=True, alpha=0.3, seed=0))
    with caplog.at_level(logging.WARNING, logger="labqfl"):
        setup.load_data()
    assert setup.data.sizes() == {"C1": 6, "C2": 3, "C3": 88, "C4": 703}
    plan = setup.quantization
    assert plan is not None and plan["levels"] == {"C1": 1, "C2": 0, "C3": 27, "C4": 221}
    assert plan["zero_level_clients"] == ["C2"]
    assert any(r.getMessage().startswith("client(s) C2 get 0 quantisation levels at q = 8") for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labqfl"):
        TrainingSetup(TrainingSettings(task="mnist-qnn", clients=4, q=16, non_iid=True, alpha=0.3)).load_data()
    assert not [r for r in caplog.records if "quantisation levels" in r.getMessage()]
