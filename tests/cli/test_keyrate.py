"""`labqfl keyrate` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli.keyrate import parse_loss_spec

runner = CliRunner()


def test_keyrate_json_one_pair() -> None:
    r = runner.invoke(app, ["keyrate", "--pair", "C1-C4", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["n_pairs"] == 6 and len(data["results"]) == 1
    row = data["results"][0]
    assert row["pair"] == "C1-C4"
    assert row["bits_per_second"] >= 32.8e3
    for key in ("gain_key", "qber_key", "phase_error_upper", "bits_per_pulse", "asymptotic_bits_per_second"):
        assert key in row


def test_keyrate_loss_sweep_plot(tmp_path: Path) -> None:
    png = tmp_path / "rate.png"
    r = runner.invoke(app, ["keyrate", "--pair", "C2-C3", "--loss-db", "0:4:2", "--plot", str(png), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    rates = [row["bits_per_second"] for row in data["results"]]
    assert [row["extra_loss_db"] for row in data["results"]] == [0.0, 2.0, 4.0]
    assert rates[0] >= rates[1] >= rates[2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_keyrate_human_output() -> None:
    r = runner.invoke(app, ["keyrate", "--pair", "C1-C2", "--block-size", "1e9"])
    assert r.exit_code == 0, r.output
    assert "block N = 1e+09" in r.output and "60 s of acquisition" in r.output


@pytest.mark.parametrize("args, msg", [
    (["--pair", "C1-C9"], "not a scheduled pair"),
    (["--loss-db", "x"], "not a loss specification"),
    (["--block-size", "0"], "--block-size"),
    (["--plot", "out.pdf"], ".png"),
])
def test_keyrate_bad_input(args: list[str], msg: str) -> None:
    r = runner.invoke(app, ["keyrate", *args])
    assert r.exit_code == 1
    assert msg in r.output


def test_parse_loss_spec() -> None:
    assert parse_loss_spec(None) == [0.0]
    assert parse_loss_spec("3") == [3.0]
    assert parse_loss_spec("0, 5,10") == [0.0, 5.0, 10.0]
    assert parse_loss_spec("0:1:0.5") == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        parse_loss_spec("-1")
