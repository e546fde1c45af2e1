"""Review s39 lab LAB5: in an emergency the PRO8000's switch-on wrote 0 mA and ``:LASER ON`` (emission enabled at
0 mA for a moment) before its ramp's first cut check, then ramped down and switched off again. Now it refuses
before its first write: no ``:LASER ON`` at all. The pyvisa-sim PRO8000 (sim_backends/visa/thorlabs_pro8000.yaml)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.config import LaserConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.base import emergency

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")

SIM = Path(__file__).resolve().parents[2] / "sim_backends" / "visa" / "thorlabs_pro8000.yaml"


def test_no_laser_on_is_sent_once_an_emergency_began(tmp_path: Path) -> None:
    from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000

    shutil.copy(SIM, tmp_path / SIM.name)
    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", timeout_ms=500,
                      visa_library=f"{tmp_path / SIM.name}@sim",
                      options={"max_current_ma": 200, "ramp_ma_per_s": 100_000.0, "ramp_step_ma": 10.0})
    laser = ThorlabsPRO8000("laser", cfg)
    try:
        laser.apply_operating_point(SimpleNamespace(laser=SimpleNamespace(wavelength_nm=1550.0, power_mw=5.0)))
        sent: list[str] = []
        write = laser.link.adapter.write

        def recorded(cmd: Any, *a: Any, **k: Any) -> Any:
            sent.append(str(cmd))
            return write(cmd, *a, **k)
        laser.link.adapter.write = recorded
        with emergency("signal SIGTERM"), pytest.raises(InstrumentError, match="not switched on: the emergency"):
            laser.output_enabled = True
        assert not any(":LASER ON" in c for c in sent), sent  # before: :LASER ON, then the ramp's cut
        assert not any(":ILD:SET" in c for c in sent), sent  # nor the 0 mA write before it
        assert laser.link.query(":LASER?").strip() in ("OFF", "0")
    finally:
        laser.close()
