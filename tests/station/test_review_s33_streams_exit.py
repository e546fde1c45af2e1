"""Review s33 L5: after SIGTERM the clients' streams are finished against one deadline and told to stop all at
once, so the exit takes the timeout once, not once per streaming client one after another (it took 20 s for 4
clients, 5 s each: ``labqfl/modulation.py`` ``ClientStreams.finish``); every stream is still stopped (its
threads joined) before its record is returned."""

from __future__ import annotations

import threading
import time

from labqfl.instruments.interfaces import PlayedFrames
from labqfl.modulation import ClientStreams


class _StuckStream:
    """A stream whose generator never reports its last frame: ``join`` waits its whole timeout; its writer
    thread runs until told to stop."""

    def __init__(self) -> None:
        self.end_frame = 10
        self.requested_end = 10
        self.first_frame = 0
        self.record = PlayedFrames(100)
        self.late_frames = 0
        self.error = None
        self.dark_frames_between = 0  # no duty cycle (ClientStreams.summary reads it since 0d7445f)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._stop.wait, daemon=True)
        self.thread.start()
        self.stopped = False

    def join(self, timeout: float | None = None) -> bool:
        time.sleep(timeout or 0.0)
        return False

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> PlayedFrames:
        self._stop.set()
        self.thread.join(timeout=5.0)
        self.stopped = True
        return self.record


def test_four_stuck_streams_are_finished_within_one_timeout() -> None:
    streams = ClientStreams({}, {}, None)
    stuck = {f"C{k}": _StuckStream() for k in range(1, 5)}
    streams.streamers = stuck  # type: ignore[assignment]
    t0 = time.monotonic()
    records = streams.finish(timeout_s=0.4)
    took = time.monotonic() - t0
    assert took < 0.8, f"finish took {took:.2f} s for 4 clients (0.4 s each, one after another, before)"
    assert set(records) == set(stuck) and all(s.stopped and not s.thread.is_alive() for s in stuck.values())
    assert streams.finish(timeout_s=0.4) == records  # a second call returns the same records at once
