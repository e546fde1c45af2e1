"""Reconciliation benchmarks: LDPC throughput, efficiency and frame-error rate per QBER (Cascade:
:mod:`labqfl.bench.entries.cascade`).

``ldpc``: the default engine (:data:`DEFAULT_ENGINE`: ``reconcile_ldpc``'s defaults since 2026-12-07 — the
frame-batched 16-bit A-min* ``decoder="amin16"``, :mod:`labqfl.qkd.ldpc_batch`, on quasi-cyclic codes of
construction 3 since session 43 (2 before; :data:`labqfl.qkd.ldpc.DEFAULT_CONSTRUCTION`), n = 65536, preset efficient;
its figure is the headline) and the same with ``preset="fast"`` and ``preset="long"`` (n = 262 144, steps of
0.005·h(Q)), side by side with the float A-min* (``decoder="amin"``, the default before, both presets; the same codes)
and the previous engine (random PEG codes, n = 16384, scalar layered sum-product: ``plan_ldpc(q, decoder="bp")``) on the same data, QBER 1, 2, 4, 6, 8 %.
Every decoder runs on one thread (``numba.set_num_threads(1)``), so Mbit/s is per core.  Frames
hold exactly round(Q·n) errors; only whole frames are reconciled (a partial frame pays a whole
syndrome).  ``ldpc-fer``: the two presets of ``amin`` and of ``amin16`` with 120 frames per QBER, ``amin16-long``
with 48 (as many key bits as ≈ 190 short frames; ten minutes or more on a loaded 2-core VM).  Per QBER, ``amin16_vs_amin`` and ``amin16-fast_vs_amin-fast`` compare the two decoders
frame by frame on the same data (:func:`_paired`: frames where amin16 needed more / fewer reveals, sign test,
corrected blocks equal).
Frame-error rates come with their one-sided 95 % upper bound (Clopper & Pearson, Biometrika 26, 404
(1934)): with k errors in N frames, the p at which P(≤ k errors) = 5 %; 0 of 120 gives 2.5 %.
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

from labqfl.bench import BenchResult, benchmark
from labqfl.bench import noisy_frame as _frame
from labqfl.qkd.ldpc import DEFAULT_CONSTRUCTION, DEFAULT_DECODER, reconcile_ldpc

QBERS = (0.01, 0.02, 0.04, 0.06, 0.08)
ENGINES = ("amin", "amin-fast", "amin16", "amin16-fast", "amin16-long", "bp")
"""Decoder, optionally with ``-fast`` / ``-long`` for that preset (:data:`labqfl.qkd.ldpc.PRESETS`; none: efficient).
Every engine takes its plan's default construction (:data:`labqfl.qkd.ldpc.DEFAULT_CONSTRUCTION` for the
quasi-cyclic decoders)."""
DEFAULT_ENGINE = DEFAULT_DECODER
"""The engine of :func:`labqfl.qkd.ldpc.reconcile_ldpc`'s defaults (decoder amin16, preset efficient,
construction :data:`labqfl.qkd.ldpc.DEFAULT_CONSTRUCTION`): the benchmarks' headline figure."""
_DEFAULT_LABEL = (f"decoder={DEFAULT_DECODER!r}, preset='efficient', construction={DEFAULT_CONSTRUCTION}, "
                  "n=65536, z=256")
F_TARGET = 1.10
FER_TARGET = 0.01
MBIT_TARGET = 10.0


def fer_upper_95(errors: int, frames: int) -> float:
    """One-sided 95 % Clopper–Pearson upper bound on a frame-error rate from ``errors`` of ``frames``."""
    from scipy.stats import beta

    if errors >= frames:
        return 1.0
    return float(beta.ppf(0.95, errors + 1, frames - errors))


