"""Station test fixtures: the example pyvisa-sim station, with the fake Swabian SDK importable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"


def _drivers_conftest():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_labqfl_drivers_conftest", ROOT / "tests" / "drivers" / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake_timetagger_sdk(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    sdk = _drivers_conftest().make_fake_sdk()
    monkeypatch.setitem(sys.modules, "TimeTagger", sdk)
    return sdk


@pytest.fixture
def real_drivers_station_file(tmp_path: Path) -> Path:
    """The example station with the time tagger switched to the Swabian driver (fake SDK): every role
    on a real driver class except the two detectors, simulated because labqfl has no 1550 nm detector
    driver (see the example's comment)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('[time_tagger]\ndriver = "sim"', '[time_tagger]\ndriver = "SwabianTimeTagger"\noptions = { serial = "X" }\n#')
    p = tmp_path / "station_all_real.toml"
    p.write_text(text, encoding="utf-8")
    return p
