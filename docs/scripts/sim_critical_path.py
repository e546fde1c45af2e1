"""A load-independent estimate of the in-process simulator's wall time on T free cores, default station.

Usage: ``python docs/scripts/sim_critical_path.py [--threads T] [--path auto|on-demand|patterns] [--seconds S]``

The simulator's parallel work runs as tasks of ``labqfl.sim_backends._parallel.run``. This script replaces that
call by one that runs every task on the caller, timing each with ``time.thread_time`` (CPU time of the thread, so
other processes on a shared machine barely change it), and list-schedules the tasks of each call on T threads in
task order (as the pool's shared counter hands them out). The estimate of the wall time per simulated second on T
free cores is the caller's CPU outside the calls (the serial part) plus the sum of the calls' makespans; printed
with the CPU of each kind of task. What it leaves out: the pool's hand-over, cores that do not run two vector loops
side by side at full speed, and other processes — the measured figure (``labqfl bench simulator``) can only be
lower. Used for docs/simulator.md, "Performance".
"""

from __future__ import annotations

import argparse
import heapq
import time
from collections import defaultdict
from collections.abc import Callable

from labqfl.sim_backends import _parallel
from labqfl.sim_backends.testbed import SagnacTestbed

from labqfl.config import load_station_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", choices=["auto", "on-demand", "patterns"], default="auto")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def run(n: int, fn: Callable[[int, int], None], threads: int) -> None:
        times = []
        for t in range(n):
            c = time.thread_time()
            fn(t, 0)
            times.append(time.thread_time() - c)
        heap = [0.0] * max(1, min(threads, n))
        for x in times:
            heapq.heapreplace(heap, heap[0] + x)
        st = stats[fn.__name__]
        st[0] += sum(times)
        st[1] += max(heap)
        st[2] += 1

    _parallel.run = run  # type: ignore[assignment]
    tb = SagnacTestbed(load_station_config(), threads=args.threads)
    tb.modulation_on_demand = {"auto": None, "on-demand": True, "patterns": False}[args.path]
    for _ in tb.stream(0.002):  # JIT load outside the timing
        pass
    stats.clear()
    dur = args.seconds
    c0 = time.thread_time()
    for _ in tb.stream(dur):
        pass
    total = time.thread_time() - c0
    in_tasks = sum(v[0] for v in stats.values())
    span = sum(v[1] for v in stats.values())
    est = (total - in_tasks + span) / dur
    print(f"{args.threads} thread(s), path {args.path}: CPU s per simulated s {total / dur:.3f} (in tasks "
          f"{in_tasks / dur:.3f}, serial {(total - in_tasks) / dur:.3f}); estimated wall s per simulated s on "
          f"{args.threads} free cores {est:.3f} = {1 / est:.2f} simulated s per wall s")
    for k, v in sorted(stats.items(), key=lambda kv: -kv[1][0]):
        print(f"  {k:16s} CPU {v[0] / dur:.3f}  makespan {v[1] / dur:.3f}  ({int(v[2])} calls)")


if __name__ == "__main__":
    main()
