"""The simulator's work-sharing pool: every task runs exactly once, errors reach the caller."""

from __future__ import annotations

import threading

import pytest
from labqfl.sim_backends import _parallel


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_every_task_runs_once_on_a_valid_slot(threads):
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def task(i: int, slot: int) -> None:
        with lock:
            seen.append((i, slot))

    _parallel.run(37, task, threads)
    assert sorted(i for i, _ in seen) == list(range(37))
    assert all(0 <= slot < threads for _, slot in seen)


def test_a_slot_is_never_used_by_two_threads_at_once():
    busy: set[int] = set()
    lock = threading.Lock()
    clash = []

    def task(i: int, slot: int) -> None:
        with lock:
            if slot in busy:
                clash.append(slot)
            busy.add(slot)
        sum(range(2000))
        with lock:
            busy.discard(slot)

    for _ in range(20):
        _parallel.run(16, task, 4)
    assert not clash


def test_an_error_in_a_task_reaches_the_caller_and_the_pool_still_works():
    def bad(i: int, slot: int) -> None:
        if i == 5:
            raise RuntimeError("task 5 failed")

    with pytest.raises(RuntimeError, match="task 5 failed"):
        _parallel.run(12, bad, 3)
    done: list[int] = []
    _parallel.run(6, lambda i, slot: done.append(i), 3)
    assert sorted(done) == list(range(6))


def test_a_forked_child_gets_a_working_pool():
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    _parallel.run(4, lambda i, slot: None, 2)  # helpers exist in the parent
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_runs_tasks, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and sorted(q.get(timeout=5)) == list(range(10))


def _child_runs_tasks(q) -> None:  # type: ignore[no-untyped-def]
    done: list[int] = []
    lock = threading.Lock()

    def task(i: int, slot: int) -> None:
        with lock:
            done.append(i)

    _parallel.run(10, task, 2)
    q.put(done)
