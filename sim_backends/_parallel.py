"""A tiny work-sharing pool for the simulator's GIL-free Numba kernels.

``run(n_tasks, fn, threads)`` calls ``fn(task, slot)`` once for every task 0 … n_tasks−1, on the
calling thread (slot 0) and up to ``threads − 1`` helper threads (slots 1, 2, …). Tasks are taken
from a shared counter, so a helper that the OS schedules late simply finds less (or no) work: on a
busy machine the caller never waits for a helper that has not started, only for a task a helper is
already running. Unlike a fork-join parallel region (Numba ``prange``, OpenMP), nothing spins and
no barrier waits for an idle core. A slot is used by one thread at a time within a call, so ``fn``
may keep per-slot scratch state (caches). Results must not depend on which slot ran a task: the
simulator's tasks are counter-based (see :mod:`labqfl.sim_backends._kernels`).

``run_flows(flows, threads)`` runs several independent *flows* at once on the same threads: a flow is a
generator that yields phases ``(n_tasks, fn)`` (a phase = what one ``run`` call would do) and returns its
result. A phase's tasks are handed out like ``run``'s; the thread that finishes a phase's last task resumes its
flow (the flow's serial code between phases runs there) up to its next phase. A thread takes work from the
first flow (in a given priority) that has some, so two windows of the simulator in flight fill each other's gaps
instead of every phase ending in a barrier at which a thread waits idle and then has to be woken (on the
session's 2-vCPU VM each such hand-over cost ≈ 0.2 ms: 23 % of the wall time of one simulated second, five
barriers per window; docs/simulator.md, "Parallel Monte-Carlo"). ``drive(flow, threads)`` runs one flow's
phases one after another through ``run``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")
#: one phase of a flow: (number of tasks, fn(task, slot)), as :func:`run` takes them
Phase = tuple[int, Callable[[int, int], None]]
#: a generator of phases that returns its result (:func:`run_flows`, :func:`drive`)
Flow = Generator[Phase, None, R]

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
        self._queues: list[queue.SimpleQueue[_Job | _Flows]] = []

    def _helper(self, q: queue.SimpleQueue[_Job | _Flows], slot: int) -> None:
        while True:
            q.get().work(slot)

    def _ensure(self, n_helpers: int) -> None:
        with self._lock:
            while len(self._queues) < n_helpers:
                q: queue.SimpleQueue[_Job | _Flows] = queue.SimpleQueue()
                slot = len(self._queues) + 1
                threading.Thread(target=self._helper, args=(q, slot), daemon=True,
                                 name=f"labqfl-sim-{slot}").start()
                self._queues.append(q)

    def share(self, job: _Job | _Flows, helpers: int) -> None:
        """Hand ``job`` to the first ``helpers`` helper threads (started if needed)."""
        self._ensure(helpers)
        for q in self._queues[:helpers]:
            q.put(job)

    def run(self, n_tasks: int, fn: Callable[[int, int], None], threads: int) -> None:
        helpers = min(threads, n_tasks) - 1
        if helpers <= 0:
            for task in range(n_tasks):
                fn(task, 0)
            return
        job = _Job(n_tasks, fn)
        self.share(job, helpers)
        job.work(0)
        job.wait()


class _Flows:
    """The shared state of one :func:`run_flows` call (see the module doc)."""

    def __init__(self, flows: list[Flow[Any]], priority: list[int]) -> None:
        self.flows = flows
        self.priority = priority
        self.results: list[Any] = [None] * len(flows)
        # per flow: [n_tasks, fn, next task, tasks done] of its current phase; None while it is being resumed
        self.phase: list[list[Any] | None] = [None] * len(flows)
        self.unstarted = list(range(len(flows)))  # flows not yet resumed for their first phase
        self.live = len(flows)  # flows not finished
        self.busy = 0  # threads running a task or resuming a flow
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def _fail(self, exc: BaseException) -> None:
        """A thread's resume or task raised: keep the first error for the caller; the thread stops."""
        with self._lock:
            self.error = self.error or exc
            self.busy -= 1
            self._changed.notify_all()

    def _resume(self, i: int) -> None:
        """Flow i's serial code up to its next phase with tasks (or its end); called with ``busy`` counted."""
        try:
            while True:
                n, fn = self.flows[i].send(None)
                if n > 0:
                    break
        except StopIteration as stop:
            with self._lock:
                self.results[i] = stop.value
                self.live -= 1
                self.busy -= 1
                self._changed.notify_all()
            return
        except BaseException as exc:  # handed to the caller
            self._fail(exc)
            return
        with self._lock:
            self.phase[i] = [n, fn, 0, 0]
            self.busy -= 1
            self._changed.notify_all()

    def _take(self) -> tuple[str, int, int] | None:
        """Under the lock: the next thing to do, ("resume", flow, 0) or ("task", flow, task); None when done."""
        while True:
            if self.error is not None or self.live == 0:
                return None
            if self.unstarted:
                self.busy += 1
                return "resume", self.unstarted.pop(0), 0
            for i in self.priority:
                ph = self.phase[i]
                if ph is not None and ph[2] < ph[0]:
                    ph[2] += 1
                    self.busy += 1
                    return "task", i, ph[2] - 1
            self._changed.wait()

    def work(self, slot: int) -> None:
        while True:
            with self._lock:
                job = self._take()
            if job is None:
                return
            what, i, task = job
            if what == "resume":
                self._resume(i)
                continue
            ph = self.phase[i]
            assert ph is not None
            try:
                ph[1](task, slot)
            except BaseException as exc:  # handed to the caller
                self._fail(exc)
                return
            with self._lock:
                ph[3] += 1
                last = ph[3] == ph[0]
                if last:
                    self.phase[i] = None  # resumed by this thread, busy still counted
                else:
                    self.busy -= 1
            if last:
                self._resume(i)

    def wait(self) -> list[Any]:
        """Until every flow has finished (or one failed and nothing runs any more: re-raised)."""
        with self._changed:
            while (self.live > 0 and self.error is None) or self.busy > 0:
                self._changed.wait()
        if self.error is not None:
            for f in self.flows:
                f.close()
            raise self.error
        return self.results


def drive(flow: Flow[R], threads: int) -> R:
    """Run ``flow``'s phases one after another, each through :func:`run` on up to ``threads`` threads."""
    try:
        n, fn = next(flow)
        while True:
            run(n, fn, threads)
            n, fn = flow.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def run_flows(flows: list[Flow[Any]], threads: int, priority: list[int] | None = None) -> list[Any]:
    """Run independent ``flows`` at once on up to ``threads`` threads (see the module doc); their results, in
    order. They are begun in list order; a thread takes its next task from the first flow in ``priority`` (flow
    indices, default list order) that has one. Flows must not depend on one another's progress: with one thread
    (or while another caller holds the helpers) they run one after the other, in list order, on the calling
    thread."""
    order = list(range(len(flows))) if priority is None else list(priority)
    if sorted(order) != list(range(len(flows))):
        raise ValueError(f"priority must order the flows 0 … {len(flows) - 1}, got {priority!r}")
    if threads > 1 and _CALLER.acquire(blocking=False):
        try:
            state = _Flows(list(flows), order)
            _POOL.share(state, threads - 1)
            state.work(0)
            return state.wait()
        finally:
            _CALLER.release()
    return [drive(f, 1) for f in flows]


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
