"""Review s39 lab (LAB1, LAB2): an ordinary stop (``ctl/stop``, a lost launcher: no emergency) while a node arms.

``NodeInstruments.stop`` puts every instrument in its safe state at once, without waiting for the arming thread that
holds the node's lock (issue 19), and again once that thread let go.

* LAB1: the stop's safe state can run between the SNSPD's ``enabled = True`` write (driver lock let go) and arming's
  latch check. The check then counted a nanowire the stop had put at 0 µA and called it **latched** ("no count over
  1.84 s at 0 µA"). Now its baseline is taken at the write: no verdict ("latch check cut: the bias was changed
  between arming's write and its latch check").
* LAB2: arming asked for a stop only at its start; after the stop's lock-free pass it went on switching the laser
  (clock, modulators, shutters) on until the second pass. Now it asks before each setting: nothing is switched on
  after the stop began, and ``arm()`` fails ("arming cut by …") instead of reporting the node armed.

Deterministic: the arming thread is held at the moment named (an event), the stop's first pass is waited for,
then the arming goes on (the join timeouts only bound a failure). Real Eos driver over the WebSQ emulator."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from labqfl.config import DetectorConfig, load_station_config
from labqfl.instruments.interfaces import PulsedLaser
from labqfl.nodes.common import NodeInstruments

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")

ARMER = "armer"


class _Laser(PulsedLaser):
    """A laser role whose emission switches are recorded (time, on) with the thread that wrote them."""

    def __init__(self) -> None:
        super().__init__("laser", "fake")
        self.on = False
        self.writes: list[tuple[float, bool, str]] = []

    def identity(self) -> str:
        return "fake"

    def _get(self) -> bool:
        return self.on

    def _set(self, v: bool) -> None:
        self.on = bool(v)
        self.writes.append((time.monotonic(), bool(v), threading.current_thread().name))

    output_enabled = PulsedLaser.output_enabled.via(_get, _set)
    rep_rate_hz = PulsedLaser.rep_rate_hz.via(lambda s: 1e6, lambda s, v: None)
    power_mw = PulsedLaser.power_mw.via(lambda s: 1.0, lambda s, v: None)
    wavelength_nm = PulsedLaser.wavelength_nm.via(lambda s: 1550.0, lambda s, v: None)


def _eos(emu: Any) -> Any:
    from labqfl.drivers.singlequantum_eos import SingleQuantumEos

    return SingleQuantumEos("D0", DetectorConfig(
        driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=3000,
        bias_current_ua=3.0, dark_count_rate_hz=50.0,
        options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0, "bias_ramp_ua_per_s": 10_000.0,
                 "latch_window_s": 0.1}))


def _arm_in_thread(ni: NodeInstruments, out: dict[str, Any]) -> threading.Thread:
    def arm() -> None:
        try:
            out["changed"] = ni.arm()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = str(exc)
    t = threading.Thread(target=arm, name=ARMER, daemon=True)
    t.start()
    return t


def _wait_for(cond: Any, what: str, s: float = 20.0) -> None:
    end = time.monotonic() + s
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_plain_stop_between_arming_write_and_latch_check_gives_no_latch_verdict(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.drivers.singlequantum_eos import SingleQuantumEos
    from labqfl.sim_backends.websq import WebSQEmulator

    in_gap, go_on = threading.Event(), threading.Event()
    orig = SingleQuantumEos.setting_changed

    def gap(self: Any, name: str) -> None:  # the arming thread between the write (lock let go) and the check
        if name == "enabled" and threading.current_thread().name == ARMER:
            in_gap.set()
            assert go_on.wait(20)
        orig(self, name)
    monkeypatch.setattr(SingleQuantumEos, "setting_changed", gap)
    with WebSQEmulator(2) as emu:
        d0 = _eos(emu)
        try:
            ni = NodeInstruments("detector", load_station_config(), [], None)
            ni.instruments = {"D0": d0}
            out: dict[str, Any] = {}
            armer = _arm_in_thread(ni, out)
            assert in_gap.wait(20)
            assert emu.bias_ua[0] == 3.0 and emu.enabled
            stopper = threading.Thread(target=ni.stop, args=(None,), daemon=True)  # ordinary stop: no emergency
            stopper.start()
            _wait_for(lambda: emu.bias_ua[0] == 0.0 and not emu.enabled, "the stop's lock-free safe state")
            go_on.set()
            armer.join(30)
            stopper.join(30)
            err = out.get("error", "")
            assert "latched" not in err, err  # before: "channel 1 latched: no count over 1.84 s at 0 µA ..."
            assert "latch check cut" in err and "between arming's write and its latch check" in err, out
            assert "no verdict on a latch" in err
            assert err.startswith("arming cut by the stop of node detector during D0.enabled=True"), err
            assert emu.bias_ua[0] == 0.0 and not emu.enabled
        finally:
            d0.close()


@pytest.mark.parametrize("reason", [None, "signal SIGTERM"], ids=["plain", "emergency"])
def test_nothing_is_switched_on_after_the_stop_began(monkeypatch: pytest.MonkeyPatch, reason: str | None) -> None:
    """The arming is held after D0 is armed and read back, before the laser's setting; a stop (ordinary or
    emergency) runs its lock-free pass; then the arming goes on: the laser must not be switched on."""
    from labqfl.sim_backends.websq import WebSQEmulator

    import labqfl.station as station

    at_laser, go_on = threading.Event(), threading.Event()
    settings = station.arming_settings

    def held(*args: Any, **kw: Any) -> Any:
        class Held(list):  # type: ignore[type-arg]
            def __iter__(self) -> Iterator[Any]:
                for k, item in enumerate(list.__iter__(self)):
                    if k and threading.current_thread().name == ARMER:  # after D0's write and read-back
                        at_laser.set()
                        assert go_on.wait(20)
                    yield item
        return Held(settings(*args, **kw))
    monkeypatch.setattr(station, "arming_settings", held)
    with WebSQEmulator(2) as emu:
        d0 = _eos(emu)
        try:
            laser = _Laser()
            ni = NodeInstruments("detector", load_station_config(), [], None)
            ni.instruments = {"laser": laser, "D0": d0}  # opening order, as at a detection node
            out: dict[str, Any] = {}
            armer = _arm_in_thread(ni, out)
            assert at_laser.wait(20)
            assert emu.bias_ua[0] == 3.0 and not laser.on
            t_stop = time.monotonic()
            stopper = threading.Thread(target=ni.stop, args=(reason,), daemon=True)
            stopper.start()
            _wait_for(lambda: emu.bias_ua[0] == 0.0 and not emu.enabled, "the stop's lock-free safe state")
            go_on.set()
            armer.join(30)
            stopper.join(30)
            on_after = [w for w in laser.writes if w[1] and w[0] >= t_stop]
            assert on_after == [], on_after  # before: switched on ~0.5 s after the stop began, off at pass 2
            assert "changed" not in out, out  # arm() never reports the node armed after the stop began
            assert "arming cut by" in out["error"] and "before laser.output_enabled=True" in out["error"], out
            assert not laser.on and emu.bias_ua[0] == 0.0 and not emu.enabled
        finally:
            d0.close()
