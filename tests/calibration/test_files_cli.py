"""Calibration files (versioned JSON), applying them to a station config, and the CLI."""

from __future__ import annotations

import json
import math

import pytest
from labqfl.calibration import (
    SCHEMA_VERSION,
    Quantity,
    apply_calibration,
    calibrate,
    quantities_from_doc,
    read_calibration,
    write_calibration,
)
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.errors import CalibrationError, DataFormatError


def test_calib_run_folder_file_plots_and_applied_config(tmp_path, calh) -> None:
    cfg = calh.make_config(calh.snspd_set, seed=21)
    rep = calibrate(cfg, "vpi", runs_dir=tmp_path, quick=True, clients=["C2"])
    doc = read_calibration(rep.files["calibration"])
    assert doc["schema_version"] == SCHEMA_VERSION and doc["station"] == cfg.name and doc["simulated"] is True
    assert "created" in doc and doc["procedures"]["vpi"]["raw"]["C2"]["voltages_v"]
    q = doc["quantities"]["C2.v_pi_v"]
    assert set(q) >= {"value", "uncertainty", "unit", "true"} and q["unit"] == "V"
    plots = doc["procedures"]["vpi"]["plots"]
    assert plots and all((rep.files["run"] + "/" + p).endswith(".png") for p in plots)
    assert (tmp_path / rep.files["run"].split("/")[-1] / plots[0]).stat().st_size > 1000
    new = load_station_config(rep.files["station_toml"])  # the written TOML loads again
    pm = new.client("C2").phase_modulator
    assert pm.v_pi_v == pytest.approx(q["value"])
    # the simulator's true Vπ is unchanged: only the setting moved
    assert pm.v_pi_v / (1 + pm.v_pi_error) == pytest.approx(3.5 / 1.08)
    assert pm.options["bias_setting_rad"] == pytest.approx(doc["quantities"]["C2.bias_phase_rad"]["value"], abs=1e-12)


def test_calib_apply_maps_every_quantity(calh) -> None:
    cfg = calh.make_config()
    qs = {
        "D0.efficiency": Quantity("D0.efficiency", 0.61, 0.01, "", "efficiency"),
        "D1.dark_count_rate_hz": Quantity("D1.dark_count_rate_hz", 77.0, 5.0, "Hz", "dark_counts"),
        "D0.dead_time_ns": Quantity("D0.dead_time_ns", 41.0, 0.1, "ns", "x"),
        "D1.afterpulse_prob": Quantity("D1.afterpulse_prob", -0.001, 0.002, "", "x"),
        "D0.jitter_ps": Quantity("D0.jitter_ps", 44.0, 0.5, "ps", "x"),
        "D0.cable_delay_ps": Quantity("D0.cable_delay_ps", 3160.5, 0.3, "ps", "delays"),
        "loop.visibility": Quantity("loop.visibility", 0.951, 0.004, "", "visibility"),
        "C3.bias_phase_rad": Quantity("C3.bias_phase_rad", 0.4, 0.01, "rad", "vpi", details={"reference_client": "C1"}),
    }
    new = apply_calibration(cfg, qs)
    assert new.detectors["D0"].efficiency == 0.61 and new.detectors["D1"].dark_count_rate_hz == 77.0
    assert new.detectors["D0"].dead_time_ns == 41.0 and new.detectors["D0"].jitter_ps == 44.0
    assert new.detectors["D1"].afterpulse_prob == 0.0  # clipped into the physical range
    assert new.time_tagger.cable_delays_ps["D0"] == 3160.5 and new.time_tagger.cable_delays_ps["D1"] == 3420.0
    assert new.loop.visibility == 0.951
    assert new.client("C3").phase_modulator.options["bias_setting_rad"] == pytest.approx(0.4)
    assert cfg.detectors["D0"].efficiency == 0.8  # the input is not modified


def test_calib_file_rejects_foreign_or_old_files(tmp_path) -> None:
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(DataFormatError, match="not a readable"):
        read_calibration(p)
    write_calibration(p, {"kind": "labqfl-calibration", "schema_version": 99, "quantities": {}})
    with pytest.raises(DataFormatError, match="schema version"):
        read_calibration(p)
    write_calibration(p, {"kind": "labqfl-calibration", "schema_version": SCHEMA_VERSION,
                          "quantities": {"x": {"value": 1.0}}})
    with pytest.raises(DataFormatError, match="lacks"):
        read_calibration(p)
    with pytest.raises(DataFormatError, match="not found"):
        read_calibration(tmp_path / "missing.json")


