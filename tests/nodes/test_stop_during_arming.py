"""Issue 19 (closing_s38, "arming's latch check inside the setting's lock"): a node's emergency stop during its
arming. ``NodeInstruments.arm`` holds the node's instrument lock through ``arm_instruments``, whose first step
arms the SNSPDs, and each SNSPD's arming ran its latch check (counting windows of up to 2 x 10 s) inside the
``enabled`` setting's write, under the driver's lock. A SIGTERM's ``stop()`` waited for the node's lock, and
D0's safe state for the driver's, until the window's next count line: the detectors biased (and, had the arming
got that far, the laser on) for up to one count period. Now the stop puts every instrument safe at once (D0, then
the laser: reverse opening order) and again once the arming let go, and the window ends with the emergency's
error, no verdict.

Deterministic: the controller's count stream is a fake whose counted line blocks until the test releases it; the
safe states must have run while it is still blocked (the join timeouts only bound a failure)."""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import pytest

from labqfl.config import DetectorConfig, load_station_config
from labqfl.instruments.base import in_emergency
from labqfl.nodes.common import NodeInstruments

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")


class _BlockingCounts:
    """The counts port: channel 1 counts nothing; the second read (arming's counted line) waits for ``release``."""

    def __init__(self) -> None:
        self.reads = 0
        self.blocked, self.release = threading.Event(), threading.Event()

    def read(self) -> str:
        self.reads += 1
        if self.reads == 2:
            self.blocked.set()
            assert self.release.wait(30), "the test never released the count stream"
        return "1.0,0,0"

    def close(self) -> None:
        pass


class _Laser:
    """The laser role (no arming setting of its own here): when its safe state ran, and in which emergency."""

    def __init__(self, counts: _BlockingCounts) -> None:
        self.counts = counts
        self.safe: list[tuple[bool, str | None]] = []  # (count stream still blocked, emergency reason)

    def safe_state(self) -> None:
        self.safe.append((not self.counts.release.is_set(), in_emergency()))


def test_an_emergency_stop_during_arming_puts_the_detector_and_then_the_laser_safe_at_once() -> None:
    from labqfl.drivers.singlequantum_eos import SingleQuantumEos
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        d0 = SingleQuantumEos("D0", DetectorConfig(
            driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
            bias_current_ua=3.0, dark_count_rate_hz=50.0,
            options={"channel": 1, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                     "bias_ramp_ua_per_s": 10_000.0}))
        counts = _BlockingCounts()
        d0._open_counts = lambda res, ms: counts  # type: ignore[method-assign,assignment,return-value]
        laser = _Laser(counts)
        ni = NodeInstruments("detector", load_station_config(), [], None)
        ni.instruments = {"laser": laser, "D0": d0}  # type: ignore[dict-item]  # opening order
        out: dict[str, Any] = {}

        def arm() -> None:
            try:
                out["changed"] = ni.arm()
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                out["error"] = exc
        armer = threading.Thread(target=arm, daemon=True)
        stopper = threading.Thread(target=ni.stop, args=("node detector: signal SIGTERM",), daemon=True)
        armer.start()
        try:
            assert counts.blocked.wait(10), "the arming never reached D0's latch-check window"
            assert emu.bias_ua[0] == 3.0 and emu.enabled is True
            stopper.start()
            for _ in range(500):  # up to 5 s; before the fix nothing moved until the window's line came
                if laser.safe:
                    break
                threading.Event().wait(0.01)
            safe_while_blocked = (emu.bias_ua[0], emu.enabled, list(laser.safe))
            counts.release.set()
            armer.join(10)
            stopper.join(10)
            assert safe_while_blocked == (0.0, False, [(True, "node detector: signal SIGTERM")]), safe_while_blocked
            assert not armer.is_alive() and not stopper.is_alive()
            assert "changed" not in out, out
            # the driver's line, named by arm_instruments as the stop's cut (review s39 LAB2)
            assert str(out["error"]).startswith("arming cut by the emergency stop (node detector: signal SIGTERM) "
                                                "during D0.enabled=True (D0: channel 1: latch check cut by the "
                                                "emergency stop (node detector: signal SIGTERM) after 0.2 s of "
                                                "counting; no verdict on a latch"), out
            assert counts.reads == 2  # no confirmation window, no bias reset
            assert emu.bias_ua[0] == 0.0 and emu.enabled is False  # still safe after the second pass
            assert laser.safe[-1][1] == "node detector: signal SIGTERM" and len(laser.safe) >= 2
            with pytest.raises(Exception, match="is stopping"):
                ni.arm()
        finally:
            counts.release.set()
            armer.join(10)
            stopper.join(10)
            d0.close()
