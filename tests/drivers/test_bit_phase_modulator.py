"""GenericBitDrivenPhaseModulator: a phase modulator fed by the pattern generator's two phase bits through a
binary-weighted combiner and an RF amplifier — a protocol-level driver (its command set is labqfl's own,
documented in drivers/bit_phase_modulator.py; no commercial manual is claimed), tested with an exact expected
protocol, against its pyvisa-sim device (sim_backends/visa/bit_phase_modulator.yaml), and through the chain
pattern-generator bits → combiner and gain → Vπ → the simulated loop's phase."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from labqfl.drivers.bit_phase_modulator import GenericBitDrivenPhaseModulator, bit_drive_levels_v
from pymeasure.test import expected_protocol

from labqfl.config import PhaseModulatorConfig, default_station_text, parse_station_config
from labqfl.errors import ConfigError, InstrumentError, InstrumentQueueError

RES = "ASRL13::INSTR"


@pytest.fixture
def pm(sim_library):  # type: ignore[no-untyped-def]
    cfg = PhaseModulatorConfig(driver="GenericBitDrivenPhaseModulator", resource=RES, v_pi_v=4.0,
                               visa_library=sim_library("bit_phase_modulator.yaml"), timeout_ms=150)
    d = GenericBitDrivenPhaseModulator("C1.phase_modulator", cfg)
    yield d
    d.close()


def test_bits_become_phases(pm: GenericBitDrivenPhaseModulator) -> None:
    """Module docstring: V_a = G·(b0·w0 + b1·w1), φ_a = π·V_a/Vπ + φ0; the ideal gain G·w0 = Vπ/2 gives a·π/2
    with binary-weighted bits; 6 dB less gain halves every phase."""
    ideal = pm.ideal_gain_db()
    assert ideal == pytest.approx(20 * math.log10(4.0 / 0.5))
    for a, p in enumerate(pm.phases_rad(ideal)):
        assert p == pytest.approx(a * math.pi / 2, abs=1e-12)
    low = pm.phases_rad(ideal - 20 * math.log10(2))
    assert low == pytest.approx([a * math.pi / 4 for a in range(4)], abs=1e-12)
    pm.rf_gain_db = round(ideal, 2)
    assert max(abs(e) for e in pm.phase_errors_rad()) < 2e-3  # 0.01 dB of rounding
    pm.amplitude_vpp = 6.0
    assert pm.amplitude_vpp == pytest.approx(6.0, rel=2e-3) and pm.drive_levels_v()[3] == pytest.approx(6.0, rel=2e-3)
    with pytest.raises(InstrumentError, match="pattern generator"):
        pm.load_pattern(np.zeros(4, dtype=np.uint8))


def test_settings_and_safe_state(pm: GenericBitDrivenPhaseModulator) -> None:
    assert "PM-BITS-SIM" in pm.identity()
    pm.output_enabled = True
    assert pm.output_enabled is True
    pm.set_dc_voltage(-3.5)
    assert pm.dc_voltage() == -3.5
    for name, bad in [("rf_gain_db", 41.0), ("v_pi_v", 0.1), ("output_enabled", "on")]:
        with pytest.raises(ValueError, match=name):
            setattr(pm, name, bad)
    with pytest.raises(ValueError, match="dc voltage"):
        pm.set_dc_voltage(25.0)
    pm.safe_state()
    assert pm.output_enabled is False


def test_exact_protocol() -> None:
    """The command set of drivers/bit_phase_modulator.py (module docstring): GAIN, BIAS:VOLT, OUTP, each write
    followed by the SYST:ERR? check; the operating point (ideal gain for Vπ = 4 V and w0 = 0.25 V: 18.06 dB)."""
    cfg = PhaseModulatorConfig(driver="GenericBitDrivenPhaseModulator", resource=RES, v_pi_v=4.0)
    station = parse_station_config(tomllib.loads(default_station_text()))
    ok = (b"SYST:ERR?", b'+0,"No error"')
    with expected_protocol(lambda a: GenericBitDrivenPhaseModulator("C1.phase_modulator", cfg, adapter=a), [
        (b"*IDN?", b"labqfl,PM-BITS-SIM,X,1"),
        (b"GAIN 18.06", None), ok,
        (b"BIAS:VOLT 0.0000", None), ok,
        (b"OUTP 0", None), ok,
        (b"GAIN?", b"18.06"),
        (b"OUTP 1", None), (b"SYST:ERR?", b'-100,"Command error"'), (b"SYST:ERR?", b'+0,"No error"'),
        (b"OUTP 0", None), ok,
    ]) as d:
        d.apply_operating_point(station)
        assert d.drive_levels_v()[1] == pytest.approx(2.0, rel=1e-3)
        with pytest.raises(InstrumentQueueError, match="Command error"):
            d.output_enabled = True
        d.close()


def _bit_driven_station(sim_library, gain_db: float | None):  # type: ignore[no-untyped-def]
    d = tomllib.loads(default_station_text())
    opts = {"bit_levels_v": [0.3, 0.6]} | ({"rf_gain_db": gain_db} if gain_db is not None else {})
    d["clients"][0]["phase_modulator"] = {"driver": "GenericBitDrivenPhaseModulator", "resource": RES, "v_pi_v": 4.2,
                                          "visa_library": sim_library("bit_phase_modulator.yaml"), "options": opts}
    return parse_station_config(d, "station.toml")


@pytest.mark.parametrize("gain_db", [None, 12.0])
def test_the_simulated_loop_applies_the_drivers_phases(sim_library, gain_db) -> None:  # type: ignore[no-untyped-def]
    """The chain closes: a client whose phase modulator is fed by its pattern generator's bits gets, in the
    simulated loop, the phases this driver computes from the combiner levels, the amplifier gain and Vπ
    (ideal a·π/2 at the ideal gain, off by the gain error otherwise) — not the AWG-driven formula."""
    from labqfl.sim_backends import SagnacTestbed

    from labqfl.station import Station

    cfg = _bit_driven_station(sim_library, gain_db)
    with Station(cfg) as st:
        drv = st["C1.phase_modulator"]
        assert isinstance(drv, GenericBitDrivenPhaseModulator)
        want = drv.phases_rad(drv.ideal_gain_db() if gain_db is None else gain_db)
    sim_phases = SagnacTestbed(cfg)._client_arrays()["phase"][0, :4]
    np.testing.assert_allclose(sim_phases, want, atol=1e-12)
    ideal = [a * math.pi / 2 for a in range(4)]
    if gain_db is None:
        np.testing.assert_allclose(sim_phases, ideal, atol=1e-12)
    else:  # 12 dB: G = 3.98, V_1 = 1.19 V of Vπ = 4.2 V: 0.89 rad instead of π/2
        assert abs(sim_phases[1] - ideal[1]) > 0.5
        assert sim_phases[1] == pytest.approx(math.pi * 10 ** 0.6 * 0.3 / 4.2)
    assert bit_drive_levels_v([0.3, 0.6], 0.0) == [0.0, 0.3, 0.6, pytest.approx(0.9)]


def test_station_options_typed(sim_library) -> None:  # type: ignore[no-untyped-def]
    d = tomllib.loads(default_station_text())
    d["clients"][0]["phase_modulator"] = {"driver": "GenericBitDrivenPhaseModulator", "resource": RES,
                                          "visa_library": sim_library("bit_phase_modulator.yaml"),
                                          "options": {"bit_level": [0.3, 0.6]}}
    with pytest.raises(ConfigError, match=r"clients.0.phase_modulator.options.bit_level.*unknown option"):
        parse_station_config(d, "station.toml")
    d["clients"][0]["phase_modulator"]["options"] = {"bit_levels_v": [0.3, 7.0]}
    with pytest.raises(ConfigError, match="bit_levels_v"):
        parse_station_config(d, "station.toml")
