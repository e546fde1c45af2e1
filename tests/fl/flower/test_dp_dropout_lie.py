"""DP with H > 1 honest clients needs every client in the sum: a node refuses a reveal or unmask message
that names a dropped client (review s35 second look F3).

The nodes enforced it only on the mask message's participants. A server that skipped its own survivors
check let all N mask, then claimed C1 was lost after masking: C2 and C3 answered the unmask (self-masks)
or the reveal (no self-masks), and the server decoded a sum carrying H − 1 honest noises (without
self-masks it also had C1's upload with only its own noise share). These tests fail on the code before:
C2 and C3 answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid, spec_examples
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from test_spec_replay import NAMES, _deployed, _spec
from test_spec_replay import certs as certs  # noqa: F401  (the module's fixture)

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import (
    CFG,
    labqfl_identity_mod,
    labqfl_secagg_mod,
    node_name,
    setup_request,
)
from labqfl.fl.flower.identity import ReplySigner
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.specsig import OPERATOR, sign_spec


def _app(n: int) -> ClientApp:
    rng = np.random.default_rng(9)
    updates = {c: rng.normal(0, 0.002, n) for c in NAMES}
    app = ClientApp(mods=[labqfl_identity_mod])

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        _, name = setup_request(msg, context)
        return Message(RecordDict({CFG: ConfigRecord({"name": name, "num_examples": spec_examples(msg, name)})}),
                       reply_to=msg)

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(updates[node_name(context)])}),
                                   "metrics": MetricRecord({"num_examples": 1, "train_loss": 0.0})}), reply_to=msg)

    return app


class _NoSurvivorCheck:
    """A malicious server's config: it skips its own survivors check (the nodes keep theirs)."""

    def __init__(self, cfg: Any) -> None:
        self._c = cfg

    def __getattr__(self, k: str) -> Any:
        return getattr(self._c, k)

    def too_few_survivors(self, n: int) -> None:
        return None


@pytest.mark.parametrize("self_masks", [True, False])
def test_a_dropout_claimed_after_masking_under_dp_with_h2_is_refused_before_anything_is_revealed(
        local_grid: Any, certs: Path, tmp_path: Path, self_masks: bool) -> None:
    # colluders 0: need 2 of 3, so the one dropout reaches the DP check (the default t - 1 needs all 3)
    sp = _spec(dp_epsilon=1.0, q=32, rounds=1, dp_honest=2, self_masks=self_masks, colluders=0)
    assert sp.secagg().survivors_needed == 3
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    srv = LabqflServer(sp, signed_spec=sign_spec(sp, op, valid_s=600))
    srv.cfg = _NoSurvivorCheck(srv.cfg)  # type: ignore[assignment]
    grid = MeddlingGrid(local_grid(_app(int(sp.model().n_params)), NAMES, node_config=_deployed(certs, tmp_path),
                                   crash={"C1": 1}))
    nodes, weights = srv.connect(grid)
    # with self-masks a deployed node already refuses to sign the survivor set (the consistency stage before
    # unmask, test_consistency.py): no unmask message leaves the server
    stage = "consistency" if self_masks else "reveal"
    with pytest.raises(SecureAggregationError, match="did not sign" if self_masks else "survivors failed to reveal"):
        srv.round(grid, 1, np.zeros(int(sp.model().n_params)), nodes, weights)
    assert not [n for n, s, _, rep in grid.replies if s == "unmask"]
    for c in ("C2", "C3"):
        err = grid.error_of(c, stage, 1)
        assert f"the {stage} message to {c} names dropped client(s) ['C1'] (2 of 3 surviving) under a DP plan " \
               "with H = 2: all 3 clients of the DP plan needed" in err, err
    assert not [n for n, s, _, rep in grid.replies if s == stage and not rep.has_error()]  # nothing revealed


def test_with_h1_a_dropout_after_masking_still_recovers(local_grid: Any, certs: Path, tmp_path: Path) -> None:
    sp = _spec(dp_epsilon=1.0, q=32, rounds=1, dp_honest=1, self_masks=True, colluders=0)  # need 2 of 3
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    srv = LabqflServer(sp, signed_spec=sign_spec(sp, op, valid_s=600))
    grid = MeddlingGrid(local_grid(_app(int(sp.model().n_params)), NAMES, node_config=_deployed(certs, tmp_path),
                                   crash={"C1": 1}))
    nodes, weights = srv.connect(grid)
    fr = srv.round(grid, 1, np.zeros(int(sp.model().n_params)), nodes, weights)
    assert fr.dropped_after_masking == ["C1"] and np.all(np.isfinite(fr.aggregate))
