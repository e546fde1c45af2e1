"""ThorlabsMBX: the Thorlabs MBX modulator bias controller (MZM commands of PyMeasure's ThorlabsMBXSeries; framing
and acknowledgements of Thorlabs' "Remote Control User Guide for the MX / MBX / TLX1 / TLX2 Series",
TTN116413-D04, ch. 2) holding a client's intensity modulator, tested with an exact expected protocol and against
its pyvisa-sim counterpart (sim_backends/visa/thorlabs_mbx.yaml)."""

from __future__ import annotations

import math
import tomllib

import pytest
from labqfl.drivers.thorlabs_mbx import MZM_MODE_NAMES, MZM_MODES, ThorlabsMBX
from pymeasure.test import expected_protocol

from labqfl.config import AttenuatorConfig, default_station_text, parse_station_config
from labqfl.errors import ConfigError, InstrumentReplyError
from labqfl.station import Station

RES = "ASRL9::INSTR"


def config(**kw: object) -> AttenuatorConfig:
    return AttenuatorConfig(driver="ThorlabsMBX", resource=RES, options={"v_pi_v": 5.0, "peak_mean_photons": 0.8},
                            **kw)  # type: ignore[arg-type]


@pytest.fixture
def mbx(sim_library):  # type: ignore[no-untyped-def]
    d = ThorlabsMBX("C1.attenuator", config(visa_library=sim_library("thorlabs_mbx.yaml"), timeout_ms=150))
    yield d
    d.close()


def test_mode_numbers_are_pymeasures() -> None:
    """The MZM:MODE numbers are PyMeasure's MzmMode (pymeasure.instruments.thorlabs.thorlabsmbxseries)."""
    mbx_series = pytest.importorskip("pymeasure.instruments.thorlabs.thorlabsmbxseries")
    assert {m.value: m.name for m in mbx_series.MzmMode} == MZM_MODE_NAMES
    assert MZM_MODES == {"peak": mbx_series.MzmMode.AUTOPEAK, "null": mbx_series.MzmMode.AUTONULL,
                         "quad+": mbx_series.MzmMode.AUTOQUADPOS, "quad-": mbx_series.MzmMode.AUTOQUADNEG,
                         "manual": mbx_series.MzmMode.MANUAL}


def test_exact_protocol() -> None:
    """Guide ch. 2: commands and replies end in LF, set commands are ``HEADER: value`` and return 1 on receipt
    (§2.6); MZM strings of PyMeasure's ThorlabsMBXSeriesMZM: MZM:MODE (2 = auto null, 0 = off, 7 = manual),
    MZM:HOLD:VOLTAGE in mV, MZM:VOLTAGE? in V, MZM:SETPOINT?, MZM:RESET (replies 1)."""
    with expected_protocol(lambda a: ThorlabsMBX("C1.attenuator", config(), adapter=a), [
        (b"*IDN?", b"Thorlabs,MBX,M00000001,1.9.4"),
        # the lock point while the output is off is only remembered; turning the output on writes it
        (b"MZM:MODE?", b"0"),
        (b"MZM:MODE?", b"0"),
        (b"MZM:MODE: 2", b"1"),
        (b"MZM:MODE?", b"2"),
        (b"MZM:SETPOINT?", b"1"),
        (b"MZM:MODE?", b"2"), (b"MZM:VOLTAGE?", b"-3.21"),
        # manual: the set point in mV, read back from the hold set point
        (b"MZM:MODE?", b"2"), (b"MZM:MODE: 7", b"1"),
        (b"MZM:HOLD:VOLTAGE: -2500", b"1"),
        (b"MZM:MODE?", b"7"), (b"MZM:HOLD:VOLTAGE?", b"-2500"),
        (b"MZM:RESET", b"1"),
        (b"MZM:MODE: 0", b"1"),
        # an acknowledgement other than 1, and a mode outside labqfl's lock points, are reported
        (b"MZM:MODE: 7", b"0"),
        (b"MZM:MODE?", b"5"),
        (b"MZM:MODE: 0", b"1"),  # close: the safe state, bias output off
    ]) as d:
        assert d.mode == "null"  # options.bias_mode, remembered
        d.mode = "null"
        d.output_enabled = True
        assert d.output_enabled is True and d.locked is True
        assert d.bias_voltage_v == pytest.approx(-3.21)
        d.mode = "manual"
        d.bias_voltage_v = -2.5
        assert d.bias_voltage_v == -2.5
        d.calibrate()
        d.safe_state()
        with pytest.raises(InstrumentReplyError, match="acknowledgement '0'"):
            d.output_enabled = True
        with pytest.raises(InstrumentReplyError, match="HOLDQUADPOS"):
            _ = d.mode
        d.close()


