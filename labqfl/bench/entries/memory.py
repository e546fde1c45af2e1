"""Benchmark ``run-memory``: peak RSS of the acquire+distil phase of ``labqfl run`` on the default
station, D simulated seconds, each run in its own subprocess.

What runs (the child): exactly what ``labqfl run`` does in its first phase — the embedded default
station opened through the Station (simulated instruments), the block-size rule for D seconds
(one block per pair), the node key stores in a temporary data folder, the time tagger's stream
pushed block by block into the :class:`~labqfl.qkd.pipeline.Distiller`, then ``finish``
(reconciliation, verification, amplification, storage). Training and the report are not run.

Figure: the child's peak resident set size, from the kernel's accounting of that child
(``os.wait4`` → ``ru_maxrss``, the per-child value behind ``getrusage(RUSAGE_CHILDREN)``).
Baseline, side by side in the same invocation: the same run with the pipeline's pre-compaction
storage put back by monkeypatching in the child (every held-back transcript entry kept as raw
bytes in a list, sifted key bits one byte each — what :mod:`labqfl.qkd.spool` and the packed key
bits replaced); the same data and the same keys, only the storage differs. The bare interpreter
with the same imports is in the details.

D is the default run's station time (``labqfl.contracts.types.DEFAULT_DURATION_S``, 10 s) unless
``LABQFL_BENCH_MEMORY_S`` says otherwise (``--quick``: 2 s). Extrapolation to the default run when D
is shorter (stated, not measured; with D the default it is the measured peak): the child samples its RSS every
20 ms and reports (a) the RSS growth per simulated second over the second half of the
acquisition (what the pipeline holds per second until the blocks close), (b) the RSS when the
acquisition ended, and (c) the transient of ``finish`` per sifted bit of the largest block
(reconciliation + amplification of one block at a time). Peak(T) ≈ (b) + (a)·(T − D) +
(c)·(sifted bits of the largest pair in T, at the rate measured), T the default run's time. Conservative: (c) also
carries the fixed cost of loading the reconciliation and amplification kernels as if it grew per
bit (5 s: ≈ 60 bytes per bit; a measured 60 s run: 30). ``LABQFL_BENCH_MEMORY_S=60`` measures
``labqfl run --duration 60`` (≈ 14 min of wall time on 2 shared cores).
Target: ≤ 1 GB (1024 MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from labqfl.bench import BenchResult, benchmark
from labqfl.contracts.types import DEFAULT_DURATION_S

_TARGET_MB = 1024.0

_CHILD = r"""
import json, os, sys, threading, time, tempfile
from pathlib import Path
mode, D = sys.argv[1], float(sys.argv[2])

def rss_mb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

import numpy as np
from labqfl.config import load_station_config
from labqfl.app.distill import DistillOptions, DistillSession
from labqfl.app.station import arm, open_station
import labqfl.qkd.pipeline, labqfl.qkd.twoparty, labqfl.sim_backends
if mode == "imports":
    print(json.dumps({"rss_end_mb": rss_mb()}))
    sys.exit(0)
if mode == "before":  # the storage before the compaction: raw bytes in lists, one byte per key bit
    import labqfl.qkd.twoparty as tp

    class RawSpool:
        def __init__(self, ram_bytes=0):
            self._e = []
        def __len__(self):
            return len(self._e)
        held_bytes = property(lambda self: sum(len(p) for _, p in self._e))
        spilled_bytes = property(lambda self: 0)
        def append(self, d, p):
            self._e.append((d, bytes(p)))
        def drain(self):
            e, self._e = self._e, []
            yield from e
        def clear(self):
            self._e = []

    tp.TranscriptSpool = RawSpool
    tp._packed = lambda bits: (bits, int(bits.size))
    tp._joined = lambda parts: np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, np.uint8)

samples = []
stop = threading.Event()
phase = ["setup"]
def sampler():
    while not stop.is_set():
        samples.append((phase[0], time.perf_counter(), rss_mb()))
        stop.wait(0.02)
threading.Thread(target=sampler, daemon=True).start()
cfg = load_station_config(None)
tmp = Path(tempfile.mkdtemp(prefix="labqfl-bench-memory-"))
sim_rss = []
with DistillSession.open(cfg, DistillOptions(), D, data_dir=tmp) as session:
    with open_station(cfg, base_dir=tmp) as station:
        arm(station)
        bd = cfg.simulation.block_duration_s
        blocks = station.time_tagger.stream(D, bd)  # arms the clients' logs, as labqfl run does
        dist = session.start_from_station(station)
        phase[0] = "acquire"
        held_end, rss_acq = {}, None
        for k, blk in enumerate(blocks, start=1):
            if rss_acq is None and sum(len(p.result.blocks) for p in dist.pairs.values()) == 0:
                held_end = dist.held_bytes() if hasattr(dist, "held_bytes") else {}
                phase[0] = "distil"  # from here a push may close blocks (reconciliation, amplification)
                session.push(blk)
                if sum(len(p.result.blocks) for p in dist.pairs.values()):
                    rss_acq = sim_rss[-1][1] if sim_rss else rss_mb()
                else:
                    phase[0] = "acquire"
                    sim_rss.append((k * bd, rss_mb()))
            else:
                session.push(blk)
        if rss_acq is None:
            held_end, rss_acq = (dist.held_bytes() if hasattr(dist, "held_bytes") else {}), rss_mb()
        phase[0] = "distil"
        res = session.finish(int(round(D * cfg.laser.rep_rate_hz)))
        phase[0] = "done"
