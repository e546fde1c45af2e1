"""ThorlabsPRO8000 and ThorlabsPM100USB (PyMeasure underneath) against pyvisa-sim and expected_protocol.

The manual and section behind each command string are given in the exact-protocol tests' docstrings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from labqfl.drivers.thorlabs_pm100usb import ThorlabsPM100USB
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000
from pymeasure.test import expected_protocol

from labqfl.config import LaserConfig, PowerMeterConfig
from labqfl.errors import (
    InstrumentError,
    InstrumentQueueError,
    InstrumentReplyError,
    InstrumentTimeout,
)
from labqfl.instruments.base import emergency

PM_RES = "USB0::0x1313::0x8072::SIMPM0001::INSTR"
#: Power unit W selected and checked at open: ``SENSe:POWer[:DC]:UNIT W|DBM`` ("Sets the power unit W or dBm",
#: Thorlabs' PM100 SCPI command table as transcribed in clade/ThorlabsPM100, ``ThorlabsPM100.py``, class
#: ``SensePowerDc.unit``), short form with the optional DC node left out.
PM_UNIT_W = [(b"SENS:POW:UNIT W", None), (b"SYST:ERR?", b'+0,"No error"'), (b"SENS:POW:UNIT?", b"W")]


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


def _station(wavelength_nm: float = 1550.0, power_mw: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(laser=SimpleNamespace(wavelength_nm=wavelength_nm, power_mw=power_mw))


def test_pro8000_settings_ranges_and_safe_state(laser: ThorlabsPRO8000) -> None:
    assert "PRO8000" in laser.identity()
    with pytest.raises(InstrumentError, match=r"TEC \(slot 2\) is off"):  # the TEC is off at power-on
        laser.output_enabled = True
    laser.apply_operating_point(_station())  # type: ignore[arg-type] # TEC at 25 °C and on
    assert laser.tec_on and laser.link.query(":LIMC:SET?") == "3.000000E-01"  # software limit = max_current_ma
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
        (b"*IDN?", b"PROFILE,PRO8000,1,3"), (b":SYST:ANSW VALUE", None), ok,
        (b":SLOT 3", None), (b":LIMC:SET 0.1", None), ok,  # software current limit = max_current_ma
        (b":SLOT 3", None), (b":MODE?", b"CC"),  # constant-current mode (pro8.c Pro8_LdcGetMode)
        # power 2 mW with the LDC off: the set point is written directly (no current flows)
        (b":SLOT 3", None), (b":LASER?", b"OFF"),
        (b":SLOT 3", None), (b":ILD:SET 0.03", None), ok,
        # on: set point read (within max_current_ma), TEC on and settled, 0 mA, LDC on, then 15 mA, 30 mA
        on, (b":LASER?", b"OFF"), (b":SLOT 3", None), (b":ILD:SET?", b"3.000000E-02"),
        (b":SLOT 4", None), (b":TEC?", b"ON"), (b":SLOT 4", None), (b":TEMP:SET?", b"2.500000E+01"),
        (b":SLOT 4", None), (b":TEMP:ACT?", b"2.530000E+01"),
        (b":SLOT 3", None), (b":ILD:SET 0", None), ok,
        (b":SLOT 3", None), (b":LASER ON", None), ok,
        (b":SLOT 3", None), (b":LASER?", b"ON"),  # read back before any current flows (review s36 M2)
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
        (b"*IDN?", b"Thorlabs,PM100USB,P1,1.7.0"), head,
        (b"SENS:CORR:WAV? MIN", b"700"), (b"SENS:CORR:WAV? MAX", b"1800"),
        (b"SENS:POW:RANG:UPP? MAX", b"4.000000E-02"), *PM_UNIT_W,
        (b"SENSE:CORR:WAV 1310.0", None), ok,
        (b"SENS:AVER:COUN 50", None), ok,
        (b"MEAS:POW?", b"1.25E-04"),
    ]) as d:
        d.wavelength_nm, d.averaging = 1310, 50
        assert d.power_w() == pytest.approx(1.25e-4)
        d.close()
    with pytest.raises(InstrumentError, match="no sensor"):
        with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a),
                               [(b"*IDN?", b"Thorlabs,PM100USB,P1,1.7.0"),
                                (b"SYST:SENSOR:IDN?", b"no sensor,0,0,0,0,0")]):
            pass


# -- review s31: safe state, set-point and TEC checks, replies (PRO8000); unit, head and readings (PM100) ----
PRO_OPEN = [(b"*IDN?", b"PROFILE,PRO8000,1,3"), (b":SYST:ANSW VALUE", None), (b":SYST:ERR?", b'0,"No error"'),
            (b":SLOT 1", None), (b":LIMC:SET 0.1", None), (b":SYST:ERR?", b'0,"No error"'),
            (b":SLOT 1", None), (b":MODE?", b"CC")]  # constant current (tests/drivers/test_pro8000_ld_mode.py)
PRO_OK = (b":SYST:ERR?", b'0,"No error"')
PRO_CFG = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR",
                      options={"ramp_step_ma": 50.0, "ramp_ma_per_s": 100_000.0})
S1 = (b":SLOT 1", None)
S2 = (b":SLOT 2", None)
#: close() of a laser that reads back OFF
CLOSED_OFF = [S1, (b":LASER?", b"OFF")]
#: what the safe state sends when a read-back failed: emission off and set point 0 at once, then the queue
OFF_AT_ONCE = [S1, (b":LASER OFF", None), S1, (b":ILD:SET 0", None), PRO_OK]


@pytest.mark.parametrize("replies,match", [
    ([(b":LASER?", b"1,2")], "expected ON or OFF"),
    ([(b":LASER?", b"ON"), S1, (b":ILD:SET?", b"garbage")], "unexpected reply 'garbage'; expected a number"),
    ([(b":LASER?", b"ON"), S1, (b":ILD:SET?", b"-0.5")], r"reply -0.5 is out of range; expected at least 0 A"),
])
def test_pro8000_safe_state_reaches_laser_off_when_a_read_back_is_bad(replies: list, match: str) -> None:
    """Review s31 A1: ``:LASER OFF`` (Thorlabs PRO800/8000 VXIpnp driver ``pro8.c`` ``Pro8_LdcSetLdOutput``;
    PyMeasure ``LDCStatus``) and ``:ILD:SET 0`` are sent even when ``:LASER?`` or ``:ILD:SET?`` answers
    garbage; the first failure is raised after them, as one InstrumentReplyError."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a),
                           [*PRO_OPEN, S1, *replies, *OFF_AT_ONCE, *CLOSED_OFF]) as d:
        with pytest.raises(InstrumentReplyError, match=f"safe state: .*{match}.*switched off anyway"):
            d.safe_state()
        d.close()


