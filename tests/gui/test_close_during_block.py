"""Closing while the distillation is inside a key block (review s31, item 9): the first block takes
≈ 20 s on a 2-core machine, and the acquisition thread waited on the full queue (back-pressure) all
that time before the instruments went safe, with no word. Now the instruments go safe at once and the
shutdown says what it still waits for."""

from __future__ import annotations

import threading
import time
from typing import Any

from labqfl.gui.core import TestbedCore

SLOW_S = 4.0


def test_closing_makes_the_station_safe_before_the_block_in_progress_ends(core: TestbedCore, events, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from labqfl.app.distill import DistillSession

    push = DistillSession.push
    inside = threading.Event()
    ended: list[float] = []

    def slow_push(self: Any, block: Any) -> Any:  # a long key block, as error correction of a first block
        out = push(self, block)
        if not inside.is_set():
            inside.set()
            time.sleep(SLOW_S)
            ended.append(time.monotonic())
        return out

    monkeypatch.setattr(DistillSession, "push", slow_push)
    core.connect().result(60)
    st = core.station
    safe_at: list[float] = []
    real_safe = st.safe_state
    def timed_safe_state() -> dict[str, str]:
        safe_at.append(time.monotonic())
        return real_safe()

    monkeypatch.setattr(st, "safe_state", timed_safe_state)
    core.start_distillation(block_bits=2000)
    events.wait(lambda: inside.is_set(), timeout=60)
    time.sleep(0.5)  # the acquisition fills the queue and waits on it
    t0 = time.monotonic()
    core.shutdown(30.0)
    assert ended and safe_at, "the block or the safe state never happened"
    assert safe_at[0] < ended[0], "the instruments went safe only after the block in progress"
    assert safe_at[0] - t0 < 2.0
    assert st.closed and not st.laser.output_enabled
    steps = [m for task, _f, m in events.kinds("progress") if task == "distillation"]
    assert any("waiting for the distillation to finish the key block" in m for m in steps)
    assert core.live_threads(wait_s=5.0) == []
