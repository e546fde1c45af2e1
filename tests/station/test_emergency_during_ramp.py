"""Review s37 lab3 M1, L4, L5: an emergency stop that begins while a normal PRO8000 ramp runs in another thread
cuts that ramp (``safe_ramp_max_s`` after the emergency began) instead of waiting for it under the driver's lock;
a node's stop enters the emergency before its own lock (which a running ``disarm`` holds); a ramp-up stops at
once; ``ctl/stop`` (no signal) is a normal stop; and the emergency flag is signal-safe (no lock a signal
handler could find held by the very thread it interrupted)."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import labqfl.station as station_mod
from labqfl.config import LaserConfig, load_station_config
from labqfl.errors import InstrumentError
from labqfl.instruments.base import emergency, in_emergency
from labqfl.nodes.common import NodeInstruments

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")

SIM = Path(__file__).resolve().parents[2] / "sim_backends" / "visa" / "thorlabs_pro8000.yaml"
CAP_S = 0.5


def _laser(tmp_path: Path, on_ma: float = 150.0) -> Any:
    """The pyvisa-sim PRO8000 on at ``on_ma``: a normal ramp-down from there at 50 mA/s takes 3 s."""
    from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000

    shutil.copy(SIM, tmp_path / SIM.name)
    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", timeout_ms=500,
                      visa_library=f"{tmp_path / SIM.name}@sim",
                      options={"max_current_ma": 200, "ramp_ma_per_s": 50.0, "ramp_step_ma": 10.0,
                               "safe_ramp_max_s": CAP_S})
    laser = ThorlabsPRO8000("laser", cfg)
    laser.apply_operating_point(SimpleNamespace(laser=SimpleNamespace(wavelength_nm=1550.0, power_mw=on_ma * 0.1)))
    laser.ramp_ma_per_s = 100_000.0  # on at once
    laser.output_enabled = True
    laser.ramp_ma_per_s = 50.0
    return laser


def test_an_emergency_cuts_a_normal_ramp_down_already_running(tmp_path: Path) -> None:
    """The review's reproduction 1: before, the emergency's safe state waited 2.5 s for the normal 3 s ramp."""
    laser = _laser(tmp_path)
    try:
        worker = threading.Thread(target=laser.safe_state)  # an acquisition's normal end, in a worker
        worker.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        with emergency("signal SIGTERM"):
            laser.safe_state()
        took = time.monotonic() - t0
        worker.join(5.0)
        assert took < CAP_S + 0.45, f"the emergency safe state took {took:.2f} s (cap {CAP_S} s + one step)"
        assert laser.link.query(":LASER?").strip() in ("OFF", "0")
        assert laser.current_ma == pytest.approx(160.0)  # the set point kept (1.5 mW: 10 mA threshold + 150 mA)
    finally:
        laser.close()


def test_a_normal_ramp_down_outside_an_emergency_still_runs_all_the_way(tmp_path: Path) -> None:
    laser = _laser(tmp_path, on_ma=40.0)
    try:
        t0 = time.monotonic()
        laser.safe_state()
        assert time.monotonic() - t0 >= 0.55  # 40 mA at 50 mA/s in 10 mA steps: 3 pauses of 0.2 s
    finally:
        laser.close()


def test_a_ramp_up_stops_when_an_emergency_begins(tmp_path: Path) -> None:
    laser = _laser(tmp_path, on_ma=0.0)  # on at 0 mA
    try:
        laser.safe_state()
        laser.power_mw = 15.0  # 150 mA: 3 s up at 50 mA/s
        errors: list[BaseException] = []

        def switch_on() -> None:
            try:
                laser.output_enabled = True
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        worker = threading.Thread(target=switch_on)
        worker.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        with emergency("signal SIGTERM"):
            laser.safe_state()
        assert time.monotonic() - t0 < CAP_S + 0.45
        worker.join(5.0)
        assert len(errors) == 1 and isinstance(errors[0], InstrumentError)
        assert "by an emergency stop (signal SIGTERM)" in str(errors[0])
        assert laser.link.query(":LASER?").strip() in ("OFF", "0")
        assert laser.current_ma == pytest.approx(160.0)  # back down, emission off, the operating set point kept
    finally:
        laser.close()


def test_a_nodes_signal_stop_cuts_the_disarm_ramp_another_thread_runs(tmp_path: Path) -> None:
    """The review's reproduction 2 with the real driver: before, stop() took the node's lock (held by disarm
    through its whole ramp) before it entered the emergency, so it waited for the normal ramp."""
    laser = _laser(tmp_path)
    ni = NodeInstruments("detector", load_station_config(), [], None)
    ni.instruments = {"laser": laser}
    ni._armed = 1
    try:
        worker = threading.Thread(target=ni.disarm, name="ctl/run finally")
        worker.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        ni.stop("node detector: signal SIGTERM")
        took = time.monotonic() - t0
        worker.join(5.0)
        assert took < CAP_S + 0.45, f"the node's stop took {took:.2f} s"
        assert laser.link.query(":LASER?").strip() in ("OFF", "0")
    finally:
        ni.close()
    assert in_emergency() is None


def test_a_nodes_orderly_stop_is_not_an_emergency() -> None:
    """``ctl/stop`` and a lost launcher: ``stop()`` without a reason, a normal stop (review s37 lab3 L5)."""
    seen: list[str | None] = []
    ni = NodeInstruments("detector", load_station_config(), [], None)
    ni.instruments = {"laser": SimpleNamespace(safe_state=lambda: seen.append(in_emergency()))}  # type: ignore[dict-item]
    ni.stop()
    ni.stop("node detector: signal SIGTERM")
    assert seen == [None, "node detector: signal SIGTERM"]


def test_a_signal_landing_inside_in_emergency_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s37 lab3 L4: CPython runs a signal handler on the main thread between two bytecodes, possibly inside
    ``in_emergency()``; the Station's handler then enters an emergency. Simulated with a line trace that runs the
    handler from inside ``in_emergency``'s frame. Before, its non-reentrant lock was held there: a deadlock."""
    monkeypatch.setattr(station_mod, "_emergency_close", lambda reason: None)
    monkeypatch.setattr(station_mod, "_restore_handlers", lambda: None)
    monkeypatch.setattr(station_mod, "_PREVIOUS", {int(signal.SIGTERM): lambda s, f: None})  # not the default action
    from labqfl.instruments import base

    code = base.in_emergency.__code__
    fired: list[str | None] = []

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            return trace if frame.f_code is code else None
        if event == "line":  # before each line of in_emergency: also inside any lock it holds
            fired.append("handler")
            station_mod._on_signal(signal.SIGTERM, None)  # as if SIGTERM arrived right here
        return trace

    result: list[str | None] = []

    def body() -> None:
        sys.settrace(trace)
        try:
            result.append(base.in_emergency())
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion
            result.append(repr(exc))
        finally:
            sys.settrace(None)

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join(3.0)
    assert not worker.is_alive(), "the signal handler deadlocked inside in_emergency()"
    assert fired and result == [None]
    assert in_emergency() is None
