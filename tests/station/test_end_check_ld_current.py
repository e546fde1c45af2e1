"""Issue 19 (lab leftover): the end-of-acquisition check reads the laser diode's *actual* current.

The PRO8000's LDC reports the current it drives with ``:ILD:ACT?`` (Thorlabs' PRO800/8000 VXIpnp driver ``pro8.c``
v2.5.3, ``Pro8_LdcGetLdCurrent`` value 3); :meth:`~labqfl.drivers.thorlabs_pro8000.ThorlabsPRO8000.acquisition_fault`
compares it with the set point (``:ILD:SET?``, value 2) while ``:LASER?`` (``Pro8_LdcGetLdOutput``) reads ON, within
``options.current_tolerance_ma`` (1 mA). Before, an acquisition whose diode carried no current (an open circuit)
or a clipped one (the module's hardware limit below the set point) while ``:LASER?`` still read ON ended as good.

Through the paths a real acquisition takes: ``labqfl acquire`` on the example pyvisa-sim station (its PRO8000 with
the Python model of the actual current, :mod:`labqfl.sim_backends.pro8000`; the fault set after the first block),
and a detection node's read-back (:meth:`labqfl.nodes.common.NodeInstruments.acquisition_faults`) of the laser
driver talking to the emulator over loopback, as another process would.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000
from labqfl.sim_backends.pro8000 import LDCModel, ldc_model
from labqfl.sim_backends.visa_tcp import VisaSimTCPServer

from labqfl.config import LaserConfig, load_station_config
from labqfl.errors import InstrumentError
from labqfl.nodes.common import NodeInstruments
from labqfl.station import Station, open_recording

from .test_end_of_acquisition import _acquire_with

ROOT = Path(__file__).resolve().parents[2]
REFUSED = ("Refused: the whole recording is closed as incomplete: every block and each client's played frames are in "
           "it; labqfl distill refuses it unless --allow-incomplete")


@pytest.fixture
def seen() -> Iterator[list[LDCModel]]:
    """The models the faults were set on, cleared after the test (the example's pyvisa-sim device outlives it)."""
    models: list[LDCModel] = []
    yield models
    for m in models:
        m.clear_faults()


def _faulty(fault: dict[str, Any], seen: list[LDCModel]) -> Any:
    def inject(st: Station) -> None:
        model = ldc_model(st["laser"])
        seen.append(model)
        model.answered.clear()  # the example's device outlives a station: only this acquisition's replies
        for name, value in fault.items():
            setattr(model, name, value)
    return inject


def test_a_healthy_laser_s_actual_current_is_read_and_the_recording_is_complete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: list[LDCModel]) -> None:
    out = _acquire_with(tmp_path, monkeypatch, _faulty({}, seen))
    assert seen and seen[0].answered, "the end check did not ask :ILD:ACT?"
    assert seen[0].answered[-1] == pytest.approx(0.02)  # the example's 1 mW: 10 mA + 1 mW / 0.1 mW/mA
    rec = open_recording(out)
    try:
        assert rec.complete
    finally:
        rec.close()


@pytest.mark.parametrize("fault,actual", [({"open_circuit": True}, "0"), ({"limit_ma": 15.0}, "15")])
def test_a_diode_without_its_current_refuses_the_acquisition_and_its_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: dict[str, Any], actual: str,
        seen: list[LDCModel]) -> None:
    with pytest.raises(InstrumentError) as err:
        _acquire_with(tmp_path, monkeypatch, _faulty(fault, seen))
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(
        "the acquisition: at its end the instruments no longer read as armed: laser: LDC slot 1: actual LD current "
        f"{actual} mA (:ILD:ACT?) differs from the 20 mA expected (set point 20 mA, :ILD:SET?; output ON) by more "
        "than 1 mA (options.current_tolerance_ma): open circuit, or the current clipped by the module's limit?; "), line
    assert line.endswith(REFUSED), line
    with h5py.File(tmp_path / "rec.h5", "r") as f:
        assert bool(f.attrs["complete"]) is False


@pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None, reason="pyvisa-py (the 'hardware' extra) is not installed")
def test_a_detection_node_s_read_back_names_the_laser_s_current() -> None:
    """The detection node holds the laser (docs/lab_setup.md); its armed read-back asks the driver, which asks the
    emulator over loopback."""
    with VisaSimTCPServer(ROOT / "sim_backends" / "visa" / "thorlabs_pro8000.yaml", "GPIB0::10::INSTR") as server:
        assert server.ldc is not None
        cfg = LaserConfig(driver="ThorlabsPRO8000", resource=server.resource, visa_library="@py", timeout_ms=2000,
                          options={"ramp_ma_per_s": 100_000.0, "ramp_step_ma": 50.0, "current_tolerance_ma": 0.2})
        laser = ThorlabsPRO8000("laser", cfg)
        ni = NodeInstruments("detector", load_station_config(), [], None)
        try:
            laser.apply_operating_point(load_station_config())  # the default station's 1 mW: 20 mA
            laser.output_enabled = True
            ni.instruments = {"laser": laser}  # type: ignore[dict-item]
            ni._armed = 1
            assert ni.acquisition_faults() == []
            server.ldc.limit_ma = 19.7  # 0.3 mA short: beyond this station's 0.2 mA
            assert ni.acquisition_faults() == [
                "laser: LDC slot 1: actual LD current 19.7 mA (:ILD:ACT?) differs from the 20 mA expected (set point "
                "20 mA, :ILD:SET?; output ON) by more than 0.2 mA (options.current_tolerance_ma): open circuit, or the "
                "current clipped by the module's limit?"]
        finally:
            laser.close()
