"""Review s38 G3 and G1 on the server's straggler timeout (``FlowerSpec.straggler_timeout_s``,
``labqfl run --straggler-timeout``).

G3: a client cut off by the straggler timeout was recorded as "no reply within 600.0 s" (the stage timeout)
in ``dropped_reasons``, metrics' ``train.dropouts`` and the report, for a stage that ended after S + a few s;
the reason now names the straggler timeout and the stage.
G1: the straggler timeout also cut off a slow *live* client at the consistency and unmask stages, where any
survivor missing aborts the round (pads spent, job stopped); those stages (and reveal) now wait for it up to
the stage timeout."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

import labqfl.fl.flower.server as server_mod
from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec


class _Grid:
    """Node 1 answers at once; node 2 answers after ``late_s`` (None: never, its node died)."""

    def __init__(self, late_s: float | None) -> None:
        self.late_s = late_s
        self.t0 = 0.0
        self.dst: dict[str, int] = {}

    def push_messages(self, messages: list[Any]) -> list[str]:
        self.t0 = time.monotonic()
        self.dst = {f"m{i}": m.metadata.dst_node_id for i, m in enumerate(messages)}
        return list(self.dst)

    def pull_messages(self, ids: set[str]) -> list[Any]:
        late = time.monotonic() - self.t0
        return [SimpleNamespace(metadata=SimpleNamespace(src_node_id=self.dst[i], reply_to_message_id=i),
                                has_error=lambda: False)
                for i in ids if self.dst[i] == 1 or (self.late_s is not None and late >= self.late_s)]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as a ServerApp's (conftest)


def _server(straggler_s: float) -> LabqflServer:
    return LabqflServer(FlowerSpec(clients=2, self_masks=True, straggler_timeout_s=straggler_s))


def _msgs(srv: LabqflServer, grid: _Grid, stage: str) -> dict[str, Any]:
    from flwr.app import ConfigRecord

    from labqfl.fl.flower.server import CFG

    return {c: srv._msg(grid, node, {CFG: ConfigRecord(srv._base(stage, 1, 3))}, 1)
            for c, node in (("C1", 1), ("C2", 2))}


def test_a_client_cut_off_by_the_straggler_timeout_is_recorded_as_such() -> None:
    srv = _server(0.3)
    grid = _Grid(None)
    ok, fail = srv._exchange(grid, _msgs(srv, grid, "mask"), timeout=600.0)
    assert list(ok) == ["C1"]
    assert fail["C2"].startswith("no reply within the straggler timeout 0.3 s after the last reply (mask stage, ")
    assert "600" not in fail["C2"]


def test_the_stage_timeout_is_still_named_when_it_ended_the_wait() -> None:
    srv = _server(0.0)
    grid = _Grid(None)
    _, fail = srv._exchange(grid, _msgs(srv, grid, "mask"), timeout=0.3)
    assert fail == {"C2": "no reply within 0.3 s"}


def test_a_slow_live_client_is_waited_for_where_a_loss_aborts_the_round() -> None:
    srv = _server(0.2)
    grid = _Grid(0.8)  # answers 0.6 s after the other: past S, well within the stage timeout
    ok, fail = srv._exchange(grid, _msgs(srv, grid, "unmask"), timeout=600.0, straggler=False)
    assert sorted(ok) == ["C1", "C2"] and not fail
    grid = _Grid(0.8)
    ok, fail = srv._exchange(grid, _msgs(srv, grid, "mask"), timeout=600.0)  # the mask stage still cuts it off
    assert list(ok) == ["C1"] and "straggler timeout 0.2 s" in fail["C2"]


def test_the_consistency_stage_does_not_apply_the_straggler_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def spy(grid: Any, messages: list[Any], timeout: float, straggler_s: float = 0.0, **kw: Any) -> list[Any]:
        seen.append(straggler_s)
        return []

    monkeypatch.setattr(server_mod, "send_and_receive", spy)
    srv = _server(5.0)
    with pytest.raises(SecureAggregationError):
        srv._consistency(_Grid(None), 1, 3, {"C1": 1, "C2": 2}, ["C1", "C2"], [], 2, {}, {})
    assert seen == [0.0]
