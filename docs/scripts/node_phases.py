"""CPU seconds of every node process for its start-up and for one acquisition alone (Linux, /proc).

Usage: ``python docs/scripts/node_phases.py [--duration S]``

Starts optics, detector and every client of the embedded station on loopback
(:class:`labqfl.nodes.launch.LocalNetwork`) with the block-size rule's settings for ``S``
simulated seconds (default 10: one block per pair, as ``labqfl run`` and ``labqfl node up``),
reads each node's user + system CPU from ``/proc/<pid>/stat`` one second after start-up and again
when the acquisition and its distillation have ended, and prints both, their sum, and the
acquisition's wall time. ``docs/scripts/node_cpu.py`` counts whole process lifetimes instead
(start-up and shutdown included). Used for docs/nodes.md ("The bright slots first").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from labqfl.app.distill import DistillOptions, distill_settings
from labqfl.config import load_station_config
from labqfl.nodes.launch import LocalNetwork

TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / TCK


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    cfg = load_station_config(None)
    settings = distill_settings(cfg, DistillOptions(), args.duration)[0]
    with tempfile.TemporaryDirectory(prefix="labqfl-phases-") as tmp:
        net = LocalNetwork(Path(tmp), settings=settings)
        net.start()
        try:
            pids = {n: p.proc.pid for n, p in net.nodes.items()}
            time.sleep(1.0)
            start = {n: cpu_s(p) for n, p in pids.items()}
            t0 = time.perf_counter()
            res = net.acquire(args.duration)
            wall = time.perf_counter() - t0
            end = {n: cpu_s(p) for n, p in pids.items()}
        finally:
            net.stop()
    acq = {n: end[n] - start[n] for n in pids}
    print("start-up CPU s: " + ", ".join(f"{n} {v:.2f}" for n, v in start.items()))
    print("acquisition + distillation CPU s: " + ", ".join(f"{n} {v:.2f}" for n, v in acq.items())
          + f"; all nodes {sum(acq.values()):.1f}")
    print(f"{args.duration:g} simulated s: acquisition {res['acquisition_wall_s']:.2f} s wall "
          f"({args.duration / res['acquisition_wall_s']:.2f}× real time), with the distillation {wall:.2f} s")


if __name__ == "__main__":
    main()