def test_pro8000_safe_state_still_sends_laser_off_when_a_ramp_write_fails() -> None:
    """A1: the error queue refusing a ramp step (``:ILD:SET``) still ends with ``:LASER OFF``."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"ON"), S1, (b":ILD:SET?", b"0.1"),
        S1, (b":ILD:SET 0.05", None), (b":SYST:ERR?", b'-222,"Data out of range"'), (b":SYST:ERR?", b'0,"No error"'),
        *OFF_AT_ONCE, *CLOSED_OFF,
    ]) as d:
        with pytest.raises(InstrumentQueueError, match="Data out of range.*switched off anyway"):
            d.safe_state()
        d.close()


def test_pro8000_safe_state_interrupted_by_ctrl_c_still_sends_laser_off() -> None:
    """Ctrl-C during the ramp-down: ``:LASER OFF`` is still sent, then the interrupt goes on unchanged."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"ON"), S1, (b":ILD:SET?", b"0.1"), *OFF_AT_ONCE, *CLOSED_OFF,
    ]) as d:
        def interrupted(*args: object, **kw: object) -> None:
            raise KeyboardInterrupt

        d._ramp_down_capped = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            d.safe_state()
        del d._ramp_down_capped
        d.close()


def test_pro8000_refuses_a_set_point_above_max_current_before_laser_on() -> None:
    """A2: a set point read back above ``options.max_current_ma`` (100 mA; here 500 mA, e.g. from the front
    panel) is refused and ``:LASER ON`` is never sent."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"OFF"), S1, (b":ILD:SET?", b"0.5"), *CLOSED_OFF,
    ]) as d:
        with pytest.raises(InstrumentReplyError, match=r"500 mA .*expected 0 to 100 mA.*laser left off"):
            d.output_enabled = True
        d.close()


@pytest.mark.parametrize("tec,match", [
    ([(b":TEC?", b"OFF")], r"TEC \(slot 2\) is off"),
    ([(b":TEC?", b"ON"), S2, (b":TEMP:SET?", b"30"), S2, (b":TEMP:ACT?", b"24.2")],
     r"TEC not settled: actual 24.2 °C, set 30 °C; expected within 0.5 K"),
])
def test_pro8000_laser_on_needs_the_tec_on_and_settled(tec: list, match: str) -> None:
    """C3: before ``:LASER ON`` the TED output must be on (``:TEC?``: PyMeasure ``TEDStatus``; ``pro8.c``
    ``Pro8_TecGetPtOutput``) and the actual temperature (``:TEMP:ACT?``: ``pro8.c`` ``Pro8_TecGetTemp``,
    value 3 — not in PyMeasure 0.16's ``ThorlabsPro8000``) within ``options.temp_tolerance_k`` of the set
    point."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"OFF"), S1, (b":ILD:SET?", b"0.03"), S2, *tec, *CLOSED_OFF,
    ]) as d:
        with pytest.raises(InstrumentError, match=match):
            d.output_enabled = True
        d.close()


