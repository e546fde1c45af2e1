"""Review s39 lab LAB4 and LAB5 on the Single Quantum Eos driver (WebSQ emulator).

* LAB4: the counting-window lock was keyed by the resource string as written, the shared session (and its I/O
  lock) by its stripped, upper-cased form: two channels of one controller written with another case got one
  session but two window locks, so two windows could run at once and set each other's measurement period.
* LAB5: in an emergency, arming sent ``DetectorEnable true`` before the ramp's first cut check; and a ramp from a
  negative bias (read back: another client of the controller) to a positive set point with |target| <= |i0|
  crossed 0 µA and rose again with no cut ("away from 0" was decided once, from the end points)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from labqfl.config import DetectorConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.base import emergency

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")


def _eos(name: str, resource: str, port: int, channel: int, bias: float = 3.0) -> Any:
    from labqfl.drivers.singlequantum_eos import SingleQuantumEos

    return SingleQuantumEos(name, DetectorConfig(
        driver="SingleQuantumEos", resource=resource, visa_library="@py", timeout_ms=3000, bias_current_ua=bias,
        dark_count_rate_hz=50.0, options={"channel": channel, "counts_port": port, "bias_step_ua": 1.0,
                                          "bias_ramp_ua_per_s": 10_000.0, "latch_window_s": 0.1}))


def test_channels_of_one_controller_written_with_another_case_share_the_window_lock() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        other = emu.resource.lower()
        assert other != emu.resource
        d0 = _eos("D0", emu.resource, emu.counts_port, 1)
        d1 = _eos("D1", other, emu.counts_port, 2)
        try:
            assert d0.lock is d1.lock  # one session, one I/O lock (drivers/_link.py _registry_key)
            assert d0._window is d1._window  # before: two window locks
        finally:
            d1.close()
            d0.close()


def test_arming_in_an_emergency_sends_no_detector_enable() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _eos("D0", emu.resource, emu.counts_port, 1)
        try:
            assert not emu.enabled
            n = len(emu.received)
            with emergency("test"), pytest.raises(InstrumentError, match="not armed: the emergency stop"):
                d0.enabled = True
            sent = [m for m in emu.received[n:] if "command" in m]
            assert sent == [], sent  # before: DetectorEnable true, then the ramp's cut
            assert not emu.enabled and emu.bias_ua[0] == 0.0
        finally:
            d0.close()


def test_a_ramp_crossing_zero_is_cut_in_an_emergency_once_it_leaves_zero() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _eos("D0", emu.resource, emu.counts_port, 1)
        try:
            emu.bias_ua[0] = -3.0  # set by another client of the controller
            written: list[float] = []
            write = d0._write_bias

            def watched(ua: float) -> None:
                written.append(ua)
                write(ua)
            d0._write_bias = watched
            with emergency("test"), pytest.raises(InstrumentError, match="cut by the emergency stop"):
                d0._ramp_bias(2.0)  # |2| <= |-3|: before, never cut, it rose to 2 µA
            assert written and written[-1] == 0.0 and all(w <= 0.0 for w in written), written
            assert emu.bias_ua[0] == 0.0
        finally:
            d0.close()
