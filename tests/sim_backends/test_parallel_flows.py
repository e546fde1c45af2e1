"""``_parallel.run_flows``: independent flows (generators of phases) run at once on the pool's threads; and the
simulator's windows, run as two flows in flight, give the tags of one thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed, _parallel
from labqfl.sim_backends.stations import edit_station


def _flow(name: str, phases: list[int], log: list[tuple[str, int, int, int]], lock: threading.Lock,
          busy: set[int], clash: list[int]) -> Generator[tuple[int, Any], None, str]:
    """A flow of ``phases`` (task counts); every task logs (flow, phase, task, slot); returns its name."""
    for k, n in enumerate(phases):
        def task(t: int, slot: int, k: int = k) -> None:
            with lock:
                if slot in busy:
                    clash.append(slot)
                busy.add(slot)
                log.append((name, k, t, slot))
            sum(range(3000))
            with lock:
                busy.discard(slot)

        yield n, task
        with lock:  # the serial code between phases runs once the phase's every task has ended
            done = {t for f, kk, t, _ in log if f == name and kk == k}
        assert done == set(range(n)), (name, k, done)
    return name


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_every_task_of_every_flow_runs_once_on_a_valid_slot_and_the_results_keep_their_order(threads):
    log: list[tuple[str, int, int, int]] = []
    lock = threading.Lock()
    busy: set[int] = set()
    clash: list[int] = []
    plan = {"a": [4, 1, 0, 3, 2], "b": [7, 2], "c": [], "d": [1, 1, 1, 9]}
    for _ in range(5):
        log.clear()
        got = _parallel.run_flows([_flow(n, p, log, lock, busy, clash) for n, p in plan.items()], threads)
        assert got == list(plan)
        for name, phases in plan.items():
            for k, n in enumerate(phases):
                assert sorted(t for f, kk, t, _ in log if f == name and kk == k) == list(range(n))
        assert all(0 <= slot < threads for *_, slot in log)
        assert len(log) == sum(sum(p) for p in plan.values())
    assert not clash  # a slot is never used by two threads at once (per-slot scratch stays safe)


def test_two_threads_run_two_flows_at_once():
    """Flow b's tasks run while flow a is in a phase: both threads work, neither waits for a barrier of the other."""
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def flow(name: str) -> Generator[tuple[int, Any], None, None]:
        def task(t: int, slot: int) -> None:
            time.sleep(0.02)  # releases the GIL, like the simulator's kernels
            with lock:
                seen.append((name, slot))

        yield 4, task

    _parallel.run_flows([flow("a"), flow("b")], 2)
    assert len(seen) == 8 and {slot for _, slot in seen} == {0, 1}


def test_an_error_in_a_task_or_between_phases_reaches_the_caller_and_the_pool_still_works():
    def bad_task() -> Generator[tuple[int, Any], None, None]:
        def task(t: int, slot: int) -> None:
            if t == 3:
                raise RuntimeError("task 3 failed")

        yield 6, task

    def bad_serial() -> Generator[tuple[int, Any], None, None]:
        yield 2, lambda t, slot: None
        raise ValueError("between phases")

    def fine() -> Generator[tuple[int, Any], None, int]:
        yield 3, lambda t, slot: None
        return 7

    with pytest.raises(RuntimeError, match="task 3 failed"):
        _parallel.run_flows([bad_task(), fine()], 2)
    with pytest.raises(ValueError, match="between phases"):
        _parallel.run_flows([fine(), bad_serial()], 2)
    assert _parallel.run_flows([fine(), fine()], 2) == [7, 7]
    done: list[int] = []
    _parallel.run(6, lambda i, slot: done.append(i), 2)
    assert sorted(done) == list(range(6))


def test_drive_runs_the_phases_in_order_and_returns_the_result():
    order: list[int] = []

    def flow() -> Generator[tuple[int, Any], None, str]:
        yield 3, lambda t, slot: order.append(t)
        order.append(-1)
        yield 0, lambda t, slot: order.append(99)
        yield 2, lambda t, slot: order.append(10 + t)
        return "end"

    assert _parallel.drive(flow(), 1) == "end"
    assert order == [0, 1, 2, -1, 10, 11]


def _tags(tb: SagnacTestbed, duration_s: float, block_s: float) -> tuple[np.ndarray, np.ndarray]:
    blocks = list(tb.stream(duration_s, block_s))
    return np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks])


def _counted_flows(calls: list[int]) -> Any:
    inner = _parallel.run_flows

    def counted(flows: list[Any], th: int, **k: Any) -> list[Any]:
        calls.append(len(flows))
        return inner(flows, th, **k)

    return counted


@pytest.mark.parametrize("randomness", ["seeded", "csprng"])
def test_windows_in_flight_as_flows_give_the_tags_of_one_thread(randomness, monkeypatch):
    """The on-demand path in process runs window w's finish and window w + 1's start as two flows on the same
    threads: the tags (several blocks, several windows each, and the carry between them) are those of one
    thread, and (seeded clients) of the drive patterns. CSPRNG clients: the same logs streamed on each testbed."""
    cfg = edit_station(lambda d: d["simulation"].__setitem__("qrng_epoch_base", 0), randomness=randomness)
    logs = None
    if randomness == "csprng":
        armed = SagnacTestbed(cfg)
        list(armed.stream(0.001))
        logs = armed.client_logs()
    calls: list[int] = []
    monkeypatch.setattr(_parallel, "run_flows", _counted_flows(calls))
    ref = None
    for threads in (1, 2, 3):
        tb = SagnacTestbed(cfg, threads=threads)
        tb.modulation_on_demand = True
        calls.clear()
        blocks = list(tb.stream(0.12, 0.03) if logs is None else tb.stream_with(logs, 0.12, 0.03))
        got = np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks])
        assert len(blocks) == 4 and calls and set(calls) == {2}
        if ref is None:
            ref = got
            if logs is None:
                patterns = SagnacTestbed(cfg, threads=2)
                patterns.modulation_on_demand = False
                want = _tags(patterns, 0.12, 0.03)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_flows_begin_in_list_order_and_a_priority_must_name_every_flow_once():
    order: list[str] = []

    def flow(name: str) -> Generator[tuple[int, Any], None, str]:
        order.append(name)
        yield 1, lambda t, slot: None
        return name

    assert _parallel.run_flows([flow("a"), flow("b")], 1, priority=[1, 0]) == ["a", "b"]
    assert order == ["a", "b"]
    assert _parallel.run_flows([flow("c"), flow("d")], 2, priority=[1, 0]) == ["c", "d"]
    for bad in ([0], [0, 0], [1, 2]):
        with pytest.raises(ValueError, match="priority must order the flows"):
            _parallel.run_flows([flow("e"), flow("f")], 2, priority=bad)
