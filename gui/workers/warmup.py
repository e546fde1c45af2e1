"""First-use work the GUI does once, on the station thread while a station connects.

The first calibration, acquisition or distillation of a process used to pay, on its worker thread,
for imports and initialisations that run Python code holding the GIL: matplotlib's figure and Agg
canvas (calibration plots, :func:`labqfl.calibration.acquire.save_plot`), Numba's CPU target (its
typing registries and code generator, set up at the first compiled kernel a process loads) and the
calibration procedures. Meanwhile the window's event loop waited for the GIL: a probe timer on the
GUI thread saw single stalls of 0.2–0.7 s while a first calibration ran on a 2-core machine with
three other busy processes, and 1.7 s of a 3.3 s calibration on a loaded CI machine
(``tests/gui/test_window.py``). Done while the station connects — when the user waits for the
instruments anyway — none of it happens while a run is shown.
"""

from __future__ import annotations

import time

import numpy as np


def warm_up() -> float:
    """Import and initialise what the workers would otherwise set up at their first use; returns
    the seconds it took (about 1 s on a quiet 2-core machine, much less once done in the process)."""
    t0 = time.perf_counter()
    import matplotlib.backends.backend_agg  # noqa: F401  (calibration plots)
    import matplotlib.figure  # noqa: F401

    from labqfl.contracts.types import ModulationRecord
    from labqfl.qkd.sifting import sift_counts

    # Any compiled kernel: loading the first one initialises Numba's CPU target and code generator.
    z = np.zeros(1, dtype=np.uint8)
    rec = ModulationRecord("warm-up", np.zeros(1, dtype=np.int64), z, z)
    sift_counts(z, rec, rec, 3, 3)
    try:
        import labqfl.calibration  # noqa: F401  (the procedures the calibration panel runs)
    except ImportError:  # pragma: no cover - a GUI without the calibration package says so itself
        pass
    return time.perf_counter() - t0
