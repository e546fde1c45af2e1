"""Issue 19: the SNSPD end check (:meth:`SingleQuantumEos.acquisition_fault`) held the driver's lock over both
counting windows (screening + confirmation, up to 2 x 10 s each at low dark rates). An emergency stop runs the
safe states in reverse opening order (power_meter, time_tagger, D1, D0, laser, master_clock), and D0's safe state
needs that lock: a SIGTERM during D0's window left the laser on until the window ended. Now a window holds only
the controller's window lock; the safe state runs at once and the window, at its next count line, ends with an
error naming the emergency stop (never a false "latched" / "not latched").

The count stream is a fake whose second line blocks until the test releases it: no wall-clock race (the join
timeouts only bound a failure)."""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import pytest
from labqfl.drivers.singlequantum_eos import SingleQuantumEos

from labqfl.config import DetectorConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.base import _EMERGENCY, emergency, in_emergency

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")


class _BlockingCounts:
    """A counts port ([W ``SQCounts.run``]) whose lines give channel 1 no count; the ``block_at``-th read (1-based)
    waits for ``release``."""

    def __init__(self, block_at: int) -> None:
        self.block_at, self.reads = block_at, 0
        self.blocked, self.release = threading.Event(), threading.Event()

    def read(self) -> str:
        self.reads += 1
        if self.reads == self.block_at:
            self.blocked.set()
            assert self.release.wait(30), "the test never released the count stream"
        return "1.0,0,0"

    def close(self) -> None:
        pass


class _Laser:
    """The laser role: its safe state records whether D0's counting window was still blocked when it ran."""

    def __init__(self, counts: _BlockingCounts) -> None:
        self.counts, self.off_while_blocked = counts, None  # type: bool | None

    def safe_state(self) -> None:
        self.off_while_blocked = not self.counts.release.is_set()


def _armed_d0(emu: Any) -> SingleQuantumEos:
    d0 = SingleQuantumEos("D0", DetectorConfig(
        driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000, bias_current_ua=3.0,
        dark_count_rate_hz=50.0, options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                                          "bias_ramp_ua_per_s": 10_000.0}))
    d0.enabled = True  # the arming latch check reads the emulator's own count stream: 300 /s, not latched
    assert emu.bias_ua[0] == 3.0
    return d0


