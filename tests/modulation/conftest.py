"""Fixtures of the modulation tests: the emulated-hardware pair station and its helpers.

They are defined once, in tests/modulation/test_emulated_station.py (beside the acceptance test that
describes them; tests/nodes loads them from there too). Under ``--import-mode=importlib`` a test module
cannot import another, so the other modulation tests get them here, as fixtures."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


@functools.cache
def _emulated_station_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_modulation_emulated_station", HERE / "test_emulated_station.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def emulated_station() -> ModuleType:
    """tests/modulation/test_emulated_station.py as a module: ``StalledLog`` (C1's randomness stalled at frame
    ``STALL_FROM`` until ``N_STALL`` frames went out dark), ``DURATION`` and the station builder."""
    pytest.importorskip("pulsestreamer")
    return _emulated_station_module()


@pytest.fixture
def emulated_pair_station(emulated_station: ModuleType, tmp_path: Path) -> Any:
    """``emulated_pair_station(n_clients=2, per_client_markers=False)`` → the station file (in ``tmp_path``): the
    example emulated-hardware station cut to a chain of ``n_clients`` clients on a short loop, ideal detectors,
    emulators on fresh loopback addresses."""
    return functools.partial(emulated_station.emulated_pair_station, tmp_path)
