"""Coverage of the detector calibration over detector families with parameters drawn at random
(the "detector families" table in docs/calibration.md; issue 19).

Usage, from the repository root with the package installed:

    .venv/bin/python docs/scripts/calibration_detector_families.py NSEEDS [FAMILY ...] [--quick]
        [--master N] [--out study.json]

FAMILY: snspd, spad_gated, spad_free (``draw_detector_family`` of tests/calibration/conftest.py:
SNSPDs with 10–100 ns dead time; InGaAs SPADs with 1–25 µs dead time, gated and free-running).
Station k of a family is drawn from ``np.random.default_rng([master, k, family index])`` (master
19 by default; the CI test tests/calibration/test_families.py draws from master 1919) and
calibrated with ``run_group(ctx, "detector")`` as ``labqfl calibrate detector`` does (gate delay, dead
time/afterpulsing, dark counts, jitter, efficiency, a failure recorded and the rest run; ``--quick``: the CI test's shorter
acquisitions). Prints per family and quantity: n, coverage of ±1σ and ±1.96σ, pull mean and sd,
the share of |pull| < 0.3 and the largest |pull|; failures are listed. Gated dead time and gate
delay carry uniform (Type-B) errors, so their |pull| ≤ √3 (sd 1 for a truth uniform in the interval).
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
from conftest import FAMILIES, draw_detector_family, make_config  # noqa: E402
from labqfl.calibration import CalContext  # noqa: E402
from labqfl.calibration.runner import run_group  # noqa: E402

from labqfl.station import Station  # noqa: E402


def run_station(family: str, master: int, k: int, quick: bool) -> tuple[list[tuple[str, float, float, float]], list[str]]:
    rng = np.random.default_rng([master, k, FAMILIES.index(family)])
    edit = draw_detector_family(family, rng)
    seed = int(rng.integers(1, 2**31))
    st = Station(make_config(edit, seed))
    rows, errors = [], []
    try:
        ctx = CalContext(st, seed=seed)
        failures: list = []
        results = run_group(ctx, "detector", quick=quick, failures=failures)  # as `labqfl calibrate detector`
        errors += [f"{family} #{k} {f.procedure}: {f.message[:200]}" for f in failures]
        for r in results:
            for q in r.quantities:
                if q.true is not None:
                    rows.append((q.name.split(".", 1)[1], float(q.value), float(q.uncertainty), float(q.true)))
    finally:
        st.close()
    return rows, errors


def summarise(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    p = np.array([(v - t) / e for v, e, t in rows])
    return {"n": len(p), "cov1": float(np.mean(np.abs(p) < 1)), "cov196": float(np.mean(np.abs(p) < 1.96)),
            "mean": float(p.mean()), "sd": float(p.std(ddof=1)) if len(p) > 1 else float("nan"),
            "frac_lt_0.3": float(np.mean(np.abs(p) < 0.3)), "max_abs": float(np.abs(p).max())}


def main() -> None:
    argv = sys.argv[1:]
    quick = "--quick" in argv
    opts = {}
    for flag in ("--master", "--out"):
        if flag in argv:
            i = argv.index(flag)
            opts[flag] = argv[i + 1]
            del argv[i:i + 2]
    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0])
    families = args[1:] or list(FAMILIES)
    master = int(opts.get("--master", 19))
    data: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    errors: list[str] = []
    t0 = time.time()
    for fam in families:
        for k in range(n):
            rows, errs = run_station(fam, master, k, quick)
            errors += errs
            for name, v, e, t in rows:
                data[f"{fam}:{name}"].append((v, e, t))
    print(f"# {n} stations per family, families {families}, master {master}, quick {quick}, "
          f"{time.time() - t0:.0f} s; failures {len(errors)}")
    for e in errors:
        print("# FAIL", e)
    print(f"{'quantity':34s} {'n':>4s} {'cov1':>6s} {'cov1.96':>7s} {'mean':>7s} {'sd':>6s} {'<0.3':>5s} {'max':>6s}")
    summ = {}
    for k in sorted(data):
        s = summarise(data[k])
        summ[k] = s
        print(f"{k:34s} {s['n']:4d} {s['cov1']:6.2f} {s['cov196']:7.2f} {s['mean']:+7.2f} {s['sd']:6.2f} "
              f"{s['frac_lt_0.3']:5.2f} {s['max_abs']:6.1f}")
    if "--out" in opts:
        Path(opts["--out"]).write_text(json.dumps({"summary": summ, "rows": data, "errors": errors}))


if __name__ == "__main__":
    main()