def test_against_its_simulated_counterpart(mbx: ThorlabsMBX) -> None:
    assert "Thorlabs,MBX" in mbx.identity()
    assert mbx.output_enabled is False and mbx.mode == "null" and mbx.locked is True
    mbx.output_enabled = True
    assert mbx.output_enabled is True and mbx.mode == "null" and mbx.bias_voltage_v == pytest.approx(-1.234)
    mbx.mode = "quad-"
    assert mbx.mode == "quad-" and mbx.output_enabled is True
    mbx.mode = "manual"
    mbx.bias_voltage_v = 4.321
    assert mbx.bias_voltage_v == pytest.approx(4.321)
    for name, bad in [("mode", "nul"), ("bias_voltage_v", 10.5), ("output_enabled", "on")]:
        with pytest.raises(ValueError, match=name):
            setattr(mbx, name, bad)
    mbx.calibrate()
    assert mbx.calibrating is False and mbx.tap_power_mw == pytest.approx(0.05)
    assert mbx.status()["locked"] is True
    mbx.safe_state()
    assert mbx.output_enabled is False and mbx.mode == "manual"  # the lock point survives the output off


def test_levels_become_drive_voltages(mbx: ThorlabsMBX) -> None:
    """The MZM at null with its extinction floor f = 10^(−ER/10) (30 dB by default):
    μ_k = μ_peak·(f + (1 − f)·sin²(πV_k/(2Vπ))) (drivers/mz_intensity_modulator.py); vacuum (pyvisa-sim) at 0 V."""
    mbx.levels = [0.5, 0.1, 0.0]
    assert mbx.drive_levels_v[2] == 0.0
    for mu, v in zip(mbx.levels[:2], mbx.drive_levels_v, strict=False):
        assert 0.8 * (1e-3 + (1 - 1e-3) * math.sin(math.pi * v / 10.0) ** 2) == pytest.approx(mu, rel=1e-12)
    with pytest.raises(ValueError, match="extinction floor"):
        mbx.levels = [0.5, 1e-4]


def test_station_role_with_the_simulated_mbx(tmp_path, sim_library) -> None:  # type: ignore[no-untyped-def]
    """A station whose C1 intensity modulator is an MBX (pyvisa-sim): typed options, opened by the Station with
    the station's operating point (C1's intensities, null lock point, output off), safe state on close."""
    d = tomllib.loads(default_station_text())
    d["clients"][0]["attenuator"] = {"driver": "ThorlabsMBX", "resource": RES,
                                     "visa_library": sim_library("thorlabs_mbx.yaml"),
                                     "options": {"v_pi_v": 4.5, "peak_mean_photons": 1.0, "bias_mode": "null"}}
    cfg = parse_station_config(d, "station.toml")
    with Station(cfg) as st:
        im = st["C1.attenuator"]
        assert isinstance(im, ThorlabsMBX)
        assert im.levels == cfg.client("C1").intensities and im.mode == "null" and im.output_enabled is False
    bad = tomllib.loads(default_station_text())
    bad["clients"][0]["attenuator"] = {**d["clients"][0]["attenuator"], "options": {"baud": 9600}}
    with pytest.raises(ConfigError, match=r"clients.0.attenuator.options.baud.*unknown option"):
        parse_station_config(bad, "station.toml")
