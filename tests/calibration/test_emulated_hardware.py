"""Calibration on the emulated-hardware station (issue 17): the clients' Pulse Streamers must play while the
tags come in (calibration's acquisitions are Acquisition segments, so each client streams its frames; before,
the emulated loop waited 10 s for generators nobody armed and the procedure failed), and the delays come out
through the real laser and tagger drivers. The laser there is a diode driver (Thorlabs PRO8000): its pulses do
not follow a new repetition rate, which the coarse stage sees in the sync period and then falls back to the
station file's nominal delays instead of placing the peak a whole number of wrong periods away."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.serialize import dump_toml

ROOT = Path(__file__).resolve().parents[2]


def _emulated_station(tmp_path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("_emulated_station", ROOT / "tests" / "modulation" /
                                                  "test_emulated_station.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d: dict[str, Any] = tomllib.loads(mod.emulated_pair_station(tmp_path).read_text(encoding="utf-8"))
    d["loop"]["segments_km"] = [2.0, 2.0, 2.0]  # the example's 2 km segments: a loop delay of many periods
    p = tmp_path / "emulated_long.toml"
    p.write_text(dump_toml(d), encoding="utf-8")
    return p


def test_delays_calibrate_on_the_emulated_hardware_station_through_its_drivers(tmp_path: Path) -> None:
    pytest.importorskip("pulsestreamer")
    station = _emulated_station(tmp_path)
    cfg = tomllib.loads(station.read_text(encoding="utf-8"))
    assert cfg["laser"]["driver"] == "ThorlabsPRO8000" and cfg["time_tagger"]["driver"] == "SwabianTimeTagger"
    r = CliRunner().invoke(app, ["calibrate", "delays", "--config", str(station), "--out", str(tmp_path / "cal"),
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["failures"] == {}
    q = out["quantities"]
    assert q["D0.cable_delay_ps"]["value"] == pytest.approx(3150.0, abs=3.0)
    assert q["D1.cable_delay_ps"]["value"] == pytest.approx(3420.0, abs=3.0)
    cal = json.loads(Path(out["files"]["calibration"]).read_text(encoding="utf-8"))
    assert "nominal delay" in json.dumps(cal)  # the coarse stage saw the pulses keep their rate and fell back
