"""KeysightN7764A: real driver class against its pyvisa-sim device and a protocol fake."""

from __future__ import annotations

import pytest
from labqfl.drivers.keysight_n7764a import KeysightN7764A
from pymeasure.test import expected_protocol

from labqfl.config import AttenuatorConfig
from labqfl.errors import InstrumentQueueError, InstrumentTimeout

RES = "TCPIP0::10.0.0.21::inst0::INSTR"


@pytest.fixture
def voa(sim_library):  # type: ignore[no-untyped-def]
    cfg = AttenuatorConfig(driver="KeysightN7764A", resource=RES, visa_library=sim_library("keysight_n7764a.yaml"),
                           timeout_ms=150, max_attenuation_db=60.0, options={"max_db": 60.0, "attenuation_db": 20.0})
    d = KeysightN7764A("C1.attenuator", cfg)
    yield d
    d.close()


def test_n7764a_identity_settings_and_ranges(voa: KeysightN7764A) -> None:
    assert "N7764A" in voa.identity()
    voa.attenuation_db, voa.shutter_closed, voa.wavelength_nm = 33.25, False, 1310.0
    assert voa.attenuation_db == 33.25 and voa.shutter_closed is False
    assert voa.wavelength_nm == pytest.approx(1310.0)
    for name, bad in [("attenuation_db", -0.1), ("attenuation_db", 61), ("wavelength_nm", 1000), ("shutter_closed", "x")]:
        with pytest.raises(ValueError, match=name):
            setattr(voa, name, bad)
    voa.safe_state()
    assert voa.shutter_closed is True


def test_n7764a_device_limit_reaches_error_queue(voa: KeysightN7764A) -> None:
    # the station allows 60 dB but the (simulated) unit stops at 45 dB: its error queue says so
    with pytest.raises(InstrumentQueueError, match=r"Command error.*C1.attenuator.*:INP1:ATT 50.000"):
        voa.attenuation_db = 50
    assert voa.attenuation_db == 10.0
    with pytest.raises(InstrumentTimeout):
        voa.link.query(":INP1:NOPE?")


