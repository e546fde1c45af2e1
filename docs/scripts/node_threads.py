"""CPU seconds of every thread of every node over one acquisition (Linux, /proc), optionally with `perf`.

Usage: ``python docs/scripts/node_threads.py [--duration S] [--perf FILE]``

Starts optics, detector and every client of the embedded station on loopback
(:class:`labqfl.nodes.launch.LocalNetwork`, the block-size rule's settings for ``S`` simulated seconds,
default 10, as ``labqfl run``), with a ``sitecustomize`` on the nodes' ``PYTHONPATH`` that gives each
Python thread its name at the OS level (``prctl(PR_SET_NAME)``: "modulator", "pair-C1-C2", gRPC's
"node-C1_3" …). During the acquisition and its distillation it reads every thread's user + system CPU
from ``/proc/<pid>/task/<tid>/stat`` every 50 ms (threads that end keep their last reading) and prints,
per node, the total and the threads above 15 ms, summed by name.

``--perf FILE``: also ``perf record -a`` over the acquisition into FILE, with a perf map per node process
(``/tmp/perf-<pid>.map``, rewritten every 1.5 s from the Numba dispatchers of the ``labqfl`` modules that
process has loaded), so that ``perf report -i FILE --sort comm,sym`` names the Numba kernels. Used for
docs/nodes.md ("A client's answers from the bitmap").
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SITE = '''
import ctypes, os, sys, threading
_libc = ctypes.CDLL(None)
_run = threading.Thread._bootstrap_inner
def _named(self):
    _libc.prctl(15, self.name[:15].encode(), 0, 0, 0)
    return _run(self)
threading.Thread._bootstrap_inner = _named
def _perf_map():
    import time
    from numba.core.registry import CPUDispatcher
    while True:
        time.sleep(1.5)
        starts = {}
        for mname, m in list(sys.modules.items()):
            if mname.startswith("labqfl"):
                for name, f in list(vars(m).items()):
                    if isinstance(f, CPUDispatcher):
                        for cr in list(f.overloads.values()):
                            try:
                                starts[cr.library.get_pointer_to_function(cr.fndesc.llvm_func_name)] = f"{mname}.{name}"
                            except Exception:  # an overload without a native entry point: not in the map
                                pass
        if not starts:
            continue
        a = sorted(starts)  # each entry runs up to the next one (at most 1 MiB): a kernel's size is not known here
        with open(f"/tmp/perf-{os.getpid()}.map", "w") as fh:
            fh.writelines(f"{x:x} {min(y - x, 1 << 20):x} {starts[x]}\\n" for x, y in zip(a, a[1:] + [a[-1] + (1 << 20)]))
if os.environ.get("LABQFL_PERF_MAP"):
    threading.Thread(target=_perf_map, daemon=True, name="perf-map").start()
'''


def read_threads(pids: dict[str, int], into: dict[tuple[str, str], tuple[str, float]]) -> None:
    """Each live thread's (name, CPU seconds so far) of the ``pids`` nodes into ``into``, keyed (node, tid)."""
    tck = os.sysconf("SC_CLK_TCK")
    for node, pid in pids.items():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            f = stat.rsplit(")", 1)[1].split()
            into[(node, tid)] = (stat[stat.index("(") + 1:stat.rindex(")")], (int(f[11]) + int(f[12])) / tck)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--perf", type=Path, default=None, help="perf.data file to record into (perf record -a)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="labqfl-threads-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITE)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        if args.perf:
            os.environ["LABQFL_PERF_MAP"] = "1"
        from labqfl.app.distill import DistillOptions, distill_settings
        from labqfl.config import load_station_config
        from labqfl.nodes.launch import LocalNetwork

        cfg = load_station_config(None)
        net = LocalNetwork(Path(tmp) / "net", settings=distill_settings(cfg, DistillOptions(), args.duration)[0])
        net.start()
        try:
            pids = {n: p.proc.pid for n, p in net.nodes.items()}
            time.sleep(1.0)
            before: dict[tuple[str, str], tuple[str, float]] = {}
            read_threads(pids, before)
            last = dict(before)
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    read_threads(pids, last)

            poll = threading.Thread(target=sample)
            poll.start()
            rec = subprocess.Popen(["perf", "record", "-a", "-F", "1999", "-o", str(args.perf)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if args.perf else None
            res = net.acquire(args.duration)
            if rec is not None:
                rec.send_signal(2)
                rec.wait()
            stop.set()
            poll.join()
            read_threads(pids, last)
        finally:
            net.stop()
    print(f"{args.duration:g} simulated s: acquisition {res['acquisition_wall_s']:.2f} s wall")
    for node in pids:
        per: collections.Counter[str] = collections.Counter()
        for (n, tid), (name, cpu) in last.items():
            if n == node:
                per[name] += cpu - before.get((n, tid), (name, 0.0))[1]
        print(f"{node}: {sum(per.values()):.2f} CPU s — "
              + ", ".join(f"{k} {v:.2f}" for k, v in per.most_common() if v > 0.015))


if __name__ == "__main__":
    main()
