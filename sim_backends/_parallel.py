"""A tiny work-sharing pool for the simulator's GIL-free Numba kernels.

``run(n_tasks, fn, threads)`` calls ``fn(task, slot)`` once for every task 0 … n_tasks−1, on the
calling thread (slot 0) and up to ``threads − 1`` helper threads (slots 1, 2, …). Tasks are taken
from a shared counter, so a helper that the OS schedules late simply finds less (or no) work: on a
busy machine the caller never waits for a helper that has not started, only for a task a helper is
already running. Unlike a fork-join parallel region (Numba ``prange``, OpenMP), nothing spins and
no barrier waits for an idle core. A slot is used by one thread at a time within a call, so ``fn``
may keep per-slot scratch state (caches). Results must not depend on which slot ran a task: the
simulator's tasks are counter-based (see :mod:`labqfl.sim_backends._kernels`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

MAX_THREADS = 64


def default_threads() -> int:
    """Cores this process may run on (``os.sched_getaffinity``), at most :data:`MAX_THREADS`."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


class _Job:
    def __init__(self, n_tasks: int, fn: Callable[[int, int], None]) -> None:
        self.n_tasks = n_tasks
        self.fn = fn
        self._next = 0
        self._done = 0
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self.error: BaseException | None = None

    def work(self, slot: int) -> None:
        while True:
            with self._lock:
                task = self._next
                if task >= self.n_tasks or self.error is not None:
                    return
                self._next += 1
            try:
                self.fn(task, slot)
            except BaseException as exc:  # handed to the caller by wait()
                with self._lock:
                    if self.error is None:
                        self.error = exc
            with self._lock:
                self._done += 1
                self._finished.notify_all()

    def wait(self) -> None:
        """Until every task taken has finished and no task is left (or one failed: re-raised)."""
        with self._finished:
            while self._done < self._next or (self._next < self.n_tasks and self.error is None):
                self._finished.wait()
        if self.error is not None:
            raise self.error


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: list[queue.SimpleQueue[_Job]] = []

    def _helper(self, q: queue.SimpleQueue[_Job], slot: int) -> None:
        while True:
            q.get().work(slot)

    def _ensure(self, n_helpers: int) -> None:
        with self._lock:
            while len(self._queues) < n_helpers:
                q: queue.SimpleQueue[_Job] = queue.SimpleQueue()
                slot = len(self._queues) + 1
                threading.Thread(target=self._helper, args=(q, slot), daemon=True,
                                 name=f"labqfl-sim-{slot}").start()
                self._queues.append(q)

    def run(self, n_tasks: int, fn: Callable[[int, int], None], threads: int) -> None:
        helpers = min(threads, n_tasks) - 1
        if helpers <= 0:
            for task in range(n_tasks):
                fn(task, 0)
            return
        self._ensure(helpers)
        job = _Job(n_tasks, fn)
        for q in self._queues[:helpers]:
            q.put(job)
        job.work(0)
        job.wait()


_POOL = _Pool()
_CALLER = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's helper threads (and maybe a held lock): start afresh."""
    global _POOL, _CALLER
    _POOL = _Pool()
    _CALLER = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(n_tasks: int, fn: Callable[[int, int], None], threads: int) -> None:
    """Run ``fn(task, slot)`` for task = 0 … n_tasks−1 on up to ``threads`` threads (see module doc).

    The helpers serve one caller at a time: a call made while another thread's call is running runs
    its tasks on its own thread (slot 0)."""
    if threads > 1 and n_tasks > 1 and _CALLER.acquire(blocking=False):
        try:
            _POOL.run(n_tasks, fn, threads)
        finally:
            _CALLER.release()
        return
    for task in range(n_tasks):
        fn(task, 0)
