"""Flower engine: a round whose survivors all have 0 quantisation levels aborts before any key reveal.

The Flower server computes the clients' levels M_i = floor(N·L·w_i/Σw) itself (labqfl.fl.quantize). A
client whose FedAvg weight share is below 1/(N·L) gets M_i = 0; if only such clients survive the mask
stage there is nothing to average, yet the server went on to the reveal (or unmask) stage: the
survivors revealed their pair keys with the lost heavy clients (or their self-mask shares), and the
round then failed at the decode (``total_levels must be positive``). The in-process engine checks
before any reveal (``secure_round``, review s35 F4); now the Flower server does too. Fails on the code
before: a reveal/unmask message went out and the error was a ValueError from the decode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import CFG, labqfl_secagg_mod, node_name, setup_request
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec

NAMES = ["C1", "C2", "C3", "C4"]
#: C1, C2 heavy; C3, C4 at a share 1/20002 < 1/(N·L) = 1/252 (q = 8, b = 6): 0 levels
EXAMPLES = {"C1": 10000, "C2": 10000, "C3": 1, "C4": 1}
N_WORDS = 32


def _app() -> ClientApp:
    rng = np.random.default_rng(2)
    updates = {c: rng.normal(0, 0.3, N_WORDS) for c in NAMES}
    app = ClientApp()

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        _, name = setup_request(msg, context)
        return Message(RecordDict({CFG: ConfigRecord({"name": name, "num_examples": EXAMPLES[name]})}), reply_to=msg)

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        name = node_name(context)
        return Message(RecordDict({"update": ArrayRecord({"update": Array(updates[name])}),
                                   "metrics": MetricRecord({"num_examples": EXAMPLES[name], "train_loss": 0.0})}),
                       reply_to=msg)

    return app


@pytest.mark.parametrize("self_masks", [False, True])
def test_survivors_with_zero_levels_abort_the_round_before_any_reveal(local_grid: Any, self_masks: bool) -> None:
    # (self-masks with threshold 2: the two survivors hold enough shares, so only the levels stop the unmask)
    spec = FlowerSpec(task="mnist-lenet5", clients=4, q=8, rounds=1, keys="csprng", clip=1.0, rounding="nearest",
                      node_wait_s=1.0, self_masks=self_masks, **({"threshold": 2} if self_masks else {}))
    srv = LabqflServer(spec)
    quant = srv.cfg.quantization({c: float(v) for c, v in EXAMPLES.items()})
    assert quant is not None and quant["zero_level_clients"] == ["C3", "C4"]
    # C1 and C2 die after masking: the survivors C3, C4 are enough by number (min_survivors 2), not by levels
    grid = MeddlingGrid(local_grid(_app(), NAMES, crash={"C1": 1, "C2": 1}))
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError) as exc:
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    msg = str(exc.value)
    assert "round 1 aborted before any key reveal: the surviving clients ['C3', 'C4'] all have 0 quantisation " \
           "levels" in msg and "lost after masking: ['C1', 'C2']" in msg, msg
    stages = [s for _, s, _, _ in grid.replies]
    assert "mask" in stages and not {"reveal", "unmask"} & set(stages), stages
    assert {n for n, s, _, _ in grid.replies if s == "abort"} == {"C3", "C4"}  # told to finish their keys
