"""Live tab ▸ Stop while a key block is being distilled: Distillation ▸ Stop abandons the block at
the next round trip of its error correction (nothing stored at either end, reported as stopped by
user, the acquisition goes on); Acquisition ▸ Stop puts the instruments in their safe state
without waiting for the block — even with the distillation's queue full — and the distillation
still gets every acquired block and ends the block at both ends.

Error correction of the first key block is held at Alice's first answer until the test's event has
happened (a gate, :class:`EcGate`), so the tests check the order of events, never wall time."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from labqfl.gui.core import TestbedCore
from labqfl.gui.workers.acquisition import QueueFeed

from labqfl.keystore import KeyStore, node_store_path
from labqfl.qkd.pipeline import PRESHARED_PREFIX

#: the longest a gate holds error correction (a bound for a broken build, not a timing)
GATE_S = 120.0


class EcGate:
    """Holds the first key block's error correction (Alice's first answer, Cascade) until
    ``release()`` is true, then records the requests Alice still answers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, release: Callable[[], bool]) -> None:
        from labqfl.qkd.cascade import CascadeAlice

        self.entered = threading.Event()
        self.released_in_time = False
        self.answered_after: list[str] = []
        handle = CascadeAlice.handle

        def gated(alice: Any, request: Any) -> Any:
            if not self.entered.is_set():
                self.entered.set()
                deadline = time.monotonic() + GATE_S
                while not release() and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.released_in_time = release()
            else:
                self.answered_after.append(request.kind)
            return handle(alice, request)

        monkeypatch.setattr(CascadeAlice, "handle", gated)


def _stores(core: TestbedCore, acq: str) -> dict[str, tuple[list[str], list[tuple[int, int]]]]:
    """Per client: (block IDs stored for the pair, the pair's slot ranges of acquisition ``acq``
    recorded as distilled)."""
    pair = "-".join(core.config.pairs()[0])
    out = {}
    for node in core.config.client_names:
        st = KeyStore(node_store_path(node, core.data_dir), node=node, create=False)
        try:
            spent = sorted((a, b) for a, b, _ in st.distilled_slots(pair, acq))
            out[node] = (sorted(d["block_id"] for d in st.blocks(pair)), spent)
        finally:
            st.close()
    return out


def test_a_stopping_feed_hands_over_its_last_blocks_without_waiting_for_room() -> None:
    q: queue.Queue[Any] = queue.Queue(maxsize=2)
    feed = QueueFeed(q)
    q.put("b0")
    q.put("b1")
    end = QueueFeed.END(1.5, False)
    feed.close(end, ["b2"])  # the queue is full: returns without a consumer
    assert list(feed) == ["b0", "b1", "b2"]
    assert feed.end == end and feed.end_t_s == 1.5 and not feed.discard


def test_stopping_the_distillation_during_error_correction_abandons_the_block(  # type: ignore[no-untyped-def]
        core: TestbedCore, events, monkeypatch) -> None:
    stop_pressed = threading.Event()
    gate = EcGate(monkeypatch, stop_pressed.is_set)
    core.connect().result(60)
    core.start_distillation(None, "cascade")  # the block-size rule: a block that gives key
    assert gate.entered.wait(GATE_S), "the first key block never reached error correction"
    acq = core.station.acquisition_id()  # the acquisition being distilled (Stop starts a new one)
    core.stop_distillation()
    stop_pressed.set()
    events.wait(lambda: ("distillation", False) in events.kinds("busy"), timeout=GATE_S)
    assert gate.released_in_time and gate.answered_after == []  # no round trip after the stop
    assert core.busy("acquisition")  # the acquisition goes on without the distillation
    assert events.kinds("error") == []
    steps = [m for task, _f, m in events.kinds("progress") if task == "distillation"]
    assert any("stopped by user" in m for m in steps)
    state = _stores(core, acq)
    core.stop_acquisition()
    (ids_i, spent_i), (ids_j, spent_j) = state.values()
    assert ids_i == ids_j and spent_i == spent_j
    assert all(b.startswith(PRESHARED_PREFIX) for b in ids_i), f"a key block was stored: {ids_i}"
    assert len(spent_i) == 1  # the abandoned block's raw data counts as spent at both ends


def test_stopping_the_acquisition_makes_the_station_safe_while_the_block_is_distilled(  # type: ignore[no-untyped-def]
        core: TestbedCore, events, monkeypatch) -> None:
    core.connect().result(60)
    st = core.station
    gate = EcGate(monkeypatch, lambda: not st.laser.output_enabled)
    core.start_distillation(None, "cascade")
    assert gate.entered.wait(GATE_S), "the first key block never reached error correction"
    acq = st.acquisition_id()
    task = core._acquisition_task
    events.wait(lambda: task._distill_queue is not None and task._distill_queue.full(), timeout=GATE_S)
    core.stop_acquisition()  # the queue is full and the pipeline is held in error correction
    events.wait(lambda: ("distillation", False) in events.kinds("busy"), timeout=2 * GATE_S)
    assert gate.released_in_time, "the instruments went safe only after the key block"
    assert events.kinds("error") == []
    (ids_i, spent_i), (ids_j, spent_j) = _stores(core, acq).values()
    assert ids_i == ids_j and spent_i == spent_j
    keys = [b for b in ids_i if not b.startswith(PRESHARED_PREFIX)]
    assert keys, "the block held in error correction was not distilled to its end"
