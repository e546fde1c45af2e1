"""Review s38 lab4 M2: in the GUI, the end check's refusal says "its sifted bits after the last such block are
dropped", but the acquisition segment then handed every queued block and the tail to the live distillation
(``_finish_distiller`` with ``discard`` False, as on Stop), which finished them and the last partial blocks: the
review's stores held 2 key-block rows of the run at the refusal and 4 rows 20 s later.

Now a refused segment drops its queued blocks and tail (the feed ends discarded) and aborts the distillation's
key block in progress, as ``labqfl distill --live`` does. Run on a stand-in acquisition whose stream ends
normally and whose ``close(check=True)`` refuses, with a stand-in distiller start that only returns the feed."""

from __future__ import annotations

import queue
import threading
from typing import Any

from labqfl.gui.workers.acquisition import AcquisitionTask, QueueFeed

from labqfl.errors import InstrumentError

REFUSAL = ("the acquisition: at its end the instruments no longer read as armed: D0: latched; Refused: any key "
           "block already distilled from this acquisition stays stored; its sifted bits after the last such "
           "block are dropped")


class _Stream:
    def __init__(self, blocks: list[str], refuse: bool) -> None:
        self.blocks, self.refuse, self.checked = blocks, refuse, None  # type: ignore[var-annotated]

    def __iter__(self) -> Any:
        return iter(self.blocks)

    def close(self, check: bool) -> None:
        self.checked = check
        if check and self.refuse:
            raise InstrumentError(REFUSAL)


class _Acq:
    segment_t_s = 1.5
    station = None

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def start(self) -> _Stream:
        return self.stream


class _Core:
    _closed = False

    def post(self, kind: str, data: Any) -> None:
        pass


def _segment(refuse: bool) -> tuple[QueueFeed, threading.Event, Exception | None]:
    task = AcquisitionTask(_Core())  # type: ignore[arg-type]
    feed, abort = QueueFeed(queue.Queue(maxsize=16)), threading.Event()

    def start(req: Any, station: Any) -> QueueFeed:
        task._distill_abort, task._distill_queue = abort, feed.q
        return feed

    task._start_distiller = start  # type: ignore[method-assign]
    task._distill_request = {"engine": "numba", "block_bits": 2000}
    err: Exception | None = None
    try:
        task._acquire_segment(_Acq(_Stream(["b0", "b1", "b2"], refuse)), 0.0)
    except InstrumentError as exc:
        err = exc
    return feed, abort, err


def test_a_refused_segment_hands_no_more_blocks_to_the_distillation_and_aborts_its_block() -> None:
    feed, abort, err = _segment(refuse=True)
    assert err is not None and "Refused" in str(err)
    assert list(feed) == []  # before: the three queued blocks, then the partial blocks finished
    assert feed.discard and feed.refused
    assert abort.is_set()  # the key block in progress is abandoned at both ends


def test_a_segment_the_end_check_accepts_still_hands_every_block_over() -> None:
    feed, abort, err = _segment(refuse=False)
    assert err is None
    assert list(feed) == ["b0", "b1", "b2"]
    assert not feed.discard and not abort.is_set()
