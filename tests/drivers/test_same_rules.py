"""A driver and the simulated instrument of the same interface refuse the same bad value with the
same message: both use the interface's Setting (labqfl/instruments/settings.py), so the rule and
the error are written once.

Before the settings were declarative, ``check_bool`` in drivers/_base.py accepted ``1`` for a bool
setting on hardware while the simulator refused it; the first cases below fail on that code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from labqfl.drivers.idquantique_id120 import IDQuantiqueID120
from labqfl.drivers.keysight_33500b import Keysight33500B
from labqfl.drivers.keysight_n7764a import KeysightN7764A
from labqfl.drivers.swabian_timetagger import SwabianTimeTagger
from labqfl.drivers.thorlabs_pm100usb import ThorlabsPM100USB
from labqfl.sim_backends import create_simulated_instruments

from labqfl.config import (
    AttenuatorConfig,
    DetectorConfig,
    PhaseModulatorConfig,
    PowerMeterConfig,
    TimeTaggerConfig,
    load_station_config,
)
from labqfl.instruments import Instrument, SettingError


@pytest.fixture
def sims() -> Iterator[dict[str, Instrument]]:
    d = create_simulated_instruments(load_station_config())
    yield d
    for i in d.values():
        i.close()


@pytest.fixture
def drivers(sim_library, fake_sdk) -> Iterator[dict[str, Instrument]]:  # type: ignore[no-untyped-def]
    """Drivers under the same role names as the simulated station's instruments."""
    d: dict[str, Instrument] = {
        "C1.attenuator": KeysightN7764A("C1.attenuator", AttenuatorConfig(
            driver="KeysightN7764A", resource="TCPIP0::10.0.0.21::inst0::INSTR", timeout_ms=150,
            visa_library=sim_library("keysight_n7764a.yaml"), max_attenuation_db=60.0, options={"max_db": 60.0})),
        "C1.phase_modulator": Keysight33500B("C1.phase_modulator", PhaseModulatorConfig(
            driver="Keysight33500B", resource="TCPIP0::10.0.0.11::inst0::INSTR", timeout_ms=150,
            visa_library=sim_library("keysight_33500b.yaml"))),
        "D0": IDQuantiqueID120("D0", DetectorConfig(
            driver="IDQuantiqueID120", resource="USB0::0x1DDC::0x0330::SIM0001::0::INSTR", kind="spad", timeout_ms=150,
            visa_library=sim_library("idquantique_id120.yaml"))),
        "power_meter": ThorlabsPM100USB("power_meter", PowerMeterConfig(
            driver="ThorlabsPM100USB", resource="USB0::0x1313::0x8072::SIMPM0001::INSTR", timeout_ms=150,
            visa_library=sim_library("thorlabs_pm100usb.yaml"))),
        "time_tagger": SwabianTimeTagger("time_tagger", TimeTaggerConfig(driver="SwabianTimeTagger"), sdk=fake_sdk),
    }
    yield d
    for i in d.values():
        i.close()


CASES: list[tuple[str, str, Any, str]] = [
    # bool settings: 1 is not True (the old check_bool accepted it on hardware)
    ("C1.attenuator", "shutter_closed", 1, "expected True or False"),
    ("C1.phase_modulator", "output_enabled", 1, "expected True or False"),
    ("D0", "enabled", 0, "expected True or False"),
    ("D0", "enabled", "on", "expected True or False"),
    # ranges that both take from the interface
    ("C1.attenuator", "attenuation_db", 61.0, "expected 0 to 60 dB"),
    ("D0", "efficiency", 1.5, "expected above 0 up to 1"),
    ("power_meter", "averaging", 0, "expected an integer 1 to 10000"),
    ("power_meter", "averaging", 2.5, "expected an integer 1 to 10000"),
    ("time_tagger", "trigger_levels_v", {1: 3.0}, "expected -2.5 to 2.5 V"),
    ("time_tagger", "input_delays_ps", {1: 5e6}, "expected -2e+06 to 2e+06 ps"),
]


@pytest.mark.parametrize(("role", "setting", "bad", "expected"), CASES)
def test_driver_and_simulator_refuse_alike(sims: dict[str, Instrument], drivers: dict[str, Instrument], role: str,
                                           setting: str, bad: Any, expected: str) -> None:
    messages = []
    for inst in (drivers[role], sims[role]):
        before = getattr(inst, setting)
        with pytest.raises(SettingError) as err:
            setattr(inst, setting, bad)
        shown = next(iter(bad.values())) if isinstance(bad, dict) else bad  # a mapping names the refused entry
        assert (err.value.instrument, err.value.setting.split("[")[0], err.value.value) == (role, setting, shown)
        assert getattr(inst, setting) == before  # nothing was written
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{role}: {setting}") and messages[0].endswith(expected)


def test_a_narrower_hardware_range_keeps_the_interface_message(sims: dict[str, Instrument],
                                                               drivers: dict[str, Instrument]) -> None:
    """The 33500B narrows the amplitude to what it can output (10 Vpp); the message is the same
    sentence with its own range."""
    with pytest.raises(SettingError) as hw:
        drivers["C1.phase_modulator"].amplitude_vpp = 11.0  # type: ignore[attr-defined]
    sims["C1.phase_modulator"].amplitude_vpp = 11.0  # type: ignore[attr-defined]  # a generic AWG: fine
    with pytest.raises(SettingError) as sim:
        sims["C1.phase_modulator"].amplitude_vpp = 41.0  # type: ignore[attr-defined]
    assert str(hw.value) == "C1.phase_modulator: amplitude_vpp = 11.0 is out of range; expected 0.01 to 10 V"
    assert str(sim.value) == "C1.phase_modulator: amplitude_vpp = 41.0 is out of range; expected 0 to 40 V"
