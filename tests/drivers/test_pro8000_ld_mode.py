"""Session 41 lab leftovers of the PRO8000: the LDC's operating mode, and the actual LD current in status/snapshot.

The driver sets the diode *current* (``:ILD:SET``) and its end check compares ``:ILD:ACT?`` with that set point: both
hold in constant-current mode only (in constant-power mode the LDC drives whatever current keeps the monitor-diode
photocurrent at its set point). Before, the mode was never read. The commands are those of Thorlabs' PRO800/8000
VXIpnp driver ``pro8.c`` v2.5.3: ``Pro8_LdcGetMode`` writes ``:MODE?`` and reads one word (``%s`` in the
``:SYST:ANSW VALUE`` answer mode), ``CC`` → constant current (0), ``CP`` → constant power (1), anything else
``VI_ERROR_INSTR_INTERPRETING_RESPONSE``; ``Pro8_LdcSetMode`` sends ``:MODE CC`` or ``:MODE CP``. On open the
driver reads the mode; a ``CP`` LDC with its output off (``:LASER?``, ``Pro8_LdcGetLdOutput``) is switched to
``CC`` and read back, one with its output on is refused with nothing more written.

Also: ``status()`` and ``snapshot()`` carry the actual LD current (``:ILD:ACT?``, ``Pro8_LdcGetLdCurrent`` value 3)
and the mode. Against the exact protocol (pymeasure ``ProtocolAdapter``/``expected_protocol``) and the pyvisa-sim
model ``sim_backends/visa/thorlabs_pro8000.yaml`` (its ``ld_mode`` property, ``CC`` by default; edited to ``CP``
here) with :class:`labqfl.sim_backends.pro8000.LDCModel` for ``:ILD:ACT?``. Every test here fails on the old driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import pyvisa
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000
from labqfl.sim_backends.pro8000 import ldc_model
from pymeasure.adapters import ProtocolAdapter
from pymeasure.test import expected_protocol

from labqfl.config import LaserConfig
from labqfl.errors import InstrumentError, InstrumentReplyError

from .test_thorlabs import CLOSED_OFF, PRO_CFG, PRO_OK, PRO_OPEN, S1

#: the open up to (not including) the mode query: identity, answer mode, the software current limit
BEFORE_MODE = PRO_OPEN[:-2]
OPTIONS = {"max_current_ma": 150.0, "ramp_ma_per_s": 100_000.0, "ramp_step_ma": 50.0}


def test_open_reads_the_mode_on_the_ld_slot_after_the_current_limit() -> None:
    assert PRO_OPEN[-2:] == [S1, (b":MODE?", b"CC")]
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a),
                           [*PRO_OPEN, S1, (b":MODE?", b"CC"), *CLOSED_OFF]) as d:
        assert d.ld_mode == "CC"
        d.close()


def test_a_constant_power_ldc_with_its_output_off_is_switched_to_constant_current(
        caplog: pytest.LogCaptureFixture) -> None:
    """``:MODE?`` CP, ``:LASER?`` OFF: ``:MODE CC`` (``Pro8_LdcSetMode``), the error queue, the mode read back."""
    with caplog.at_level(logging.WARNING):
        with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
            *BEFORE_MODE, S1, (b":MODE?", b"CP"), S1, (b":LASER?", b"OFF"),
            S1, (b":MODE CC", None), PRO_OK, S1, (b":MODE?", b"CC"), *CLOSED_OFF,
        ]) as d:
            d.close()
    assert ("LDC slot 1 was in constant-power mode (:MODE? CP) with its output off: switched to constant current "
            "(:MODE CC)") in caplog.text


def _refused(pairs: list, match: str) -> str:
    """Open on exactly ``pairs``: refused with one line matching ``match``, and nothing sent after ``pairs``."""
    adapter = ProtocolAdapter(pairs)
    with pytest.raises(InstrumentError) as err:
        ThorlabsPRO8000("laser", PRO_CFG, adapter=adapter)
    msg = str(err.value)
    assert "\n" not in msg and match in msg, msg
    assert adapter._index == len(pairs), f"only {adapter._index} of {len(pairs)} exchanges happened"
    return msg


def test_a_constant_power_ldc_with_its_output_on_is_refused_and_left_as_it_is() -> None:
    """No ``:MODE CC`` under current: the current would jump from what the monitor-diode loop drives to ``:ILD:SET``."""
    msg = _refused([*BEFORE_MODE, S1, (b":MODE?", b"CP"), S1, (b":LASER?", b"ON")],
                   "LDC slot 1 runs in constant-power mode (:MODE? reads CP) with its output ON; expected constant "
                   "current (CC): left as it is (no mode switch under current); switch the LDC output off at the "
                   "front panel, then open again")
    assert "command ':MODE?'" in msg


def test_a_mode_that_does_not_change_is_refused() -> None:
    _refused([*BEFORE_MODE, S1, (b":MODE?", b"CP"), S1, (b":LASER?", b"OFF"), S1, (b":MODE CC", None), PRO_OK,
              S1, (b":MODE?", b"CP")],
             "LDC slot 1: :MODE CC accepted but :MODE? reads CP; expected CC (constant current): output left off")


@pytest.mark.parametrize("reply", [b"2", b"garbage", b":MODE CC"])  # the last: the full answer mode's "<cmd> <val>"
def test_a_mode_reply_other_than_cc_or_cp_is_refused(reply: bytes) -> None:
    with pytest.raises(InstrumentReplyError, match=r"unexpected reply .*; expected CC \(constant current\) or CP "
                                                   r"\(constant power\)"):
        ThorlabsPRO8000("laser", PRO_CFG, adapter=ProtocolAdapter([*BEFORE_MODE, S1, (b":MODE?", reply)]))


def test_status_shows_the_actual_current_and_the_mode() -> None:
    with expected_protocol(lambda a: ThorlabsPRO8000("laser", PRO_CFG, adapter=a), [
        *PRO_OPEN, PRO_OK, (b":SLOT 2", None), (b":TEMP:ACT?", b"2.510000E+01"), S1, (b":LASER?", b"ON"),
        S1, (b":ILD:SET?", b"3.000000E-02"), S1, (b":ILD:ACT?", b"2.998760E-02"), S1, (b":MODE?", b"CC"),
        (b":SLOT 2", None), (b":TEMP:SET?", b"2.500000E+01"), (b":SLOT 2", None), (b":TEC?", b"ON"),
        S1, (b":LASER?", b"OFF"),
    ]) as d:
        st = d.status()
        d.close()
    assert st["current_ma"] == 30.0 and st["current_act_ma"] == pytest.approx(29.9876) and st["ld_mode"] == "CC"


# -- against the pyvisa-sim model ----------------------------------------------------------------------------------
def _cp(text: str) -> str:
    old = 'ld_mode:\n        default: "CC"'
    assert old in text, "the PRO8000 model's ld_mode property moved"
    return text.replace(old, 'ld_mode:\n        default: "CP"')


def _cp_and_on(text: str) -> str:
    old = 'laser:\n        default: "OFF"'
    assert old in text, "the PRO8000 model's laser property moved"
    return _cp(text).replace(old, 'laser:\n        default: "ON"')


def _cfg(lib: str) -> LaserConfig:
    return LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", timeout_ms=150, visa_library=lib,
                       options=OPTIONS)


def _mode_of_the_device(lib: str) -> str:
    """``:MODE?`` asked of the pyvisa-sim device directly (the same device: pyvisa keeps one library per path)."""
    rm = pyvisa.ResourceManager(lib)
    r = rm.open_resource("GPIB0::10::INSTR", read_termination="\n", write_termination="\n")
    try:
        return str(r.query(":MODE?")).strip()
    finally:
        r.close()


def test_the_model_is_in_constant_current_and_the_driver_leaves_it_so(sim_library: Callable[..., str]) -> None:
    lib = sim_library("thorlabs_pro8000.yaml")
    d = ThorlabsPRO8000("laser", _cfg(lib))
    try:
        assert d.ld_mode == "CC" and d.status()["ld_mode"] == "CC"
    finally:
        d.close()


def test_the_model_in_constant_power_output_off_is_switched(sim_library: Callable[..., str]) -> None:
    lib = sim_library("thorlabs_pro8000.yaml", _cp)
    assert _mode_of_the_device(lib) == "CP"
    d = ThorlabsPRO8000("laser", _cfg(lib))
    try:
        assert d.ld_mode == "CC" and _mode_of_the_device(lib) == "CC"
    finally:
        d.close()


def test_the_model_in_constant_power_output_on_is_refused_untouched(sim_library: Callable[..., str]) -> None:
    lib = sim_library("thorlabs_pro8000.yaml", _cp_and_on)
    with pytest.raises(InstrumentError, match=r"runs in constant-power mode \(:MODE\? reads CP\) with its output ON"):
        ThorlabsPRO8000("laser", _cfg(lib))
    assert _mode_of_the_device(lib) == "CP"


def test_status_and_snapshot_carry_the_actual_current_of_the_model(sim_library: Callable[..., str]) -> None:
    """Output off: 0 mA; on: the set point; an open circuit: 0 mA again, in ``status()`` and ``snapshot()``."""
    d = ThorlabsPRO8000("laser", _cfg(sim_library("thorlabs_pro8000.yaml")))
    try:
        d.apply_operating_point(SimpleNamespace(laser=SimpleNamespace(wavelength_nm=1550.0, power_mw=2.0)))  # type: ignore[arg-type]
        assert d.status()["current_act_ma"] == 0.0 and d.snapshot()["ldc"]["current_act_ma"] == 0.0
        d.output_enabled = True  # 10 + 2 / 0.1 = 30 mA
        st, snap = d.status(), d.snapshot()
        assert st["current_ma"] == pytest.approx(30.0) and st["current_act_ma"] == pytest.approx(30.0)
        assert snap["ldc"] == {"current_act_ma": pytest.approx(30.0), "mode": "CC",
                               "source": "LDC actual current (:ILD:ACT?) and operating mode (:MODE?)"}
        ldc_model(d).open_circuit = True
        assert d.status()["current_act_ma"] == 0.0 and d.snapshot()["ldc"]["current_act_ma"] == 0.0
        ldc_model(d).clear_faults()
        d.safe_state()
    finally:
        d.close()
