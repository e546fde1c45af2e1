"""``labqfl calibrate``'s table gives each value to the last digit of its uncertainty, and its progress shows no
"0/?" count (review s36 F22: ``C1.bias_phase_rad -0.0158694 ± 0.0077``, six significant digits beside a
two-digit σ, and a spinner line ending ``0/?`` for a calibration of no known number of steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli import common as cli_common
from labqfl.cli.calibrate import rounded_to

runner = CliRunner()


@pytest.mark.parametrize(("value", "sigma", "shown"), [
    (-0.0158694, 0.0077, "-0.0159"), (49.7713, 4.4, "49.8"), (29.9878, 0.01, "29.988"),
    (0.00298033, 0.0029, "0.0030"), (3150.55, 0.37, "3150.55"), (123456.7, 37.0, "123457"),
    (0.5, 0.0, "0.5"), (0.5, float("nan"), "0.5"),
])
def test_a_value_is_rounded_to_its_uncertainty(value: float, sigma: float, shown: str) -> None:
    assert rounded_to(value, sigma) == shown


def test_the_table_rounds_each_value_to_its_sigma_and_progress_shows_no_unknown_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common.console, "_width", 120)
    r = runner.invoke(app, ["calibrate", "vpi", "--client", "C2", "--quick", "--no-plots", "--seed", "3",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "0/?" not in r.stderr, r.stderr
    run = next(tmp_path.glob("*-calibrate-vpi"))
    quantities = json.loads((run / "calibration.json").read_text())["quantities"]
    rows = {cells[0]: cells[1:] for ln in r.stderr.splitlines()
            if (cells := [c.strip() for c in ln.split("│")[1:-1]]) and cells[0] in quantities}
    assert set(rows) == set(quantities) == {"C2.v_pi_v", "C2.bias_phase_rad"}, r.stderr
    for name, q in quantities.items():
        value, sigma = rows[name][0], rows[name][1]
        assert value == rounded_to(q["value"], q["uncertainty"]), (name, rows[name])
        # as many decimals as the σ shown beside it (two significant digits)
        decimals = len(sigma.split(".")[1]) if "." in sigma else 0
        assert len(value.split(".")[1]) == decimals, (name, rows[name])
