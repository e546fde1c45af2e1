"""A load-independent estimate of the in-process simulator's wall time on T free cores, default station.

Usage: ``python docs/scripts/sim_critical_path.py [--threads T] [--path auto|on-demand|patterns] [--seconds S]
[--wake-us L ...]``

The simulator's parallel work runs through ``labqfl.sim_backends._parallel``: ``run`` calls (one phase of tasks,
a barrier at its end) and ``run_flows`` calls (two windows in flight, each a generator of phases, whose tasks the
threads share). This script runs everything on the caller instead, timing with ``time.thread_time`` (CPU time of the
thread, so other processes on a shared machine barely change it) every task, the serial code of every flow between
its phases, and the caller's CPU outside both; then it replays that record on T simulated threads with the pool's
rules: a ``run`` call hands its tasks out in order to the caller at once and to the helpers ``L`` µs later (a
sleeping thread's wake-up), and the caller, if it ran out of tasks first, wakes ``L`` µs after the last one ends; in
``run_flows`` a thread takes the next task of the first flow in the call's priority that has one, the thread that ends a phase's last
task runs the flow's serial code up to its next phase, and a thread that finds nothing to do sleeps until work
appears and wakes ``L`` µs later. Printed for each ``L`` given (default 0 and 100): the estimated wall s per
simulated s on T free cores, with the CPU of each kind of task. ``L`` = 0 is the code's own bound. What it leaves
out: the GIL, cores that do not run two vector loops side by side at full speed, and other processes — the
measured figure (``labqfl bench simulator``) can only be lower. Used for docs/simulator.md, "Performance".
"""

from __future__ import annotations

import argparse
import heapq
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from labqfl.sim_backends import _parallel
from labqfl.sim_backends.testbed import SagnacTestbed

from labqfl.config import load_station_config

# the record: ("serial", cpu) | ("run", [task cpu]) | ("flows", [[serial, [task cpu], serial, ..., serial]])
Record = list[tuple[str, Any]]


class Recorder:
    def __init__(self) -> None:
        self.items: Record = []
        self.kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # name: CPU, calls
        self.mark = time.thread_time()
        self.inside = False  # in a flow's serial code: a nested run is part of it

    def _serial(self) -> None:
        now = time.thread_time()
        self.items.append(("serial", now - self.mark))
        self.mark = now

    def tasks(self, n: int, fn: Callable[[int, int], None]) -> list[float]:
        times = []
        for t in range(n):
            c = time.thread_time()
            fn(t, 0)
            times.append(time.thread_time() - c)
        k = self.kinds[fn.__name__]
        k[0] += sum(times)
        k[1] += 1
        return times

    def run(self, n: int, fn: Callable[[int, int], None], threads: int) -> None:
        if self.inside:
            self.tasks(n, fn)
            return
        self._serial()
        self.items.append(("run", self.tasks(n, fn)))
        self.mark = time.thread_time()

    def run_flows(self, flows: list[Any], threads: int, priority: list[int] | None = None) -> list[Any]:
        self._serial()
        recs, results = [], []
        for f in flows:
            rec: list[Any] = []
            c = time.thread_time()
            try:
                while True:
                    self.inside = True
                    try:
                        n, fn = f.send(None)
                    finally:
                        self.inside = False
                    rec.append(time.thread_time() - c)
                    rec.append(self.tasks(n, fn))
                    c = time.thread_time()
            except StopIteration as stop:
                rec.append(time.thread_time() - c)
                results.append(stop.value)
            recs.append(rec)
        self.items.append(("flows", (recs, list(range(len(flows))) if priority is None else priority)))
        self.mark = time.thread_time()
        return results


def run_span(tasks: list[float], threads: int, wake: float) -> float:
    """Wall time of one ``run`` call: the caller takes tasks from time 0, helpers from ``wake``."""
    free = [(0.0, 0)] + [(wake, h) for h in range(1, threads)]
    heapq.heapify(free)
    ends = [0.0] * threads
    for x in tasks:
        t, h = heapq.heappop(free)
        ends[h] = t + x
        heapq.heappush(free, (t + x, h))
    last = max(ends)
    return last if ends[0] >= last else last + wake  # the caller, idle, is woken at the end


