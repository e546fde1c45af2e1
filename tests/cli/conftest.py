"""Fixtures of the command tests: offscreen Qt (``labqfl gui --screenshot``), and the fixtures the
station and key store tests define, loaded from their conftest files (a conftest cannot be
imported by name under ``--import-mode=importlib``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.path.dirname(__file__))  # this folder's helper module (cli_helpers)


def _conftest(folder: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_labqfl_{folder}_conftest", ROOT / "tests" / folder / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_station = _conftest("station")
voa_role = _station.voa_role
fake_timetagger_sdk = _station.fake_timetagger_sdk
real_drivers_station_file = _station.real_drivers_station_file
kh = _conftest("keystore").kh


@pytest.fixture(autouse=True)
def _station_guard_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`labqfl.cli.main` makes every later station of the process guard itself (``guard_stations``) and the
    first guarded one makes the Ctrl-C line add "; instruments were put in their safe state": both False at the
    start of each test, as in a fresh process, and restored after it, so a test of that line does not depend on
    which tests ran before it in the process (test_did_you_mean_once then any acquisition, or
    tests/station/test_safe_state.py, made test_keys_preshare's Ctrl-C test fail)."""
    import labqfl.station

    for name in ("_GUARD_DEFAULT", "_EVER_GUARDED"):  # as in a fresh process, whatever ran before in this one
        monkeypatch.setattr(labqfl.station, name, False)


@pytest.fixture(scope="session")
def distilled_small_live(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> dict[str, Any]:
    """``labqfl distill --live --duration 0.2 --json`` on the small station (tests/conftest.py) with seeded clients,
    once per test process: the distill table tests (error-rate counts, f marks, legends) read the same document."""
    import json

    from typer.testing import CliRunner

    from labqfl.cli import app

    tmp = tmp_path_factory.mktemp("distill-small-live")
    station = small_station_writer(tmp, name="small-live-station", file="small_live.toml", randomness="seeded")
    r = CliRunner().invoke(app, ["distill", "--live", "--duration", "0.2", "--config", str(station), "--data-dir",
                                 str(tmp / "d"), "--out", str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.stdout))