def _run(engine: str, q: float, frames: int, seed: int) -> dict[str, Any]:
    """Reconcile ``frames`` whole frames at QBER ``q`` with ``engine`` (see :data:`ENGINES`)."""
    from labqfl.qkd.ldpc import build_code, plan_ldpc

    decoder, _, preset = engine.partition("-")
    preset = preset or "efficient"
    plan = plan_ldpc(q, decoder=decoder, preset=preset)
    n = frames * plan.key_bits_per_frame
    x, y = _frame(n, q, seed)
    reconcile_ldpc(x[:2000], y[:2000], q, seed=0, decoder=decoder, preset=preset)  # build code, load kernels
    t0, c0 = time.perf_counter(), time.process_time()
    res = reconcile_ldpc(x, y, q, seed=seed, decoder=decoder, preset=preset)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    nfr = res.details["frames"]
    return {"bits": n, "wall_s": wall, "cpu_s": cpu,
            "mbit_s": round(n / wall / 1e6, 3), "cpu_mbit_s": round(n / cpu / 1e6, 3) if cpu > 0 else None,
            "f": round(res.efficiency, 4), "frames": nfr, "frame_errors": res.frame_errors,
            "fer": round(res.frame_errors / nfr, 4), "fer_upper_95": round(fer_upper_95(res.frame_errors, nfr), 4),
            "residual_bits": int((res.corrected != x).sum()),
            "decoder": plan.decoder, "construction": plan.construction,
            "code_n": plan.code_n, "mother_rate": plan.rate, "filler": plan.d,
            "mean_attempts": round(float(np.mean(res.details["decode_attempts"])), 2),
            # CPU time of the whole reconciliation per decoder sweep and edge of one frame (a sum-product
            # last-chance sweep, rare, costs ≈ 5 A-min* ones)
            "cpu_ns_per_edge_sweep": round(cpu / max(1, res.iterations) / build_code(plan.code_n, plan.rate,
                                                                                     plan.code_seed, plan.z,
                                                                                     plan.construction).edges * 1e9, 3),
            "iterations_per_frame": round(res.iterations / nfr, 1), "round_trips": res.round_trips,
            "_reveals": np.where(res.details["frame_ok"], res.details["revealed_at_success"], -1),
            "_corrected": res.corrected}


