"""Run records: folder layout, config round trip, metrics, log capture, corrupt files."""

from __future__ import annotations

import json
import logging

import pytest

from labqfl.config import load_station_config
from labqfl.errors import DataFormatError
from labqfl.runs import RUNS_ENV, RunRecord, default_runs_dir, list_runs


def test_create_writes_layout_and_round_trips_config(tmp_path):
    cfg = load_station_config()
    snap = {"laser": {"settings": {"rep_rate_hz": {"value": 1e8, "unit": "Hz"}}}}
    with RunRecord.create("my run!", cfg, tmp_path, snapshot=snap) as rec:
        assert rec.path.parent == tmp_path
        assert rec.name.endswith("-my-run")
        assert (rec.path / "data").is_dir() and (rec.path / "plots").is_dir()
        assert rec.read_config() == cfg
        assert rec.read_snapshot() == snap
        rec.write_metrics({"a": 1})
        rec.update_metrics(b=2.5)
        assert rec.read_metrics() == {"a": 1, "b": 2.5}
        logging.getLogger("labqfl.test").warning("hello from the run")
    text = (rec.path / "run.log").read_text()
    assert "hello from the run" in text
    logging.getLogger("labqfl.test").warning("after close")
    assert "after close" not in (rec.path / "run.log").read_text()
    assert [r.path for r in list_runs(tmp_path)] == [rec.path]


def test_metrics_written_atomically_and_numpy_ok(tmp_path):
    import numpy as np

    rec = RunRecord.create("x", runs_dir=tmp_path, capture_log=False)
    rec.write_metrics({"n": np.int64(3), "f": np.float32(0.5), "arr": np.arange(3), "nan": float("nan")})
    data = json.loads((rec.path / "metrics.json").read_text())
    assert data == {"n": 3, "f": 0.5, "arr": [0, 1, 2], "nan": None}
    assert not list(rec.path.glob("*.tmp"))


def test_corrupt_metrics_and_missing_folder(tmp_path):
    rec = RunRecord.create("x", runs_dir=tmp_path, capture_log=False)
    (rec.path / "metrics.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="corrupt JSON"):
        rec.read_metrics()
    with pytest.raises(DataFormatError, match="not a run folder"):
        RunRecord.open(tmp_path / "absent")


def test_default_location_env(monkeypatch, tmp_path):
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(RUNS_ENV)
    monkeypatch.chdir(tmp_path)
    assert default_runs_dir() == tmp_path / "runs"


def test_refuses_raw_bytes_in_metrics(tmp_path):
    rec = RunRecord.create("x", runs_dir=tmp_path, capture_log=False)
    with pytest.raises(TypeError, match="raw bytes"):
        rec.write_metrics({"key": b"\x01\x02"})


def test_a_runs_folder_that_is_a_file_is_named(tmp_path):
    """`labqfl run/train --out FILE` said "NotADirectoryError: [Errno 20] Not a directory: 'FILE/2026…-run'"."""
    import pytest

    from labqfl.errors import ConfigError
    from labqfl.runs import RunRecord

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"runs folder .*afile: a file, not a folder; expected a folder for run folders"):
        RunRecord.create("run", runs_dir=f)
    assert f.read_text() == "x"
