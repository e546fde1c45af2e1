"""The calibrate use case on its own (Qt-free, no CLI): ``run_calibration`` (every procedure of a
group runs, the failures are named, the files hold what succeeded), on its own station or on one
the caller holds open (the GUI's), ``apply_calibration_file``, and that ``labqfl calibrate`` and the
GUI reach the calibration library only through it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from labqfl.app.calibrate import apply_calibration_file, groups, run_calibration
from labqfl.app.station import open_station
from labqfl.config import StationConfig, load_station_config

ROOT = Path(__file__).resolve().parents[2]


def _config(*, visibility: float | None = None, seed: int = 8) -> StationConfig:
    """The default station with seeded clients (reproducible read-outs), optionally without a fringe."""
    data = load_station_config().model_dump(mode="json")
    data["simulation"]["seed"] = seed
    data["simulation"]["qrng_epoch_base"] = (seed + 1) << 34  # seeded choices are a function of (seed, epoch)
    for c in data["clients"]:
        c["randomness"] = "seeded"
    if visibility is not None:
        data["loop"]["visibility"] = visibility
    return StationConfig.model_validate(data)


def test_calibrate_all_runs_every_procedure_names_the_failures_and_writes_the_successes(tmp_path: Path) -> None:
    messages: list[str] = []
    outcome = run_calibration(_config(visibility=1e-4), "all", runs_dir=tmp_path / "runs", quick=True,
                              make_plots=False, write_config=tmp_path / "new.toml", progress=messages.append)
    assert messages, "progress was reported"
    assert list(outcome.failures) == ["vpi", "visibility"]
    assert all("no interference fringe" in m for m in outcome.failures.values())
    ok = len(outcome.report.results)
    assert ok >= 5
    assert outcome.failure_summary() == (f"2 of {ok + 2} calibration procedures failed (vpi, visibility); "
                                         f"the files hold the {ok} that succeeded")
    d = outcome.as_dict()
    assert list(d) == ["station", "group", "simulated", "schema_version", "files", "quantities", "failures"]
    assert d["group"] == "all" and d["simulated"] is True and d["failures"] == outcome.failures
    qs = d["quantities"]
    assert {"D0.dead_time_ns", "D1.efficiency", "D0.cable_delay_ps"} <= set(qs)
    assert all(set(q) <= {"value", "uncertainty", "unit", "true"} for q in qs.values())
    assert not any(name.endswith(("v_pi_v", "visibility")) for name in qs)
    saved = json.loads(Path(d["files"]["calibration"]).read_text(encoding="utf-8"))
    assert set(saved["failures"]) == {"vpi", "visibility"} and set(saved["quantities"]) == set(qs)
    for path in (d["files"]["station_toml"], d["files"]["written_config"]):
        new = load_station_config(Path(path))
        assert new.detectors["D1"].efficiency == pytest.approx(qs["D1.efficiency"]["value"])


def test_calibrate_on_the_callers_station_leaves_it_open_and_apply_writes_the_result(tmp_path: Path) -> None:
    cfg = _config(seed=4)
    with open_station(cfg) as station:
        outcome = run_calibration(cfg, "delays", runs_dir=tmp_path, quick=True, make_plots=False, station=station)
        assert not station.closed  # the GUI's station stays connected
    assert outcome.failure_summary() is None and outcome.plots() == []
    rows = outcome.quantity_rows()
    assert [r["name"] for r in rows] == ["D0.cable_delay_ps", "D1.cable_delay_ps"]
    assert all(r["pull"] is not None and abs(r["pull"]) < 4 for r in rows)  # within 4σ of the simulator's truth
    applied = apply_calibration_file(load_station_config(), Path(outcome.files["calibration"]), tmp_path / "cal.toml")
    assert applied["applied"] == ["D0.cable_delay_ps", "D1.cable_delay_ps"] and applied["written"] == str(tmp_path / "cal.toml")
    new = load_station_config(tmp_path / "cal.toml")
    assert new.time_tagger.cable_delays_ps["D1"] == pytest.approx(rows[1]["value"])


def test_groups_are_the_libraries_in_order() -> None:
    assert groups()[-1] == "all" and {"detector", "delays", "vpi", "visibility"} <= set(groups())


# -- the front ends hold no recipe of their own ----------------------------------------------------
def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("front_end", ["labqfl/cli/calibrate.py", "gui/workers/calibration.py"])
def test_front_ends_calibrate_through_the_application_layer(front_end: str) -> None:
    imports = _imports(ROOT / front_end)
    assert "labqfl.app.calibrate.run_calibration" in imports
    bad = {i for i in imports if i.startswith(("labqfl.calibration", "labqfl.station", "labqfl.sim_backends"))}
    assert not bad, f"{front_end} imports {sorted(bad)}"