def _end_check(d0: SingleQuantumEos, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            out["fault"] = d0.acquisition_fault()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_emergency_during_the_end_check_window_puts_d0_and_then_the_laser_safe_at_once() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _armed_d0(emu)
        counts = _BlockingCounts(block_at=2)  # the screening window's counted line
        d0._open_counts = lambda res, ms: counts  # type: ignore[method-assign,assignment,return-value]
        laser, out, stop = _Laser(counts), {}, {}  # type: ignore[var-annotated]
        held, leave = threading.Event(), threading.Event()

        def emergency_stop() -> None:  # a node's SIGTERM: the emergency held until the node is down
            with emergency("signal SIGTERM"):
                for inst in (d0, laser):  # the Station's reverse opening order: ..., D1, D0, laser, master_clock
                    inst.safe_state()
                held.set()
                leave.wait(30)
            stop["done"] = True

        checker = _end_check(d0, out)
        try:
            assert counts.blocked.wait(10), "the end check never reached its counting window"
            stopper = threading.Thread(target=emergency_stop, daemon=True)
            stopper.start()
            # before: D0's safe state waited for the driver's lock, held by the end check until its window ended
            assert held.wait(5), "the emergency's safe states waited for D0's counting window"
            assert laser.off_while_blocked is True
            assert emu.bias_ua[0] == 0.0 and emu.enabled is False  # D0 down, bias supply off (D1 was at 0 µA)
            counts.release.set()
            checker.join(10)
            assert not checker.is_alive()
            assert "fault" not in out, out  # no verdict: neither "latched" nor "not latched"
            err = out["error"]
            assert isinstance(err, InstrumentError)
            assert str(err).startswith("D0: channel 1: latch check cut by the emergency stop (signal SIGTERM) after "
                                       "0.2 s of counting; no verdict on a latch"), str(err)
        finally:
            counts.release.set()
            leave.set()
            checker.join(10)
            d0.close()


def test_a_bias_change_during_the_windows_gives_no_verdict() -> None:
    """An emergency that ended before the count line came (or a plain disarm by another thread): the bias moved
    during the window, so its zero count says nothing of a latch: an error, not "latched during the acquisition"."""
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _armed_d0(emu)
        counts = _BlockingCounts(block_at=2)
        d0._open_counts = lambda res, ms: counts  # type: ignore[method-assign,assignment,return-value]
        out: dict[str, Any] = {}
        checker = _end_check(d0, out)
        try:
            assert counts.blocked.wait(10)
            done = threading.Thread(target=d0.safe_state, daemon=True)
            done.start()
            done.join(5)
            assert not done.is_alive() and emu.bias_ua[0] == 0.0  # before: waited for the window's lock
            counts.release.set()
            checker.join(10)
            assert "fault" not in out, out
            assert "latch check cut: the bias was changed during its counting windows" in str(out["error"])
        finally:
            counts.release.set()
            checker.join(10)
            d0.close()


def test_a_window_does_not_start_in_an_emergency() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _armed_d0(emu)
        try:
            with emergency("signal SIGINT"), pytest.raises(InstrumentError, match="cut by the emergency stop "
                                                           r"\(signal SIGINT\) after 0 s of counting"):
                d0.acquisition_fault()
        finally:
            d0.close()


def test_an_emergency_during_the_arming_window_ends_it_at_the_next_count_line() -> None:
    """An emergency ends arming's window at the next count line with the emergency's error. Before 30db9e6: the
    check went on (confirmation window, a bias reset with the emergency running, a second check) and gave a
    verdict: here "latched", the fake stream counting nothing."""
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = SingleQuantumEos("D0", DetectorConfig(
            driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
            bias_current_ua=3.0, dark_count_rate_hz=50.0,
            options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                     "bias_ramp_ua_per_s": 10_000.0}))
        counts = _BlockingCounts(block_at=2)
        d0._open_counts = lambda res, ms: counts  # type: ignore[method-assign,assignment,return-value]
        out: dict[str, Any] = {}

        def arm() -> None:
            try:
                d0.enabled = True
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                out["error"] = exc
        armer = threading.Thread(target=arm, daemon=True)
        armer.start()
        try:
            assert counts.blocked.wait(10)
            with emergency("signal SIGTERM"):
                counts.release.set()
                armer.join(10)
                assert not armer.is_alive()
            assert "latch check cut by the emergency stop (signal SIGTERM) after 0.2 s" in str(out["error"]), out
            assert counts.reads == 2  # no confirmation window, no bias reset
        finally:
            counts.release.set()
            armer.join(10)
            d0.close()


def _arming(d0: SingleQuantumEos, out: dict[str, Any]) -> threading.Thread:
    def arm() -> None:
        try:
            d0.enabled = True
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc
    t = threading.Thread(target=arm, daemon=True)
    t.start()
    return t


