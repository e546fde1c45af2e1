"""Jitter pulls on SNSPD stations drawn at random (docs/calibration.md, issue 19).

Usage, from the repository root with the package installed:

    .venv/bin/python docs/scripts/calibration_jitter_snspd.py NSTATIONS

Station k: laser 100 MHz – 1.25 GHz, pulse width 5–60 ps, laser jitter 0.5–5 ps; per detector
τ_d 10–100 ns, P_ap 0 or 0–5 %, τ_ap 5–200 ns, jitter 15–100 ps, 10–1000 Hz, η 0.6–0.9 (drawn from
``np.random.default_rng([k, 19])``). Runs ``timing_jitter`` with its defaults and prints the pull
mean, sd and the share within 1.96σ, then the largest pulls with (pull, rep rate [MHz], τ_d [ns],
(τ_d mod T)/T, P_ap, τ_ap [ns], jitter [ps], clicks).
"""
import sys
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "calibration"))
from conftest import make_config  # noqa: E402
from labqfl.calibration import CalContext, timing_jitter  # noqa: E402

from labqfl.station import Station  # noqa: E402


def main() -> None:
    n = int(sys.argv[1])
    rows = []
    for seed in range(n):
        rng = np.random.default_rng([seed, 19])
        rep = float(rng.choice([100e6, 250e6, 500e6, 1e9, 1.25e9]))
        par: dict[str, dict[str, float]] = {}

        def edit(data: dict, rng: np.random.Generator = rng, rep: float = rep, par: dict = par) -> None:
            data["laser"]["rep_rate_hz"] = rep
            data["laser"]["pulse_width_ps"] = float(rng.uniform(5, 60))
            data["laser"]["timing_jitter_ps"] = float(rng.uniform(0.5, 5))
            for d in ("D0", "D1"):
                p = dict(dead_time_ns=float(rng.uniform(10, 100)),
                         afterpulse_prob=float(rng.choice([0, rng.uniform(0, 0.05)])),
                         afterpulse_decay_ns=float(rng.uniform(5, 200)), jitter_ps=float(rng.uniform(15, 100)),
                         dark_count_rate_hz=float(10 ** rng.uniform(1, 3)), efficiency=float(rng.uniform(0.6, 0.9)))
                data["detectors"][d].update(p)
                par[d] = p

        st = Station(make_config(edit, 100 + seed))
        try:
            r = timing_jitter(CalContext(st, seed=seed))
            for q in r.quantities:
                d = q.name[:2]
                p = par[d]
                rows.append((q.pull, rep / 1e6, p["dead_time_ns"], (p["dead_time_ns"] * 1e3) % (1e12 / rep) / (1e12 / rep),
                             p["afterpulse_prob"], p["afterpulse_decay_ns"], p["jitter_ps"], r.raw[d]["clicks"]))
        except Exception as exc:
            print("# FAIL", seed, str(exc)[:160])
        finally:
            st.close()
    a = np.array(rows)
    print(f"n {len(a)} mean {a[:, 0].mean():+.2f} sd {a[:, 0].std(ddof=1):.2f} "
          f"within 1.96σ {np.mean(np.abs(a[:, 0]) < 1.96):.2f}")
    for r in a[np.argsort(-np.abs(a[:, 0]))][:8]:
        print(" ".join(f"{x:9.4g}" for x in r))


if __name__ == "__main__":
    main()
