"""Time the torch quasi-cyclic LDPC decoder (labqfl.qkd.ldpc_torch) against the Numba kernels on
the first decoding attempt of the default plan's frames, and check that both give the same
(L, R, sweeps) bit for bit.

    .venv/bin/python docs/scripts/ldpc_torch_timing.py --device cpu --frames 8 --threads 1
    python3 docs/scripts/ldpc_torch_timing.py --device cuda --frames 64

Frames: random words of the plan's code at QBER ``--qber`` on the key positions, the plan's
``start_revealed`` filler values shortened (±50), the other filler symbols punctured (0), the
syndrome of the word; ``first_iter`` sweeps at most, cold start (R = 0).  Prints one line per rule.
"""

from __future__ import annotations

import argparse
import math
import time

import numba
import numpy as np
import torch

from labqfl.qkd.ldpc import AMIN_ALPHA, AMIN_GAMMA_HIGH, build_code, minsum_weights, plan_ldpc
from labqfl.qkd.ldpc_qc import qc_aminstar_frames, qc_minsum_frames
from labqfl.qkd.ldpc_torch import qc_decode_frames_torch


def frames_for(qber: float, nf: int, seed: int, rule: str):
    pl = plan_ldpc(qber, decoder=rule)
    code = build_code(pl.code_n, pl.rate, pl.code_seed, pl.z)
    rng = np.random.default_rng(seed)
    L0 = np.float32(math.log((1 - qber) / qber))
    synd = np.empty((nf, code.m), np.uint8)
    L = np.empty((nf, code.n), np.float32)
    for f in range(nf):
        x = rng.integers(0, 2, code.n, dtype=np.uint8)
        y = x ^ (rng.random(code.n) < qber).astype(np.uint8)
        L[f] = np.where(y == 1, -L0, L0)
        fill = code.untainted[:pl.d]
        L[f, fill] = 0.0
        shown = fill[:pl.start_revealed]
        L[f, shown] = np.where(x[shown] == 1, -50.0, 50.0)
        synd[f] = code.syndrome(x)
    w = minsum_weights(code) if rule == "minsum" else minsum_weights(code, AMIN_ALPHA, {}, AMIN_GAMMA_HIGH)
    return pl, code, synd, L, w


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch and Numba threads (0: leave as is)")
    ap.add_argument("--qber", type=float, default=0.02)
    ap.add_argument("--rules", default="minsum,amin")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        numba.set_num_threads(a.threads)
    for rule in a.rules.split(","):
        pl, code, synd, L, w = frames_for(a.qber, a.frames, 1, rule)
        fr = np.arange(a.frames, dtype=np.int64)
        base = (code.base_ptr, code.base_col, code.base_shift, code.z)
        args = (*base, synd)
        kern = qc_minsum_frames if rule == "minsum" else qc_aminstar_frames
        one = (*base, synd[:1], L[:1].copy(), np.zeros((1, code.edges), np.float32), fr[:1], w, 1)
        kern(*one)  # compile
        qc_decode_frames_torch(rule, *one, device=a.device)  # warm up (index tensors, allocator)
        tn, tt = [], []
        for _ in range(a.repeat):
            L1, R1 = L.copy(), np.zeros((a.frames, code.edges), np.float32)
            t0 = time.perf_counter()
            r1 = kern(*args, L1, R1, fr, w, pl.first_iter)
            tn.append(time.perf_counter() - t0)
            L2, R2 = L.copy(), np.zeros((a.frames, code.edges), np.float32)
            t0 = time.perf_counter()
            r2 = qc_decode_frames_torch(rule, *args, L2, R2, fr, w, pl.first_iter, device=a.device)
            tt.append(time.perf_counter() - t0)
        same = np.array_equal(r1, r2) and np.array_equal(L1, L2) and np.array_equal(R1, R2)
        sweeps = int(np.where(r1 > 0, r1, pl.first_iter).sum())
        print(f"{rule}: n={code.n} z={code.z} rate={pl.rate} frames={a.frames} sweeps={sweeps} "
              f"(converged {int((r1 > 0).sum())}) numba {min(tn):.3f} s, torch[{a.device}] {min(tt):.3f} s, "
              f"ratio torch/numba {min(tt) / min(tn):.2f}, identical={same}", flush=True)


if __name__ == "__main__":
    main()
