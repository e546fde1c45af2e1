"""A deployed node checks its own quantisation levels against the weighted-FedAvg rule over the round's
participants, with sample counts from the operator-signed spec's data partition (review s35 second look F1).

The server chose each client's ``levels`` in the mask message: levels 0 for C2 and C3 (and the fair value
for C1) made the honestly unmasked sum C1's quantised update exactly, in one signed round with no dropout.
Each honest node now refuses any levels but its own fair value, before it trains, masks or records
anything. The refusal tests fail on the code before: every node masked with the server's levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid
from test_spec_replay import N_WORDS, NAMES, _app, _deployed, _spec
from test_spec_replay import certs as certs  # noqa: F401  (the module's fixture)

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.identity import ReplySigner
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.specsig import OPERATOR, sign_spec, spec_record_path


def _server(certs: Path, **kw: Any) -> LabqflServer:
    sp = _spec(rounds=1, min_survivors=3, **kw)
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    return LabqflServer(sp, signed_spec=sign_spec(sp, op, valid_s=600))


@pytest.mark.parametrize("self_masks", [False, True])
def test_zero_levels_for_the_other_clients_are_refused_by_them(
        local_grid: Any, certs: Path, tmp_path: Path, self_masks: bool) -> None:
    """The reviewer's r8: levels 0 to C2 and C3 would make the sum C1's update; C2 and C3 refuse."""
    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if stage == "mask" and node != "C1":
            cfg["levels"] = 0
        return True

    srv = _server(certs, self_masks=self_masks)
    grid = MeddlingGrid(local_grid(_app(), NAMES, node_config=_deployed(certs, tmp_path)), meddle)
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match="round 1 aborted"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    counts = [len(srv.spec.client_data(c)[1]) for c in NAMES]
    fair = srv.cfg.quantization(dict(zip(NAMES, map(float, counts), strict=True)))["levels"]
    for c in ("C2", "C3"):
        err = grid.error_of(c, "mask", 1)
        assert f"the mask message gives {c} quantisation levels 0" in err, err
        assert f"sample counts {counts} from the operator-signed spec's data partition) gives {fair[c]}" in err
        # refused before it masked anything: the round is not recorded as masked
        rec = spec_record_path(tmp_path / c, c).read_text()
        assert '"masked"' not in rec
    assert not grid.error_of("C1", "mask", 1)  # C1's own levels were its fair value


def test_a_level_off_by_one_is_refused_and_honest_levels_pass(local_grid: Any, certs: Path, tmp_path: Path) -> None:
    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if stage == "mask" and node == "C1":
            cfg["levels"] = int(cfg["levels"]) + 1
        return True

    srv = _server(certs)
    grid = MeddlingGrid(local_grid(_app(), NAMES, node_config=_deployed(certs, tmp_path / "a")), meddle)
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match="round 1 aborted"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert "quantisation levels" in grid.error_of("C1", "mask", 1)

    honest = _server(certs)
    grid = MeddlingGrid(local_grid(_app(), NAMES, node_config=_deployed(certs, tmp_path / "b")))
    nodes, weights = honest.connect(grid)
    fr = honest.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert not fr.dropped_before_masking and not fr.dropped_after_masking
