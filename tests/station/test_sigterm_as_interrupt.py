""":func:`labqfl.station.sigterm_as_interrupt`: SIGTERM stops like Ctrl-C (``labqfl acquire``, review s32
H1): a guarded station's safe state first, then ``KeyboardInterrupt("SIGTERM")``; an interrupt CPython
loses in a ``__del__``/weakref callback is raised again by ``Termination.check`` (and not printed); a
second SIGTERM is ignored; the handlers are restored."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labqfl import station as station_mod
from labqfl.config import load_station_config
from labqfl.station import Station, sigterm_as_interrupt

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"


def _spin() -> None:
    for _ in range(200):  # the Python-level handler runs between bytecodes of the main thread
        time.sleep(0.001)


def test_sigterm_puts_the_station_safe_then_raises_an_interrupt_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as info, sigterm_as_interrupt() as term:
        st = Station(load_station_config(EXAMPLE), guard=True)
        st.laser.output_enabled = True
        os.kill(os.getpid(), signal.SIGTERM)
        _spin()
    assert info.value.args == ("SIGTERM",) and term.requested
    assert st.closed and not st.guarded  # the station's handler ran first
    assert signal.getsignal(signal.SIGTERM) is before and station_mod._PREVIOUS == {}


def test_an_interrupt_lost_in_a_del_is_not_printed_and_check_raises_it() -> None:
    """The acquisition went on after a SIGTERM whose interrupt was raised inside a weakref callback of
    h5py ("Exception ignored in: <function WeakValueDictionary…>", then a full 30 s recording, exit 0)."""
    unraisable: list[Any] = []

    class Dies:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            _spin()

    prev_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with sigterm_as_interrupt() as term:
            Dies()  # its __del__ runs here; the interrupt raised in it is lost
            assert term.requested
            with pytest.raises(KeyboardInterrupt) as info:
                term.check()
            assert info.value.args == ("SIGTERM",)
    finally:
        sys.unraisablehook = prev_hook
    assert unraisable == []


def test_a_second_sigterm_is_ignored_while_stopping(caplog: Any) -> None:
    with caplog.at_level(logging.WARNING), sigterm_as_interrupt() as term:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            _spin()
        os.kill(os.getpid(), signal.SIGTERM)  # closing files now: not interrupted again
        _spin()
    assert term.requested and "SIGTERM again: ignored" in caplog.text


def test_an_interrupt_wrapped_in_system_error_leaves_as_sigterm() -> None:
    """CPython reports an interrupt raised inside a C callback (Numba) as SystemError; after a SIGTERM it
    is still reported as terminated, not as Ctrl-C or an error."""
    with pytest.raises(KeyboardInterrupt) as info, sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            _spin()
        except KeyboardInterrupt as exc:
            raise SystemError("returned a result with an exception set") from exc
    assert info.value.args == ("SIGTERM",)
