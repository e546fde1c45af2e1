"""``labqfl distill REC --config F`` took F's client intensities for the decoy-state bound even when the recording's
``/clients/Ci`` attributes said other intensities were sent (review s36 input F3): a key's ε_sec then rested on μ
never sent. As for the physical layer (review s35 F1, check_recording_station), a station file that contradicts the
recording's intensities, intensity_probs or basis_x_prob is refused in one line naming the client, the field, the
recorded and the configured values, before any store is opened."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.app.distill import check_recording_station
from labqfl.cli import app
from labqfl.config import load_station_config, parse_station_config
from labqfl.errors import ConfigError
from labqfl.serialize import dump_toml

runner = CliRunner()


def _fake_recording(cfg: Any) -> SimpleNamespace:
    return SimpleNamespace(config=cfg, path=Path("rec.h5"), client_names=cfg.client_names,
                           client_randomness=lambda c: cfg.client(c).randomness)


@pytest.mark.parametrize(("field", "value"), [
    ("intensities", [0.08, 0.2, 0.0]),
    ("intensity_probs", [0.5, 0.3, 0.2]),
    ("basis_x_prob", 0.5),
])
def test_a_station_file_with_other_client_encoding_is_refused(field: str, value: Any) -> None:
    own = load_station_config()
    d = own.model_dump(mode="json", exclude_none=True)
    recorded = d["clients"][1][field]
    d["clients"][1][field] = value
    given = parse_station_config(d, "other.toml")
    with pytest.raises(ConfigError) as ei:
        check_recording_station(_fake_recording(own), given)
    msg = str(ei.value)
    assert f"client C2 {field} = {value!r}" in msg and f"rec.h5 was acquired with {recorded!r}" in msg, msg
    assert "\n" not in msg
    check_recording_station(_fake_recording(own), parse_station_config(own.model_dump(mode="json"), "same.toml"))


def test_distill_refuses_other_intensities_and_stores_nothing(tmp_path: Path, small_station_file: Path) -> None:
    r = runner.invoke(app, ["acquire", "--config", str(small_station_file), "--duration", "0.05",
                            "--out", str(tmp_path / "rec.h5"), "--data-dir", str(tmp_path / "data"), "--json"])
    assert r.exit_code == 0, r.output
    d = load_station_config(small_station_file).model_dump(mode="json", exclude_none=True)
    sent = d["clients"][0]["intensities"]
    d["clients"][0]["intensities"] = [0.08, 0.2, 0.0]
    other = tmp_path / "other.toml"
    other.write_text(dump_toml(d), encoding="utf-8")
    r = runner.invoke(app, ["distill", str(tmp_path / "rec.h5"), "--config", str(other), "--data-dir",
                            str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--block-bits", "1000", "--json"])
    line = error_line(r)
    assert r.exit_code == 1, r.output
    assert "client C1 intensities = [0.08, 0.2, 0.0]" in line and f"was acquired with {json.dumps(sent)}" in line, line
    ks = tmp_path / "data" / "keystore"
    assert not ks.exists() or not any(ks.iterdir())
