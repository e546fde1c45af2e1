"""CLI review s32, low findings L2, L7, L8 and L10.

L2: one name per idea (``calibrate apply --out``, ``-d`` only for ``--duration``, ``plan
--self-masks/--no-self-masks``, ``keys preshare --pair C2-C1`` as keyrate reads it, ``$LABQFL_DATA_DIR``
declared by train and gui, benchmark names with ``-`` or ``_``). L7: ``station make`` on a loop without
key. L8: ``keyrate -n 1e300``. L10: output paths refused before any instrument is opened."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import typer.main
from cli_helpers import error_line, json_doc
from labqfl.calibration import SCHEMA_VERSION, write_calibration
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config

runner = CliRunner()
COMMAND = typer.main.get_command(app)


def _command(*path: str) -> click.Command:
    cmd: click.Command = COMMAND
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


def _param(path: tuple[str, ...], name: str) -> click.Parameter:
    return next(p for p in _command(*path).params if p.name == name)


def _parsed(path: tuple[str, ...], argv: list[str]) -> dict[str, Any]:
    """The parsed parameters of ``labqfl PATH ARGV`` (nothing runs)."""
    with _command(*path).make_context(" ".join(path), list(argv)) as ctx:
        return dict(ctx.params)


# -- L2: names ----------------------------------------------------------------------------------------
def _calibration(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.json"
    write_calibration(path, {"kind": "labqfl-calibration", "schema_version": SCHEMA_VERSION,
                             "station": "sagnac-4client-sim", "simulated": True,
                             "quantities": {"D0.efficiency": {"value": 0.7, "uncertainty": 0.01, "unit": "",
                                                              "procedure": "hand"}}})
    return path


@pytest.mark.parametrize("option", ["--out", "-o", "--output"])
def test_calibrate_apply_writes_to_out_and_its_old_name_output(tmp_path: Path, option: str) -> None:
    out = tmp_path / "new.toml"
    data = json_doc(runner.invoke(app, ["calibrate", "apply", str(_calibration(tmp_path)), option, str(out), "--json"]))
    assert data["applied"] == ["D0.efficiency"] and load_station_config(out).detectors["D0"].efficiency == 0.7


def test_calibrate_apply_help_names_out_and_refuses_two_different_files(tmp_path: Path) -> None:
    opts = [o for p in _command("calibrate", "apply").params if not getattr(p, "hidden", False) for o in p.opts]
    assert "--out" in opts and "-o" in opts and "--output" not in opts
    cal = _calibration(tmp_path)
    line = error_line(runner.invoke(app, ["calibrate", "apply", str(cal), "--out", str(tmp_path / "a.toml"),
                                          "--output", str(tmp_path / "b.toml")]))
    assert "two files" in line and "--out only" in line
    assert "--out FILE" in error_line(runner.invoke(app, ["calibrate", "apply", str(cal)]))
    assert not list(tmp_path.glob("*.toml"))


def test_short_d_is_duration_in_help_and_still_reads_a_detector_in_calibrate() -> None:
    for path in (("acquire",), ("distill",)):
        assert "-d" in _param(path, "duration").opts
    listed = [o for p in _command("calibrate", "detector").params if not getattr(p, "hidden", False) for o in p.opts]
    assert "--detector" in listed and "-d" not in listed
    assert list(_parsed(("calibrate", "detector"), ["-d", "D1"])["detector_short"]) == ["D1"]  # old scripts still run


def test_calibrate_detector_refuses_an_unknown_detector_in_one_line(tmp_path: Path) -> None:
    line = error_line(runner.invoke(app, ["calibrate", "detector", "--detector", "D2", "--out", str(tmp_path)]))
    assert line == "error: --detector must be D0 or D1, got D2"


def test_plan_self_masks_is_a_switch_as_in_run_and_train() -> None:
    for path in (("plan",), ("run",), ("train",)):
        assert _parsed(path, ["--self-masks"])["self_masks"] is True
        assert _parsed(path, ["--no-self-masks"])["self_masks"] is False


def test_keys_preshare_reads_c2_c1_as_the_station_pair_c1_c2(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.random.default_rng(5).integers(0, 256, 64, dtype=np.uint8).tobytes())
    data = json_doc(runner.invoke(app, ["keys", "preshare", "--pair", "C2-C1", "--file", str(secret), "--json"],
                                  env={"LABQFL_DATA_DIR": str(tmp_path / "data")}))
    assert data["pair"] == "C1-C2" and data["auth_available_bits"] == {"C1": 512, "C2": 512}


@pytest.mark.parametrize("path", [("train",), ("gui",), ("run",), ("acquire",), ("distill",), ("keys", "status")])
def test_every_data_dir_declares_labqfl_data_dir(path: tuple[str, ...]) -> None:
    p = _param(path, "data_dir")
    assert isinstance(p, click.Option) and p.envvar == "LABQFL_DATA_DIR"


def test_train_reads_labqfl_data_dir_without_warning_about_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$LABQFL_DATA_DIR is the default data dir: a csprng run is not warned that its --data-dir is unused."""
    from labqfl.app import training
    from labqfl.errors import LabqflError

    seen: list[Any] = []

    def prepare(settings: Any) -> Any:
        seen.append(settings)
        raise LabqflError("stopped by the test")

    monkeypatch.setattr(training.TrainingSetup, "prepare", staticmethod(prepare))
    (tmp_path / "env").mkdir()
    r = runner.invoke(app, ["train", "--clients", "2", "--keys", "csprng"], env={"LABQFL_DATA_DIR": str(tmp_path / "env")})
    assert r.exit_code == 1 and "stopped by the test" in r.output and "warning" not in r.output, r.output
    assert seen[-1].keystore_dir is None  # the stores' default data dir, which is $LABQFL_DATA_DIR


