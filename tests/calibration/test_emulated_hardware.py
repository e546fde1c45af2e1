"""Calibration on the emulated-hardware station (issue 17): the clients' Pulse Streamers must play while the
tags come in (calibration's acquisitions are Acquisition segments, so each client streams its frames; before,
the emulated loop waited 10 s for generators nobody armed and the procedure failed), and the delays come out
through the real laser and tagger drivers. The laser there is a diode driver (Thorlabs PRO8000): its pulses do
not follow a new repetition rate, which the coarse stage sees in the sync period and then falls back to the
station file's nominal delays instead of placing the peak a whole number of wrong periods away."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.serialize import dump_toml


def test_delays_calibrate_on_the_emulated_hardware_station_through_its_drivers(tmp_path: Path,
                                                                              emulated_pair_station: Any) -> None:
    cfg: dict[str, Any] = tomllib.loads(emulated_pair_station().read_text(encoding="utf-8"))
    cfg["loop"]["segments_km"] = [2.0, 2.0, 2.0]  # the example's 2 km segments: a loop delay of many periods
    station = tmp_path / "emulated_long.toml"
    station.write_text(dump_toml(cfg), encoding="utf-8")
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
