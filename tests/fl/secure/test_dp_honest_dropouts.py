"""Review s35 F1: distributed DP with H > 1 honest clients assumed needs every one of the plan's N
clients in every round.

σ is sized so that the noise of H honest clients alone gives the guarantee; the N − H colluders know
their own noise. A client missing from the sum (absent before masking, or lost after it) may be an
honest one, leaving H − d honest noises in it: the reported ε would understate the release (N = 4,
H = 2, ε = 16 over 10 rounds: 25.1 if it happens in every round). The old rule (survivors ≥ H)
accepted such rounds. With H = 1 a missing client is fine (if it is the lone honest one, nothing of
its own is in the sum), so those rounds stay accepted.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from labqfl.errors import SecureAggregationError
from labqfl.fl.datasets.tasks import FederatedData
from labqfl.fl.dp import DPConfig, plan_dp
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.models.hea import HEASpec
from labqfl.fl.models.qnn import QNNModel
from labqfl.fl.secure import SecAggConfig, secure_round
from labqfl.fl.training import LocalTrainConfig, run_federated

CLIENTS = ["C1", "C2", "C3", "C4"]
N_PARAMS = 32


def _cfg(honest: int, n_params: int = N_PARAMS) -> SecAggConfig:
    plan = plan_dp(DPConfig(epsilon=16.0, honest=honest), n_params=n_params, n_clients=4, q=32, rounds=10)
    return SecAggConfig(q=32, dp=plan)


def _round(cfg: SecAggConfig, clients: list[str], dropped: list[str], keys: CsprngKeySource | None = None) -> object:
    ups = {c: np.full(N_PARAMS, 0.01 * (i + 1)) for i, c in enumerate(clients)}
    return secure_round(ups, dict.fromkeys(clients, 1.0), cfg, keys or CsprngKeySource(), round_index=1,
                        rng=np.random.default_rng(0), dropped=dropped)


def test_h2_round_with_a_client_lost_after_masking_is_refused_with_the_reason() -> None:
    cfg = _cfg(honest=2)
    assert cfg.survivors_needed == 4
    with pytest.raises(SecureAggregationError) as exc:
        _round(cfg, CLIENTS, dropped=["C3"])
    msg = str(exc.value)
    assert msg.startswith("round 1 aborted: 3 survivor(s) after dropouts ['C3'], all 4 clients of the DP plan needed")
    for why in ("H = 2 honest clients' noise", "H − 1 honest clients' noise", "reported ε understates",
                "--dp-honest 1", "--self-masks does not help"):
        assert why in msg, why


def test_h2_round_with_a_client_absent_before_masking_is_refused_before_any_key_is_spent() -> None:
    keys = CsprngKeySource()
    with pytest.raises(SecureAggregationError, match=r"^round 1 aborted before masking: 3 client\(s\) take part, "
                                                     r"all 4 clients of the DP plan needed"):
        _round(_cfg(honest=2), ["C1", "C2", "C4"], dropped=[], keys=keys)
    assert keys.bits_used == {}


def test_h2_round_with_every_client_and_h1_rounds_with_a_dropout_are_accepted() -> None:
    assert _round(_cfg(honest=2), CLIENTS, dropped=[]).survivors == tuple(CLIENTS)  # type: ignore[attr-defined]
    h1 = _cfg(honest=1)
    assert h1.survivors_needed == 2
    assert _round(h1, CLIENTS, dropped=["C3"]).survivors == ("C1", "C2", "C4")  # type: ignore[attr-defined]
    assert _round(h1, ["C1", "C2", "C4"], dropped=[]).survivors == ("C1", "C2", "C4")  # type: ignore[attr-defined]
    assert SecAggConfig(q=8).survivors_needed == 2  # without DP: min_survivors


def _toy_federation() -> tuple[QNNModel, FederatedData]:
    rng = np.random.default_rng(3)
    parts = []
    for s in (12, 12, 12, 12, 24):
        x = rng.normal(size=(s, 4))
        parts.append((x / np.linalg.norm(x, axis=1, keepdims=True), (x[:, 0] ** 2 > x[:, -1] ** 2).astype(np.int64)))
    data = FederatedData("toy", dict(zip(CLIENTS, parts[:4], strict=True)), parts[4][0], parts[4][1], 2)
    return QNNModel(HEASpec(2, 2), "amplitude", "toy"), data


@pytest.mark.parametrize(("honest", "refused"), [(2, True), (1, False)])
def test_in_process_engine_refuses_an_h2_dp_round_with_a_dropout(honest: int, refused: bool) -> None:
    model, data = _toy_federation()
    cfg = _cfg(honest=honest, n_params=model.n_params)
    kw = {"rounds": 1, "local": LocalTrainConfig(lr=0.1, batch_size=8), "secagg": cfg,
          "key_source": CsprngKeySource(), "seed": 0,
          "secure_round_fn": functools.partial(secure_round, dropped=["C2"])}
    if refused:
        with pytest.raises(SecureAggregationError, match=r"round 1 aborted: 3 survivor\(s\) after dropouts \['C2'\], "
                                                         r"all 4 clients of the DP plan needed"):
            run_federated(model, data, **kw)  # type: ignore[arg-type]
    else:
        res = run_federated(model, data, **kw)  # type: ignore[arg-type]
        assert len(res.rounds) == 1 and res.privacy is not None
