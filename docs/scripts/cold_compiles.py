"""What each process of a local network compiles on a cold Numba cache (Linux).

Usage: ``python docs/scripts/cold_compiles.py [--duration S] [--keep-cache]``

Runs ``labqfl node up --duration S`` (default 2 simulated s) with ``NUMBA_CACHE_DIR`` pointing at an
empty folder and a ``sitecustomize`` on ``PYTHONPATH`` that records Numba's ``numba:compile`` events in
every Python process of the run (the launcher, its warm-up helpers, the optics, detector and client
nodes), then prints per process the wall seconds spent compiling (outermost compilations only) and the
functions that took longest (inclusive of the functions they compiled in turn). After the launcher's
warm-up (``LocalNetwork.warm_jit``) no node process should compile anything: a kernel a node compiles
is compiled during the acquisition, on the pipeline's critical path (docs/nodes.md, "The cold warm-up
rebalanced"). ``--keep-cache`` leaves the cache folder (printed) for a second, warm run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SITECUSTOMIZE = '''
import atexit, json, os, sys, time
from numba.core import event

_rec = event.RecordingListener()
event.register("numba:compile", _rec)


def _dump():
    open_, incl, outer, depth, t0 = {}, {}, 0.0, 0, 0.0
    for ts, ev in _rec.buffer:
        d = ev.data.get("dispatcher") if ev.data else None
        name = f"{d.py_func.__module__}.{d.py_func.__qualname__}" if d is not None else "?"
        if ev.is_start:
            open_.setdefault(name, []).append(ts)
            if depth == 0:
                t0 = ts
            depth += 1
        elif open_.get(name):
            incl[name] = incl.get(name, 0.0) + ts - open_[name].pop()
            depth -= 1
            if depth == 0:
                outer += ts - t0
    out = os.path.join(os.environ["LABQFL_COMPILE_LOG"], f"{os.getpid()}.json")
    with open(out, "w") as f:
        json.dump({"argv": sys.argv, "compile_s": outer, "functions": incl}, f)


atexit.register(_dump)
'''


def _role(argv: list[str]) -> str:
    """A readable name for a process from its command line."""
    if "-m" in argv or (argv and argv[0].endswith("__main__.py")):
        tail = argv[argv.index("--name") + 1] if "--name" in argv else ""
        return f"node {tail}".strip()
    if argv and argv[0] == "-c":
        return "warm-up helper"
    return "launcher (labqfl node up)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--keep-cache", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="labqfl-cold-") as tmp:
        site, logs, work = Path(tmp, "site"), Path(tmp, "logs"), Path(tmp, "work")
        for p in (site, logs):
            p.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        cache = Path(tempfile.mkdtemp(prefix="labqfl-numba-")) if args.keep_cache else Path(tmp, "numba")
        env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "LABQFL_COMPILE_LOG": str(logs),
               "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
        labqfl = Path(sys.executable).with_name("labqfl")
        cmd = [str(labqfl), "node", "up", "--duration", repr(args.duration), "--workdir", str(work), "--json"]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"labqfl node up failed ({run.returncode}):\n{run.stderr[-2000:]}")
        rows = [json.loads(p.read_text()) for p in logs.glob("*.json")]
    rows.sort(key=lambda r: -r["compile_s"])
    for r in rows:
        top = sorted(r["functions"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{_role(r['argv']):28s} {r['compile_s']:6.1f} s compiling"
              + "".join(f"\n    {s:6.1f} s  {name}" for name, s in top))
    nodes = [r for r in rows if _role(r["argv"]).startswith("node") and r["compile_s"] > 0]
    print("node processes that compiled: " + (", ".join(_role(r["argv"]) for r in nodes) or "none"))
    if args.keep_cache:
        print(f"cache kept: {cache}")


if __name__ == "__main__":
    main()
