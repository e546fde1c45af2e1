"""ThorlabsPRO8000 and ThorlabsPM100USB (PyMeasure underneath) against pyvisa-sim and expected_protocol.

The manual and section behind each command string are given in the exact-protocol tests' docstrings."""

from __future__ import annotations

import pytest
from labqfl.drivers.thorlabs_pm100usb import ThorlabsPM100USB
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000
from pymeasure.test import expected_protocol

from labqfl.config import LaserConfig, PowerMeterConfig
from labqfl.errors import InstrumentError, InstrumentQueueError, InstrumentTimeout

PM_RES = "USB0::0x1313::0x8072::SIMPM0001::INSTR"


@pytest.fixture
def laser(sim_library):  # type: ignore[no-untyped-def]
    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", timeout_ms=150,
                      visa_library=sim_library("thorlabs_pro8000.yaml"),
                      options={"max_current_ma": 300, "ramp_ma_per_s": 100_000.0, "ramp_step_ma": 50.0})
    d = ThorlabsPRO8000("laser", cfg)
    yield d
    d.close()


@pytest.fixture
def pm(sim_library):  # type: ignore[no-untyped-def]
    cfg = PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES, timeout_ms=150,
                           visa_library=sim_library("thorlabs_pm100usb.yaml"))
    d = ThorlabsPM100USB("power_meter", cfg)
    yield d
    d.close()


def test_pro8000_settings_ranges_and_safe_state(laser: ThorlabsPRO8000) -> None:
    assert "PRO8000" in laser.identity()
    laser.output_enabled, laser.power_mw, laser.wavelength_nm, laser.rep_rate_hz = True, 2.0, 1550.8, 250e6
    assert laser.output_enabled is True and laser.power_mw == pytest.approx(2.0)
    assert laser.current_ma == pytest.approx(30.0) and laser.temperature_c == pytest.approx(33.0)
    assert laser.wavelength_nm == pytest.approx(1550.8) and laser.rep_rate_hz == 250e6
    for name, bad in [("power_mw", -1), ("power_mw", 100), ("wavelength_nm", 1552.0), ("rep_rate_hz", 0),
                      ("output_enabled", "on")]:
        with pytest.raises(ValueError, match=name):
            setattr(laser, name, bad)
    # the station allows 300 mA, the (simulated) LDC stops at 200 mA: its error queue says so
    with pytest.raises(InstrumentQueueError, match=r":ILD:SET"):
        laser.power_mw = 25.0
    laser.safe_state()
    assert laser.output_enabled is False
    with pytest.raises(InstrumentTimeout, match=":NOPE"):
        laser.link.query(":NOPE?")


def test_pro8000_two_threads_keep_slot_and_command_together(laser: ThorlabsPRO8000, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for _k in range(15):
            if i:
                laser.wavelength_nm = 1550.5
                assert laser.wavelength_nm == pytest.approx(1550.5)
            else:
                laser.power_mw = 1.0
                assert laser.power_mw == pytest.approx(1.0)
    threads(work)


def test_pro8000_exact_protocol_with_current_ramps() -> None:
    """Thorlabs *Operation Manual, Mainframe PRO8000 / PRO8000-4 / PRO800* (version 3.3, 2012), chapter 4
    "Communication with a PC": §4.3.5 "Module specific commands and queries" (``:SLOT <n>`` selects the module
    the next command goes to; section title from the manual's contents, its page not read here) and §4.4 error
    queue (``:SYST:ERR?``; §4.4.1 ``0,"No errors"``, §4.4.2 command
    errors, whose examples are ``:SLOT 3`` and ``:ILD:SET``). The module commands are in the module manuals'
    "Communication with a PC" chapters — laser-diode current ``:ILD:SET <A>`` (SI units, A not mA) and output
    ``:LASER ON|OFF`` in the LDC/ITC8000 manual (§7), ``:TEMP:SET <°C>`` in the TED8000 manual (§6); those
    chapters' command pages could not be read here, so these three strings are from PyMeasure's
    ``thorlabspro8000.py`` (``ThorlabsPro8000``), and ``:SYST:ANSW VALUE`` is PyMeasure's too (its manual
    section could not be checked here). The current only moves in ramp steps (here ≤ 15 mA) while the LDC
    is on."""
    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR",
                      options={"ld_slot": 3, "tec_slot": 4, "ramp_step_ma": 15.0, "ramp_ma_per_s": 100_000.0})
    ok = (b":SYST:ERR?", b'0,"No error"')
    on, off = (b":SLOT 3", None), (b":SLOT 3", None)
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", cfg, adapter=a), [
        (b":SYST:ANSW VALUE", None), ok, (b"*IDN?", b"PROFILE,PRO8000,1,3"),
        # power 2 mW with the LDC off: the set point is written directly (no current flows)
        (b":SLOT 3", None), (b":LASER?", b"OFF"),
        (b":SLOT 3", None), (b":ILD:SET 0.03", None), ok,
        # on: set point read, 0 mA, LDC on, then 15 mA, 30 mA
        on, (b":LASER?", b"OFF"), (b":SLOT 3", None), (b":ILD:SET?", b"3.000000E-02"),
        (b":SLOT 3", None), (b":ILD:SET 0", None), ok,
        (b":SLOT 3", None), (b":LASER ON", None), ok,
        (b":SLOT 3", None), (b":ILD:SET 0.015", None), ok,
        (b":SLOT 3", None), (b":ILD:SET 0.03", None), ok,
        (b":SLOT 4", None), (b":TEMP:SET 30", None), ok,
        # safe state (close): 30 → 15 → 0 mA, LDC off, set point back
        off, (b":LASER?", b"ON"), (b":SLOT 3", None), (b":ILD:SET?", b"3.000000E-02"),
        (b":SLOT 3", None), (b":ILD:SET 0.015", None), ok,
        (b":SLOT 3", None), (b":ILD:SET 0", None), ok,
        (b":SLOT 3", None), (b":LASER OFF", None), ok,
        (b":SLOT 3", None), (b":ILD:SET 0.03", None), ok,
    ]) as d:
        d.power_mw = 2.0
        d.output_enabled = True
        d.wavelength_nm = 1550.5
        d.close()


