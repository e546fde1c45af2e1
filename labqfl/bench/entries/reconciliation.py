"""Reconciliation benchmarks: LDPC efficiency/frame-error rate (Cascade: :mod:`labqfl.bench.entries.cascade`)."""

from __future__ import annotations

import time

import numpy as np

from labqfl.bench import BenchResult, benchmark
from labqfl.bench import noisy_frame as _frame
from labqfl.qkd.cascade import cascade_reference
from labqfl.qkd.ldpc import plan_ldpc, reconcile_ldpc


@benchmark("ldpc", "Blind rate-adaptive LDPC (n=16384, layered sum-product BP): efficiency and FER, QBER 1-8 %",
           target="f ≈ 1.05-1.15 with low FER per QBER; throughput ≥ 1 Mbit/s")
def _ldpc(quick: bool) -> BenchResult:
    qbers = (0.02,) if quick else (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08)
    frames = 1 if quick else 12
    rows = {}
    bits = 0
    wall = cpu = 0.0
    base_bits = 0
    base_wall = 0.0
    worst_f = 0.0
    total_frames = total_errors = 0
    for i, q in enumerate(qbers):
        plan = plan_ldpc(q)
        n = frames * plan.key_bits_per_frame  # whole frames: a partial frame pays a whole syndrome
        x, y = _frame(n, q, 10 + i)
        reconcile_ldpc(x[:1000], y[:1000], q, seed=0)  # build the code, load compiled kernels
        t0, c0 = time.perf_counter(), time.process_time()
        res = reconcile_ldpc(x, y, q, seed=i)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        bits += n
        nfr = res.details["frames"]
        total_frames += nfr
        total_errors += res.frame_errors
        rows[f"{q:.2f}"] = {"f": round(res.efficiency, 4), "frames": nfr,
                            "frame_errors": res.frame_errors,
                            "fer": round(res.frame_errors / nfr, 4),
                            "residual_bits": int((res.corrected != x).sum()),
                            "mother_rate": plan.rate, "filler": plan.d,
                            "mean_attempts": round(float(np.mean(res.details["decode_attempts"])), 2),
                            "iterations_per_frame": round(res.iterations / nfr, 1),
                            "round_trips": res.round_trips}
        worst_f = max(worst_f, res.efficiency)
        # baseline: pure-Python Cascade on the first frame's bits of the same data
        nb = plan.key_bits_per_frame
        t0 = time.perf_counter()
        cascade_reference(x[:nb], y[:nb], q, seed=1)
        base_wall += time.perf_counter() - t0
        base_bits += nb
    return BenchResult(
        figure=bits / wall / 1e6, unit="Mbit/s",
        baseline="pure-Python Cascade on the first frame of each QBER's data",
        baseline_figure=base_bits / base_wall / 1e6, target="f ≈ 1.05-1.15, low FER, ≥ 1 Mbit/s", passed=None,
        details={"per_qber": rows, "worst_f": round(worst_f, 4), "frames_per_qber": frames,
                 "frame_errors": total_errors, "frames_total": total_frames,
                 "cpu_mbit_per_s": round(bits / cpu / 1e6, 3) if cpu > 0 else None,
                 "note": "figure is wall-clock over all QBERs; cpu_mbit_per_s uses process CPU time"})