def test_an_emergency_during_the_arming_window_puts_d0_and_then_the_laser_safe_at_once() -> None:
    """Arming's latch check ran inside the ``enabled`` setting's write, which holds the driver's lock
    (closing_s38, issue 19), so D0's safe state, and the laser's after it, waited for the window's next count line
    (up to one count period, 10 s). Now the check runs once the write let go of that lock: the safe states run
    while the window is still blocked, and the window ends with the emergency's error, no verdict. Before: the
    emergency's safe states were still waiting after 5 s."""
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = SingleQuantumEos("D0", DetectorConfig(
            driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
            bias_current_ua=3.0, dark_count_rate_hz=50.0,
            options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                     "bias_ramp_ua_per_s": 10_000.0}))
        counts = _BlockingCounts(block_at=2)  # arming's screening window's counted line
        d0._open_counts = lambda res, ms: counts  # type: ignore[method-assign,assignment,return-value]
        laser, out = _Laser(counts), {}  # type: ignore[var-annotated]
        held, leave = threading.Event(), threading.Event()

        def emergency_stop() -> None:
            with emergency("signal SIGTERM"):
                for inst in (d0, laser):  # the Station's reverse opening order
                    inst.safe_state()
                held.set()
                leave.wait(30)

        armer = _arming(d0, out)
        try:
            assert counts.blocked.wait(10), "arming never reached its latch check's window"
            assert emu.bias_ua[0] == 3.0 and emu.enabled is True
            threading.Thread(target=emergency_stop, daemon=True).start()
            assert held.wait(5), "the emergency's safe states waited for arming's counting window"
            assert laser.off_while_blocked is True
            assert emu.bias_ua[0] == 0.0 and emu.enabled is False
            counts.release.set()
            armer.join(10)
            assert not armer.is_alive()
            err = out["error"]
            assert isinstance(err, InstrumentError)
            assert str(err).startswith("D0: channel 1: latch check cut by the emergency stop (signal SIGTERM) after "
                                       "0.2 s of counting; no verdict on a latch"), str(err)
            assert counts.reads == 2  # no confirmation window, no bias reset
            assert emu.bias_ua[0] == 0.0 and emu.enabled is False  # nothing ramped back up
        finally:
            counts.release.set()
            leave.set()
            armer.join(10)
            d0.close()


def test_an_emergency_during_arming_s_bias_ramp_stops_it_at_the_next_step() -> None:
    """Arming's ramp up (0 -> 6 uA in 1 uA steps at 2 uA/s: 2.5 s; at the default 10 uA/s up to 9 s to 90.9 uA) runs
    inside the ``enabled`` write, under the driver's lock the safe state needs. Once an emergency runs, the ramp goes
    no further than the step under way, the write raises naming the emergency, and the safe state ramps down from
    there. Before: the ramp went on to 6 uA (then the latch check and the safe state) with the emergency running."""
    import time

    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = SingleQuantumEos("D0", DetectorConfig(
            driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
            bias_current_ua=6.0, dark_count_rate_hz=50.0,
            options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0, "bias_ramp_ua_per_s": 2.0}))
        seen: list[float] = []
        polling = threading.Event()

        def poll() -> None:
            while not polling.is_set():
                seen.append(float(emu.bias_ua[0]))
                time.sleep(0.002)
        out: dict[str, Any] = {}
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        armer = _arming(d0, out)
        try:
            t_end = time.monotonic() + 10
            while emu.bias_ua[0] < 1.0 and time.monotonic() < t_end:
                time.sleep(0.002)
            with emergency("signal SIGTERM"):
                at = float(emu.bias_ua[0])
                n_before = len(seen)
                assert 1.0 <= at < 6.0, at
                safe = threading.Thread(target=d0.safe_state, daemon=True)
                safe.start()
                safe.join(15)
                assert not safe.is_alive()
            armer.join(10)
            polling.set()
            poller.join(5)
            assert max(seen[n_before:]) <= at + 1.0, (at, max(seen[n_before:]))  # before: 6.0
            assert "channel 1: bias ramp to 6 µA cut by the emergency stop (signal SIGTERM) at " in str(out["error"])
            assert emu.bias_ua[0] == 0.0 and emu.enabled is False
        finally:
            polling.set()
            armer.join(10)
            d0.close()


def test_an_emergency_during_a_latch_reset_leaves_the_light_off() -> None:
    """A latch reset takes the light off (the station's shutters / master clock: ``light_off``), ramps the bias to
    0 uA and back and then puts the light back. An emergency that starts during it cuts the ramp back up (above) and
    the light stays off: the emergency's safe states may already have closed the shutters, and putting them back
    would let light reach the loop while the node stops. Before: the light was put back whatever happened."""
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _armed_d0(emu)
        restored: list[str | None] = []
        d0.light_off = lambda: (lambda: restored.append(in_emergency()))  # type: ignore[assignment]
        d0._counts_nothing = lambda rate=None: (True, 1.84)  # type: ignore[method-assign]  # "latched"
        write = d0._write_bias
        stop = emergency("signal SIGTERM")

        def write_then_stop(ua: float) -> None:
            write(ua)
            if ua == 0.0 and stop not in _EMERGENCY:  # the emergency starts once the bias is down
                stop.__enter__()
        d0._write_bias = write_then_stop  # type: ignore[method-assign]
        try:
            with pytest.raises(InstrumentError, match=r"bias ramp to 3 µA cut by the emergency stop \(signal SIGTERM\) "
                                                      r"at 0 µA"):
                d0._recover_if_latched(None)
            assert restored == [] and emu.bias_ua[0] == 0.0
        finally:
            if stop in _EMERGENCY:
                stop.__exit__(None, None, None)
            d0.close()