def test_pm100usb_settings_power_and_ranges(pm: ThorlabsPM100USB) -> None:
    assert "PM100USB" in pm.identity() and pm.sensor.startswith("S122C")
    pm.wavelength_nm, pm.averaging = 1310.0, 100
    assert (pm.wavelength_nm, pm.averaging) == (1310.0, 100)
    assert 9e-5 < pm.power_w() < 1.1e-4
    for name, bad in [("wavelength_nm", 650), ("wavelength_nm", 1900), ("averaging", 0), ("averaging", 2.5)]:
        with pytest.raises(ValueError, match=name):
            setattr(pm, name, bad)
    with pytest.raises(InstrumentQueueError, match="SENS:AVER:COUN 20000"):
        pm.link.write("SENS:AVER:COUN 20000")
    with pytest.raises(InstrumentTimeout):
        pm.link.query("SENS:NOPE?")


def test_pm100usb_two_threads(pm: ThorlabsPM100USB, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for _k in range(20):
            pm.averaging = 10 + i
            assert pm.power_w() > 0
    threads(work)


def test_pm100usb_exact_protocol_and_missing_head() -> None:
    """Thorlabs *PM100USB Operation Manual* (2020), chapter 7 "Computer Interface": the command format and
    ``CORR:WAVE`` / ``CORR:WAVE? MIN|MAX`` (its examples at 1550 nm) — here in the long-form path
    ``SENSE:CORR:WAV``, the SENSe:CORRection:WAVelength node of the SCPI tree that Thorlabs' *PM400 manual*
    §5.5 "SCPI Commands" lists and states compatible with the PM100USB. ``SYST:SENSOR:IDN?`` (the sensor's
    ``<name>,<sn>,<cal_msg>,<type>,<subtype>,<flags>``) is the ``:SENSor:IDN?`` query of the SYSTem
    subsystem, Thorlabs *PM100D manual* §6.4 "PM100D SCPI Commands". ``SENS:AVER:COUN`` and ``MEAS:POW?``
    are from PyMeasure's ``thorlabspm100usb.py``; their manual section could not be checked here. The
    "no sensor" reply is the head-missing case the driver refuses."""
    cfg = PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES)
    ok = (b"SYST:ERR?", b'+0,"No error"')
    head = (b"SYST:SENSOR:IDN?", b"S122C,123,07-Sep-2015,1,18,289")
    with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a), [
        head, (b"*IDN?", b"Thorlabs,PM100USB,P1,1.7.0"),
        (b"SENS:CORR:WAV? MIN", b"700"), (b"SENS:CORR:WAV? MAX", b"1800"),
        (b"SENSE:CORR:WAV 1310.0", None), ok,
        (b"SENS:AVER:COUN 50", None), ok,
        (b"MEAS:POW?", b"1.25E-04"),
    ]) as d:
        d.wavelength_nm, d.averaging = 1310, 50
        assert d.power_w() == pytest.approx(1.25e-4)
        d.close()
    with pytest.raises(InstrumentError, match="no sensor"):
        with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a),
                               [(b"SYST:SENSOR:IDN?", b"no sensor,0,0,0,0,0")]):
            pass
