"""A client lost before a Flower run starts (review s37, left open in session 37): ``labqfl run`` over nodes trains
in segments between waits for key, one Flower run each, and a SuperNode killed in an earlier segment made the next
segment's server wait ``node_wait_s`` (300 s) for it at its start and then fail the job. Now the job names such
clients in the spec's ``absent``: the server starts without them and counts them dropped before masking, as a
round of the same Flower run does; and where the rounds cannot complete without them, the job stops at once with
one line (:func:`labqfl.nodes.runjob._clients_lost`). A self-mask round with too few clients to sign a survivor
set is refused before masking, not after every pad of the round is spent (the consistency stage's abort)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from test_consistency import N_WORDS, _grid, _quantized_sum, _server

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.quantize import dequantize_sum
from labqfl.nodes.common import NodeError


def test_a_client_lost_before_the_run_is_not_waited_for_and_is_dropped_before_masking(
        local_grid: Any, ring_certs: dict[str, Path], tmp_path: Path) -> None:
    from labqfl.fl.flower.server import LOST_BEFORE_RUN

    srv = _server(ring_certs, colluders=0, absent="C3", node_wait_s=30.0)  # need 2 of 3: C3 may be missing
    grid = _grid(local_grid, ring_certs, tmp_path, names=["C1", "C2"])  # C3's node is gone
    t0 = time.monotonic()
    nodes, weights = srv.connect(grid)
    assert time.monotonic() - t0 < 10.0 and sorted(nodes) == ["C1", "C2"]
    fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_before_masking == ["C3"] and fr.participants == ["C1", "C2"] and not fr.dropped_after_masking
    assert fr.dropped_reasons == {"C3": LOST_BEFORE_RUN}
    total, levels = _quantized_sum(grid, ["C1", "C2"])
    assert np.array_equal(fr.aggregate, dequantize_sum(total, clip=1.0, total_levels=levels))
    assert grid.mask_cfgs[("C1", 1)]["participants"] == ["C1", "C2"]


def test_a_self_mask_round_too_small_to_sign_its_survivor_set_is_refused_before_masking(
        local_grid: Any, ring_certs: dict[str, Path], tmp_path: Path) -> None:
    """Default c = t − 1 = 1 at N = 3: every round needs all 3. C3 answers nothing from the keys stage on: before,
    C1 and C2 masked (their pads of the round spent) and the round was aborted at the consistency stage."""
    srv = _server(ring_certs)
    grid = _grid(local_grid, ring_certs, tmp_path, lambda node, stage, r, cfg: not (node == "C3" and stage != "setup"))
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match=r"round 1 aborted before masking: 2 client\(s\) \['C1', 'C2'\] can "
                                                     r"take part; a deployed self-mask round needs 3 = max\(t, "):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert not grid.mask_cfgs, "a mask message was sent"
    assert [s for n, s, r, rep in grid.replies if n == "C1"] == ["setup", "keys", "abort"]


def test_a_client_lost_at_a_later_runs_start_is_left_out_after_missing_ok_after_s(
        local_grid: Any, ring_certs: dict[str, Path], tmp_path: Path) -> None:
    """A SuperNode killed right at a segment's start (an e2e run: during the top-up's last second) is not yet known
    to have exited when the job names the absent clients; the server waited node_wait_s (300 s) for it and failed."""
    from labqfl.fl.flower.server import MISSING_AT_START

    srv = _server(ring_certs, colluders=0, node_wait_s=30.0, missing_ok_after_s=0.5)
    grid = _grid(local_grid, ring_certs, tmp_path, names=["C1", "C2"])
    t0 = time.monotonic()
    nodes, weights = srv.connect(grid)
    assert 0.5 < time.monotonic() - t0 < 10.0 and sorted(nodes) == ["C1", "C2"]
    fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_before_masking == ["C3"] and fr.dropped_reasons == {"C3": MISSING_AT_START}
    short = _server(ring_certs, node_wait_s=30.0, missing_ok_after_s=0.5)  # default c: every round needs 3 of 3
    t0 = time.monotonic()
    with pytest.raises(SecureAggregationError, match=r"no SuperNode answered as client\(s\) \['C3'\] within \d+ s of "
                                                     r"this Flower run's start .* cannot go on without them: 2 client"):
        short.connect(_grid(local_grid, ring_certs, tmp_path, names=["C1", "C2"]))
    assert time.monotonic() - t0 < 10.0


# ------------------------------------------------------------------ labqfl run's segments (the job's side)
class _Net:
    """The FL nodes of a job: C3's SuperNode is killed during the first segment's Flower run."""

    def __init__(self) -> None:
        self.nodes = {k: SimpleNamespace(proc=SimpleNamespace(poll=lambda: None))
                      for k in ("server", "supernode-C1", "supernode-C2", "supernode-C3", "supernode-C4")}
        self.configs: list[dict[str, Any]] = []

    def train(self, config: dict[str, Any], timeout_s: float, init_params: Any = None) -> dict[str, Any]:
        self.configs.append(config)
        self.nodes["supernode-C3"].proc = SimpleNamespace(poll=lambda: -9)
        first, last = int(config["spec.first_round"]), int(config["spec.last_round"])
        return {"rounds": [{"round": r} for r in range(first, last + 1)], "flower": [], "wall_s": 1.0,
                "final_params": [0.0]}


def _job_spec(**kw: Any) -> FlowerSpec:
    return FlowerSpec(task="mnist-lenet5", clients=4, q=8, rounds=4, keys="qkd", self_masks=True, **kw)


def test_the_next_segment_goes_on_without_a_client_lost_in_the_one_before() -> None:
    from labqfl.nodes.runjob import _train_segments

    net, segments = _Net(), iter([2, 4])
    res = _train_segments(net, _job_spec(colluders=0), start_round=1, init_params=None, timeout_s=60.0,
                          before_segment=lambda r: next(segments), on_segment=None, report=lambda *a: None)
    assert [c["spec.absent"] for c in net.configs] == ["", "C3"]
    assert [c["spec.missing_ok_after_s"] for c in net.configs] == [0.0, 60.0]  # the first segment's nodes just started
    assert [r["round"] for r in res["rounds"]] == [1, 2, 3, 4]
    assert FlowerSpec.from_config(net.configs[1]).absent_names == ["C3"]


def test_a_segment_that_cannot_complete_without_the_lost_client_stops_at_once_with_one_line() -> None:
    """Default c at N = 4 (c = 2): every round needs 4 of 4. The job stops before the next segment's wait for key,
    naming C3, its exit code, the reason and what is kept."""
    from labqfl.nodes.runjob import _train_segments

    net, asked = _Net(), []

    def before(r: int) -> int:
        asked.append(r)
        return 2 if r == 1 else 4

    with pytest.raises(NodeError) as err:
        _train_segments(net, _job_spec(), start_round=1, init_params=None, timeout_s=60.0, before_segment=before,
                        on_segment=None, report=lambda *a: None)
    msg = str(err.value)
    assert "\n" not in msg and asked == [1] and len(net.configs) == 1
    assert msg.startswith("training over nodes stopped before round 3: client(s) C3 lost during training "
                          "(SuperNode exit code(s) C3 -9)"), msg
    assert "needs 4 = max(t, min_survivors" in msg and "Rounds 1-2 are trained and checkpointed (kept)" in msg
    assert "`labqfl run --resume` continues from round 3" in msg


def test_absent_names_only_clients_of_the_run() -> None:
    from labqfl.errors import ConfigError

    assert _job_spec(absent="C4,C2").absent_names == ["C2", "C4"]
    with pytest.raises(ConfigError, match=r"absent 'C9': \['C9'\] not among the clients"):
        _job_spec(absent="C9")
    # the server's logistics: unsigned, and not part of the derived job (a segment without C3 is the same job)
    from labqfl.fl.flower.specsig import spec_settings

    assert "absent" not in spec_settings(_job_spec(absent="C3"))
    assert _job_spec(absent="C3").derived_job_id() == _job_spec().derived_job_id()
