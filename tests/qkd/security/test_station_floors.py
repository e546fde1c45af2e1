"""Floors of the station optimiser (issue 18 item 1): `optimize_station(min_decoy_prob=, min_y_prob=)`
and `labqfl keyrate --optimize --min-decoy-prob --min-y-prob --write-config`.

For the main job's block (1.67e8 slots per pair) the unconstrained optimum sends practically no decoy
and no Y-basis rounds (docs/station.md, "The main job's 10 s"); with floors both stay in use, and the
weakest pair is never predicted worse than at the start point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import StationConfig, load_station_config
from labqfl.qkd.keyrate import optimize_station, predict_station, station_with_operating_point
from labqfl.runs import dump_toml

runner = CliRunner()
MAIN_JOB_BLOCK = 1.6671e8  # 10 s of the default station, slots per pair


def _honours(cfg: StationConfig, min_decoy: float, min_y: float) -> bool:
    return all(c.intensity_probs[1] >= min_decoy - 1e-12 and 1 - c.basis_x_prob >= min_y - 1e-12
               for c in cfg.clients)


def _weakest(cfg: StationConfig, n: float) -> float:
    return min(p.bits_per_second for p in predict_station(cfg, n))


@pytest.mark.parametrize("n", [MAIN_JOB_BLOCK, 1e9])
def test_floors_are_honoured_and_the_weakest_pair_never_loses(n: float) -> None:
    cfg = load_station_config()
    res = optimize_station(cfg, n, max_evaluations=40, min_decoy_prob=0.02, min_y_prob=0.02)
    assert _honours(res.config, 0.02, 0.02)
    assert res.min_bits_per_second_after >= res.min_bits_per_second_before
    assert _weakest(res.config, n) == pytest.approx(res.min_bits_per_second_after, rel=1e-9)


def test_without_floors_the_main_jobs_block_drops_decoy_or_y_rounds_and_with_them_it_does_not() -> None:
    """The floors bind: unconstrained, 40 evaluations already push the decoy probability or P(Y)
    below 2 % at 1.67e8 slots; with the floors the same budget keeps both at >= 2 %."""
    cfg = load_station_config()
    free = optimize_station(cfg, MAIN_JOB_BLOCK, max_evaluations=40).config
    assert not _honours(free, 0.02, 0.02)
    floored = optimize_station(cfg, MAIN_JOB_BLOCK, max_evaluations=40, min_decoy_prob=0.02, min_y_prob=0.02).config
    assert _honours(floored, 0.02, 0.02)


def test_a_start_point_below_the_floors_is_lifted_onto_them() -> None:
    """A given point that sends the decoy 0.5 % of the time with P(Y) = 0.5 %: the result honours the
    floors even where the optimiser finds nothing better (the projected start is the fallback)."""
    cfg = load_station_config()
    low = station_with_operating_point(cfg, {c.name: c.intensities[0] for c in cfg.clients}, 0.1,
                                       (0.9, 0.005, 0.095), 0.995)
    for budget in (10, 30):
        res = optimize_station(low, MAIN_JOB_BLOCK, max_evaluations=budget, min_decoy_prob=0.03, min_y_prob=0.04)
        assert _honours(res.config, 0.03, 0.04), budget
        assert abs(sum(res.config.clients[0].intensity_probs) - 1) < 1e-12


@pytest.mark.parametrize("floors", [(-0.1, 0.0), (1.0, 0.0), (0.0, 0.5), (0.0, float("nan"))])
def test_floors_out_of_range_are_refused(floors: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="min_decoy_prob"):
        optimize_station(load_station_config(), 1e9, max_evaluations=10, min_decoy_prob=floors[0],
                         min_y_prob=floors[1])


def test_cli_writes_a_station_honouring_the_floors(tmp_path: Path) -> None:
    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["schedule"]["pairs"] = [["C1", "C4"]]
    given = tmp_path / "given.toml"
    given.write_text(dump_toml(d), encoding="utf-8")
    out = tmp_path / "floored.toml"
    r = runner.invoke(app, ["keyrate", "--config", str(given), "--block-size", "1.6671e8", "--optimize",
                            "--min-decoy-prob", "0.03", "--min-y-prob", "0.025", "--write-config", str(out),
                            "--max-evaluations", "20", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["min_decoy_prob"], data["min_y_prob"]) == (0.03, 0.025)
    cfg = load_station_config(out)
    assert _honours(cfg, 0.03, 0.025)
    assert "decoy probability >= 0.03, P(Y) >= 0.025" in out.read_text(encoding="utf-8")
    row = data["pairs"][0]
    assert row["bits_per_second_after"] >= 0.0 and row["pair"] == "C1-C4"


@pytest.mark.parametrize("args,expected", [
    (["--min-decoy-prob", "1.5"], "--min-decoy-prob must lie in [0, 1)"),
    (["--min-y-prob", "0.6"], "--min-y-prob must lie in [0, 0.5)"),
    (["--min-y-prob", "nan"], "--min-y-prob must lie in [0, 0.5)"),
    (["--min-decoy-prob", "0.02"], "need --optimize --write-config"),
])
def test_cli_refuses_bad_floors(args: list[str], expected: str, tmp_path: Path) -> None:
    r = runner.invoke(app, ["keyrate", "--block-size", "1e8", *args])
    assert r.exit_code != 0 and expected in r.output, r.output
