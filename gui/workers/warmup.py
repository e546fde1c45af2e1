"""First-use work the GUI does once, on the station thread while a station connects.

The first calibration, acquisition or distillation of a process used to pay, on its worker thread,
for imports and initialisations that run Python code holding the GIL: matplotlib's figure and Agg
canvas (calibration plots, :func:`labqfl.calibration.acquire.save_plot`), Numba's CPU target (its
typing registries and code generator, set up at the first compiled kernel a process loads), the
calibration procedures, and loading every kernel of the simulator and the pipeline from Numba's
on-disk cache — or, the first time after an install (an empty cache), compiling them: ≈ 60 CPU s on
a 2-core machine, so that a first Start showed its first count rates only after 32 s.

A probe timer on the GUI thread saw single stalls of 0.2–0.7 s while a first calibration ran on a
2-core machine with three other busy processes, and 1.7 s of a 3.3 s calibration on a loaded CI
machine (``tests/gui/test_window.py``). Done while the station connects — when the user waits for
the instruments anyway, told what is happening — none of it happens while a run is shown. On a warm
cache it adds ≈ 0.5 s to a connect after the process's first (≈ 1.5 s for the first).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labqfl.config import StationConfig

#: What the station panel says while :func:`warm_up` runs.
MESSAGE = "preparing the analysis code (the first time after an install compiles it: about a minute)…"


_DONE: set[tuple[str, str]] = set()  # (station, engine) warmed in this process


def warm_up(cfg: StationConfig | None = None, engine: str = "cascade") -> float:
    """Import and initialise what the workers would otherwise set up at their first use; returns the
    seconds it took. With a station whose light is simulated, ``cfg``'s simulator and the in-process
    pipeline run on 2 ms of a throwaway testbed (fresh CSPRNG clients, keys into a memory sink that
    is dropped: no key, no file); the distillation kernels (Toeplitz, verification tag, transcript
    hash and, for ``engine`` "cascade", Cascade) in every case. A hardware station's slotting and
    sifting kernels still load at its first Start. Once per station and engine in a process."""
    t0 = time.perf_counter()
    key = (cfg.model_dump_json() if cfg is not None else "", engine)
    if key in _DONE:
        return 0.0
    import matplotlib.backends.backend_agg  # noqa: F401  (calibration plots)
    import matplotlib.figure  # noqa: F401

    from labqfl.nodes.client import warm_distillation
    from labqfl.nodes.common import simulated_light

    if cfg is not None and simulated_light(cfg):
        _warm_simulated_pipeline(cfg)
    warm_distillation(engine)
    try:
        import labqfl.calibration  # noqa: F401  (the procedures the calibration panel runs)
    except ImportError:  # pragma: no cover - a GUI without the calibration package says so itself
        pass
    _DONE.add(key)
    return time.perf_counter() - t0


def _warm_simulated_pipeline(cfg: StationConfig) -> None:
    from labqfl.sim_backends.testbed import SagnacTestbed

    from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream

    if cfg.simulation.emulate_pattern_generators:  # those take their patterns from the station's instruments
        cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(
            update={"emulate_pattern_generators": False})})
    tb = SagnacTestbed(cfg, threads=1)
    blocks = list(tb.stream(0.002))
    distill_stream(cfg, blocks, tb.client_logs(), MemorySink(), DistillSettings(min_final_block_bits=1000))
