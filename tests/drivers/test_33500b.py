"""Keysight33500B (PyMeasure Agilent33500 underneath) against pyvisa-sim and expected_protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
from labqfl.drivers.keysight_33500b import Keysight33500B
from pymeasure.test import expected_protocol

from labqfl.config import PhaseModulatorConfig
from labqfl.errors import InstrumentQueueError, InstrumentTimeout

RES = "TCPIP0::10.0.0.11::inst0::INSTR"


@pytest.fixture
def awg(sim_library):  # type: ignore[no-untyped-def]
    cfg = PhaseModulatorConfig(driver="Keysight33500B", resource=RES, visa_library=sim_library("keysight_33500b.yaml"),
                               timeout_ms=150, v_pi_v=3.9)
    d = Keysight33500B("C1.phase_modulator", cfg)
    yield d
    d.close()


def test_33500b_identity_settings_and_ranges(awg: Keysight33500B) -> None:
    assert "33522B" in awg.identity()
    awg.output_enabled, awg.amplitude_vpp, awg.gate_delay_ps = True, 2.5, 3150
    awg.v_pi_v, awg.bias_phase_rad = 4.2, 0.1
    assert (awg.output_enabled, awg.amplitude_vpp, awg.v_pi_v, awg.bias_phase_rad) == (True, 2.5, 4.2, 0.1)
    assert awg.gate_delay_ps == pytest.approx(3150)
    for name, bad in [("amplitude_vpp", 0.0), ("amplitude_vpp", 11), ("gate_delay_ps", -1), ("v_pi_v", 0),
                      ("bias_phase_rad", 10.0), ("output_enabled", None)]:
        with pytest.raises(ValueError, match=name):
            setattr(awg, name, bad)
    awg.safe_state()
    assert awg.output_enabled is False


def test_33500b_pattern_and_dc(awg: Keysight33500B) -> None:
    pattern = np.array([0, 1, 2, 3] * 4, dtype=np.uint8)
    samples, vpp, offset = awg.pattern_levels(pattern)
    volts = offset + samples * vpp / 2
    # phase (a·π/2) wrapped into [-π, π) times Vπ/π
    assert volts[:4] == pytest.approx([0.0, 3.9 / 2, -3.9, -3.9 / 2])
    awg.load_pattern(pattern)
    assert awg.link.query("SOUR1:FUNC?") == "ARB" and awg.link.query("SOUR1:FUNC:ARB?") == "LABQFL"
    assert awg.amplitude_vpp == pytest.approx(vpp) and awg.link.query("TRIG1:SOUR?") == "EXT"
    assert awg.status()["pattern_length"] == 16
    awg.set_dc_voltage(-1.5)
    assert awg.link.query("SOUR1:FUNC?") == "DC" and float(awg.link.query("SOUR1:VOLT:OFFS?")) == -1.5
    with pytest.raises(ValueError, match="0..3"):
        awg.load_pattern(np.array([0, 4] * 4))
    with pytest.raises(ValueError, match="slots"):
        awg.load_pattern(np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="volts"):
        awg.set_dc_voltage(7)
    awg.v_pi_v = 8.0
    with pytest.raises(ValueError, match="output window"):
        awg.load_pattern(pattern)
    assert math.isfinite(awg.drive_voltage(math.pi))


def test_33500b_error_queue_and_timeout(awg: Keysight33500B) -> None:
    with pytest.raises(InstrumentQueueError, match="TRIG1:DEL"):
        awg.link.write("TRIG1:DEL 5000")
    with pytest.raises(InstrumentTimeout, match="C1.phase_modulator"):
        awg.link.query("SOUR1:NOPE?")


def test_33500b_two_threads(awg: Keysight33500B, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for _k in range(15):
            awg.amplitude_vpp = 1.0 + i
            assert awg.amplitude_vpp in (1.0, 2.0)
            awg.output_enabled = bool(i)
    threads(work)


def test_33500b_exact_protocol() -> None:
    cfg = PhaseModulatorConfig(driver="Keysight33500B", resource=RES, v_pi_v=4.0, options={"channel": 2, "sample_rate_hz": 1e8})
    ok = (b"SYST:ERR?", b'+0,"No error"')
    pts = ", ".join(["0.3333", "1.0000", "-1.0000", "-0.3333"] * 2).encode()
    with expected_protocol(lambda a: Keysight33500B("pm", cfg, adapter=a), [
        (b"*IDN?", b"Agilent Technologies,33522B,X,1"),
        (b"OUTP2 1", None), ok,
        (b"SOUR2:VOLT 2.500000", None), ok,
        (b"TRIG2:DEL 3.150000e-09", None), ok,
        (b"SOUR2:DATA:VOL:CLE", None), ok,
        (b"SOUR2:DATA:ARB LABQFL, " + pts, None), ok,
        (b"SOUR2:FUNC ARB", None), ok,
        (b"SOUR2:FUNC:ARB LABQFL", None), ok,
        (b"SOUR2:FUNC:ARB:SRAT 100000000.000000", None), ok,
        (b"SOUR2:VOLT 6.000000", None), ok,
        (b"SOUR2:VOLT:OFFS -1.000000", None), ok,
        (b"SOUR2:BURS:NCYC 1", None), ok,
        (b"SOUR2:BURS:STAT 1", None), ok,
        (b"TRIG2:SOUR EXT", None), ok,
        (b"OUTP2?", b"1"), (b"SOUR2:VOLT?", b"+6.0E+00"), (b"TRIG2:DEL?", b"+3.15E-09"),
        (b"OUTP2 0", None), ok,
    ]) as d:
        d.output_enabled, d.amplitude_vpp, d.gate_delay_ps = True, 2.5, 3150
        d.load_pattern(np.array([0, 1, 2, 3] * 2, dtype=np.uint8))
        assert d.output_enabled and d.amplitude_vpp == 6.0 and d.gate_delay_ps == pytest.approx(3150)
        d.close()