def test_n7764a_two_threads(voa: KeysightN7764A, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for _k in range(25):
            voa.attenuation_db = 5.0 * (i + 1)
            assert voa.attenuation_db in (5.0, 10.0)
            voa.shutter_closed = bool(i)
    threads(work)


def test_n7764a_exact_protocol() -> None:
    """Keysight N77xx Series Programming Guide (N7764A and family), ``:INPut[n]`` / ``:OUTPut[n]`` subsystems;
    the same commands as the Keysight *8163A/B, 8164A/B & 8166A/B Mainframes Programming Guide*, chapter 4
    "Measurement Operations & Settings", section "Signal Conditioning — The INPut and OUTput commands"
    (8156x/8157x attenuator modules): ``:INPut[n][:CHANnel[m]]:ATTenuation <value>[dB]`` and its query
    (read here, example ``INP1:ATT 14dB``), ``:INPut[n]:WAVelength`` (m) and ``:OUTPut[n]:STATe`` (shutter)
    in the same section (their pages could not be read here). ``SYST:ERR?`` is the SCPI error queue. n is
    the attenuator's port: 1, 3, 5, 7 on the N7764A (driver docstring: the port table of the N77xx guide
    could not be read here; two open drivers list [1, 3, 5, 7])."""
    cfg = AttenuatorConfig(driver="KeysightN7764A", resource=RES, options={"channel": 3, "attenuation_db": 12.5})
    ok = (b"SYST:ERR?", b'+0,"No error"')
    with expected_protocol(lambda a: KeysightN7764A("C1.attenuator", cfg, adapter=a), [
        (b"*IDN?", b"Keysight Technologies,N7764A,X,1"),
        (b":INP3:ATT 12.500", None), ok, (b":INP3:ATT?", b"+12.500"),  # every attenuation read back
        (b":INP3:ATT?", b"+12.500"), (b":OUTP3:STAT 1", None), ok,  # still what was set: the shutter opens
        (b":INP3:WAV 1.550000e-06", None), ok,
        (b":INP3:ATT?", b"+12.500"), (b":OUTP3:STAT?", b"1"), (b":INP3:WAV?", b"+1.55000000E-006"),
        (b":INP3:ATT 45.000", None), (b"SYST:ERR?", b'-222,"Data out of range"'), (b"SYST:ERR?", b'+0,"No error"'),
        (b":OUTP3:STAT 0", None), ok,
    ]) as d:
        d.attenuation_db, d.shutter_closed, d.wavelength_nm = 12.5, False, 1550
        assert (d.attenuation_db, d.shutter_closed) == (12.5, False)
        assert d.wavelength_nm == pytest.approx(1550.0)
        with pytest.raises(InstrumentQueueError, match="Data out of range"):
            d.attenuation_db = 45
        d.close()
        d.close()


def test_n7764a_channels_are_1_3_5_7(sim_library) -> None:  # type: ignore[no-untyped-def]
    """The N7764A's four attenuators are ports 1, 3, 5, 7 (see the driver's module docstring): channel 7 is
    addressed as ``:INP7``/``:OUTP7``, and channel 2 is refused before anything is sent."""
    from labqfl.errors import ConfigError

    lib = sim_library("keysight_n7764a.yaml")
    d = KeysightN7764A("C4.attenuator", AttenuatorConfig(driver="KeysightN7764A", resource=RES, visa_library=lib,
                                                         timeout_ms=150, options={"channel": 7, "attenuation_db": 21.5}))
    try:
        d.attenuation_db, d.shutter_closed = 21.5, False
        assert d.link.query(":INP7:ATT?") == "+21.500" and d.link.query(":OUTP7:STAT?") == "1"
        assert d.link.query(":INP1:ATT?") == "+10.000"  # channel 1 untouched
    finally:
        d.close()
    with pytest.raises(ConfigError, match=r"options\.channel': Input should be 1, 3, 5 or 7"):
        KeysightN7764A("C2.attenuator", AttenuatorConfig(driver="KeysightN7764A", resource=RES, options={"channel": 2}))


def test_n7764a_operating_point_sets_the_attenuation_for_mu_and_the_shutter_needs_it(sim_library) -> None:  # type: ignore[no-untyped-def]
    """Review s36 H1 (b): the operating point writes ``options.attenuation_db`` (the channel's attenuation for
    the signal μ, from the lab's calibration) with ``:INP<n>:ATT`` and reads it back with ``:INP<n>:ATT?``
    (Keysight N77xx Programming Guide, ``:INPut[n][:CHANnel[m]]:ATTenuation`` and its query); the shutter
    (``:OUTPut[n][:STATe]``) is refused, before ``:OUTP<n>:STAT 1`` is sent, with no attenuation configured
    or when the unit no longer holds the one set. Before, the operating point wrote wavelength and shutter
    only and arming opened the shutter at whatever the unit held (pyvisa-sim: 10 dB)."""
    from labqfl.config import load_station_config
    from labqfl.errors import InstrumentError

    station = load_station_config(None)
    lib = sim_library("keysight_n7764a.yaml")

    def voa(role: str, channel: int, **options: object) -> KeysightN7764A:
        return KeysightN7764A(role, AttenuatorConfig(driver="KeysightN7764A", resource=RES, visa_library=lib,
                                                     timeout_ms=150, options={"channel": channel, **options}))

    c1, c2 = voa("C1.attenuator", 1, attenuation_db=37.25), voa("C2.attenuator", 3)
    try:
        c1.apply_operating_point(station)
        assert c1.link.query(":INP1:ATT?") == "+37.250" and c1.shutter_closed is True
        c1.shutter_closed = False
        assert c1.link.query(":OUTP1:STAT?") == "1"
        c1.safe_state()
        # someone turns the knob: the shutter stays closed, and the line says what was read
        c1.link.write(":INP1:ATT 12.000")
        with pytest.raises(InstrumentError, match=r"^C1\.attenuator: shutter not opened \(:OUTP1:STAT 1\): :INP1:ATT\? "
                                                  r"reads 12\.000 dB, but 37\.250 dB was set"):
            c1.shutter_closed = False
        assert c1.link.query(":OUTP1:STAT?") == "0"
        # never configured: the operating point leaves the attenuation alone and the shutter is refused
        c2.apply_operating_point(station)
        with pytest.raises(InstrumentError, match=r"^C2\.attenuator: shutter not opened \(:OUTP3:STAT 1\): "
                                                  r"options\.attenuation_db is not set"):
            c2.shutter_closed = False
        assert c2.link.query(":OUTP3:STAT?") == "0" and c2.link.query(":INP3:ATT?") == "+10.000"
    finally:
        c1.close()
        c2.close()


def test_n7764a_an_attenuation_the_unit_does_not_hold_is_refused() -> None:
    """``:INP<n>:ATT`` accepted without error but ``:INP<n>:ATT?`` reading another value: one line naming both."""
    from labqfl.errors import InstrumentError

    cfg = AttenuatorConfig(driver="KeysightN7764A", resource=RES, options={"channel": 5, "attenuation_db": 30.0})
    ok = (b"SYST:ERR?", b'+0,"No error"')
    with expected_protocol(lambda a: KeysightN7764A("C3.attenuator", cfg, adapter=a), [
        (b"*IDN?", b"Keysight Technologies,N7764A,X,1"),
        (b":INP5:ATT 30.000", None), ok, (b":INP5:ATT?", b"+10.000"),
        (b":OUTP5:STAT 0", None), ok,
    ]) as d:
        with pytest.raises(InstrumentError, match=r"^C3\.attenuator: :INP5:ATT 30\.000 accepted but :INP5:ATT\? reads "
                                                  r"10\.000 dB; expected 30\.000 dB"):
            d.attenuation_db = 30.0
        d.close()


def test_n7764a_attenuation_option_within_max_db() -> None:
    from labqfl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"attenuation_db \(50 dB\) is above max_db \(45 dB\)"):
        KeysightN7764A("C1.attenuator", AttenuatorConfig(driver="KeysightN7764A", resource=RES,
                                                         options={"attenuation_db": 50.0}))
