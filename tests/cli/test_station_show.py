"""`labqfl station show` units, and `station check --json` output when the check fails."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli.station import CLIENT_COLUMNS, DETECTOR_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"


def test_station_show_prints_every_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    # a wide terminal: at 80 columns (pytest-xdist's workers set COLUMNS=80) rich wraps the headers
    from labqfl.cli.common import console

    monkeypatch.setattr(console, "width", 200)
    res = CliRunner().invoke(app, ["station", "show"])
    assert res.exit_code == 0, res.output
    # the two columns whose units rich took for markup tags and dropped
    assert "dead time [ns]" in res.stderr and "jitter [ps]" in res.stderr
    with_units = [(label, unit) for label, unit in CLIENT_COLUMNS + DETECTOR_COLUMNS if unit]
    assert len(with_units) >= 5
    for label, unit in with_units:
        assert f"{label} [{unit}]" in res.stderr, (label, unit)


def _write(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    p = tmp_path / "station.toml"
    p.write_text(text.replace(old, new, 1), encoding="utf-8")
    return p


@pytest.mark.parametrize(("old", "new", "expect"), [
    ("visibility = 0.99", "visibility = 1.5", "field 'loop.visibility'"),
    ("options = { channel = 1, sample_rate_hz = 100e6 }", "options = { chanel = 2, sample_rate_hz = 100e6 }",
     "field 'clients.0.phase_modulator.options.chanel' (role C1.phase_modulator): unknown option for Keysight33500B"),
])
def test_station_check_json_on_stdout_when_the_file_is_refused(tmp_path: Path, old: str, new: str, expect: str) -> None:
    p = _write(tmp_path, old, new)
    res = CliRunner().invoke(app, ["station", "check", "--config", str(p), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["roles"] == {} and expect in data["error"]
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and expect in err_lines[0]


def test_station_check_json_when_two_roles_share_a_channel(tmp_path: Path, voa_role) -> None:  # type: ignore[no-untyped-def]
    p = _write(tmp_path, voa_role(3), voa_role(1))
    res = CliRunner().invoke(app, ["station", "check", "--config", str(p), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["roles"]["C1.attenuator"]["ok"] is True
    assert data["roles"]["C3.attenuator"]["ok"] is True  # channel 5 of the same unit
    assert "both use channel 1 of resource" in data["roles"]["C2.attenuator"]["error"]


def test_station_check_bad_visa_resource_is_one_line_without_warnings(tmp_path: Path) -> None:
    p = _write(tmp_path, 'resource = "GPIB0::10::INSTR"', 'resource = "GPIB0::12::INSTR"')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(app, ["station", "check", "--config", str(p)])
    assert res.exit_code == 1
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert "SYST:ERR" not in res.stderr
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1
    assert "laser" in err_lines[0] and "GPIB0::12::INSTR" in err_lines[0] and "cannot connect" in err_lines[0]


def test_station_show_names_each_clients_randomness_and_a_seed_only_where_it_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s34 M2: the clients' table showed every client's seed and not its randomness, so a seeded
    (predictable) client looked like a CSPRNG one; a CSPRNG client's choices do not depend on its seed."""
    from labqfl.cli.common import console
    from labqfl.config import default_station_text

    monkeypatch.setattr(console, "width", 250)
    text = default_station_text()
    assert text.count("seed = 1001\n") == 1 and "randomness" not in text
    p = tmp_path / "seeded.toml"
    p.write_text(text.replace("seed = 1001\n", 'seed = 1001\nrandomness = "seeded"\n', 1), encoding="utf-8")
    res = CliRunner().invoke(app, ["station", "show", "--config", str(p)])
    assert res.exit_code == 0, res.output
    rows = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:4]]
            for ln in res.stderr.splitlines() if ln.startswith("│ C") and "." not in ln.split("│")[1]}
    assert rows == {"C1": ["seeded", "1001"], "C2": ["csprng", "—"], "C3": ["csprng", "—"], "C4": ["csprng", "—"]}
    assert "1002" not in res.stderr and "predictable by anyone with this file" in res.stderr