PAIRS = (("amin", "amin16"), ("amin-fast", "amin16-fast"))
"""Engines compared frame by frame on the same data (:func:`_paired`)."""


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` against ``a`` frame by frame: frames where ``b`` needed more / fewer / the same reveals to decode
    (frames both decoded), frames only one decoded, and whether the two corrected blocks are equal — with the
    two-sided sign-test p-value of more against fewer (binomial, p = 1/2)."""
    from scipy.stats import binomtest

    ra, rb = a["_reveals"], b["_reveals"]
    both = (ra >= 0) & (rb >= 0)
    more, fewer = int((rb[both] > ra[both]).sum()), int((rb[both] < ra[both]).sum())
    return {"more_reveals": more, "fewer_reveals": fewer, "same_reveals": int(both.sum()) - more - fewer,
            "only_first_decoded": int(((ra >= 0) & (rb < 0)).sum()),
            "only_second_decoded": int(((rb >= 0) & (ra < 0)).sum()),
            "sign_test_p": round(float(binomtest(more, more + fewer).pvalue), 4) if more + fewer else 1.0,
            "corrected_equal": bool(np.array_equal(a["_corrected"], b["_corrected"]))}


def _table(engines: tuple[str, ...], frames: dict[str, int], qbers: tuple[float, ...]) -> dict[str, Any]:
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rows: dict[str, dict[str, Any]] = {}
        for i, q in enumerate(qbers):
            row = {e: _run(e, q, frames[e], 100 + i) for e in engines}
            row.update({f"{b}_vs_{a}": _paired(row[a], row[b]) for a, b in PAIRS
                        if a in row and b in row and frames[a] == frames[b]})
            for r in row.values():
                r.pop("_reveals", None)
                r.pop("_corrected", None)
            rows[f"{q:.2f}"] = row
    finally:
        numba.set_num_threads(threads)
    tot = {e: (sum(r[e]["bits"] for r in rows.values()), sum(r[e]["wall_s"] for r in rows.values()),
               sum(r[e]["cpu_s"] for r in rows.values())) for e in engines}
    summary = {e: {"mbit_s": round(b / w / 1e6, 3), "cpu_mbit_s": round(b / c / 1e6, 3) if c > 0 else None,
                   "worst_f": max(r[e]["f"] for r in rows.values()),
                   "frame_errors": sum(r[e]["frame_errors"] for r in rows.values()),
                   "frames": sum(r[e]["frames"] for r in rows.values()),
                   "fer_upper_95_worst": max(r[e]["fer_upper_95"] for r in rows.values())}
               for e, (b, w, c) in tot.items()}
    return {"per_qber": rows, "summary": summary}


@benchmark("ldpc", "Blind rate-adaptive LDPC per QBER 1-8 %: the default engine (frame-batched int16 A-min* amin16, "
           f"QC codes of construction {DEFAULT_CONSTRUCTION}, n=65536; presets efficient = headline, fast, long), the "
           "float A-min* (amin; efficient, fast) and the previous random-code sum-product (n=16384), one thread each",
           target=f"≥ {MBIT_TARGET:g} Mbit/s per core, f ≤ {F_TARGET}, FER ≤ {FER_TARGET:.0%} at every QBER")
def _ldpc(quick: bool) -> BenchResult:
    qbers = (0.04,) if quick else QBERS
    frames = dict.fromkeys(ENGINES, 1) if quick else {"amin": 4, "amin-fast": 4, "amin16": 4, "amin16-fast": 4,
                                                       "amin16-long": 1, "bp": 2}
    out = _table(ENGINES, frames, qbers)
    s = out["summary"]
    worst = s[DEFAULT_ENGINE]
    passed = (worst["mbit_s"] >= MBIT_TARGET and worst["worst_f"] <= F_TARGET
              and worst["frame_errors"] <= FER_TARGET * worst["frames"])
    return BenchResult(
        figure=s[DEFAULT_ENGINE]["mbit_s"], unit="Mbit/s",
        baseline="previous engine: random PEG codes n=16384, scalar layered sum-product (decoder='bp'), same data",
        baseline_figure=s["bp"]["mbit_s"], target=f"≥ {MBIT_TARGET:g} Mbit/s, f ≤ {F_TARGET}, FER ≤ 1 %",
        passed=None if quick else passed,
        details={**out, "frames_per_qber": frames, "threads": 1, "default_engine": DEFAULT_ENGINE,
                 "note": f"figure: wall-clock Mbit/s of the default engine ({_DEFAULT_LABEL}; engine "
                         f"{DEFAULT_ENGINE!r} in per_qber/summary) over all QBERs, one numba thread; cpu_mbit_s "
                         "uses process CPU time (less sensitive to other load)"})


@benchmark("ldpc-fer", f"LDPC default engine (amin16, QC codes of construction {DEFAULT_CONSTRUCTION}, n=65536) and "
           "amin, both presets (120 frames per QBER), and amin16 preset long (n=262144, 48 frames): f and frame-error rate",
           target="FER ≤ 1 %, f ≤ 1.10")
def _ldpc_fer(quick: bool) -> BenchResult:
    qbers = (0.04,) if quick else QBERS
    frames = {**dict.fromkeys(("amin", "amin-fast", "amin16", "amin16-fast"), 2 if quick else 120),
              "amin16-long": 1 if quick else 48, "bp": 1}  # a long frame holds ≈ 4 short frames' key bits
    out = _table(ENGINES, frames, qbers)
    s = out["summary"]
    return BenchResult(
        figure=s[DEFAULT_ENGINE]["mbit_s"], unit="Mbit/s",
        baseline="previous engine (decoder='bp'), one frame per QBER", baseline_figure=s["bp"]["mbit_s"],
        target="FER ≤ 1 %, f ≤ 1.10", passed=None,
        details={**out, "frames_per_qber": frames, "threads": 1, "default_engine": DEFAULT_ENGINE,
                 "note": f"figure: wall-clock Mbit/s of the default engine ({_DEFAULT_LABEL})"})
