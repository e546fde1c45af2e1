"""Issue 19 (lab leftover): the PRO8000's actual laser-diode current, ``:ILD:ACT?``, and the end check built on it.

``:ILD:ACT?`` is the query of Thorlabs' PRO800/8000 VXIpnp driver ``pro8.c`` v2.5.3, ``Pro8_LdcGetLdCurrent``
(its ``value`` 3 of ``{":ILD:MIN?", ":ILD:MAX?", ":ILD:SET?", ":ILD:ACT?"}``; with ``:SYST:ANSW VALUE`` the reply
is one number, read with ``"%LE"``, in A: the module manuals' "all analog values are read and written in SI units,
i.e. A (not mA)", ITC8000 manual §7). ``:ILD:SET?`` is value 2 of the same function, ``:LASER?``
``Pro8_LdcGetLdOutput``. :meth:`ThorlabsPRO8000.acquisition_fault` compares the actual current with the set point
(output on) or 0 mA (output off), within ``options.current_tolerance_ma``.

Against the exact protocol (pymeasure ``expected_protocol``), and against the emulator: the shipped pyvisa-sim
model plus :class:`labqfl.sim_backends.pro8000.LDCModel` (in process, and served over loopback by
:class:`~labqfl.sim_backends.visa_tcp.VisaSimTCPServer` to a pyvisa-py session), whose faults (open circuit, a
current clipped at a limit) make the actual current differ. Before, the driver never read ``:ILD:ACT?``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000
from labqfl.sim_backends.pro8000 import ldc_model
from labqfl.sim_backends.visa_tcp import VisaSimTCPServer
from pydantic import ValidationError
from pymeasure.test import expected_protocol

from labqfl.config import LaserConfig
from labqfl.errors import InstrumentReplyError

from .test_thorlabs import CLOSED_OFF, PRO_CFG, PRO_OPEN, S1

SIM = Path(__file__).resolve().parents[2] / "sim_backends" / "visa" / "thorlabs_pro8000.yaml"
OPTIONS = {"max_current_ma": 150.0, "ramp_ma_per_s": 100_000.0, "ramp_step_ma": 50.0}


def _station(power_mw: float) -> SimpleNamespace:
    return SimpleNamespace(laser=SimpleNamespace(wavelength_nm=1550.0, power_mw=power_mw))


def test_current_act_ma_sends_ild_act_on_the_ld_slot_and_reads_amperes() -> None:
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":ILD:ACT?", b"3.012000E-02"), S1, (b":ILD:ACT?", b"-2.0E-06"),
        S1, (b":ILD:ACT?", b"garbage"), *CLOSED_OFF,
    ]) as d:
        assert d.current_act_ma == pytest.approx(30.12)
        assert d.current_act_ma == pytest.approx(-0.002)  # an offset around 0 mA is a reading, not refused
        with pytest.raises(InstrumentReplyError, match=r"unexpected reply 'garbage'; expected a number"):
            _ = d.current_act_ma
        d.close()


@pytest.mark.parametrize("laser,act,fault", [
    (b"ON", b"3.090000E-02", None),  # 0.9 mA from the set point: within the default 1 mA
    (b"OFF", b"4.000000E-04", None),  # output off: 0 mA expected, 0.4 mA read
    (b"ON", b"0.000000E+00", "actual LD current 0 mA (:ILD:ACT?) differs from the 30 mA expected (set point 30 mA, "
                             ":ILD:SET?; output ON) by more than 1 mA (options.current_tolerance_ma)"),
    (b"OFF", b"3.000000E-02", "actual LD current 30 mA (:ILD:ACT?) differs from the 0 mA expected (set point 30 mA, "
                              ":ILD:SET?; output OFF) by more than 1 mA"),
])
def test_acquisition_fault_reads_output_set_point_and_actual_current(laser: bytes, act: bytes,
                                                                     fault: str | None) -> None:
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, S1, (b":LASER?", laser), S1, (b":ILD:SET?", b"3.000000E-02"), S1, (b":ILD:ACT?", act),
        *CLOSED_OFF,
    ]) as d:
        got = d.acquisition_fault()
        d.close()
    if fault is None:
        assert got is None
    else:
        assert got is not None and "\n" not in got
        assert got.startswith(f"LDC slot 1: {fault}"), got


def test_current_tolerance_ma_is_an_option_with_a_clear_error() -> None:
    assert ThorlabsPRO8000.Options().current_tolerance_ma == 1.0
    assert ThorlabsPRO8000.Options(current_tolerance_ma=0.05).current_tolerance_ma == 0.05
    for bad in (0, -1, "x"):
        with pytest.raises(ValidationError, match="current_tolerance_ma"):
            ThorlabsPRO8000.Options(current_tolerance_ma=bad)


@pytest.fixture
def laser(sim_library: Callable[..., str]):  # type: ignore[no-untyped-def]
    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", timeout_ms=150,
                      visa_library=sim_library("thorlabs_pro8000.yaml"), options=OPTIONS)
    d = ThorlabsPRO8000("laser", cfg)
    yield d
    d.close()


def test_the_emulator_follows_set_point_and_output_and_its_faults_refuse(laser: ThorlabsPRO8000) -> None:
    """In process (pyvisa-sim): 0 mA off, the set point on (after the ramp), and each fault read as it is."""
    model = ldc_model(laser)
    laser.apply_operating_point(_station(2.0))  # type: ignore[arg-type]  # 10 + 2/0.1 = 30 mA set, output off
    assert laser.current_ma == pytest.approx(30.0) and laser.current_act_ma == 0.0
    assert laser.acquisition_fault() is None
    laser.output_enabled = True
    assert laser.current_act_ma == pytest.approx(30.0) and laser.acquisition_fault() is None
    laser.power_mw = 4.0  # ramped to 50 mA
    assert laser.current_act_ma == pytest.approx(50.0) and laser.acquisition_fault() is None

    model.open_circuit = True
    assert laser.current_act_ma == 0.0
    assert laser.acquisition_fault() == (
        "LDC slot 1: actual LD current 0 mA (:ILD:ACT?) differs from the 50 mA expected (set point 50 mA, :ILD:SET?; "
        "output ON) by more than 1 mA (options.current_tolerance_ma): open circuit, or the current clipped by the "
        "module's limit?")
    model.open_circuit = False
    model.limit_ma = 49.5  # clipped 0.5 mA below the set point: within the tolerance
    assert laser.current_act_ma == pytest.approx(49.5) and laser.acquisition_fault() is None
    model.limit_ma = 40.0
    fault = laser.acquisition_fault()
    assert fault is not None and fault.startswith("LDC slot 1: actual LD current 40 mA (:ILD:ACT?) differs from the "
                                                  "50 mA expected"), fault
    laser.safe_state()  # emission off: no current flows whatever the fault
    assert laser.current_act_ma == 0.0 and laser.acquisition_fault() is None
    with pytest.raises(ValueError, match="limit_ma"):
        model.limit_ma = -1.0


@pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None, reason="pyvisa-py (the 'hardware' extra) is not installed")
def test_the_emulator_served_over_loopback_answers_ild_act() -> None:
    """The same model behind a ``TCPIP0::127.0.0.1::<port>::SOCKET`` resource (another process's view): attached by
    the server to a PRO8000 device (its ``*IDN?``), not to others."""
    with VisaSimTCPServer(SIM, "GPIB0::10::INSTR") as server:
        assert server.ldc is not None and ldc_model(server) is server.ldc
        cfg = LaserConfig(driver="ThorlabsPRO8000", resource=server.resource, visa_library="@py", timeout_ms=2000,
                          options=OPTIONS)
        d = ThorlabsPRO8000("laser", cfg)
        try:
            d.apply_operating_point(_station(1.0))  # type: ignore[arg-type]  # 20 mA
            d.output_enabled = True
            assert d.current_act_ma == pytest.approx(20.0) and d.acquisition_fault() is None
            server.ldc.open_circuit = True
            fault = d.acquisition_fault()
            assert fault is not None and "actual LD current 0 mA" in fault and "20 mA expected" in fault
            assert server.ldc.answered[-1] == 0.0 and ":ILD:ACT?" in server.received
        finally:
            d.close()
        assert server.ask(":ILD:ACT?") == "0.000000E+00"  # closed: ramped down, output off
    other = Path(__file__).resolve().parents[2] / "sim_backends" / "visa" / "bit_phase_modulator.yaml"
    with VisaSimTCPServer(other, "ASRL13::INSTR") as server:
        assert server.ldc is None
