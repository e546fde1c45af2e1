"""Station start-up: how long it takes to open and close the default simulated station."""

from __future__ import annotations

import time

from labqfl.bench import BenchResult, benchmark
from labqfl.config import load_station_config


def _per_second(fn, min_time: float) -> float:  # type: ignore[no-untyped-def]
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 3:
            return n / dt


@benchmark("station-startup", "Open + close the default simulated station (all roles), vs loading and validating its config alone",
           target="informational: instrument construction should cost no more than ~100x config validation")
def station_startup(quick: bool) -> BenchResult:
    from labqfl.station import Station

    cfg = load_station_config()
    Station(cfg).close()  # warm-up: imports and any JIT compilation

    def startup() -> None:
        Station(load_station_config()).close()

    min_time = 0.2 if quick else 2.0
    figure = _per_second(startup, min_time)
    baseline = _per_second(load_station_config, min_time)
    return BenchResult(figure=figure, unit="start-ups/s", baseline="config load+validate only",
                       baseline_figure=baseline, target="ratio ≥ 0.01",
                       passed=figure / baseline >= 0.01,
                       details={"startup_ms": 1e3 / figure, "config_only_ms": 1e3 / baseline})
