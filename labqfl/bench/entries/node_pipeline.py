"""Benchmark ``node-pipeline``: acquisition → distillation with every party in its own process
(optics, detector, 4 client nodes on loopback: gRPC + mutual TLS, Wegman–Carter transcripts, the
optics asking each client's modulator link) against the in-process pipeline (the simulator and
:class:`~labqfl.qkd.pipeline.Distiller` in one process, key stores as sinks), on the same station
and duration, side by side: simulated seconds per wall second of each. The figure is the main job's
(``main_job``: the embedded default station for :data:`MAIN_JOB_S` with the block-size rule's settings, as
``labqfl run`` acquires and distils it; issue 16 item 8: real time on the default station), with the
acquisition's own rate beside it (its last tag block slotted and sifted, before the final blocks'
distillation). The default station with short blocks (``default``: 3 s, 3·10^5-bit blocks, the figure
until 2026-12-05) and the short-loop station of :func:`_station` (the figure until 2026-12-04) are run too
and reported in the details.

The networked figure counts from the operator's first ``ctl/arm`` to the last client's results
(process start-up, reported apart in the details, is not in it); the baseline counts the same
acquisition + distillation in one process.

**What is warmed before the timing, in both paths:** one acquisition + distillation of the same
station with the same settings (:data:`RUNS`: 1.5 s on the default station, :data:`WARMUP_S` = 0.1 s
on the short loop), long enough that every pair closes a block with key (on the short loop its final
block, ``min_final_block_bits``: about 9 000 sifted bits per pair, a few hundred to a thousand final
bits): the simulator's and the slotting/sifting kernels, Cascade at both
ends, the verification hash and the decoy-state LPs have then run once in every process that the
timed part uses (each client node in the roles it holds, Ci or Cj; the in-process pipeline in its one
process). The Toeplitz hash takes another kernel path for the timed part's larger blocks (output at
least 1/8 of the input) than for the warm-up's: each client node loads both paths when it starts
(:func:`labqfl.nodes.client.warm_distillation`, in start-up, not in the figure: with Cascade and the
verification tag, which the main job's figure has no warm-up run to load), the in-process path calls the
same after its warm-up. So Numba's cache is loaded (in a fresh checkout: compiled) outside
the timing. The warm-up's final key per pair is in the details (``warmup_final_key_bits_*``). Until
2026-12-04 the warm-up was 0.01 s (networked) and 0.002 s (in process), which closed no block: the
block kernels loaded inside the timed part.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from labqfl.bench import BenchResult, benchmark

#: Simulated seconds of the warm-up acquisition + distillation before each timed path (module
#: docstring): every pair of the bench's station closes a block with key in it.
WARMUP_S = 0.1


def _block_ms() -> float:
    """The embedded station's tag block [ms]."""
    from labqfl.config import load_station_config

    return load_station_config().simulation.block_duration_s * 1e3


def _station(path: Path) -> Path:
    """The embedded 4-client station on a short loop (its pairs reach key within a fraction of a
    second), with the default station's tag blocks (``simulation.block_duration_s``: one ``tags/block``,
    one ``mod/query`` per client and one ``ann/chunks`` per client, for all its pairs, per block;
    docs/nodes.md, "Measured" and "Tag blocks of 50 ms")."""
    from labqfl.config import StationConfig, load_station_config, station_to_toml_dict
    from labqfl.planning import station_toml

    d = station_to_toml_dict(load_station_config())
    d["loop"]["segments_km"] = [0.2] * (len(d["clients"]) + 1)
    for c in d["clients"]:
        c.update(insertion_loss_db=0.2, intensities=[0.03, 0.1, 0.0], intensity_probs=[0.6, 0.2, 0.2],
                 basis_x_prob=0.7)
    path.write_text(station_toml(StationConfig.model_validate(d)))
    return path


def _in_process(station: Path | None, duration: float, settings: Any, tmp: Path,
                warmup: float = WARMUP_S) -> dict[str, Any]:
    """The in-process pipeline (``warmup`` 0: no warm-up, as the main job)."""
    from labqfl.config import load_station_config
    from labqfl.keystore import KeyStore
    from labqfl.nodes.client import warm_distillation
    from labqfl.qkd.pipeline import Distiller, KeyStoreSink
    from labqfl.sim_backends import SagnacTestbed

    cfg = load_station_config(station)
    stores = {c: KeyStore(tmp / f"{c}.sqlite", node=c) for c in cfg.client_names}
    warm = {c: KeyStore(tmp / f"warmup-{c}.sqlite", node=c) for c in cfg.client_names}
    try:
        tb = SagnacTestbed(cfg)
        res_w: dict[str, Any] = {}
        if warmup > 0:  # warm-up (module docstring): a distilled acquisition into its own stores, outside the timing
            blocks = tb.stream(warmup)
            d = Distiller(cfg, tb.client_logs(), KeyStoreSink(warm), settings)
            for b in blocks:
                d.push(b)
            res_w = d.finish(int(round(warmup * cfg.laser.rep_rate_hz)))
        warm_distillation(settings.engine)  # as each client node at its start
        t0 = time.perf_counter()
        blocks = tb.stream(duration)
        d = Distiller(cfg, tb.client_logs(), KeyStoreSink(stores), settings)
        for b in blocks:
            d.push(b)
        res = d.finish(int(round(duration * cfg.laser.rep_rate_hz)))
        wall = time.perf_counter() - t0
    finally:
        for s in (*stores.values(), *warm.values()):
            s.close()
    return {"wall_s": wall, "final_key_bits": {p: r.final_key_bits for p, r in res.items()},
            "warmup_final_key_bits": {p: r.final_key_bits for p, r in res_w.items()}}


