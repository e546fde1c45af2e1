"""``labqfl run --resume DIR`` with a state.json that is valid JSON of the wrong shape (an array, null, no or empty
``settings``, settings of the wrong type, bad phases/attempts) gave AttributeError/KeyError tracebacks, and
``settings: {}`` printed the whole plan before failing (review s36 input F5). Now the shape is checked first: one
DataFormatError naming the file and what was expected, before the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.errors import DataFormatError
from labqfl.mainjob import SCHEMA, STATE_FILE, JobSettings, MainJob


@pytest.fixture
def run_dir(small_station_file: Path, tmp_path: Path) -> Path:
    settings = JobSettings(duration_s=0.015, rounds=2, q=32, eps_sec=1e-4, data_dir=str(tmp_path / "k"))
    job = MainJob.create(load_station_config(small_station_file), settings, tmp_path / "runs")
    job.run_record.close()
    return job.path


def _good(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / STATE_FILE).read_text())


@pytest.mark.parametrize(("case", "expect"), [
    ("array", "holds a JSON list, not an object"),
    ("null", "holds a JSON null, not an object"),
    ("no_settings", "'settings' is None"),
    ("settings_str", "'settings' is 'x'"),
    ("settings_empty", "'settings' is {}"),
    ("settings_partial", "'settings' lacks 'task', 'rounds'"),
    ("rounds_negative", "settings: rounds must be >= 1, got -5"),
    ("rounds_str", "settings: "),
    ("no_phases", "'phases' is None"),
    ("phases_short", "each of acquire, train, report a status"),
    ("attempts_str", "'attempts' is 'x', not an integer >= 0"),
    ("acquisitions_dict", "'acquisitions' is {}, not a list of objects"),
])
def test_a_wrong_shaped_state_is_one_error_naming_the_file(run_dir: Path, case: str, expect: str) -> None:
    good = _good(run_dir)
    doc: Any = {
        "array": [1, 2], "null": None,
        "no_settings": {k: v for k, v in good.items() if k != "settings"},
        "settings_str": {**good, "settings": "x"}, "settings_empty": {**good, "settings": {}},
        "settings_partial": {**good, "settings": {"duration_s": 1.0}},
        "rounds_negative": {**good, "settings": {**good["settings"], "rounds": -5}},
        "rounds_str": {**good, "settings": {**good["settings"], "rounds": "x"}},
        "no_phases": {k: v for k, v in good.items() if k != "phases"},
        "phases_short": {**good, "phases": {"acquire": "done"}},
        "attempts_str": {**good, "attempts": "x"},
        "acquisitions_dict": {**good, "acquisitions": {}},
    }[case]
    (run_dir / STATE_FILE).write_text(json.dumps(doc))
    with pytest.raises(DataFormatError) as ei:
        MainJob.resume(run_dir)
    msg = str(ei.value)
    assert msg.startswith(f"{run_dir / STATE_FILE}: ") and expect in msg and "\n" not in msg, msg


def test_the_good_state_still_resumes(run_dir: Path) -> None:
    job = MainJob.resume(run_dir)
    assert job.settings.rounds == 2 and job.state["schema"] == SCHEMA
    job.run_record.close()


def test_cli_refuses_empty_settings_before_printing_the_plan(run_dir: Path) -> None:
    good = _good(run_dir)
    (run_dir / STATE_FILE).write_text(json.dumps({**good, "settings": {}}))
    r = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines() == [f"error: {run_dir / STATE_FILE}: 'settings' is {{}}, not an object of "
                                             "the run's settings; expected the state a `labqfl run` wrote (the file "
                                             "was edited or is corrupt)"], r.output
