"""`labqfl station check`: exit codes, JSON shape, one-line failures; default and example stations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"

pytestmark = pytest.mark.filterwarnings("ignore:read string doesn't end with termination")


def _check(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["station", "check", *args])


def _assert_shape(data: dict) -> None:  # type: ignore[type-arg]
    assert set(data) == {"station", "ok", "roles"}
    for role, r in data["roles"].items():
        assert {"ok", "driver", "resource", "identity"} <= set(r), role
        assert ("status" in r) if r["ok"] else ("error" in r)


def test_station_check_all_real_example_json(real_drivers_station_file: Path, fake_timetagger_sdk) -> None:  # type: ignore[no-untyped-def]
    res = _check("--config", str(real_drivers_station_file), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    _assert_shape(data)
    assert data["ok"] and data["roles"]["laser"]["identity"].startswith("PROFILE,PRO8000")
    assert data["roles"]["time_tagger"]["driver"] == "SwabianTimeTagger" and data["roles"]["D0"]["driver"] == "sim"


def test_station_check_failure_names_roles(tmp_path: Path, voa_role) -> None:  # type: ignore[no-untyped-def]
    text = EXAMPLE.read_text(encoding="utf-8")
    assert voa_role(5) in text
    text = text.replace(voa_role(5), voa_role(5, "TCPIP0::10.9.9.9::inst0::INSTR"))
    p = tmp_path / "broken.toml"
    p.write_text(text, encoding="utf-8")
    res = _check("--config", str(p), "--json")
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    _assert_shape(data)
    assert data["ok"] is False and data["roles"]["C3.attenuator"]["ok"] is False
    assert "10.9.9.9" in data["roles"]["C3.attenuator"]["error"]
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and "C3.attenuator" in err_lines[0]


def test_station_check_human_output_and_show_still_works(real_drivers_station_file: Path, fake_timetagger_sdk) -> None:  # type: ignore[no-untyped-def]
    res = _check("--config", str(real_drivers_station_file))
    assert res.exit_code == 0 and "station check" in res.stderr and res.stdout == ""
    res = CliRunner().invoke(app, ["station", "show", "--config", str(EXAMPLE), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["roles"]["laser"]["driver"] == "ThorlabsPRO8000"


def test_station_check_default_simulated_station() -> None:
    res = _check("--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    _assert_shape(data)
    assert data["ok"] and all(r["driver"] == "sim" for r in data["roles"].values())


def test_station_check_example_file_with_simulated_tagger() -> None:
    res = _check("--config", str(EXAMPLE), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] and data["roles"]["time_tagger"]["driver"] == "sim"
    assert data["roles"]["laser"]["driver"] == "ThorlabsPRO8000"


def test_station_default_snapshot_and_accessors() -> None:
    from labqfl.config import load_station_config
    from labqfl.instruments import PhotonDetector, TimeTagger
    from labqfl.station import Station

    with Station(load_station_config()) as st:
        assert isinstance(st.detector("D0"), PhotonDetector) and isinstance(st.time_tagger, TimeTagger)
        snap = st.snapshot()
        json.dumps(snap)
        assert snap["roles"]["D0"]["simulated"] is True and "settings" in snap["roles"]["D0"]
    assert st.closed