def flows_span(recs: list[list[Any]], priority: list[int], threads: int, wake: float) -> float:
    """Wall time of one ``run_flows`` call (see the module doc)."""
    n = len(recs)
    pos = [0] * n  # index of the flow's next serial entry
    avail: list[list[Any]] = [[] for _ in range(n)]  # per flow: task times of its current phase not yet taken
    left = [0] * n  # tasks of the current phase not yet finished
    unstarted = list(range(n))
    events: list[tuple[float, int, str, int]] = []  # (time, thread, what, flow): thread becomes free
    for h in range(threads):
        heapq.heappush(events, (0.0 if h == 0 else wake, h, "free", -1))
    idle: list[int] = []
    done_at = 0.0
    finished = 0
    last = 0  # the thread that ended the last flow

    def resume(i: int, t: float) -> float:
        """Flow i's serial code from t; its next phase's tasks available at the returned time."""
        rec = recs[i]
        t += rec[pos[i]]
        pos[i] += 1
        if pos[i] < len(rec):
            avail[i] = list(rec[pos[i]])
            left[i] = len(avail[i])
            pos[i] += 1
        return t

    while events:
        t, h, what, i = heapq.heappop(events)
        if what == "done":  # thread h finished a task of flow i
            left[i] -= 1
            if left[i] == 0:
                t = resume(i, t)
                if pos[i] >= len(recs[i]):
                    finished += 1
                    if t >= done_at:
                        done_at, last = t, h
                for w in idle:  # work appeared: sleeping threads wake
                    heapq.heappush(events, (t + wake, w, "free", -1))
                idle.clear()
        if unstarted:
            i = unstarted.pop(0)
            t = resume(i, t)
            if pos[i] >= len(recs[i]):
                finished += 1
                if t >= done_at:
                    done_at, last = t, h
            for w in idle:
                heapq.heappush(events, (t + wake, w, "free", -1))
            idle.clear()
            heapq.heappush(events, (t, h, "free", -1))
            continue
        for i in priority:
            if avail[i]:
                x = avail[i].pop(0)
                heapq.heappush(events, (t + x, h, "done", i))
                break
        else:
            if finished < n:
                idle.append(h)
    return done_at + (0.0 if last == 0 else wake)  # the caller, idle, is woken at the end


def estimate(items: Record, threads: int, wake: float) -> tuple[float, float]:
    """(wall, serial CPU outside run/run_flows) of the record on ``threads`` threads."""
    wall = serial = 0.0
    for kind, x in items:
        if kind == "serial":
            wall += x
            serial += x
        elif kind == "run":
            wall += run_span(x, threads, wake) if threads > 1 else sum(x)
        else:
            wall += flows_span(*x, threads, wake) if threads > 1 else sum(
                sum(e) if isinstance(e, list) else e for rec in x[0] for e in rec)
    return wall, serial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", choices=["auto", "on-demand", "patterns"], default="auto")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--wake-us", type=float, nargs="+", default=[0.0, 100.0])
    args = ap.parse_args()
    rec = Recorder()
    _parallel.run = rec.run  # type: ignore[assignment]
    _parallel.run_flows = rec.run_flows  # type: ignore[assignment]
    tb = SagnacTestbed(load_station_config(), threads=args.threads)
    tb.modulation_on_demand = {"auto": None, "on-demand": True, "patterns": False}[args.path]
    for _ in tb.stream(0.002):  # JIT load outside the timing
        pass
    dur = args.seconds
    c0 = time.thread_time()
    rec.items.clear()
    rec.kinds.clear()
    rec.mark = c0
    for _ in tb.stream(dur):
        pass
    total = time.thread_time() - c0
    rec._serial()
    in_tasks = sum(v[0] for v in rec.kinds.values())
    print(f"{args.threads} thread(s), path {args.path}: CPU s per simulated s {total / dur:.3f} (in tasks "
          f"{in_tasks / dur:.3f}, outside {(total - in_tasks) / dur:.3f})")
    for wake_us in args.wake_us:
        wall, serial = estimate(rec.items, args.threads, wake_us * 1e-6)
        print(f"  wake-up {wake_us:g} µs: estimated wall s per simulated s on {args.threads} free cores "
              f"{wall / dur:.4f} = {dur / wall:.2f} simulated s per wall s (caller's serial part {serial / dur:.4f})")
    for k, v in sorted(rec.kinds.items(), key=lambda kv: -kv[1][0]):
        print(f"  {k:16s} CPU {v[0] / dur:.4f}  ({int(v[1])} phases)")


if __name__ == "__main__":
    main()
