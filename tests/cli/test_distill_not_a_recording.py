"""``labqfl distill`` given a run folder or a run's metrics.json says what it reads (review s36 F20): click said
only "is a directory", and metrics.json gave "not a readable HDF5 file (… file signature not found)". Now one line
names the recording ``labqfl acquire --out`` writes, and the recording a folder holds, if it holds one."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "20261207T050059.017454Z-run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"status": "complete"}', encoding="utf-8")
    return run


def test_a_run_folder_is_refused_naming_what_distill_reads(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    line = error_line(runner.invoke(app, ["distill", str(run), "--data-dir", str(tmp_path / "d")]))
    assert f"{run} is a folder, not a recording" in line
    assert "`labqfl acquire --out FILE.h5`" in line and "a run folder holds no recording" in line


def test_a_metrics_json_is_refused_naming_what_distill_reads(tmp_path: Path) -> None:
    metrics = _run_folder(tmp_path) / "metrics.json"
    line = error_line(runner.invoke(app, ["distill", str(metrics), "--data-dir", str(tmp_path / "d")]))
    assert f"{metrics} is not a recording (a run's summary)" in line
    assert "`labqfl acquire --out FILE.h5`" in line and "HDF5" not in line.split("is not a recording")[0]


def test_a_folder_holding_a_recording_names_it(tmp_path: Path) -> None:
    rec = tmp_path / "rec.h5"
    rec.write_bytes(b"")  # its name is enough to point at it
    line = error_line(runner.invoke(app, ["distill", str(tmp_path), "--data-dir", str(tmp_path / "d")]))
    assert f"this folder holds one: `labqfl distill {rec}`" in line


def test_a_corrupt_h5_file_keeps_its_own_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5", encoding="utf-8")
    line = error_line(runner.invoke(app, ["distill", str(bad), "--data-dir", str(tmp_path / "d")]))
    assert "not a readable HDF5 file" in line and "is not a recording" not in line