def test_calib_cli_json_and_apply(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["calibrate", "delays", "--quick", "--no-plots", "--json", "--out", str(tmp_path),
                            "--seed", "4", "--write-config", str(tmp_path / "new.toml")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    q = data["quantities"]["D0.cable_delay_ps"]
    assert q["unit"] == "ps" and math.isfinite(q["value"]) and q["uncertainty"] > 0 and "true" in q
    assert abs(q["value"] - q["true"]) < 3 * q["uncertainty"]
    assert load_station_config(tmp_path / "new.toml").time_tagger.cable_delays_ps["D0"] == pytest.approx(q["value"])
    out = tmp_path / "applied.toml"
    r2 = runner.invoke(app, ["calibrate", "apply", data["files"]["calibration"], "--output", str(out), "--json"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout)["applied"] == ["D0.cable_delay_ps", "D1.cable_delay_ps"]
    assert load_station_config(out).time_tagger.cable_delays_ps["D1"] == pytest.approx(data["quantities"]["D1.cable_delay_ps"]["value"])


def test_calib_cli_errors_are_one_line(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["calibrate", "visibility", "--pair", "C1-C9", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "C9" in r.output
    r = runner.invoke(app, ["calibrate", "detector", "--detector", "D7", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "D0 or D1" in r.output
    r = runner.invoke(app, ["calibrate", "apply", str(tmp_path / "nope.json"), "--output", str(tmp_path / "x.toml")])
    assert r.exit_code == 1 and "not found" in r.output


def test_calib_quantities_from_doc_roundtrip(tmp_path, calh) -> None:
    rep = calibrate(calh.make_config(seed=2), "delays", runs_dir=tmp_path, quick=True, make_plots=False)
    qs = quantities_from_doc(read_calibration(rep.files["calibration"]))
    assert qs["D1.cable_delay_ps"].value == pytest.approx(rep.quantities["D1.cable_delay_ps"].value)


def test_calib_all_reports_every_failure_and_writes_the_successes(tmp_path, calh) -> None:
    """Regression (issue 19): `calibrate all` stopped at the first failing procedure and wrote
    nothing. Now every procedure runs, each failure is reported, the files hold the successes and
    the exit status is 1."""
    from labqfl.calibration import write_station_toml

    def novis(data: dict) -> None:
        data["loop"]["visibility"] = 1e-4  # no fringe: vpi and visibility must fail, the rest must not
    cfg_path = write_station_toml(calh.make_config(novis, seed=8), tmp_path / "station.toml")
    runner = CliRunner()
    r = runner.invoke(app, ["calibrate", "all", "--quick", "--no-plots", "--json", "--out", str(tmp_path / "runs"),
                            "--config", str(cfg_path), "--write-config", str(tmp_path / "new.toml")])
    assert r.exit_code == 1, r.output
    assert "2 of" in r.output and "vpi" in r.output and "visibility" in r.output
    data = json.loads(r.stdout)
    assert set(data["failures"]) == {"vpi", "visibility"}
    assert all("no interference fringe" in m for m in data["failures"].values()), data["failures"]
    qs = data["quantities"]
    for name in ("D0.dead_time_ns", "D1.dark_count_rate_hz", "D0.jitter_ps", "D1.efficiency", "D0.cable_delay_ps"):
        assert name in qs, sorted(qs)
    doc = read_calibration(data["files"]["calibration"])
    assert set(doc["failures"]) == {"vpi", "visibility"} and "D1.efficiency" in doc["quantities"]
    for path in (data["files"]["station_toml"], tmp_path / "new.toml"):
        new = load_station_config(path)
        assert new.detectors["D1"].efficiency == pytest.approx(qs["D1.efficiency"]["value"])
        assert new.time_tagger.cable_delays_ps["D0"] == pytest.approx(qs["D0.cable_delay_ps"]["value"])


def test_calib_session_stops_when_the_progress_callback_raises(calh) -> None:
    """A progress callback that raises (the GUI's cancel) ends the session instead of being
    recorded as one more failed procedure."""
    from labqfl.calibration import CalContext, run_group

    from labqfl.station import Station

    class Stop(Exception):
        pass

    calls = []

    def progress(msg: str) -> None:
        calls.append(msg)
        if len(calls) == 2:
            raise Stop("cancelled")

    with Station(calh.make_config(seed=3)) as st:
        failures: list = []
        with pytest.raises(CalibrationError) as ei:
            run_group(CalContext(st, progress=progress), "all", quick=True, failures=failures)
        assert isinstance(ei.value.__cause__, Stop)
        assert failures == []
        assert st.laser.output_enabled is False  # the interrupted procedure left the station safe
