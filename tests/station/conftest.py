"""Station test fixtures: the example pyvisa-sim station, with the fake Swabian SDK importable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"
#: the example's VOA attenuation per N7764A channel (its note above [laser]: μ 0.0263 for C1/C4, 0.022 for C2/C3)
VOA_DB = {1: 42.7, 3: 43.5, 5: 43.5, 7: 42.7}


def _drivers_conftest():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_labqfl_drivers_conftest", ROOT / "tests" / "drivers" / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _voa_role(channel: int, resource: str = "TCPIP0::10.0.0.21::inst0::INSTR") -> str:
    return (f'resource = "{resource}"   # one 4-channel VOA serves all four clients\n'
            'visa_library = "@sim:keysight_n7764a.yaml"\nmax_attenuation_db = 45.0\n'
            f'options = {{ channel = {channel}, attenuation_db = {VOA_DB[channel]} }}   '
            '# attenuation for μ = intensities[0]: see the note above [laser]')


@pytest.fixture
def voa_role():  # type: ignore[no-untyped-def]
    """``voa_role(channel, resource=…)``: the example's attenuator block of the client on N7764A
    ``channel`` (1, 3, 5, 7 = C1 … C4), to find and replace in the example's text."""
    return _voa_role


@pytest.fixture
def fake_timetagger_sdk(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    sdk = _drivers_conftest().make_fake_sdk()
    monkeypatch.setitem(sys.modules, "TimeTagger", sdk)
    monkeypatch.setitem(sys.modules, "Swabian.TimeTagger", sdk)  # the driver imports this one first
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
