"""No command overwrites a user's file unasked, and ``calibrate apply`` never clamps or ignores silently.

Regressions: ``station make`` replaced an existing (hand-edited) ``station-N4.toml`` or any ``--out``
file; ``calibrate GROUP --write-config`` and ``calibrate apply --output`` replaced existing files, all
with exit status 0. ``calibrate apply`` wrote ``D0.efficiency = 1.5`` as 1.0 and ``D0.dead_time_ns =
-30`` as 0.0, and ignored a misspelt quantity (``D0.efficincy``) while counting it as applied. Now an
existing file is refused in one line naming it (``--force`` replaces it), and a calibration file with a
value outside its allowed range or an unknown quantity is refused naming both; nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labqfl.calibration import SCHEMA_VERSION, write_calibration
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config

runner = CliRunner()
PRECIOUS = "# my hand-edited station\nname = 'mine'\n"


def _one_error_line(r) -> str:  # type: ignore[no-untyped-def]
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# -- station make ----------------------------------------------------------------------------------
def test_station_make_refuses_an_existing_default_file_and_force_replaces_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "station-N4.toml").write_text(PRECIOUS, encoding="utf-8")
    line = _one_error_line(runner.invoke(app, ["station", "make", "--clients", "4"]))
    assert "station-N4.toml" in line and "exists" in line and "--force" in line
    assert (tmp_path / "station-N4.toml").read_text(encoding="utf-8") == PRECIOUS
    r = runner.invoke(app, ["station", "make", "--clients", "4", "--force", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["path"] == "station-N4.toml"
    assert len(load_station_config(tmp_path / "station-N4.toml").clients) == 4


def test_station_make_refuses_an_existing_out_file(tmp_path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(PRECIOUS, encoding="utf-8")
    line = _one_error_line(runner.invoke(app, ["station", "make", "--clients", "4", "--out", str(mine)]))
    assert f"--out {mine}" in line and "exists" in line and "--force" in line
    assert mine.read_text(encoding="utf-8") == PRECIOUS
    line = _one_error_line(runner.invoke(app, ["station", "make", "--clients", "4", "--out", str(tmp_path)]))
    assert "is a directory" in line
    r = runner.invoke(app, ["station", "make", "--clients", "4", "--out", str(mine), "--force"])
    assert r.exit_code == 0, r.output
    assert load_station_config(mine).name != "mine"


# -- calibrate --write-config / apply --output -----------------------------------------------------
def test_calibrate_write_config_refuses_an_existing_file_before_running(tmp_path) -> None:
    precious = tmp_path / "precious.toml"
    precious.write_text(PRECIOUS, encoding="utf-8")
    runs = tmp_path / "runs"
    line = _one_error_line(runner.invoke(app, ["calibrate", "detector", "--quick", "--no-plots", "--out", str(runs),
                                               "--write-config", str(precious)]))
    assert f"--write-config {precious}" in line and "exists" in line and "--force" in line
    assert precious.read_text(encoding="utf-8") == PRECIOUS
    assert not runs.exists()  # refused before any run folder was made or instrument opened


def test_calibrate_write_config_force_replaces_the_file(tmp_path) -> None:
    precious = tmp_path / "precious.toml"
    precious.write_text(PRECIOUS, encoding="utf-8")
    r = runner.invoke(app, ["calibrate", "delays", "--quick", "--no-plots", "--seed", "4", "--out", str(tmp_path / "runs"),
                            "--write-config", str(precious), "--force", "--json"])
    assert r.exit_code == 0, r.output
    q = json.loads(r.stdout)["quantities"]["D0.cable_delay_ps"]["value"]
    assert load_station_config(precious).time_tagger.cable_delays_ps["D0"] == pytest.approx(q)


def _calibration(tmp_path: Path, **values: float) -> Path:
    """A calibration file holding ``values`` (``D0_efficiency=0.7`` → ``D0.efficiency``) with small uncertainties."""
    qs = {name.replace("_", ".", 1): {"value": v, "uncertainty": 0.01, "unit": "", "procedure": "hand"}
          for name, v in values.items()}
    path = tmp_path / "calibration.json"
    write_calibration(path, {"kind": "labqfl-calibration", "schema_version": SCHEMA_VERSION,
                             "station": "sagnac-4client-sim", "simulated": True, "quantities": qs})
    return path


def test_calibrate_apply_refuses_an_existing_output_and_force_replaces_it(tmp_path) -> None:
    cal = _calibration(tmp_path, D0_efficiency=0.7)
    out = tmp_path / "p2.toml"
    out.write_text(PRECIOUS, encoding="utf-8")
    line = _one_error_line(runner.invoke(app, ["calibrate", "apply", str(cal), "--output", str(out)]))
    assert f"--output {out}" in line and "exists" in line and "--force" in line
    assert out.read_text(encoding="utf-8") == PRECIOUS
    r = runner.invoke(app, ["calibrate", "apply", str(cal), "--output", str(out), "--force", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["applied"] == ["D0.efficiency"]
    assert load_station_config(out).detectors["D0"].efficiency == 0.7


# -- calibrate apply: no silent clamping, no silently ignored quantity -----------------------------
def test_calibrate_apply_refuses_values_outside_their_range(tmp_path) -> None:
    cal = _calibration(tmp_path, D0_efficiency=1.5, D0_dead_time_ns=-30.0, D1_efficiency=0.7)
    out = tmp_path / "new.toml"
    line = _one_error_line(runner.invoke(app, ["calibrate", "apply", str(cal), "--output", str(out)]))
    assert str(cal) in line and "nothing written" in line
    assert "'D0.efficiency' = 1.5" in line and "0 < value ≤ 1" in line
    assert "'D0.dead_time_ns' = -30" in line and "≥ 0 ns" in line
    assert not out.exists()


@pytest.mark.parametrize(("key", "needles"), [
    ("D0.efficincy", ["unknown quantity 'D0.efficincy'", "did you mean 'D0.efficiency'", "loop.visibility"]),
    ("C9.v_pi_v", ["'C9.v_pi_v'", "no client 'C9'", "C1/C2/C3/C4"]),
    ("D2.jitter_ps", ["unknown quantity 'D2.jitter_ps'", "D0/D1"]),
])
def test_calibrate_apply_refuses_unknown_quantities(tmp_path, key: str, needles: list[str]) -> None:
    path = _calibration(tmp_path, D1_efficiency=0.7)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["quantities"][key] = {"value": 0.75, "uncertainty": 0.01, "unit": ""}
    write_calibration(path, doc)
    out = tmp_path / "new.toml"
    line = _one_error_line(runner.invoke(app, ["calibrate", "apply", str(path), "--output", str(out)]))
    assert all(n in line for n in needles), line
    assert not out.exists()


def test_calibrate_apply_says_what_it_clips_and_what_it_does_not_apply(tmp_path) -> None:
    """A value just outside its range, within its uncertainty (statistics), is clipped and said so;
    a quantity with no station field is named as not applied (and not counted as applied)."""
    cal = _calibration(tmp_path, D0_afterpulse_prob=-0.002, D0_dark_log_slope=1.05, D1_efficiency=0.7)
    out = tmp_path / "new.toml"
    r = runner.invoke(app, ["calibrate", "apply", str(cal), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.stderr and "with 2 calibrated quantities" in r.stderr
    assert "clipped: D0.afterpulse_prob = -0.002" in r.stderr and "written as 0" in r.stderr
    assert "not applied: D0.dark_log_slope" in r.stderr
    data = json.loads(runner.invoke(app, ["calibrate", "apply", str(cal), "-o", str(out), "--force", "--json"]).stdout)
    assert data["applied"] == ["D0.afterpulse_prob", "D1.efficiency"]
    assert set(data["not_applied"]) == {"D0.dark_log_slope"} and data["clipped"]["D0.afterpulse_prob"]["written"] == 0.0
    assert load_station_config(out).detectors["D0"].afterpulse_prob == 0.0


def test_calibrate_apply_refuses_a_vpi_the_simulated_truth_cannot_take(tmp_path) -> None:
    cal = _calibration(tmp_path, C2_v_pi_v=9.0)  # the default C2: Vπ 3.8 V, its v_pi_error bounded to ±0.5
    line = _one_error_line(runner.invoke(app, ["calibrate", "apply", str(cal), "--output", str(tmp_path / "n.toml")]))
    assert "'C2.v_pi_v' = 9 V" in line and "±50 %" in line
    assert not (tmp_path / "n.toml").exists()


@pytest.mark.parametrize("command", [["station", "make"], ["calibrate", "detector"], ["calibrate", "delays"],
                                     ["calibrate", "vpi"], ["calibrate", "visibility"], ["calibrate", "all"],
                                     ["calibrate", "apply"]])
def test_help_mentions_force(command: list[str]) -> None:
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--force" in r.output


def test_calibrate_apply_refuses_a_bad_uncertainty_naming_the_quantity(tmp_path) -> None:
    path = _calibration(tmp_path, D1_efficiency=0.7)
    for bad, needle in (("abc", "uncertainty 'abc'; expected a number"), (-0.5, "uncertainty -0.5, expected a finite")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["quantities"]["D1.efficiency"]["uncertainty"] = bad
        write_calibration(path, doc)
        line = _one_error_line(runner.invoke(app, ["calibrate", "apply", str(path), "-o", str(tmp_path / "n.toml")]))
        assert "'D1.efficiency'" in line and needle in line, line
        assert not (tmp_path / "n.toml").exists()


# -- keyrate --write-config ----------------------------------------------------------------------------------
def test_keyrate_write_config_refuses_an_existing_file_before_optimising(tmp_path) -> None:
    out = tmp_path / "opt.toml"
    out.write_text(PRECIOUS, encoding="utf-8")
    line = _one_error_line(runner.invoke(app, ["keyrate", "--optimize", "--write-config", str(out)]))
    assert line == f"error: --write-config {out}: file exists; not overwritten (pass --force to replace it)"
    assert out.read_text(encoding="utf-8") == PRECIOUS


def test_keyrate_plot_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    """Review s32 L5: `keyrate --plot k.png` replaced an existing file silently."""
    out = tmp_path / "k.png"
    out.write_bytes(b"my figure")
    args = ["keyrate", "--pair", "C1-C2", "--loss-db", "0,5", "--plot", str(out)]
    line = _one_error_line(runner.invoke(app, args))
    assert str(out) in line and "exists" in line and out.read_bytes() == b"my figure"
    r = runner.invoke(app, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"\x89PNG")
