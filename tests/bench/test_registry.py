"""Benchmark runner: registry, machine info, JSON shape (quick sizes; no timing asserted)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labqfl.bench import machine_info, registry
from labqfl.cli import app
from labqfl.cli.bench import QUICK_NOTE


def test_registry_has_station_startup_and_machine_info():
    assert "station-startup" in registry()
    m = machine_info()
    assert m["logical_cores"] >= 1 and m["cpu"]


def test_bench_json_shape_quick():
    r = CliRunner().invoke(app, ["bench", "station-startup", "--quick", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    res = data["results"]["station-startup"]
    assert set(res) >= {"figure", "unit", "baseline", "baseline_figure", "ratio", "target", "passed"}
    assert res["figure"] > 0 and res["baseline_figure"] > 0
    assert abs(res["ratio"] - res["figure"] / res["baseline_figure"]) < 1e-9
    assert data["machine"]["usable_cores"] >= 1
    # docs review s34 L16: the description names full sizes; under --quick it says the sizes are smaller
    assert res["description"].endswith(QUICK_NOTE) and data["quick"] is True
