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
cache it adds ≈ 1–1.5 s to a process's first Connect, nothing to later ones of the same station.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from labqfl.contracts.types import DEFAULT_ENGINE

if TYPE_CHECKING:
    from labqfl.config import StationConfig

#: What the station panel says while :func:`warm_up` runs.
MESSAGE = "preparing the analysis code (the first time after an install compiles it: about a minute)…"

_DONE: set[tuple[str, str]] = set()  # (station, engine) warmed in this process


def warm_up(cfg: StationConfig | None = None, engine: str = DEFAULT_ENGINE) -> float:
    """Import and initialise what the workers would otherwise set up at their first use; returns the
    seconds it took. With a station whose light is simulated, ``cfg``'s simulator, the in-process
    pipeline and the distillation kernels run on 2 ms of a throwaway testbed
    (:func:`labqfl.nodes.launch.warm_in_process_pipeline`: fresh CSPRNG clients, keys into a memory sink
    that is dropped: no key, no file); with a hardware station the distillation kernels alone (its
    slotting and sifting kernels still load at its first Start). Once per station and engine in a
    process."""
    t0 = time.perf_counter()
    key = (cfg.model_dump_json() if cfg is not None else "", engine)
    if key in _DONE:
        return 0.0
    import matplotlib.backends.backend_agg  # noqa: F401  (calibration plots)
    import matplotlib.figure  # noqa: F401

    from labqfl.nodes.client import warm_distillation
    from labqfl.nodes.common import simulated_light
    from labqfl.nodes.launch import warm_in_process_pipeline

    if cfg is not None and simulated_light(cfg):
        warm_in_process_pipeline(cfg, engine)
    else:
        warm_distillation(engine)
    try:
        import labqfl.calibration  # noqa: F401  (the procedures the calibration panel runs)
    except ImportError:  # pragma: no cover - a GUI without the calibration package says so itself
        pass
    _DONE.add(key)
    return time.perf_counter() - t0