stop.set()
fin = [r for p, _, r in samples if p == "distil"] or [rss_acq]
half = [r for t, r in sim_rss if t >= sim_rss[-1][0] / 2]
t_half = [t for t, r in sim_rss if t >= sim_rss[-1][0] / 2]
slope = (half[-1] - half[0]) / (t_half[-1] - t_half[0]) if len(half) > 1 and t_half[-1] > t_half[0] else 0.0
sifted = {n: r.sifted_bits for n, r in res.items()}
big = max((b.sifted_bits for r in res.values() for b in r.blocks), default=0)
print(json.dumps({"rss_acq_end_mb": rss_acq, "acq_sim_s": sim_rss[-1][0] if sim_rss else 0.0, "rss_finish_peak_mb": max(fin), "slope_mb_per_sim_s": slope,
                  "largest_block_bits": big, "sifted_bits": sifted, "final_key_bits": {n: r.final_key_bits for n, r in res.items()},
                  "held_bytes_end_of_acquisition": held_end, "rss_per_sim_s": sim_rss[::max(1, len(sim_rss) // 20)]}))
"""


#: A small launcher between this (large) process and the measured run: Linux counts the RSS of the
#: process a child was forked from into the child's ``ru_maxrss`` (until its exec), so the run is
#: forked from this ~10 MB interpreter, which reports ``getrusage(RUSAGE_CHILDREN).ru_maxrss``.
_LAUNCHER = r"""
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(p.stderr)
sys.stdout.buffer.write(p.stdout)
print(json.dumps({"rc": p.returncode, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _run_child(mode: str, duration_s: float) -> dict[str, Any]:
    """One measured run in a fresh interpreter: its peak RSS and what it printed."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, mode, repr(duration_s)],
                       capture_output=True, check=False)
    lines = p.stdout.decode().strip().splitlines()
    meta = json.loads(lines[-1]) if lines else {"rc": p.returncode}
    if p.returncode != 0 or meta.get("rc") != 0:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"run-memory child ({mode}) failed with exit code {meta.get('rc')}: {' | '.join(tail)}")
    d: dict[str, Any] = json.loads(lines[-2])
    d["peak_rss_mb"] = meta["maxrss_kb"] / 1024.0  # Linux: kB
    d["wall_s"] = time.perf_counter() - t0
    return d


def _extrapolate(d: dict[str, Any], duration_s: float) -> float:
    """Peak RSS of the default run (``DEFAULT_DURATION_S``) from a D-second run (module docstring)."""
    per_bit = (d["rss_finish_peak_mb"] - d["rss_acq_end_mb"]) / d["largest_block_bits"] if d["largest_block_bits"] else 0.0
    bits_t = max(d["sifted_bits"].values()) * DEFAULT_DURATION_S / duration_s
    acq_t = d["rss_acq_end_mb"] + max(d["slope_mb_per_sim_s"], 0.0) * max(DEFAULT_DURATION_S - d["acq_sim_s"], 0.0)
    return max(acq_t + max(per_bit, 0.0) * bits_t, d["peak_rss_mb"])


@benchmark("run-memory", "peak RSS of labqfl run's acquire+distil phase (default station, block-size rule), "
           "each run in a subprocess: the pipeline now vs its pre-compaction storage (monkeypatched back)",
           target=f"≤ 1 GB for the default {DEFAULT_DURATION_S:g} s run")
def _run_memory(quick: bool) -> BenchResult:
    duration = float(os.environ.get("LABQFL_BENCH_MEMORY_S", 2.0 if quick else DEFAULT_DURATION_S))
    if not 0 < duration <= 600:
        raise ValueError(f"LABQFL_BENCH_MEMORY_S must be a duration in (0, 600] simulated seconds, got {duration}")
    imports = _run_child("imports", duration)
    now = _run_child("now", duration)
    before = _run_child("before", duration)
    ext_now, ext_before = _extrapolate(now, duration), _extrapolate(before, duration)
    same_keys = now["final_key_bits"].keys() == before["final_key_bits"].keys()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return BenchResult(
        figure=now["peak_rss_mb"], unit=f"MiB peak RSS ({duration:g} simulated s)", baseline="pre-compaction storage",
        baseline_figure=before["peak_rss_mb"], higher_is_better=False, target=f"≤ 1024 MiB at the default {DEFAULT_DURATION_S:g} s",
        passed=ext_now <= _TARGET_MB,
        details={
            "simulated_s": duration,
            "default_run_s": DEFAULT_DURATION_S,
            "extrapolated_default_run_mb": {"now": ext_now, "before": ext_before},
            "mb_per_sim_s": {"now": now["slope_mb_per_sim_s"], "before": before["slope_mb_per_sim_s"]},
            "rss_acq_end_mb": {"now": now["rss_acq_end_mb"], "before": before["rss_acq_end_mb"]},
            "rss_finish_peak_mb": {"now": now["rss_finish_peak_mb"], "before": before["rss_finish_peak_mb"]},
            "largest_block_bits": now["largest_block_bits"],
            "held_bytes_end_of_acquisition": now["held_bytes_end_of_acquisition"],
            "bare_imports_rss_mb": imports["peak_rss_mb"],
            "same_pairs": same_keys,
            "wall_s": {"now": now["wall_s"], "before": before["wall_s"]},
            "rss_per_sim_s_now": now["rss_per_sim_s"],
            "load_average": list(load) if load else None,
            "extrapolation": "peak(T) = RSS at the end of the acquisition + growth per simulated second over its "
                             "second half x (T - D) + finish transient per sifted bit x the largest pair's sifted "
                             "bits in T, T the default run's station time (measured when D >= T)",
        })
