"""Review s39 lab (Q1, "can the stop and the arming write to one session at once?"): a node's ``stop()`` racing its
``arm()`` on the real Eos driver (D0 and D1 sharing one WebSQ session, the emulator) plus a laser whose switch takes
50 ms under its own lock. ``stop()`` runs its first safe-state pass without the node's lock (issue 19), so the
arming thread and the stop write to the same instruments at once: every exchange must still be ordered by the
driver's lock.

Checked on every adapter write and read: the calling thread holds the driver's lock, and no other thread is inside
the adapter's I/O (else bytes of two commands could interleave on the socket); and after ``stop()`` returned, no
bias / enable command reaches the controller (the end check's ``SetMeasurementPeriod`` restore aside) and every
instrument is safe (0 µA, ``DetectorEnable`` false, laser off). Stops at fixed moments over the arming (ramps,
latch windows, the laser), ordinary and emergency; the review's random-moment version found no problem in 42 runs.
A failure names the thread and operation."""

from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any

import pytest

from labqfl.config import DetectorConfig, load_station_config
from labqfl.instruments.interfaces import PulsedLaser
from labqfl.nodes.common import NodeInstruments

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")


def _guard(d: Any, tag: str, problems: list[str]) -> None:
    """Wrap the driver's adapter I/O with the lock-ownership and single-entry checks (the adapter is shared)."""
    a = d.link.adapter
    if getattr(a, "_guarded", False):
        return
    a._guarded = True
    inside = [0]
    w0, r0 = a.write, a.read

    def check(op: str) -> None:
        if not d.lock._is_owned():
            problems.append(f"{tag}: {op} without the driver's lock in thread {threading.current_thread().name}")
        inside[0] += 1
        if inside[0] > 1:
            problems.append(f"{tag}: two threads in the adapter's I/O at once ({op})")

    def write(*x: Any, **k: Any) -> Any:
        check("write")
        try:
            return w0(*x, **k)
        finally:
            inside[0] -= 1

    def read(*x: Any, **k: Any) -> Any:
        check("read")
        try:
            return r0(*x, **k)
        finally:
            inside[0] -= 1
    a.write, a.read = write, read


class _Laser(PulsedLaser):
    """A laser whose switch takes 50 ms under its own lock (a short current ramp)."""

    def __init__(self) -> None:
        super().__init__("laser", "fake")
        self.on = False

    def identity(self) -> str:
        return "fake"

    def _get(self) -> bool:
        return self.on

    def _set(self, v: bool) -> None:
        time.sleep(0.05)
        self.on = bool(v)

    output_enabled = PulsedLaser.output_enabled.via(_get, _set)
    rep_rate_hz = PulsedLaser.rep_rate_hz.via(lambda s: 1e6, lambda s, v: None)
    power_mw = PulsedLaser.power_mw.via(lambda s: 1.0, lambda s, v: None)
    wavelength_nm = PulsedLaser.wavelength_nm.via(lambda s: 1550.0, lambda s, v: None)

    def safe_state(self) -> None:
        self.output_enabled = False


@pytest.mark.parametrize("delay_s", [0.02, 0.25, 0.6])
@pytest.mark.parametrize("reason", [None, "signal SIGTERM"], ids=["plain", "emergency"])
def test_stop_racing_arm_keeps_every_exchange_under_the_drivers_lock(reason: str | None, delay_s: float) -> None:
    from labqfl.drivers.singlequantum_eos import SingleQuantumEos
    from labqfl.sim_backends.websq import WebSQEmulator

    problems: list[str] = []
    with WebSQEmulator(2) as emu:
        def eos(name: str, channel: int) -> Any:
            return SingleQuantumEos(name, DetectorConfig(
                driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=3000,
                bias_current_ua=6.0, dark_count_rate_hz=50.0,
                options={"channel": channel, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                         "bias_ramp_ua_per_s": 40.0, "latch_window_s": 0.1}))
        d0, d1 = eos("D0", 1), eos("D1", 2)
        try:
            assert d0.lock is d1.lock
            _guard(d0, "D0", problems)
            _guard(d1, "D1", problems)
            laser = _Laser()
            ni = NodeInstruments("detector", load_station_config(), [], None)
            ni.instruments = {"laser": laser, "D0": d0, "D1": d1}  # type: ignore[dict-item]
            received: list[tuple[float, str]] = []
            handle = emu.handle

            def recorded(msg: dict[str, Any]) -> Any:
                if "command" in msg:
                    received.append((time.monotonic(), str(msg["command"])))
                return handle(msg)
            emu.handle = recorded  # type: ignore[method-assign]
            out: dict[str, Any] = {}

            def arm() -> None:
                try:
                    out["changed"] = ni.arm()
                except BaseException as exc:  # noqa: BLE001 - the test reads it
                    out["error"] = str(exc)
            armer = threading.Thread(target=arm, name="armer", daemon=True)
            armer.start()
            time.sleep(delay_s)
            ni.stop(reason)
            stopped = time.monotonic()
            armer.join(20)
            assert not armer.is_alive()
            time.sleep(0.2)
            late = [c for t, c in received if t > stopped and c != "SetMeasurementPeriod"]
            assert problems == [], problems
            assert late == [], late
            st = emu.state()
            assert (st["bias_ua"], st["enabled"], laser.on) == ([0.0, 0.0], False, False), (st, laser.on, out)
        finally:
            d0.close()
            d1.close()
