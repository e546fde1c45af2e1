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
    assert any("stopping the distillation at the end of its current stage" in m for m in steps)
    assert core.live_threads(wait_s=5.0) == []


def _store_state(data_dir: Any, pair: str, acq_id: str) -> dict[str, tuple[list[str], list[tuple[int, int]]]]:
    """Per node of ``pair``: (its stored block IDs, the slot ranges of ``acq_id`` it records as distilled)."""
    from labqfl.keystore import KeyStore, node_store_path

    out = {}
    for node in pair.split("-"):
        st = KeyStore(node_store_path(node, data_dir), node=node, create=False)
        try:
            ranges = sorted((a, b) for a, b, _ in st.distilled_slots(pair, acq_id))
            out[node] = (sorted(d["block_id"] for d in st.blocks(pair)), ranges)
        finally:
            st.close()
    return out


def test_closing_the_window_during_error_correction_abandons_the_block_at_both_ends(  # type: ignore[no-untyped-def]
        qtbot, small_config, tmp_path, monkeypatch) -> None:
    """The window is closed while the first key block is in error correction (Alice's first answer
    waits until the close has begun): the distillation stops at its next round trip, the window
    closes, and the block is stored at neither end — the stores hold the same blocks (only the
    pre-shared authentication key) and both count the block's slots as spent."""
    from labqfl.gui.controller import Controller
    from labqfl.gui.main_window import MainWindow

    from labqfl.qkd.cascade import CascadeAlice
    from labqfl.qkd.pipeline import PRESHARED_PREFIX

    ctl = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    win = MainWindow(ctl)
    qtbot.addWidget(win)
    win.show()
    handle = CascadeAlice.handle
    in_ec, answers_after_close, acq = threading.Event(), [], []

    def closing_handle(self: Any, request: Any) -> Any:  # the middle stage of the first key block
        if not in_ec.is_set():
            acq.append(ctl.core.station.acquisition_id())
            in_ec.set()
            deadline = time.monotonic() + 120.0
            while not ctl.core._closed and time.monotonic() < deadline:
                time.sleep(0.01)
        elif ctl.core._closed:
            answers_after_close.append(request.kind)
        return handle(self, request)

    monkeypatch.setattr(CascadeAlice, "handle", closing_handle)
    try:
        ctl.core.connect().result(60)
        ctl.core.start_distillation(None, "cascade")  # the block-size rule: a block that gives key
        assert in_ec.wait(120), "the first key block never reached error correction"
        win.close()
        qtbot.waitUntil(lambda: not win.isVisible(), timeout=120_000)
    finally:
        ctl.shutdown(30.0)
    assert answers_after_close == [], "error correction went on after the window was closing"
    assert ctl.live_threads(wait_s=10.0) == []
    pair = "-".join(small_config.pairs()[0])
    state = _store_state(tmp_path / "data", pair, acq[0])
    (ids_i, spent_i), (ids_j, spent_j) = state.values()
    assert ids_i == ids_j and spent_i == spent_j, "the two ends' stores differ"
    assert all(b.startswith(PRESHARED_PREFIX) for b in ids_i), f"a key block was stored: {ids_i}"
    assert len(spent_i) == 1  # the abandoned block's raw data is spent at both ends
