"""Frame errors and wrong codewords of the LDPC code constructions (docs/reconciliation.md, session 41 round).

Runs the blind protocol (``LdpcAlice`` / ``LdpcBob`` over a ``LocalChannel``) on whole frames with exactly
round(Q·N) errors (``labqfl.bench.noisy_frame``, as ``labqfl bench ldpc-fer``) for each QBER and construction,
and prints one JSON line per point: f, frames left undecoded (``frame_errors``), frames Bob reported decoded
whose key bits still differ from Alice's (a wrong codeword: the syndrome matched, verification would discard the
block), residual wrong bits, sweeps per frame and CPU seconds (one Numba thread).

    .venv/bin/python docs/scripts/ldpc_construction_fer.py --q 0.006 0.008 0.01 --construction 0 1 2 \
        --frames 48 --seed 300

``--weight W`` runs amin16 with message scale 1 + W/32 at every mother rate instead of its table
(``labqfl.qkd.ldpc_batch.WEIGHTS``; session 42's scan).  ``--rate R`` forces mother rate R (``plan_ldpc``'s
``f_mother`` = (1 − R)/h(Q)) instead of the planner's choice (session 42's mother-rate scan).
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np

import labqfl.qkd.ldpc_batch as ldpc_batch
from labqfl.bench import noisy_frame
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.ldpc import LdpcAlice, LdpcBob, plan_ldpc
from labqfl.qkd.messaging import LocalChannel


def point(q: float, construction: int, frames: int, seed: int, preset: str, decoder: str,
          rate: float | None = None) -> dict[str, object]:
    f_mother = None if rate is None else (1.0 - rate) / binary_entropy(q)
    plan = plan_ldpc(q, preset=preset, construction=construction, decoder=decoder, f_mother=f_mother)
    kpf = plan.key_bits_per_frame
    x, y = noisy_frame(frames * kpf, q, seed + int(round(q * 10000)))
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(seed))
    bob = LdpcBob(y, q, plan=plan)
    c0 = time.process_time()
    res = bob.run(LocalChannel(alice))
    cpu = time.process_time() - c0
    ok = np.asarray(res.details["frame_ok"], dtype=bool)
    n_frames = int(res.details["frames"])
    wrong = [f for f in range(n_frames)
             if ok[f] and np.any(res.corrected[f * kpf:(f + 1) * kpf] != x[f * kpf:(f + 1) * kpf])]
    return {"q": q, "construction": construction, "decoder": decoder, "preset": preset, "rate": plan.rate,
            "f": round(res.efficiency, 4), "frames": n_frames, "frame_errors": int(res.frame_errors),
            "wrong_codeword_frames": wrong, "residual_bits": int((res.corrected != x).sum()),
            "sweeps_per_frame": round(res.iterations / n_frames, 1), "cpu_s": round(cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--q", type=float, nargs="+", required=True, help="QBERs, e.g. 0.008 0.0225")
    ap.add_argument("--construction", type=int, nargs="+", default=[0, 2], help="code constructions (0, 1, 2, 3)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--seed", type=int, default=300)
    ap.add_argument("--preset", default="efficient")
    ap.add_argument("--decoder", default="amin")
    ap.add_argument("--weight", type=int, choices=range(0, 5), default=None,
                    help="amin16's message scale 1 + W/32 at every rate (default: its per-rate table)")
    ap.add_argument("--rate", type=float, default=None, help="force this mother rate (default: the planner's)")
    a = ap.parse_args()
    numba.set_num_threads(1)
    if a.weight is not None:
        ldpc_batch.weight_for = lambda rate: a.weight
    for q in a.q:
        for c in a.construction:
            row = point(q, c, a.frames, a.seed, a.preset, a.decoder, a.rate)
            if a.weight is not None and a.decoder == "amin16":
                row["weight"] = a.weight
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
