"""Review s33 (lab), instrument replies: setting read-backs range-checked (M1), ``*IDN?`` compared with the
driver's instrument before anything is written (M3), the error a timed-out query leaves in the queue reported
against that query, not the safe state's next write (L10), and PM100 power readings checked against the
head (L4). Faults are injected into copies of the shipped pyvisa-sim files (``sim_library(name, edit)``) or
spoken by pymeasure's ``expected_protocol`` (which fails on any command not listed: "nothing written")."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from labqfl.drivers.idquantique_id120 import IDQuantiqueID120
from labqfl.drivers.keysight_33500b import Keysight33500B
from labqfl.drivers.keysight_n7764a import KeysightN7764A
from labqfl.drivers.mz_intensity_modulator import GenericMZIntensityModulator
from labqfl.drivers.thorlabs_mbx import ThorlabsMBX
from labqfl.drivers.thorlabs_pm100usb import ThorlabsPM100USB
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000
from pymeasure.test import expected_protocol

from labqfl.config import (
    AttenuatorConfig,
    DetectorConfig,
    LaserConfig,
    PhaseModulatorConfig,
    PowerMeterConfig,
)
from labqfl.errors import ConfigError, InstrumentError, InstrumentReplyError, InstrumentTimeout

VOA_RES = "TCPIP0::10.0.0.21::inst0::INSTR"
PM_RES = "USB0::0x1313::0x8072::SIMPM0001::INSTR"
PM100_IDN = b"Thorlabs,PM100USB,SIMPM0001,1.7.0"


def _voa(sim_library: Callable[..., str], edit: Callable[[str], str] | None = None, **cfg: Any) -> KeysightN7764A:
    lib = sim_library("keysight_n7764a.yaml", edit)
    return KeysightN7764A("C1.attenuator", AttenuatorConfig(driver="KeysightN7764A", resource=VOA_RES, visa_library=lib,
                                                            max_attenuation_db=45.0, **cfg))


def _reply(query: str, fmt: str, reply: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        old = f'q: "{query}"\n          r: "{fmt}"'
        assert old in text
        return text.replace(old, f'q: "{query}"\n          r: "{reply}"')
    return edit


# -- M1: a read-back outside the setting's range is one error naming instrument, command, reply, range ------
@pytest.mark.parametrize(("query", "fmt", "reply", "setting", "expected"), [
    (":INP1:WAV?", "{:+.8E}", "1550.0", "wavelength_nm", "1260 to 1640 nm"),  # nm where the manual says m
    (":INP1:ATT?", "{:+.3f}", "+999.000", "attenuation_db", "0 to 45 dB"),
    (":INP1:ATT?", "{:+.3f}", "-12.000", "attenuation_db", "0 to 45 dB"),
])
def test_an_out_of_range_read_back_is_refused(sim_library, query, fmt, reply, setting, expected) -> None:  # type: ignore[no-untyped-def]
    """N7764A (N77xx programming guide): ``:INP<n>:WAV?`` answers metres, ``:INP<n>:ATT?`` dB within the
    unit's range; a reply outside the range the setting's writes obey is not passed on (the calibration
    reads ``attenuation_db``)."""
    voa = _voa(sim_library, _reply(query, fmt, reply))
    try:
        with pytest.raises(InstrumentReplyError) as err:
            getattr(voa, setting)
        msg = str(err.value)
        assert "\n" not in msg
        for part in (f"reply {float(reply)!r}", f"{setting} = ", f"expected {expected}", "'C1.attenuator'",
                     f"command '{query}'"):
            assert part in msg, (part, msg)
        shown = voa.snapshot()["settings"][setting]["value"]  # the snapshot records the error, not the number
        assert isinstance(shown, str) and shown.startswith("<error: ") and expected in shown
    finally:
        voa.close()


def test_in_range_read_backs_still_pass_at_the_range_edges(sim_library) -> None:  # type: ignore[no-untyped-def]
    voa = _voa(sim_library)
    try:
        voa.wavelength_nm, voa.attenuation_db = 1640.0, 45.0  # 1640 nm → 1.64e-6 m → 1640.0000000000002 nm
        assert voa.wavelength_nm == pytest.approx(1640.0) and voa.attenuation_db == 45.0
        voa.wavelength_nm, voa.attenuation_db = 1260.0, 0.0
        assert voa.wavelength_nm == pytest.approx(1260.0) and voa.attenuation_db == 0.0
    finally:
        voa.close()


# -- M3: *IDN? must name the driver's instrument; nothing else is sent otherwise -------------------------
WRONG = [
    (lambda a: KeysightN7764A("C1.attenuator", AttenuatorConfig(driver="KeysightN7764A", resource=VOA_RES), adapter=a),
     "expected a Keysight N7764A"),
    (lambda a: Keysight33500B("C1.phase_modulator", PhaseModulatorConfig(driver="Keysight33500B", resource=VOA_RES),
                              adapter=a), "expected a Keysight/Agilent 33500B-series generator"),
    (lambda a: ThorlabsPRO8000("laser", LaserConfig(driver="ThorlabsPRO8000", resource=VOA_RES), adapter=a),
     "expected a Thorlabs \\(PROFILE\\) PRO8000/PRO800 mainframe"),
    (lambda a: IDQuantiqueID120("D0", DetectorConfig(driver="IDQuantiqueID120", resource=VOA_RES, kind="spad",
                                                     bias_current_ua=120.0), adapter=a), "expected an ID Quantique ID120"),
    (lambda a: ThorlabsMBX("C1.attenuator", AttenuatorConfig(driver="ThorlabsMBX", resource="ASRL9::INSTR"), adapter=a),
     "expected a Thorlabs MBX/MX bias controller"),
]


@pytest.mark.parametrize(("make", "expected"), WRONG)
def test_a_driver_pointed_at_another_instrument_refuses_before_writing(make, expected) -> None:  # type: ignore[no-untyped-def]
    """*IDN? (IEEE 488.2 §10.14, "<manufacturer>,<model>,<serial>,<firmware>") of a PM100USB on the role's
    address: one line naming what answered and what was expected, and no other command (expected_protocol
    fails on any command not listed, e.g. the PRO8000's ``:SYST:ANSW VALUE`` or a VOA's ``:INP1:WAV``)."""
    with pytest.raises(InstrumentError) as err:
        with expected_protocol(make, [(b"*IDN?", PM100_IDN)]):
            pass
    msg = str(err.value)
    assert "\n" not in msg and "identifies as Thorlabs PM100USB" in msg and "command '*IDN?'" in msg
    assert re.search(expected, msg), msg


def test_the_power_meter_refuses_a_voa_before_querying_its_head() -> None:
    cfg = PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES)
    with pytest.raises(InstrumentError, match=r"identifies as Keysight Technologies N7764A .*expected a Thorlabs "
                                              r"PM100-family power meter"):
        with expected_protocol(lambda a: ThorlabsPM100USB("power_meter", cfg, adapter=a),
                               [(b"*IDN?", b"Keysight Technologies,N7764A,X,1")]):
            pass


def test_the_reviewers_station_wrong_model_against_pyvisa_sim(sim_library) -> None:  # type: ignore[no-untyped-def]
    """The review's reproducer: the N7764A role pointed at the PM100USB's pyvisa-sim resource."""
    cfg = AttenuatorConfig(driver="KeysightN7764A", resource=PM_RES, visa_library=sim_library("thorlabs_pm100usb.yaml"))
    with pytest.raises(InstrumentError, match=rf"instrument at {PM_RES} identifies as Thorlabs PM100USB "
                                              r"\('Thorlabs,PM100USB,SIMPM0001,1.7.0'\); expected a Keysight N7764A"):
        KeysightN7764A("C1.attenuator", cfg)


def test_older_agilent_identities_are_accepted() -> None:
    cfg = AttenuatorConfig(driver="KeysightN7764A", resource=VOA_RES)
    with expected_protocol(lambda a: KeysightN7764A("C1.attenuator", cfg, adapter=a),
                           [(b"*IDN?", b"Agilent Technologies,N7764A,DE123,1.0")]) as d:
        assert "N7764A" in d.identity()


def test_a_generic_driver_checks_the_configured_identity_pattern() -> None:
    """A protocol-level driver names no model: ``options.identity_pattern`` (a regex) says what must answer."""
    cfg = AttenuatorConfig(driver="GenericMZIntensityModulator", resource=VOA_RES,
                           options={"identity_pattern": r"^Acme,BC-?4\b"})
    with pytest.raises(InstrumentError, match=r"identifies as labqfl MZ-BIAS-SIM .*options.identity_pattern"):
        with expected_protocol(lambda a: GenericMZIntensityModulator("C1.attenuator", cfg, adapter=a),
                               [(b"*IDN?", b"labqfl,MZ-BIAS-SIM,X,1")]):
            pass
    with expected_protocol(lambda a: GenericMZIntensityModulator("C1.attenuator", cfg, adapter=a),
                           [(b"*IDN?", b"ACME,BC4,7,1")]) as d:
        assert d.identity() == "ACME,BC4,7,1"
    with pytest.raises(ConfigError, match="identity_pattern.*not a regular expression"):
        GenericMZIntensityModulator("C1.attenuator", AttenuatorConfig(
            driver="GenericMZIntensityModulator", resource=VOA_RES, options={"identity_pattern": "Acme(("}))


# -- L10: the error a timed-out query leaves in the queue belongs to that query ----------------------------
def test_a_timed_out_query_owns_its_queue_error_and_the_safe_state_still_succeeds(sim_library) -> None:  # type: ignore[no-untyped-def]
    """pyvisa-sim pushes -100 for an unknown query and answers nothing (a real unit: -113 "Undefined
    header"). The timeout names ``:INP1:ATT?`` and that queue entry; the safe state's ``:OUTP1:STAT 0`` that
    follows is accepted and reported as such."""
    def unknown_att(text: str) -> str:
        return text.replace('q: ":INP1:ATT?"', 'q: ":INP1:ATTX?"')
    voa = _voa(sim_library, unknown_att, timeout_ms=300)
    try:
        voa.link.write(":OUTP1:STAT 1")  # opened outside the driver (which reads :INP1:ATT? before opening)
        with pytest.raises(InstrumentTimeout, match=r"no reply within 300 ms.*error queue then held -100,\"Command "
                                                    r"error\".*command ':INP1:ATT\?'"):
            _ = voa.attenuation_db
        voa.safe_state()  # before: InstrumentQueueError -100 blamed on ':OUTP1:STAT 0'
        assert voa.shutter_closed is True
    finally:
        voa.close()


# -- L4: PM100 power readings: one number, within the head's range, above the head's floor ----------------
@pytest.mark.parametrize(("reply", "match"), [
    ("1.0E-04,2.0E-04", r"unexpected reply '1.0E-04,2.0E-04'; expected a number"),
    ("12.5", r"reply '12.5' is out of range; expected -1e-06 to 0.044 W"),  # 12.5 W on a 40 mW head
    ("-5.0E-04", r"reply '-5.0E-04' is out of range; expected -1e-06 to 0.044 W"),  # -0.5 mW, photodiode head
])
def test_pm100_power_readings_are_checked_against_the_head(sim_library, reply, match) -> None:  # type: ignore[no-untyped-def]
    """``SENS:POW:RANG:UPP? MAX`` (PM100 SCPI ``SENSe:POWer[:DC]:RANGe[:UPPer]``; Thorlabs PM400 manual §5.5
    SCPI table, compatible with the PM100USB) gives the head's largest range (the sim's S122C: 40 mW); the
    head type 1 of ``SYST:SENSOR:IDN?`` (PM100D manual §6.4) is a photodiode, whose zero offset is nW."""
    lib = sim_library("thorlabs_pm100usb.yaml", lambda t: t.replace('r: "{RANDOM(0.000095, 0.000105, 1):.6E}"',
                                                                    f'r: "{reply}"'))
    pm = ThorlabsPM100USB("power_meter", PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES, visa_library=lib))
    try:
        with pytest.raises(InstrumentReplyError, match=f"{match}.*'MEAS:POW\\?'"):
            pm.power_w()
    finally:
        pm.close()


def test_pm100_in_range_reading_passes(sim_library) -> None:  # type: ignore[no-untyped-def]
    pm = ThorlabsPM100USB("power_meter", PowerMeterConfig(driver="ThorlabsPM100USB", resource=PM_RES,
                                                          visa_library=sim_library("thorlabs_pm100usb.yaml")))
    try:
        assert 9.5e-5 <= pm.power_w() <= 1.05e-4 and pm.max_power_w == pytest.approx(0.04)
    finally:
        pm.close()