#: The runs of the bench: station → (simulated seconds, sifted bits per block — ``None``: the block-size
#: rule's settings for that duration, warm-up seconds), for the full and the ``--quick`` run. ``main_job``:
#: the embedded station as ``labqfl run`` acquires and distils it (:data:`MAIN_JOB_S`, one block per pair
#: by the rule, no warm-up: the run's kernels load as they do in the main job, the nodes' start-up warming
#: what it warms). ``default``: the embedded station with blocks of 3·10^5 sifted bits, about two per pair
#: in 3 s, each with key; its warm-up of 1.5 s closes one such block per pair, so every block stage has run
#: in every process before the timing (0.1 s of it closes no block with key: the finite-key bound refuses
#: blocks that small). ``short_loop``: :func:`_station` (the bench's figure until 2026-12-04).
MAIN_JOB_S = 10.0
RUNS: dict[str, tuple[float, int | None, float]] = {
    "main_job": (MAIN_JOB_S, None, 0.0), "default": (3.0, 300_000, 1.5), "short_loop": (0.4, 60_000, WARMUP_S)}
QUICK_RUNS = {"default": (0.2, 20_000, WARMUP_S)}


def _side_by_side(station: Path | None, duration: float, block_bits: int | None, warmup: float,
                  tmp: Path) -> dict[str, Any]:
    """The networked and the in-process pipeline on ``station`` for ``duration`` simulated seconds."""
    from labqfl.app.distill import DistillOptions, distill_settings
    from labqfl.config import load_station_config
    from labqfl.nodes.launch import LocalNetwork
    from labqfl.qkd.pipeline import DistillSettings

    settings = (DistillSettings(block_bits=block_bits, min_final_block_bits=2000) if block_bits is not None
                else distill_settings(load_station_config(station), DistillOptions(), duration)[0])
    base = _in_process(station, duration, settings, tmp, warmup)
    net = LocalNetwork(tmp / "net", station, settings=settings)
    t0 = time.perf_counter()
    try:
        net.start()
        startup = time.perf_counter() - t0
        warm = net.acquire(warmup) if warmup > 0 else {"pairs": {}}  # warm-up (module docstring)
        t1 = time.perf_counter()
        res = net.acquire(duration)
        wall = time.perf_counter() - t1
    finally:
        codes = net.stop()
    pairs = res["pairs"]
    ok = all(p["done"] and not p["failed"] for p in pairs.values()) and all(c == 0 for c in codes.values())
    return {"ok": ok, "duration_s": duration, "block_bits": settings.block_bits,
            "block_size_rule": block_bits is None,
            "network_sim_s_per_wall_s": round(duration / wall, 4),
            "network_acquisition_sim_s_per_wall_s": round(duration / res["acquisition_wall_s"], 4),
            "in_process_sim_s_per_wall_s": round(duration / base["wall_s"], 4),
            "network_wall_s": round(wall, 3), "in_process_wall_s": round(base["wall_s"], 3),
            "network_startup_s": round(startup, 3),
            "network_acquisition_wall_s": round(res["acquisition_wall_s"], 3),
            "final_key_bits_network": {p: d["final_key_bits"] for p, d in sorted(pairs.items())},
            "final_key_bits_in_process": dict(sorted(base["final_key_bits"].items())),
            "round_trips": {p: d.get("round_trips", 0) for p, d in sorted(pairs.items())},
            "warmup_final_key_bits_network": {p: d["final_key_bits"] for p, d in sorted(warm["pairs"].items())},
            "warmup_final_key_bits_in_process": dict(sorted(base["warmup_final_key_bits"].items())),
            "warmup_s": warmup, "exit_codes": codes}


@benchmark("node-pipeline", "acquisition + distillation on the default station with optics, detector and 4 clients "
           "as separate processes on loopback vs the in-process pipeline (same station, same duration)",
           target="keep up with real time (1 simulated s per wall s) on the default station; report the ratio")
def _node_pipeline(quick: bool) -> BenchResult:
    runs: dict[str, dict[str, Any]] = {}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="labqfl-bench-nodes-") as tmp_s:
        tmp = Path(tmp_s)
        for name, (duration, block_bits, warmup) in (QUICK_RUNS if quick else RUNS).items():
            station = _station(tmp / "station.toml") if name == "short_loop" else None
            (tmp / name).mkdir()
            runs[name] = _side_by_side(station, duration, block_bits, warmup, tmp / name)
    load1 = os.getloadavg()[0]
    main = runs["main_job"] if "main_job" in runs else runs["default"]
    return BenchResult(
        figure=main["network_sim_s_per_wall_s"], unit="simulated s per wall s",
        baseline="the same acquisition + distillation in one process (SagnacTestbed + Distiller + key stores)",
        baseline_figure=main["in_process_sim_s_per_wall_s"],
        passed=all(r["ok"] for r in runs.values()) if not quick else None,
        details={"station": f"embedded default station (4 clients, 10 km loop, {_block_ms():g} ms tag blocks)", **main,
                 "default_short_blocks": (runs["default"] if main is not runs["default"] else None),
                 "short_loop": ({"station": "embedded 4-client station, 0.2 km loop segments", **runs["short_loop"]}
                                if "short_loop" in runs else None),
                 "load_average": [round(load0, 2), round(load1, 2)]})
