"""Coverage study of labqfl.calibration over seeds (the table in docs/calibration.md).

Usage, from the repository root with the package installed:

    .venv/bin/python docs/scripts/calibration_coverage.py NSEEDS [SET ...] [--out study.json]

SET: snspd, spad (the non-default test stations of tests/calibration/conftest.py), default, and
snspd0/spad0/default0/spadr (Type-B meter terms off; spadr also draws the gated dead times and
the loop length per seed). Prints, per quantity, coverage of ±1σ and ±1.96σ around the
simulator's true value, pull mean and sd. About 10–20 s per seed and set on one core.
"""
import json
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "calibration"))
from conftest import make_config, snspd_set, spad_set  # noqa: E402
from labqfl.calibration import (  # noqa: E402
    CalContext,
    channel_delays,
    dark_counts,
    dead_time_afterpulsing,
    efficiency,
    gate_delay,
    loop_visibility,
    timing_jitter,
    vpi_bias,
)

from labqfl.station import Station  # noqa: E402


def _typeb_off(data):
    # the simulated power meter and attenuators have no calibration error: switch the Type-B terms off
    data["power_meter"]["relative_uncertainty"] = 0.0

def spad_random(seed):
    """spad_set with the truths of quantised quantities drawn per seed (gated dead times uniform in
    [15, 75] ns, loop length +U(0, 1) m so the gate-delay optimum moves against the scan grid)."""
    rng = np.random.default_rng([seed, 77])
    def edit(data):
        spad_set(data)
        _typeb_off(data)
        data["detectors"]["D0"]["dead_time_ns"] = float(rng.uniform(15, 75))
        data["detectors"]["D1"]["dead_time_ns"] = float(rng.uniform(15, 75))
        data["loop"]["segments_km"][0] += float(rng.uniform(0, 1e-3))
    return edit

def with_typeb_off(base):
    def mk(seed):
        def edit(data):
            if base is not None:
                base(data)
            _typeb_off(data)
        return edit
    return mk

SETS = {"snspd": lambda s: snspd_set, "spad": lambda s: spad_set, "default": lambda s: None,
        "snspd0": with_typeb_off(snspd_set), "spad0": with_typeb_off(spad_set), "spadr": spad_random,
        "default0": with_typeb_off(None)}
ATT_UNC = {"snspd0": 0.0, "spad0": 0.0, "spadr": 0.0, "default0": 0.0}

def run_seed(edit, seed, att_unc=0.02):
    st = Station(make_config(edit, seed))
    ctx = CalContext(st, seed=seed)
    out = []
    try:
        for fn in (lambda: dead_time_afterpulsing(ctx, n_intervals=60_000),
                   lambda: dark_counts(ctx, integration_s=1.0, sweep_integration_s=0.5),
                   lambda: gate_delay(ctx),
                   lambda: timing_jitter(ctx, duration_s=0.02),
                   lambda: efficiency(ctx, duration_s=0.1, attenuation_uncertainty_db=att_unc),
                   lambda: channel_delays(ctx, fine_duration_s=0.02),
                   lambda: vpi_bias(ctx, ["C2", "C3"], n_points=21, integration_s=0.005),
                   lambda: loop_visibility(ctx, n_points=16, point_duration_s=0.03)):
            try:
                r = fn()
            except Exception as exc:
                out.append(("ERROR", str(exc)[:200]))
                continue
            for q in r.quantities:
                if q.true is not None:
                    out.append((q.name, float(q.value), float(q.uncertainty), float(q.true)))
    finally:
        st.close()
    return out

def summarise(rows):
    p = np.array([(v - t) / e for v, e, t in rows])
    return {"n": len(p), "cov1": float(np.mean(np.abs(p) < 1)), "cov196": float(np.mean(np.abs(p) < 1.96)),
            "mean": float(p.mean()), "sd": float(p.std(ddof=1)) if len(p) > 1 else float("nan"),
            "frac_lt_0.3": float(np.mean(np.abs(p) < 0.3)), "max_abs": float(np.abs(p).max())}

def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_path = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    if out_path in args:
        args.remove(out_path)
    n = int(args[0])
    sets = args[1:] or ["snspd", "spad"]
    data = defaultdict(list)
    errors = []
    t0 = time.time()
    for s in sets:
        for seed in range(1000, 1000 + n):
            for row in run_seed(SETS[s](seed), seed, ATT_UNC.get(s, 0.02)):
                if row[0] == "ERROR":
                    errors.append((s, seed, row[1]))
                    continue
                name, v, e, t = row
                data[f"{s}:{name}"].append((v, e, t))
    print(f"# {n} seeds, sets {sets}, {time.time()-t0:.0f} s; errors {len(errors)}")
    for e in errors[:10]:
        print("# ERR", e)
    print(f"{'quantity':34s} {'n':>4s} {'cov1':>6s} {'cov1.96':>7s} {'mean':>7s} {'sd':>6s} {'<0.3':>5s} {'max':>6s}")
    summ = {}
    for k in sorted(data):
        s = summarise(data[k])
        summ[k] = s
        print(f"{k:34s} {s['n']:4d} {s['cov1']:6.2f} {s['cov196']:7.2f} {s['mean']:+7.2f} {s['sd']:6.2f} {s['frac_lt_0.3']:5.2f} {s['max_abs']:6.1f}")
    if out_path:
        json.dump({"summary": summ, "rows": data, "errors": errors}, open(out_path, "w"))

if __name__ == "__main__":
    main()
