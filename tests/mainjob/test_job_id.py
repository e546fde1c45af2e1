"""The training job's ID (``FlowerSpec.job_id``, signed): kept in ``state.json`` across a ``labqfl run`` folder's
segments and resumes; a new folder records "" (the nodes take the job the training settings give, review s36
F2), one made before keeps its random ID, so that with self-masks every node signs one survivor set per (job, round)
(docs/secure_aggregation.md §9, the consistency stage). The FL node processes are replaced as in
test_resume_nodes.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.config import load_station_config
from labqfl.mainjob import STATE_FILE, JobSettings, MainJob


def test_a_resumed_run_trains_under_the_job_id_of_its_run_folder(small_station_file, tmp_path, monkeypatch):
    import labqfl.nodes.runjob as runjob

    calls: list[dict[str, Any]] = []

    def nodes(cfg: object, setup: object, **kw: Any) -> Any:
        calls.append(kw)
        r = kw["start_round"]
        kw["on_segment"]({"final_params": [0.0] * 24, "rounds": [{"round": r, "test_accuracy": 0.5, "test_loss": 1.0}],
                          "initial_test_accuracy": 0.5, "initial_test_loss": 1.0})
        if len(calls) == 1:
            raise KeyboardInterrupt
        return SimpleNamespace(blocks_used={}, path_metrics=lambda: {"path": "nodes"})

    monkeypatch.setattr(runjob, "train_over_nodes", nodes)
    cfg = load_station_config(small_station_file)
    settings = JobSettings(duration_s=0.015, rounds=2, q=32, eps_sec=1e-4, nodes=True, data_dir=str(tmp_path / "k"))
    job = MainJob.create(cfg, settings, tmp_path / "runs")
    tstate = job.state.setdefault("train", {"rounds_done": 0, "rounds": [], "interrupted_rounds": 0,
                                            "key_waits": [], "round_waits": {}})
    with pytest.raises(KeyboardInterrupt):
        job._train_over_nodes(object(), tstate)
    assert calls[0]["job_id"] == ""  # the nodes take the job the training settings give (review s36 F2)
    assert json.loads((job.path / STATE_FILE).read_text())["fl_job_id"] == ""  # saved before training
    resumed = MainJob.resume(job.path)
    resumed._train_over_nodes(object(), resumed.state["train"])
    assert calls[1]["job_id"] == ""  # the resume signs its specs for the same job
    other = MainJob.create(cfg, settings, tmp_path / "runs")
    other._train_over_nodes(object(), other.state.setdefault("train", dict(tstate, rounds_done=0, rounds=[])))
    assert calls[2]["job_id"] == ""  # another run folder with the same settings: the same job


def test_a_run_folder_that_recorded_a_job_id_keeps_it(small_station_file, tmp_path, monkeypatch):
    """A folder made when labqfl drew a random job ID per folder resumes under that ID (its nodes' pins)."""
    import labqfl.nodes.runjob as runjob

    calls: list[dict[str, Any]] = []

    def nodes(cfg: object, setup: object, **kw: Any) -> Any:
        calls.append(kw)
        return SimpleNamespace(blocks_used={}, path_metrics=lambda: {"path": "nodes"})

    monkeypatch.setattr(runjob, "train_over_nodes", nodes)
    cfg = load_station_config(small_station_file)
    settings = JobSettings(duration_s=0.015, rounds=2, q=32, eps_sec=1e-4, nodes=True, data_dir=str(tmp_path / "k"))
    job = MainJob.create(cfg, settings, tmp_path / "runs")
    job.state["fl_job_id"] = "run-0123456789abcdef"
    job._train_over_nodes(object(), job.state.setdefault("train", {"rounds_done": 0, "rounds": [],
                                                                   "interrupted_rounds": 0, "key_waits": [],
                                                                   "round_waits": {}}))
    assert calls[0]["job_id"] == "run-0123456789abcdef"
