"""``labqfl run --nodes`` starts its FL nodes (server node, SuperNodes) while the acquisition runs:
:class:`labqfl.nodes.runjob.FlStart` is begun once the acquisition's nodes listen and handed to the
training, and stopped by the job when something fails before the training took it. The node
processes are replaced by recorders here; tests/mainjob/test_run_nodes.py runs the real ones (and
checks that the job's process opens no key store while they train)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.config import load_station_config
from labqfl.mainjob import JobSettings, MainJob


class FakeFlStart:
    """Records what the job does with its FL nodes' start-up."""

    made: list[FakeFlStart] = []

    def __init__(self, cfg: Any, task: str, *, data_dir: Path, server_dir: Path) -> None:
        self.task, self.data_dir, self.server_dir = task, data_dir, server_dir
        self.events: list[str] = []
        FakeFlStart.made.append(self)

    def begin(self) -> FakeFlStart:
        self.events.append("begin")
        return self

    def close(self, log_dir: Path | None = None) -> None:
        self.events.append(f"close {log_dir}")


class Stop(Exception):
    pass


def _fakes(monkeypatch: pytest.MonkeyPatch, *, acquisition_fails: bool = False) -> dict[str, Any]:
    import labqfl.nodes.runjob as runjob

    seen: dict[str, Any] = {}
    FakeFlStart.made = []

    def acquire(cfg: Any, settings: Any, duration_s: float, *, on_start: Any, **kw: Any) -> Any:
        seen["begun_before_nodes_listen"] = [list(f.events) for f in FakeFlStart.made]
        on_start("nodes/test")  # the acquisition's nodes listen: the FL nodes may start
        seen["begun_at_start"] = [list(f.events) for f in FakeFlStart.made]
        if acquisition_fails:
            raise Stop("a node failed")
        return SimpleNamespace(pairs={}, count_rate_series={"t_s": [], "rates_hz": {}}, timeline=[],
                               acquisition_id="nodes/test", path_metrics=lambda: {"path": "nodes"})

    def train(cfg: Any, setup: Any, *, early: Any = None, **kw: Any) -> Any:
        seen["early"] = early
        raise Stop("end of the test")

    monkeypatch.setattr(runjob, "FlStart", FakeFlStart)
    monkeypatch.setattr(runjob, "acquire_over_nodes", acquire)
    monkeypatch.setattr(runjob, "train_over_nodes", train)
    return seen


def _job(small_station_file: Path, tmp_path: Path) -> MainJob:
    cfg = load_station_config(small_station_file)
    return MainJob.create(cfg, JobSettings(duration_s=0.2, rounds=1, eps_sec=1e-4, nodes=True,
                                           data_dir=str(tmp_path / "data")), tmp_path / "runs")


def test_fl_nodes_start_once_the_acquisition_runs_and_go_to_the_training(small_station_file, tmp_path, monkeypatch):
    seen = _fakes(monkeypatch)
    job = _job(small_station_file, tmp_path)
    with pytest.raises(Stop, match="end of the test"):
        job.run()
    (fl,) = FakeFlStart.made
    assert fl.data_dir == tmp_path / "data" and fl.server_dir == job.path / "nodes" / "server"
    assert fl.task == "mnist-qnn"
    assert seen["begun_before_nodes_listen"] == [[]] and seen["begun_at_start"] == [["begin"]]
    # handed to the training, which owns (and stops) it: the job does not close it again
    assert seen["early"] is fl and fl.events == ["begin"]


def test_fl_nodes_started_early_are_stopped_when_the_acquisition_fails(small_station_file, tmp_path, monkeypatch):
    seen = _fakes(monkeypatch, acquisition_fails=True)
    job = _job(small_station_file, tmp_path)
    with pytest.raises(Stop, match="a node failed"):
        job.run()
    (fl,) = FakeFlStart.made
    assert fl.events == ["begin", f"close {job.path / 'nodes'}"] and "early" not in seen
    assert job.state["status"] == "interrupted"


def test_no_early_start_with_the_switch_off(small_station_file, tmp_path, monkeypatch):
    seen = _fakes(monkeypatch)
    monkeypatch.setenv("LABQFL_FL_EARLY_START", "0")
    job = _job(small_station_file, tmp_path)
    with pytest.raises(Stop, match="end of the test"):
        job.run()
    assert FakeFlStart.made == [] and seen["early"] is None
