"""First-use work happens while the station connects, not on a worker thread during a run.

In a fresh interpreter (the test process has long imported everything), a first calibration
after Connect must import no matplotlib or Numba module (the GIL-holding imports that froze the
window, :mod:`labqfl.gui.workers.warmup`), the calibration plots must not go through pyplot, and a
first Start with live distillation must load no compiled kernel that Connect did not (on an empty
Numba cache each would be compiled there: a first Start showed its first rates after 32 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: A fresh interpreter with a 2-client station connected (the warm-up runs inside the connect).
CONNECTED = textwrap.dedent("""
    import gc, json, sys, time
    from pathlib import Path
    from labqfl.gui.core import TestbedCore
    from labqfl.sim_backends.stations import edit_station

    def edit(d):
        d["simulation"]["block_duration_s"] = 0.002
        d["name"] = "warm-up-test"

    tmp = Path(sys.argv[1])
    core = TestbedCore(edit_station(edit, n_clients=2), data_dir=tmp / "data", runs_dir=tmp / "runs")
    core.connect().result(300)
    deadline = time.monotonic() + 120
""")

CALIBRATION = CONNECTED + textwrap.dedent("""
    before = set(sys.modules)
    core.run_calibration("visibility")
    while core.busy("calibration") and time.monotonic() < deadline:
        time.sleep(0.05)
    events = core.drain()
    core.shutdown(20)
    print(json.dumps({"new": sorted(set(sys.modules) - before), "pyplot": "matplotlib.pyplot" in sys.modules,
                      "errors": [str(e.data) for e in events if e.kind == "error"],
                      "results": [e.data["procedure"] for e in events if e.kind == "calibration_result"],
                      "plots": [p for e in events if e.kind == "calibration_result" for p in e.data["plots"]]}))
""")


def _run(script: str, tmp: Path) -> dict:  # type: ignore[type-arg]
    tmp.mkdir()
    out = subprocess.run([sys.executable, "-c", script, str(tmp)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_first_calibration_after_connect_imports_no_plotting_or_compiler_modules(tmp_path: Path) -> None:
    # A first process fills Numba's on-disk cache with the procedure's own kernels (a clean clone has
    # none; the warm-up at Connect covers the acquisition and distillation path, not every procedure).
    _run(CALIBRATION, tmp_path / "fill-cache")
    r = _run(CALIBRATION, tmp_path / "measured")
    assert r["errors"] == [] and r["results"] == ["visibility"]
    late = [m for m in r["new"] if m.split(".")[0] in ("matplotlib", "numba", "llvmlite")]
    assert late == [], f"imported by the calibration thread instead of at connect: {late[:10]}"
    assert not r["pyplot"], "calibration plots went through pyplot (global state shared by threads)"
    assert r["plots"] and all(Path(p).suffix == ".png" and Path(p).stat().st_size > 1000 for p in r["plots"])


def test_a_failing_warm_up_does_not_fail_the_connect(core, events, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import labqfl.gui.workers.station as station

    def broken(*args: object, **kwargs: object) -> float:
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(station, "warm_up", broken)
    core.connect().result(120)
    events.wait(lambda: events.kinds("connected"))
    assert core.station is not None and not events.kinds("error")


LIVE = CONNECTED + textwrap.dedent("""
    from numba.core.dispatcher import Dispatcher

    def loaded():
        return {f"{d.py_func.__module__}.{d.py_func.__qualname__}{sig}" for d in gc.get_objects()
                if isinstance(d, Dispatcher) for sig in d.overloads}

    before = loaded()
    core.start_acquisition(distill={"block_bits": None, "engine": "cascade"})
    events = []
    while not {"rates", "pairs"} <= {e.kind for e in events} and time.monotonic() < deadline:
        events += core.drain()
        time.sleep(0.05)
    core.stop_acquisition()
    while (core.busy("acquisition") or core.busy("distillation")) and time.monotonic() < deadline:
        time.sleep(0.05)
    events += core.drain()
    core.shutdown(20)
    print(json.dumps({"new": sorted(loaded() - before), "kinds": sorted({e.kind for e in events}),
                      "errors": [str(e.data) for e in events if e.kind == "error"]}))
""")


def test_a_first_start_with_live_distillation_loads_no_kernel_the_connect_did_not(tmp_path: Path) -> None:
    r = _run(LIVE, tmp_path / "live")
    assert r["errors"] == [] and {"rates", "pairs"} <= set(r["kinds"])
    assert r["new"] == [], f"loaded (or, on an empty cache, compiled) at the first Start: {r['new'][:8]}"
