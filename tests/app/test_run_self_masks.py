"""``labqfl run --self-masks/--threshold`` (issue 21): the main job's training goes through the
shared training setup, so the plan, the masks and the key accounting all count the self-mask share
pads; a bad threshold is refused before the station is opened."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def test_run_with_self_masks_spends_and_plans_the_share_pads(small_station_file: Path, tmp_path: Path) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    r = runner.invoke(app, ["run", "--config", str(small_station_file), "--duration", "0.2", "--rounds", "1",
                            "--eps-sec", "1e-4", "--in-process", "--self-masks", "--threshold", "2", "--data-dir", str(data),
                            "--out", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["status"] == "complete"
    assert m["settings"]["self_masks"] is True and m["settings"]["threshold"] == 2
    t = m["train"]
    assert t["secagg"]["self_masks"] is True and t["secagg"]["threshold"] == 2 and t["rounds_run"] == 1
    # per pair and round: q bits of pad plus 2(q+1) bits of share pads per parameter (q = 8: 26, not 8)
    per_round = (8 + 2 * 9) * t["n_params"]
    assert t["key_bits_per_pair_total"] == per_round
    # the plan made before the acquisition counted the same key, and the ledger spent it from the stores
    assert m["plan"]["predicted"]["self_masks"] is True
    assert m["plan"]["predicted"]["key_bits_per_pair_per_round"] == per_round
    assert m["keys"]["pairs"]["C1-C2"]["consumed_bits"] == per_round


def test_run_refuses_a_bad_threshold_before_the_station_opens(small_station_file: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    import labqfl.station

    def no_station(*a: object, **kw: object) -> None:
        raise AssertionError("the station must not be opened")

    monkeypatch.setattr(labqfl.station, "Station", no_station)
    base = ["run", "--config", str(small_station_file), "--duration", "0.2", "--rounds", "1", "--eps-sec", "1e-4",
            "--in-process", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--json"]
    # two clients: a client's shares go to itself and one neighbour, so t ≤ 2
    r = runner.invoke(app, [*base, "--self-masks", "--threshold", "3"])
    assert r.exit_code == 1, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "--threshold" in err[0] and "t=3" in err[0], r.output
    r = runner.invoke(app, [*base, "--threshold", "2"])
    assert r.exit_code == 1 and "--threshold 2 needs --self-masks" in r.output, r.output
