"""CPU seconds per simulated second of each stage of the in-process simulator, default station.

Usage: ``python docs/scripts/sim_stages.py [--threads N] [--on-demand] [--seconds S]``

Wraps the simulator's stage methods with ``time.process_time`` and streams ``S`` simulated seconds
(default 2) of the embedded station twice after a short warm-up, printing per run the CPU seconds
per simulated second of every stage. Without ``--on-demand``: the drive-pattern path
(``_drive_patterns``, ``_signal_start`` and its finish including the patterns, ``_detector_tags``,
``_merge``, ``_window_start`` and its finish). With it: the optics node's path with the clients' logs in the same process (the
clients' choices, the two passes of the signal kernel, grouping and scattering of the candidates'
codes). Used for the stage tables of
docs/simulator.md and docs/nodes.md. Process time includes every thread of the process. The stages are flows of
``labqfl.sim_backends._parallel`` (generators of parallel phases): a stage's time runs from its first step to its
end, phases included, which is its own CPU only with one thread (the default), where flows run one after another.
"""

from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Callable
from typing import Any

import labqfl.sim_backends.qrng as qrng
from labqfl.sim_backends import _kernels as kernels
from labqfl.sim_backends import testbed

from labqfl.config import load_station_config


def _timed_flow(add: Callable[[float], None], flow: Any) -> Any:
    """``flow`` (a generator of phases), timed from its first step to its end."""
    t = time.process_time()
    try:
        return (yield from flow)
    finally:
        add(t)


def _timed(acc: dict[str, float], obj: Any, name: str, key: Callable[..., str]) -> None:
    f = getattr(obj, name)

    def g(*a: Any, **k: Any) -> Any:
        kk = key(*a, **k)

        def add(t: float) -> None:
            acc[kk] = acc.get(kk, 0.0) + time.process_time() - t

        t = time.process_time()
        try:
            r = f(*a, **k)
        finally:
            add(t)
        return _timed_flow(add, r) if inspect.isgenerator(r) else r

    setattr(obj, name, g)


def _timed_begun(acc: dict[str, float], obj: Any, name: str, key: str) -> None:
    """Time a method that begins a stage and returns the call that finishes it, both under ``key`` (each a
    flow or a plain call)."""
    f = getattr(obj, name)

    def add(t: float) -> None:
        acc[key] = acc.get(key, 0.0) + time.process_time() - t

    def timed_call(fn: Callable[[], Any]) -> Any:
        t = time.process_time()
        try:
            r = fn()
        finally:
            add(t)
        return _timed_flow(add, r) if inspect.isgenerator(r) else r

    def g(*a: Any, **k: Any) -> Any:
        begun = f(*a, **k)
        if not inspect.isgenerator(begun):
            return lambda: timed_call(begun)

        def flow() -> Any:
            finish = yield from _timed_flow(add, begun)
            return lambda: timed_call(finish)

        return flow()

    setattr(obj, name, g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--on-demand", action="store_true", help="the optics node's path (ask the clients)")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    acc: dict[str, float] = {}
    T = testbed.SagnacTestbed
    stages: list[tuple[Any, str, Callable[..., str]]] = [
        (T, "_drive_patterns", lambda *a, **k: "drive patterns"),
        (T, "_detector_tags", lambda *a, **k: "detectors"),
        (testbed, "_merge", lambda *a, **k: "merge"),
    ]
    begun = [(T, "_signal_start", "signal clicks (incl. patterns or the clients' answers)"),
             (T, "_window_start", "whole window")]
    if args.on_demand:
        stages += [
            (T, "_signal_pass", lambda *a, **k: f"signal kernel pass '{a[-1].rstrip('01')}'"),
            (kernels, "group_candidates", lambda *a, **k: "grouping"),
            (kernels, "scatter_codes", lambda *a, **k: "scattering"),
            (qrng.CsprngChoiceLog, "choices", lambda *a, **k: "clients: choices"),
        ]
    if args.on_demand:
        begun.append((T, "_ask_flow", "candidates' codes (incl. the clients' choices)"))
    for obj, name, key in stages:
        _timed(acc, obj, name, key)
    for obj, name, label in begun:
        _timed_begun(acc, obj, name, label)
    tb = T(load_station_config(None), threads=args.threads)
    tb.modulation_on_demand = args.on_demand
    list(tb.stream(0.2))  # warm-up: JIT cache, buffers
    for _ in range(2):
        acc.clear()
        t0 = time.process_time()
        tags = sum(b.timestamps.size for b in tb.stream(args.seconds))
        total = (time.process_time() - t0) / args.seconds
        print(f"{tags} tags; CPU s per simulated s: whole process {total:.3f}")
        for k, v in sorted(acc.items()):
            print(f"  {k:55s} {v / args.seconds:.4f}")


if __name__ == "__main__":
    main()
