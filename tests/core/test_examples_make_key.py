"""Every station file in ``examples/`` predicts key on every pair at the main job's block (review s36 lab L1:
``examples/station_pyvisa_sim.toml``, which the docs point to for the real drivers, kept an operating point
(μ 0.1/0.02/0, probabilities 0.8/0.1/0.1, P(X) 0.9) that gave no key on 5 of 6 pairs: ``node up`` on it needed
≥ 4.5·10⁴ s of data and with ``--block-bits`` every block aborted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))
runner = CliRunner()


@pytest.mark.parametrize("station", EXAMPLES, ids=lambda p: p.name)
def test_example_station_predicts_key_on_every_pair(station: Path) -> None:
    r = runner.invoke(app, ["keyrate", "--config", str(station), "-n", "1.6671e8", "--json"])
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)["results"]
    assert len(results) == 6
    dry = {x["pair"]: x["abort_reason"] for x in results if x["abort"] or x["bits_per_second"] <= 0}
    assert not dry, dry
