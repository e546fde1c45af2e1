"""``labqfl run`` refuses what it can check cheaply before it makes a run folder or prints its plan: a
corrupt key store in ``--data-dir`` (it was refused in the acquire phase, after both: a run folder left
behind for nothing) and training settings that cannot work. One error line, exit 1, no run folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()
ARGS = ["--duration", "0.2", "--rounds", "2", "--eps-sec", "1e-4"]


@pytest.mark.parametrize("path", ["--in-process", "--nodes"])
def test_a_corrupt_key_store_is_refused_before_the_run_folder(small_station_file: Path, tmp_path: Path,
                                                              path: str) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    store = data / "keystore" / "C1.sqlite"
    store.parent.mkdir(parents=True, mode=0o700)
    store.write_bytes(os.urandom(5000))
    store.chmod(0o600)
    res = runner.invoke(app, ["run", "--config", str(small_station_file), *ARGS, path, "--data-dir", str(data),
                              "--out", str(runs)])
    line = error_line(res)
    assert line.startswith(f"error: key store {store}: corrupt or not an SQLite database"), line
    assert not runs.exists(), "a run folder was made for a refused run"
    assert sorted(p.name for p in store.parent.iterdir()) == ["C1.sqlite"]  # nothing made, nothing reset


def test_training_settings_that_cannot_work_are_refused_before_the_run_folder(small_station_file: Path,
                                                                              tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", "--config", str(small_station_file), *ARGS, "--in-process", "--self-masks",
                              "--threshold", "5", "--data-dir", str(tmp_path / "data"), "--out", str(runs)])
    assert error_line(res).startswith("error: --threshold: self-mask threshold t=5 is invalid"), res.output
    assert not runs.exists(), "a run folder was made for a refused run"


@pytest.mark.parametrize("path", ["--in-process", "--nodes"])
def test_no_auth_bootstrap_without_a_shared_secret_is_refused_before_anything_exists(
        small_station_file: Path, tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was refused in the acquire phase: a run folder (state 'interrupted') and empty key stores left behind."""
    import labqfl.nodes.launch
    import labqfl.station

    def nothing_may_start(*a: object, **kw: object) -> None:
        raise AssertionError("no station may be opened and no node process started")

    monkeypatch.setattr(labqfl.station, "Station", nothing_may_start)
    monkeypatch.setattr(labqfl.nodes.launch, "LocalNetwork", nothing_may_start)
    data, runs = tmp_path / "data", tmp_path / "runs"
    res = runner.invoke(app, ["run", "--config", str(small_station_file), *ARGS, path, "--data-dir", str(data),
                              "--out", str(runs), "--no-auth-bootstrap"])
    line = error_line(res)
    assert line.startswith("error: pair C1-C2: its two key stores share 0 authentication bits, a first block "
                           "needs 384"), line
    assert "labqfl keys preshare" in line, line
    assert not runs.exists(), "a run folder was made for a refused run"
    assert not data.exists(), "key stores were made for a refused run"


def _stores_with_block_at_c1_only(data: Path) -> str:
    """C1's store holds a pre-shared authentication block, C2's store none (a load stopped half-way)."""
    import numpy as np

    from labqfl.keystore import KeyStore

    bits = np.random.default_rng(1).integers(0, 2, 1024, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as c1, KeyStore.for_node("C2", data):
        return c1.add_block("C1-C2", bits, block_id="preshared-3f1c", purpose="auth")


def _preflight(station: Path, data: Path, *, nodes: bool) -> None:
    from labqfl.config import load_station_config
    from labqfl.mainjob import JobSettings, MainJob

    MainJob.preflight(load_station_config(station), JobSettings(duration_s=0.2, rounds=2, eps_sec=1e-4,
                                                                data_dir=str(data), bootstrap_auth=False,
                                                                nodes=nodes))


def test_a_one_sided_block_is_no_shared_secret_and_the_check_changes_nothing(small_station_file: Path,
                                                                            tmp_path: Path) -> None:
    from labqfl.errors import LabqflError
    from labqfl.keystore import KeyStore

    data = tmp_path / "data"
    _stores_with_block_at_c1_only(data)
    with KeyStore.for_node("C1", data) as c1:
        before = c1.accounting()
    for nodes in (False, True):
        with pytest.raises(LabqflError, match="pair C1-C2: its two key stores share 0 authentication bits"):
            _preflight(small_station_file, data, nodes=nodes)
    with KeyStore.for_node("C1", data) as c1:
        assert c1.accounting() == before  # read only: the one-sided block is not retired by the preflight


def test_a_shared_secret_or_a_delivery_under_way_passes_the_check(small_station_file: Path, tmp_path: Path) -> None:
    import json

    import numpy as np

    from labqfl.errors import LabqflError
    from labqfl.keystore import KeyStore
    from labqfl.keystore.preshare import load_preshared_auth
    from labqfl.nodes.preshared import secret_path

    data = tmp_path / "data"
    block = _stores_with_block_at_c1_only(data)
    # C2's secret file of that block: a node delivery under way, which C2's node imports at its start
    f = secret_path(data, "C2", "C1-C2")
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"pair": "C1-C2", "block_id": block, "bits_hex": "00"}), encoding="utf-8")
    _preflight(small_station_file, data, nodes=True)
    with pytest.raises(LabqflError, match="share 0 authentication bits"):  # in process nothing imports it
        _preflight(small_station_file, data, nodes=False)
    assert f.is_file()  # kept: the preflight destroys no secret file
    f.unlink()
    bits = np.random.default_rng(2).integers(0, 2, 1024, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as c1, KeyStore.for_node("C2", data) as c2:
        load_preshared_auth(c1, c2, "C1-C2", bits)
    for nodes in (False, True):
        _preflight(small_station_file, data, nodes=nodes)
