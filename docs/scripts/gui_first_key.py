"""Seconds from pressing Start on the GUI's Live tab to the first secure key (issue "Keys where
users look", deliverable 4).

Drives the same Qt-free core the Live tab drives (:class:`labqfl.gui.core.TestbedCore`): connect
the station, then ``start_distillation(None)`` (what Start does with the block-size field at its
default, the block-size rule), and records the wall time at which the first pair, and then every
pair, reports final key bits in its live metrics. The connect time is reported separately (the
user presses Connect before Start).

    .venv/bin/python docs/scripts/gui_first_key.py [--station FILE] [--timeout 180] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from labqfl.gui.core import TestbedCore  # noqa: E402

from labqfl.config import load_station_config  # noqa: E402


def measure(station: str | None, timeout_s: float) -> dict[str, object]:
    cfg = load_station_config(station)
    with tempfile.TemporaryDirectory() as tmp:
        core = TestbedCore(cfg, data_dir=Path(tmp) / "data", runs_dir=Path(tmp) / "runs")
        try:
            t0 = time.perf_counter()
            core.connect().result(300)
            t_connect = time.perf_counter() - t0
            t_start = time.perf_counter()
            core.start_distillation(None, "cascade")
            first: dict[str, float] = {}
            errors: list[str] = []
            deadline = t_start + timeout_s
            n_pairs = len(cfg.pairs())
            data_s = 0.0
            while time.perf_counter() < deadline and len(first) < n_pairs and not errors:
                for ev in core.drain():
                    if ev.kind == "error":
                        errors.append(str(ev.data))
                    elif ev.kind == "pairs":
                        data_s = float(ev.data["t_s"])
                        for name, m in ev.data["pairs"].items():
                            if m["final_key_bits"] > 0 and name not in first:
                                first[name] = time.perf_counter() - t_start
                time.sleep(0.05)
            core.stop_acquisition()
        finally:
            core.shutdown(60.0)
    return {
        "station": cfg.name, "connect_s": round(t_connect, 2),
        "first_key_s": round(min(first.values()), 2) if first else None,
        "all_pairs_key_s": round(max(first.values()), 2) if len(first) == n_pairs else None,
        "per_pair_s": {k: round(v, 2) for k, v in sorted(first.items())},
        "data_s_at_stop": round(data_s, 3), "errors": errors, "load_avg_1min": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--station", default=None, help="station file (default: the embedded station)")
    ap.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    a = ap.parse_args()
    r = measure(a.station, a.timeout)
    if a.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k}: {v}")
    return 0 if r["all_pairs_key_s"] is not None and not r["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
