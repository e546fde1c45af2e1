"""Cascade of an earlier commit against the working tree's, alternated in one process.

Usage: ``python docs/scripts/cascade_ab.py REV [--threads N] [--pairs R] [--frames K]``

Writes ``labqfl/qkd/cascade.py`` as it was at git revision ``REV`` to a temporary folder, imports
it next to the working tree's module, checks that both give the same corrected bits, leak and
round trips on ``K`` interleaved 10^6-bit frames at QBER 2 % (seed 7, the ``labqfl bench cascade``
stream), then times them alternately ``R`` times each and prints best and median wall and CPU
times and the median of the paired wall ratios (new / old). Alternating in one process cancels
most of the drift of a shared VM, whose speed wanders by tens of per cent from minute to minute;
the paired ratio is the figure to quote. Used for the session-16 table of docs/reconciliation.md.
The first call of each module compiles its kernels (≈ 25 s each, more with threads).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from labqfl.bench.entries.cascade import _frame
from labqfl.qkd import cascade as new


def _old_module(rev: str, folder: Path):  # type: ignore[no-untyped-def]
    src = subprocess.run(["git", "show", f"{rev}:labqfl/qkd/cascade.py"], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2]).stdout
    path = folder / "cascade_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("cascade_old", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["cascade_old"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--frames", type=int, default=8)
    a = ap.parse_args()
    q, n = 0.02, 1_000_000
    x, y = _frame(a.frames * n, q, 3)
    with tempfile.TemporaryDirectory() as tmp:
        old = _old_module(a.rev, Path(tmp))

        def run(mod):  # type: ignore[no-untyped-def]
            return mod.reconcile_cascade(x, y, q, seed=7, frame_bits=n, threads=a.threads)

        r_old, r_new = run(old), run(new)
        if not (np.array_equal(r_old.corrected, r_new.corrected) and r_old.leaked_bits == r_new.leaked_bits
                and r_old.round_trips == r_new.round_trips):
            sys.exit("the two modules give different results")
        wall = {"old": [], "new": []}
        cpu = {"old": [], "new": []}
        for _ in range(a.pairs):
            for name, mod in (("old", old), ("new", new)):
                c0, t0 = time.process_time(), time.perf_counter()
                run(mod)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    bits = a.frames * n
    for name in ("old", "new"):
        w, c = np.array(wall[name]), np.array(cpu[name])
        print(f"{name} ({a.rev if name == 'old' else 'working tree'}): wall best {w.min() * 1e3:.1f} ms "
              f"({bits / w.min() / 1e6:.1f} Mbit/s), median {np.median(w) * 1e3:.1f} ms; "
              f"CPU best {c.min() * 1e3:.1f}, median {np.median(c) * 1e3:.1f} ms")
    ratio = np.median(np.array(wall["new"]) / np.array(wall["old"]))
    print(f"threads {a.threads}, {a.pairs} pairs: median paired wall ratio new/old {ratio:.3f}")


if __name__ == "__main__":
    main()
