"""``labqfl run`` refuses what it can check cheaply before it makes a run folder or prints its plan: a
corrupt key store in ``--data-dir`` (it was refused in the acquire phase, after both: a run folder left
behind for nothing) and training settings that cannot work. One error line, exit 1, no run folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()
ARGS = ["--duration", "0.2", "--rounds", "2", "--eps-sec", "1e-4"]


@pytest.mark.parametrize("path", ["--in-process", "--nodes"])
def test_a_corrupt_key_store_is_refused_before_the_run_folder(small_station_file: Path, tmp_path: Path,
                                                              path: str) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    store = data / "keystore" / "C1.sqlite"
    store.parent.mkdir(parents=True, mode=0o700)
    store.write_bytes(os.urandom(5000))
    store.chmod(0o600)
    res = runner.invoke(app, ["run", "--config", str(small_station_file), *ARGS, path, "--data-dir", str(data),
                              "--out", str(runs)])
    line = error_line(res)
    assert line.startswith(f"error: key store {store}: corrupt or not an SQLite database"), line
    assert not runs.exists(), "a run folder was made for a refused run"
    assert sorted(p.name for p in store.parent.iterdir()) == ["C1.sqlite"]  # nothing made, nothing reset


def test_training_settings_that_cannot_work_are_refused_before_the_run_folder(small_station_file: Path,
                                                                              tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", "--config", str(small_station_file), *ARGS, "--in-process", "--self-masks",
                              "--threshold", "5", "--data-dir", str(tmp_path / "data"), "--out", str(runs)])
    assert error_line(res).startswith("error: --threshold: self-mask threshold t=5 is invalid"), res.output
    assert not runs.exists(), "a run folder was made for a refused run"
