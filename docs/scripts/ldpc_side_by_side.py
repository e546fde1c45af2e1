"""Blind LDPC reconciliation, this tree against an earlier ``labqfl/qkd/ldpc.py``, in one process:
f, frame errors, sweeps per frame and Mbit/s per core (process CPU time, one Numba thread).

    git show dfaac88:labqfl/qkd/ldpc.py > /some/where/ldpc_before.py
    .venv/bin/python docs/scripts/ldpc_side_by_side.py /some/where/ldpc_before.py --preset efficient \\
        --frames 24 --blocks 5 --qbers 0.01,0.02,0.04,0.06,0.08

Per QBER, ``--blocks`` blocks of ``--frames`` whole frames (Alice's bits and exactly round(Q·N)
errors per block from ``labqfl.bench.noisy_frame`` with seed 1000·block + 100 + QBER index; filler
seeded with the block index); the two engines run on the same block, in alternating order from
block to block.  The earlier module imports the kernels of this tree's ``labqfl.qkd.ldpc_qc``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time

import numba
import numpy as np

from labqfl.bench import noisy_frame
from labqfl.qkd import ldpc as new
from labqfl.qkd.messaging import LocalChannel
from labqfl.qkd.reconciliation import binary_entropy


def _load(path: str):
    spec = importlib.util.spec_from_file_location("ldpc_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ldpc_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(mod, q, x, y, preset, seed, kw):
    plan = mod.plan_ldpc(q, preset=preset, **kw)
    bob = mod.LdpcBob(y, q, plan=plan)
    alice = mod.LdpcAlice(x, filler_rng=np.random.default_rng(seed))
    c0 = time.process_time()
    res = bob.run(LocalChannel(alice))
    cpu = time.process_time() - c0
    if not res.frame_errors and not np.array_equal(res.corrected, x):
        raise SystemExit("a block without frame errors was corrected wrongly")
    return res, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", help="path of the earlier labqfl/qkd/ldpc.py")
    ap.add_argument("--preset", default="efficient")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--qbers", default="0.01,0.02,0.04,0.06,0.08")
    ap.add_argument("--plan", default="{}", help="JSON overrides of this tree's plan_ldpc")
    a = ap.parse_args()
    numba.set_num_threads(1)
    old = _load(a.before)
    kw = json.loads(a.plan)
    for i, q in enumerate(float(v) for v in a.qbers.split(",")):
        kpf = new.plan_ldpc(q, preset=a.preset, **kw).key_bits_per_frame
        agg = {"before": [0, 0, 0, 0.0, 0], "now": [0, 0, 0, 0.0, 0]}  # frames, errors, leaked, cpu, sweeps
        for b in range(a.blocks):
            x, y = noisy_frame(a.frames * kpf, q, 1000 * b + 100 + i)
            pair = [("before", old, {}), ("now", new, kw)]
            for name, mod, k in (pair if b % 2 == 0 else pair[::-1]):
                if b == 0:
                    _run(mod, q, x[:2000], y[:2000], a.preset, 0, k)  # build the code, load the kernels
                res, cpu = _run(mod, q, x, y, a.preset, b, k)
                s = agg[name]
                s[0] += a.frames
                s[1] += res.frame_errors
                s[2] += res.leaked_bits
                s[3] += cpu
                s[4] += res.iterations
        h = binary_entropy(q)
        for name, (nf, fe, leak, cpu, sw) in agg.items():
            print(f"Q={q} {a.preset} {name}: FER {fe}/{nf} f {leak / (nf * kpf * h):.4f} "
                  f"sweeps/frame {sw / nf:.1f} cpu Mbit/s {nf * kpf / cpu / 1e6:.3f}", flush=True)


if __name__ == "__main__":
    main()