@pytest.mark.parametrize(("argv", "given"), [([], False), (["--data-dir"], True)])
def test_gui_screenshot_keeps_its_temporary_store_unless_data_dir_is_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], given: bool) -> None:
    """$LABQFL_DATA_DIR is gui's default data dir now; a screenshot's simulated keys still stay out of it."""
    import labqfl.gui.app

    seen: dict[str, Any] = {}

    def take(path: Path, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {"screenshots": [], "errors": []}

    monkeypatch.setattr(labqfl.gui.app, "screenshot", take)
    env_dir = tmp_path / "env"
    argv = [*argv, str(env_dir)] if argv else []
    json_doc(runner.invoke(app, ["gui", "--screenshot", str(tmp_path / "g.png"), *argv, "--json"],
                           env={"LABQFL_DATA_DIR": str(env_dir)}))
    assert seen["data_dir"] == (env_dir if given else None)


def test_train_engine_help_says_it_is_not_the_error_correction() -> None:
    assert "Federated-learning engine" in (_param(("train",), "engine").help or "")


def test_benchmark_names_read_with_either_separator(tmp_path: Path) -> None:
    data = json_doc(runner.invoke(app, ["bench", "station_startup", "--quick", "--json"]))
    assert list(data["results"]) == ["station-startup"]
    assert "unknown benchmark" in error_line(runner.invoke(app, ["bench", "station_startu"]))


# -- L7: station make on a loop without key ---------------------------------------------------------
def test_pair_loss_is_finite_when_the_transmission_underflows() -> None:
    from labqfl.config import parse_station_config
    from labqfl.planning import _loss_db, _station_dict

    names = ["C1", "C2", "C3", "C4"]
    cfg = parse_station_config(_station_dict(names, [("C1", "C2")], loop_km=5e5, graph="all", k=0,
                                             insertion_loss_db=0.5), "test")
    # C1-C2: CW 4 segments of 1e5 km (the station file's longest segment) + C2..C4 + node, CCW 2 segments + C1 + node, at 0.2 dB/km
    expected = 0.2 * 6 * 1e5 + 0.5 * 4 + 2 * cfg.loop.node_loss_db
    assert _loss_db(cfg, "C1", "C2") == pytest.approx(expected, rel=1e-12)
    near = parse_station_config(_station_dict(names, [("C1", "C2")], loop_km=10.0, graph="all", k=0,
                                              insertion_loss_db=0.5), "test")
    assert _loss_db(near, "C1", "C2") == pytest.approx(0.2 * 6 * 2 + 0.5 * 4 + 2 * near.loop.node_loss_db)


def test_station_make_refuses_a_loop_where_no_pair_makes_key(tmp_path: Path) -> None:
    out = tmp_path / "far.toml"
    line = error_line(runner.invoke(app, ["station", "make", "--clients", "4", "--loop-km", "5e5", "-o", str(out)]))
    assert "no pair of the station makes key at any block size" in line and "120,004.0" in line, line
    assert "inf" not in line and "loops up to about" in line and "nothing written" in line
    limit = float(line.split("up to about ")[1].split(" km")[0])
    assert 150 < limit < 400 and not out.exists()


# -- L8: keyrate -n 1e300 ---------------------------------------------------------------------------
def test_keyrate_refuses_a_block_size_beyond_any_acquisition() -> None:
    line = error_line(runner.invoke(app, ["keyrate", "-n", "1e300", "--pair", "C1-C2"]))
    assert "--block-size must be a number of slots in [1, 1e+16], got 1e+300" in line
    assert "Warning" not in line


def test_kato_parameter_at_its_limit_warns_nothing() -> None:
    from labqfl.qkd.finite_key import kato_a

    n = 1e18  # A = 1 + L·κ² rounds to 1: A − s² = 0 at s = ±1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = kato_a(n, 1e-10, np.array([0.0, n]), 1.0)
    assert np.all(np.isfinite(a)) and np.allclose(np.abs(a), 0.45 * math.sqrt(n))


# -- L10: output paths before instruments -----------------------------------------------------------
@pytest.fixture
def no_instruments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the station (acquire, distill --live) or running a calibration fails the test."""
    import labqfl.app.calibrate
    import labqfl.cli.acquire
    import labqfl.cli.distill

    def opened(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("an instrument was opened before the output path was checked")

    monkeypatch.setattr(labqfl.cli.acquire, "acquire_use_case", opened)
    monkeypatch.setattr(labqfl.cli.distill, "_Source", opened)
    monkeypatch.setattr(labqfl.app.calibrate, "run_calibration", opened)


def test_acquire_refuses_an_unwritable_out_before_acquiring(tmp_path: Path, no_instruments: None) -> None:
    a_file = tmp_path / "t.sh"
    a_file.write_text("#!/bin/sh\n", encoding="utf-8")
    line = error_line(runner.invoke(app, ["acquire", "-d", "0.01", "--out", str(a_file / "sub" / "a.h5")]))
    assert f"--out {a_file / 'sub' / 'a.h5'}: {a_file} is a file, not a folder" in line
    line = error_line(runner.invoke(app, ["acquire", "-d", "0.01", "--out", "/proc/a.h5"]))
    assert "--out /proc/a.h5: cannot write in /proc" in line
    assert a_file.read_text(encoding="utf-8") == "#!/bin/sh\n" and not (tmp_path / "sub").exists()


@pytest.mark.parametrize("command", [["calibrate", "delays", "--quick"], ["distill", "--live", "-d", "0.1"]])
def test_a_runs_folder_that_is_a_file_is_refused_before_measuring(tmp_path: Path, no_instruments: None,
                                                                  command: list[str]) -> None:
    a_file = tmp_path / "t.sh"
    a_file.write_text("#!/bin/sh\n", encoding="utf-8")
    line = error_line(runner.invoke(app, [*command, "--out", str(a_file)]))
    assert line == f"error: runs folder {a_file}: a file, not a folder; expected a folder for run folders (--out, or " \
                   "$LABQFL_RUNS_DIR)"
    assert a_file.read_text(encoding="utf-8") == "#!/bin/sh\n"


def test_a_writable_out_is_not_touched_by_the_check(tmp_path: Path) -> None:
    from labqfl.cli.common import check_output_file, check_runs_dir

    check_output_file(tmp_path / "new" / "a.h5", "--out")
    check_runs_dir(tmp_path / "runs")
    assert list(tmp_path.iterdir()) == []
