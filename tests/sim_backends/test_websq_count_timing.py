"""The emulated SNSPD controller's count stream keeps the real controller's timing (issue 19): one line per
measurement period [W ``SQCounts.run``], the time its count source takes being part of that period rather than
added to it, and a new measurement period restarting the measurement at once (before, the loop finished waiting
out the old period, up to 10 s, past the driver's read timeout of max(2 s, 3 periods))."""

from __future__ import annotations

import contextlib
import socket
import time

from labqfl.sim_backends.websq import WebSQEmulator


def _line_times(emu: WebSQEmulator, n: int, timeout: float = 5.0) -> list[float]:
    """Arrival times (monotonic) of the next ``n`` lines on the counts port."""
    out: list[float] = []
    with socket.create_connection(("127.0.0.1", emu.counts_port), timeout=timeout) as s:
        buf = b""
        while len(out) < n:
            data = s.recv(4096)
            assert data, "counts port closed"
            buf += data
            while b"\n" in buf and len(out) < n:
                _, buf = buf.split(b"\n", 1)
                out.append(time.monotonic())
    return out


def test_a_slow_count_source_is_part_of_the_period_not_added_to_it() -> None:
    def slow(period_s: float) -> list[int]:
        time.sleep(0.3)  # a simulated loop working out the period's clicks
        return [1, 2]

    with WebSQEmulator(2, counts=slow) as emu:
        emu.handle({"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": 500})
        times = _line_times(emu, 4)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # before: 0.5 s + 0.3 s between lines
    assert all(0.4 < g < 0.7 for g in gaps), gaps


def test_a_new_measurement_period_restarts_the_measurement() -> None:
    with WebSQEmulator(2) as emu, socket.create_connection(("127.0.0.1", emu.counts_port), timeout=5.0) as s:
        s.recv(4096)  # a line of the default 100 ms period: listening
        emu.handle({"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": 10_000})
        time.sleep(0.3)  # the loop now waits out the 10 s period
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while s.recv(4096):  # the lines sent until now
                pass
        s.settimeout(5.0)
        t0 = time.monotonic()
        emu.handle({"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": 100})
        assert s.recv(4096).endswith(b"\n")
        t = time.monotonic()
    assert t - t0 < 1.0, f"no line {t - t0:.2f} s after the 100 ms period was set (before: up to 10 s)"
