"""Shorter waits in a deployment's processes (labqfl/fl/flower/latency.py, labqfl/nodes/warmapp.py):
Flower's object pulls retry after 20 ms instead of 1 s; the ClientApp zygote's Numba kernels are
loaded before it forks (in a fresh process, without threads); the SuperNode's sleeps are mapped to
the hot/idle pull intervals and the reply check."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from flwr.supercore.inflatable import inflatable_utils as iu

from labqfl.fl.flower.latency import BACKOFF_CAP_S, INITIAL_BACKOFF_S, quick_object_pulls


@pytest.fixture
def restore_flower_defaults() -> Iterator[None]:
    saved = {fn: dict(fn.__kwdefaults__) for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree)}
    try:
        yield
    finally:
        for fn, kw in saved.items():
            fn.__kwdefaults__.clear()
            fn.__kwdefaults__.update(kw)


def _pull_once_unavailable() -> float:
    """Seconds :func:`pull_objects` takes for one object that is missing at the first try."""
    tries: list[int] = []

    def pull(object_id: str) -> bytes:
        tries.append(1)
        if len(tries) == 1:
            raise iu.ObjectUnavailableError(object_id)
        return b"content"

    t0 = time.perf_counter()
    assert iu.pull_objects(["a" * 64], pull) == {"a" * 64: b"content"}
    assert len(tries) == 2
    return time.perf_counter() - t0


def test_quick_object_pulls_retries_an_object_that_was_not_there_yet_after_milliseconds(
        restore_flower_defaults: None) -> None:
    assert _pull_once_unavailable() >= 0.75  # Flower's own backoff: 1 s ± 20 %
    assert quick_object_pulls() is True
    for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
        assert fn.__kwdefaults__["initial_backoff"] == INITIAL_BACKOFF_S
        assert fn.__kwdefaults__["backoff_cap"] == BACKOFF_CAP_S
        assert fn.__kwdefaults__["max_tries_per_object"] == 500  # Flower's retry limits stay
    assert _pull_once_unavailable() < 0.5


def test_warm_kernels_loads_the_numba_kernels_without_starting_threads() -> None:
    code = textwrap.dedent("""
        import threading
        from labqfl.fl.flower.latency import warm_kernels
        from labqfl.fl.models import _statevector as sv
        from labqfl.fl.quantize import _quantize_kernel
        assert not sv._hea_kernel.signatures and not _quantize_kernel.signatures
        warm_kernels()
        assert sv._hea_kernel.signatures, "statevector kernel not loaded"
        assert not sv._hea_kernel_parallel.signatures, "the parallel kernel (a thread pool) was called"
        assert len(_quantize_kernel.signatures) >= 6, _quantize_kernel.signatures  # 3 q x (float64, float32)
        assert threading.active_count() == 1
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_supernode_loop_pulls_often_after_a_message_and_checks_its_reply_often(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.nodes import warmapp

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setattr(warmapp._PollTime, "last_message", float("-inf"))
    pt = warmapp._PollTime()
    pt.sleep(3)  # nothing pulled, no message for long: the idle interval
    pt.sleep(0.5)  # waiting for the ClientApp's reply
    pulled = warmapp._note_messages(lambda *a, **k: 123)  # a pull that brought a message of run 123
    assert pulled() == 123
    pt.sleep(3)  # within HOT_WINDOW_S of that message
    assert slept == [warmapp.PULL_INTERVAL_S, warmapp.REPLY_POLL_S, warmapp.HOT_PULL_S]
    assert warmapp.HOT_PULL_S < warmapp.PULL_INTERVAL_S < 3
    assert pt.monotonic() == pytest.approx(time.monotonic(), abs=1.0)  # everything else: the time module
    assert warmapp._note_messages(lambda: None)() is None
