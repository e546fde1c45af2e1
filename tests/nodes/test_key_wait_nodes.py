"""Training that waits for key over node processes (issue 22 item 3, `labqfl run`'s default path):
the first acquisition over the nodes holds fewer rounds of key than requested, so before the round
that starves the job makes a top-up acquisition over node processes (optics, detector, one per
client) while the FL server node and the SuperNodes wait, then the next segment of rounds trains
from the same model. Keys stay consume-once at both ends across the top-up. The end-to-end run is
the one of tests/mainjob/test_run_nodes.py (it starves on purpose, so one run over the nodes checks
both); here the segment pieces."""

from __future__ import annotations

import pytest


def test_a_flower_segment_names_rounds_inside_the_run():
    from labqfl.errors import ConfigError
    from labqfl.fl.flower.spec import FlowerSpec

    FlowerSpec(rounds=3, first_round=2, last_round=3)
    FlowerSpec(rounds=3, first_round=3)  # last_round 0: to the run's last round
    for first, last in ((0, 2), (3, 2), (2, 4), (4, 0)):
        with pytest.raises(ConfigError, match=f"first_round {first} and last_round {last} must satisfy"):
            FlowerSpec(rounds=3, first_round=first, last_round=last)


class _Net:
    """Stands in for a running :class:`~labqfl.nodes.fl.FlNetwork`: each ``train`` answers as a
    ServerApp would for the spec's rounds, final parameters = [last round]."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[float] | None]] = []
        self.nodes: dict = {}  # no SuperNode has exited (labqfl.nodes.runjob.exited_before_stop asks before each segment)

    def train(self, config: dict, timeout_s: float, init_params: list[float] | None = None) -> dict:
        from labqfl.fl.flower.spec import FlowerSpec

        spec = FlowerSpec.from_config(config)
        self.calls.append((spec.first_round, spec.last_round, init_params))
        rounds = list(range(spec.first_round, spec.last_round + 1))
        return {"rounds": [{"round": r} for r in rounds], "flower": [{"round": r} for r in rounds],
                "final_params": [float(spec.last_round)], "wall_s": 1.5,
                "initial_test_accuracy": spec.first_round / 10, "final_test_accuracy": spec.last_round / 10}


def test_segments_chain_their_parameters_and_rounds():
    from labqfl.fl.flower.spec import FlowerSpec
    from labqfl.nodes.common import NodeError
    from labqfl.nodes.runjob import _train_segments

    net, done = _Net(), []
    spec = FlowerSpec(rounds=5)
    res = _train_segments(net, spec, start_round=2, init_params=[0.5], timeout_s=10.0,
                          before_segment=lambda r: min(r + 1, 5), on_segment=done.append, report=lambda *a: None)
    # a resumed run from round 2: segments 2-3 and 4-5, each from the previous one's final parameters
    assert net.calls == [(2, 3, [0.5]), (4, 5, [3.0])]
    assert [r["round"] for r in res["rounds"]] == [2, 3, 4, 5] and len(done) == 2
    assert res["initial_test_accuracy"] == 0.2 and res["final_test_accuracy"] == 0.5 and res["final_params"] == [5.0]
    assert res["wall_s"] == 3.0 and [(s["first_round"], s["last_round"]) for s in res["segments"]] == [(2, 3), (4, 5)]
    with pytest.raises(NodeError, match="segment from round 1 to round 0"):
        _train_segments(_Net(), spec, start_round=1, init_params=None, timeout_s=10.0,
                        before_segment=lambda r: r - 1, on_segment=None, report=lambda *a: None)