def test_pro8000_laser_on_that_reads_back_off_is_refused_before_any_current() -> None:
    """Review s36 M2: ``:LASER ON`` accepted (no error) but ``:LASER?`` reads OFF (an open interlock): one
    line naming the laser, the command and what it read; ``:LASER OFF`` sent, the set point put back, no
    ramp step written. ``:LASER?`` → ON/OFF: ``pro8.c`` ``Pro8_LdcGetLdOutput``; PyMeasure ``LDCStatus``."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"OFF"), S1, (b":ILD:SET?", b"0.03"),
        S2, (b":TEC?", b"ON"), S2, (b":TEMP:SET?", b"25"), S2, (b":TEMP:ACT?", b"25.1"),
        S1, (b":ILD:SET 0", None), PRO_OK, S1, (b":LASER ON", None), PRO_OK,
        S1, (b":LASER?", b"OFF"),
        S1, (b":LASER OFF", None), PRO_OK, S1, (b":ILD:SET 0.03", None), PRO_OK, *CLOSED_OFF,
    ]) as d:
        with pytest.raises(InstrumentError, match=r"^laser: :LASER ON accepted but :LASER\? reads OFF — interlock "
                                                  r"open\? \(emission stays off; set point kept at 30 mA\)"):
            d.output_enabled = True
        d.close()


def test_pro8000_safe_state_ramp_is_cut_at_safe_ramp_max_s_by_laser_off(caplog: pytest.LogCaptureFixture) -> None:
    """Review s36 L4: a ramp-down longer than ``options.safe_ramp_max_s`` (here 100 mA at 100 mA/s in 50 mA
    steps: 50 mA at once, 0 mA 0.5 s later; cap 0.4 s: the first step fits) stops there; ``:LASER OFF`` (``pro8.c`` ``Pro8_LdcSetLdOutput``;
    PyMeasure ``LDCStatus``) is sent at the current reached, then the set point is put back; a warning says
    so. Before, the driver ramped to 0 mA whatever it took (200 s from 4000 mA at the default 20 mA/s)."""
    import logging
    import time

    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR",
                      options={"ramp_step_ma": 50.0, "ramp_ma_per_s": 100.0, "safe_ramp_max_s": 0.4})
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", cfg, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"ON"), S1, (b":ILD:SET?", b"0.1"),
        S1, (b":ILD:SET 0.05", None), PRO_OK,  # the one step that fits in 0.4 s
        S1, (b":LASER OFF", None), PRO_OK, S1, (b":ILD:SET 0.1", None), PRO_OK, *CLOSED_OFF,
    ]) as d:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING), emergency("signal SIGTERM"):  # the signal handlers' safe state
            d.safe_state()
        assert time.monotonic() - t0 < 0.4
        assert "would take 0.5 s, more than options.safe_ramp_max_s = 0.4 s" in caplog.text
        assert "then :LASER OFF at once at 50 mA" in caplog.text
        d.close()


def test_pro8000_a_normal_switch_off_ramps_all_the_way_at_the_chosen_rate(caplog: pytest.LogCaptureFixture) -> None:
    """Review s36 lab2 L4: the cap is for an emergency stop only (SIGTERM/SIGINT). The same options as above, a
    normal safe state (an acquisition's end, ``close``): 100 -> 50 -> 0 mA at 100 mA/s (0.5 s), then ``:LASER
    OFF`` at 0 mA, no warning. Before, every switch-off was cut at ``safe_ramp_max_s``."""
    import logging
    import time

    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR",
                      options={"ramp_step_ma": 50.0, "ramp_ma_per_s": 100.0, "safe_ramp_max_s": 0.4})
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", cfg, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", b"ON"), S1, (b":ILD:SET?", b"0.1"),
        S1, (b":ILD:SET 0.05", None), PRO_OK, S1, (b":ILD:SET 0", None), PRO_OK,  # the whole ramp
        S1, (b":LASER OFF", None), PRO_OK, S1, (b":ILD:SET 0.1", None), PRO_OK, *CLOSED_OFF,
    ]) as d:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING):
            d.safe_state()
        assert time.monotonic() - t0 >= 0.45
        assert "would take" not in caplog.text  # no cut (the options' load warning is another test's)
        d.close()


def test_pro8000_options_warn_at_load_when_the_ramp_outlasts_the_emergency_cap(caplog: pytest.LogCaptureFixture) -> None:
    """Review s36 lab2 L4: ``max_current_ma / ramp_ma_per_s`` above ``safe_ramp_max_s`` is said when the options
    are loaded (station load, ``station show``), naming the three fields, not first at a stop."""
    import logging

    from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000Options

    with caplog.at_level(logging.WARNING):
        ThorlabsPRO8000Options(max_current_ma=100.0, ramp_ma_per_s=20.0)  # 5 s: fine
        assert caplog.text == ""
        ThorlabsPRO8000Options(max_current_ma=1000.0, ramp_ma_per_s=20.0)  # 50 s against 30 s
    assert ("a ramp-down from max_current_ma = 1000 mA at ramp_ma_per_s = 20 mA/s takes 50.0 s, more than "
            "safe_ramp_max_s = 30 s") in caplog.text
    assert "cut at 30 s by :LASER OFF at the current reached (up to 400 mA)" in caplog.text


def test_pro8000_operating_point_switches_the_tec_on() -> None:
    """C3: ``apply_operating_point`` writes the TEC set point, then ``:TEC ON`` (PyMeasure ``TEDStatus``;
    ``pro8.c`` ``Pro8_TecSetPtOutput``), then the LD set point."""
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S2, (b":TEMP:SET 25", None), PRO_OK, S2, (b":TEC ON", None), PRO_OK,
        S1, (b":LASER?", b"OFF"), S1, (b":ILD:SET 0.03", None), PRO_OK, *CLOSED_OFF,
    ]) as d:
        d.apply_operating_point(_station(1550.0, 2.0))  # type: ignore[arg-type]
        d.close()


def test_pro8000_snapshot_says_where_the_wavelength_comes_from(laser: ThorlabsPRO8000) -> None:
    """C3: the snapshot's ``wavelength_nm`` is from the TEC set temperature, and says so; the actual one is
    beside it."""
    laser.apply_operating_point(_station())  # type: ignore[arg-type]
    snap = laser.snapshot()
    assert "set temperature" in snap["wavelength_source"]
    assert snap["tec"]["on"] is True and snap["tec"]["temperature_act_c"] == 25.0
    assert snap["tec"]["wavelength_at_actual_nm"] == pytest.approx(1550.0)
    assert laser.status()["temperature_act_c"] == 25.0


PM_HEAD = (b"SYST:SENSOR:IDN?", b"S122C,123,07-Sep-2015,1,18,289")
PM_OPEN = [(b"*IDN?", b"Thorlabs,PM100USB,P1,1.7.0"), PM_HEAD, (b"SENS:CORR:WAV? MIN", b"700"),
           (b"SENS:CORR:WAV? MAX", b"1800"), (b"SENS:POW:RANG:UPP? MAX", b"4.000000E-02"), *PM_UNIT_W]


@pytest.mark.parametrize("reply,match", [
    (b"-2.0E-03", r"reply '-2.0E-03' is out of range; expected -1e-06 to 0.044 W"),
    (b"9.9E+37", "SCPI overflow"),
    (b"abc", "unexpected reply 'abc'; expected a number"),
])
def test_pm100_refuses_negative_overflow_and_garbage_readings(reply: bytes, match: str) -> None:
    """C1/B2/B3: ``MEAS:POW?`` replies that are no power in W are one InstrumentReplyError naming the command."""
    cfg = PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES)
    with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a), [*PM_OPEN, (b"MEAS:POW?", reply)]) as d:
        with pytest.raises(InstrumentReplyError, match=f"{match}.*'MEAS:POW\\?'"):
            d.power_w()


def test_pm100_accepts_the_small_negative_readings_of_a_zeroed_head_in_the_dark() -> None:
    cfg = PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES)
    with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a), [*PM_OPEN, (b"MEAS:POW?", b"-3.2E-09")]) as d:
        assert d.power_w() == pytest.approx(-3.2e-9)


def test_pm100_refuses_a_dbm_unit_and_an_energy_head_at_open() -> None:
    """C1: the unit must read back W after ``SENS:POW:UNIT W``; B1: a head whose flags lack "power sensor"
    (PM100D manual §6.4 ``SYST:SENSOR:IDN?`` flags; PyMeasure ``_set_flags``) is refused at open."""
    cfg = PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES)
    with pytest.raises(InstrumentReplyError, match="power unit is 'DBM'; expected 'W'"):
        with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a), [*PM_OPEN[:-1],
                                                                                 (b"SENS:POW:UNIT?", b"DBM")]):
            pass
    with pytest.raises(InstrumentError, match="ES120C is not a power sensor"):
        with expected_protocol(lambda a: ThorlabsPM100USB("pm", cfg, adapter=a),
                               [(b"*IDN?", b"Thorlabs,PM100USB,P1,1.7.0"),
                                (b"SYST:SENSOR:IDN?", b"ES120C,7,01-Jan-2020,2,1,2")]):
            pass


def test_pro8000_load_warning_is_logged_once_for_a_station_load_and_its_open(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Review s37 lab3 nit: the load warning of a ramp longer than ``safe_ramp_max_s`` was logged twice, once when
    the station file loads (``validate_driver_roles``) and again when the driver parsed the same options at open
    (``parse_options``). The station's load says it; the open does not repeat it."""
    import logging
    import tomllib

    from labqfl.config import parse_station_config
    from labqfl.station import open_driver

    example = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"
    d = tomllib.loads(example.read_text(encoding="utf-8"))
    d["laser"]["options"].update(max_current_ma=1000.0, ramp_ma_per_s=20.0)  # 50 s against 30 s
    text = "a ramp-down from max_current_ma = 1000 mA at ramp_ma_per_s = 20 mA/s takes 50.0 s"
    with caplog.at_level(logging.WARNING):
        cfg = parse_station_config(d, str(tmp_path / "station.toml"))
        assert caplog.text.count(text) == 1  # said at load
        laser = open_driver("laser", cfg.laser, tmp_path)
        laser.close()
    assert caplog.text.count(text) == 1, caplog.text
