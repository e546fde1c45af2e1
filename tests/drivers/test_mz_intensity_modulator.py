"""GenericMZIntensityModulator: a protocol-level intensity-modulator + bias-controller driver (its command set is
labqfl's own, documented in drivers/mz_intensity_modulator.py; no commercial manual is claimed), tested against
its pyvisa-sim device (sim_backends/visa/mz_bias_controller.yaml) and an exact expected protocol."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from labqfl.drivers.mz_intensity_modulator import GenericMZIntensityModulator
from pymeasure.test import expected_protocol

from labqfl.config import AttenuatorConfig, default_station_text, parse_station_config
from labqfl.errors import ConfigError, InstrumentError, InstrumentQueueError

RES = "ASRL7::INSTR"


@pytest.fixture
def im(sim_library):  # type: ignore[no-untyped-def]
    cfg = AttenuatorConfig(driver="GenericMZIntensityModulator", resource=RES,
                           visa_library=sim_library("mz_bias_controller.yaml"), timeout_ms=150,
                           options={"v_pi_v": 5.0, "peak_mean_photons": 0.8, "extinction_db": 30.0})
    d = GenericMZIntensityModulator("C1.attenuator", cfg)
    yield d
    d.close()


def test_levels_become_drive_voltages(im: GenericMZIntensityModulator) -> None:
    """Module docstring, "Levels → decoy intensities": T(V) = sin²(πV/(2Vπ)) with the bias at null and the
    extinction floor f = 10^(−ER/10) under it, so the drive of level k gives back μ_k = μ_peak·(f + (1 − f)·T(V_k));
    the floor and (on this pyvisa-sim device) an exact vacuum are 0 V; levels under the floor are refused."""
    im.levels = [0.5, 0.1, 0.8e-3, 0.0]
    v = im.drive_levels_v
    assert v[2] == v[3] == 0.0 and 0 < v[1] < v[0] < im.v_pi_v
    for mu, volts in zip(im.levels[:3], v, strict=False):
        assert 0.8 * (1e-3 + (1 - 1e-3) * math.sin(math.pi * volts / (2 * 5.0)) ** 2) == pytest.approx(mu, rel=1e-12)
    assert im.floor_mean_photons() == pytest.approx(0.8e-3)
    with pytest.raises(ValueError, match="below the extinction floor"):
        im.levels = [0.5, 1e-4]
    with pytest.raises(ValueError, match="out of range"):
        im.levels = [0.9]
    with pytest.raises(InstrumentError, match="pattern generator"):
        im.load_pattern(np.zeros(4, dtype=np.uint8))


def test_bias_modes_lock_and_safe_state(im: GenericMZIntensityModulator) -> None:
    assert "MZ-BIAS-SIM" in im.identity()
    assert im.mode == "null" and im.locked is True and im.output_enabled is False
    im.mode, im.output_enabled = "quad+", True
    assert im.mode == "quad+" and im.output_enabled is True
    im.mode = "manual"
    im.bias_voltage_v = -2.5
    assert im.bias_voltage_v == -2.5
    for name, bad in [("mode", "nul"), ("bias_voltage_v", 10.5), ("output_enabled", "on")]:
        with pytest.raises(ValueError, match=name):
            setattr(im, name, bad)
    im.safe_state()
    assert im.output_enabled is False


def test_operating_point_from_the_station(im: GenericMZIntensityModulator) -> None:
    station = parse_station_config(tomllib.loads(default_station_text()))
    im.output_enabled = True
    im.apply_operating_point(station)
    assert im.levels == station.client("C1").intensities and im.mode == "null" and not im.output_enabled


def test_exact_protocol() -> None:
    """The command set of drivers/mz_intensity_modulator.py (module docstring): BIAS:MODE, BIAS:VOLT, BIAS:LOCK?,
    OUTP, each write followed by the SYST:ERR? check; a refused value surfaces from the error queue."""
    cfg = AttenuatorConfig(driver="GenericMZIntensityModulator", resource=RES)
    ok = (b"SYST:ERR?", b'+0,"No error"')
    with expected_protocol(lambda a: GenericMZIntensityModulator("C1.attenuator", cfg, adapter=a), [
        (b"*IDN?", b"labqfl,MZ-BIAS-SIM,X,1"),
        (b"BIAS:MODE MAN", None), ok,
        (b"BIAS:VOLT 1.2500", None), ok,
        (b"BIAS:MODE?", b"MAN"), (b"BIAS:VOLT?", b"+1.2500"), (b"BIAS:LOCK?", b"0"),
        (b"BIAS:MODE NULL", None), ok,
        (b"OUTP 1", None), (b"SYST:ERR?", b'-100,"Command error"'), (b"SYST:ERR?", b'+0,"No error"'),
        (b"BIAS:MODE?", b"WEIRD"),
        (b"OUTP 0", None), ok,
    ]) as d:
        d.mode = "manual"
        d.bias_voltage_v = 1.25
        assert (d.mode, d.bias_voltage_v, d.locked) == ("manual", 1.25, False)
        d.mode = "null"
        with pytest.raises(InstrumentQueueError, match="Command error"):
            d.output_enabled = True
        with pytest.raises(InstrumentError, match="WEIRD"):
            _ = d.mode
        d.close()


def test_station_options_typed(sim_library) -> None:  # type: ignore[no-untyped-def]
    d = tomllib.loads(default_station_text())
    d["clients"][0]["attenuator"] = {"driver": "GenericMZIntensityModulator", "resource": RES,
                                     "visa_library": sim_library("mz_bias_controller.yaml"),
                                     "options": {"v_pi": 4.0}}
    with pytest.raises(ConfigError, match=r"clients.0.attenuator.options.v_pi.*unknown option"):
        parse_station_config(d, "station.toml")
    d["clients"][0]["attenuator"]["options"] = {"bias_mode": "middle"}
    with pytest.raises(ConfigError, match="bias_mode"):
        parse_station_config(d, "station.toml")


def test_a_real_modulator_refuses_an_exact_vacuum_and_takes_its_floor() -> None:
    """review s36 physics F1 (b): "0 V = vacuum" was accepted on hardware, where 0 V leaves μ_peak·10^(−ER/10)
    photons/pulse (10⁻³ at the defaults: half the key of the default operating point once the analysis knows it,
    an unbacked doubling when it does not). A real device (no pyvisa-sim library) refuses 0 and names the floor."""
    cfg = AttenuatorConfig(driver="GenericMZIntensityModulator", resource=RES, timeout_ms=150,
                           options={"v_pi_v": 5.0, "peak_mean_photons": 1.0, "extinction_db": 30.0})
    with expected_protocol(lambda a: GenericMZIntensityModulator("C1.attenuator", cfg, adapter=a),
                           [(b"*IDN?", b"labqfl,MZ-BIAS-SIM,X,1")]) as d:
        with pytest.raises(ValueError, match=r"extinction floor 0\.001 photons/pulse .* as the vacuum level"):
            d.levels = [0.0263, 0.05, 0.0]
        d.levels = [0.0263, 0.05, 1e-3]
        assert d.drive_levels_v[2] == 0.0