def test_arming_still_checks_for_a_latch_and_tells_the_change_hooks_after_the_check() -> None:
    """The check moved out of the setting's write, not away: a channel whose stream counts nothing is reset once
    and refused at arming (bias left at 0 µA), and the change hooks hear of the arming only when it passed the
    check, as before."""
    from labqfl.sim_backends.websq import WebSQEmulator

    class _Dark:
        def read(self) -> str:
            return "1.0,0,0"

        def close(self) -> None:
            pass

    with WebSQEmulator(2) as emu:
        d0 = SingleQuantumEos("D0", DetectorConfig(
            driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
            bias_current_ua=3.0, dark_count_rate_hz=50.0,
            options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                     "bias_ramp_ua_per_s": 10_000.0, "latch_window_s": 0.1}))
        heard: list[tuple[str, float]] = []
        d0.add_change_hook(lambda inst, name: heard.append((name, emu.bias_ua[0])))
        try:
            d0.enabled = True  # the emulator's own stream counts: passes
            assert heard == [("enabled", 3.0)]
            d0.enabled = False
            heard.clear()
            d0._open_counts = lambda res, ms: _Dark()  # type: ignore[method-assign,assignment,return-value]
            with pytest.raises(InstrumentError, match="channel 1 latched: no count over"):
                d0.enabled = True
            assert heard == [] and emu.bias_ua[0] == 0.0
        finally:
            d0.close()


def test_a_safe_state_between_the_windows_and_the_bias_reset_is_not_undone() -> None:
    """count_rate_hz's latch check no longer holds the driver's lock over its windows, so an emergency's safe state
    can run after the windows found nothing and before the reset: the reset must not run then. Before: it "reset"
    the bias from the 0 µA the safe state left, found nothing again (unbiased) and refused the channel as latched,
    a false verdict; had the safe state come just after the reset read the bias, it ramped it back up to 3 µA."""
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = _armed_d0(emu)
        found = d0._counts_nothing
        stop = emergency("signal SIGTERM")  # begins once the windows are over, held until the test ends
        in_emergency = {"on": True}

        calls = {"n": 0}

        def nothing_then_safe_state(rate: float | None = None) -> tuple[bool, float]:
            calls["n"] += 1
            latched, seconds = found(rate)
            if calls["n"] > 1:  # the check after a reset: as it is
                return latched, seconds
            assert not latched  # the emulator's stream counts: the test says "nothing" itself
            if in_emergency["on"]:
                stop.__enter__()
            stopper = threading.Thread(target=d0.safe_state, daemon=True)
            stopper.start()
            stopper.join(10)
            assert not stopper.is_alive()
            return True, seconds
        d0._counts_nothing = nothing_then_safe_state  # type: ignore[method-assign]
        try:
            with pytest.raises(InstrumentError, match=r"latch check cut by the emergency stop \(signal SIGTERM\)"):
                d0._recover_if_latched(None)
            assert emu.bias_ua[0] == 0.0 and emu.enabled is False
            stop.__exit__(None, None, None)
            in_emergency["on"] = False
            # no emergency (a plain disarm from another thread): no reset either, and no verdict
            d0._counts_nothing = found  # type: ignore[method-assign]
            d0.enabled = True
            calls["n"] = 0
            d0._counts_nothing = nothing_then_safe_state  # type: ignore[method-assign]
            with pytest.raises(InstrumentError, match="latch check cut: the bias was changed"):
                d0._recover_if_latched(None)
            assert emu.bias_ua[0] == 0.0
        finally:
            if in_emergency["on"] and stop in _EMERGENCY:
                stop.__exit__(None, None, None)
            d0.close()
