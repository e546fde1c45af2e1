"""Pulls (value − truth) / uncertainty of one test station's calibration over N simulation seeds.

    python docs/scripts/calibration_pulls.py spad1us|spad_set|snspd_delay N [--epochs-only]

``spad1us``: the 1 µs gated InGaAs SPAD of tests/calibration/test_families.py (0.5 ns gates, 150 ps
jitter, η 0.1; ``detector_all`` in its quick form); ``spad_set``: the 50 MHz gated SPAD station of
tests/calibration/conftest.py (``detector_all``, quick); ``snspd_delay``: the SNSPD station's
``channel_delays`` (fine stage 0.02 s), as in test_recovery.py. Run k < N uses ``simulation.seed`` =
the test's seed + k (k = 0: the test's own station) and pins ``simulation.qrng_epoch_base`` to
(k + 1)·2^34. Prints per quantity the mean and sd of the pulls, the largest |pull|, how many lie
beyond 3σ, and the mean deviation and uncertainty in the quantity's unit.

``--epochs-only`` keeps the test's seed and varies only the epoch base, as this script did before
2026-12-05. That is not a sample of independent runs: the testbed draws its channel and detector
randomness (dark counts, jitter, afterpulses) from (seed, acquisition index), never from the epoch base,
which only moves the clients' QRNG choices. The runs then share one realisation of the detector noise,
and its fluctuation shows as a "bias" of every run (D1's jitter on spad_set: pull mean +0.96, sd 0.81
over 20 bases; over 40 seeds +0.07, sd 0.99).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from labqfl.calibration import channel_delays, detector_all  # noqa: E402

from labqfl.station import Station  # noqa: E402
from tests.calibration.conftest import ctx_for, make_config, snspd_set, spad_set  # noqa: E402
from tests.calibration.test_families import _ingaas  # noqa: E402


def main(which: str, n: int, epochs_only: bool = False) -> None:
    if which == "spad1us":
        def station(d: dict) -> None:
            _ingaas(d, dead_ns=1000.0, gated=True, gate_ns=0.5, jitter_ps=150.0, efficiency=0.1)
        seed, ctx_seed = 5, 1
    elif which == "spad_set":
        station, seed, ctx_seed = spad_set, 11, 0
    elif which == "snspd_delay":
        station, seed, ctx_seed = snspd_set, 5, 0
    else:
        raise SystemExit(f"unknown station {which!r}; expected spad1us, spad_set or snspd_delay")
    dev: dict[str, list[tuple[float, float]]] = {}
    for k in range(n):
        def edit(d: dict, base: int = (k + 1) << 34) -> None:
            station(d)
            d["simulation"]["qrng_epoch_base"] = base
        st = Station(make_config(edit, seed if epochs_only else seed + k))
        try:
            ctx = ctx_for(st, ctx_seed)
            res = [channel_delays(ctx, fine_duration_s=0.02)] if which == "snspd_delay" else detector_all(ctx, quick=True)
            for r in res:
                for q in r.quantities:
                    if q.true is not None:
                        dev.setdefault(q.name, []).append((float(q.value) - float(q.true), float(q.uncertainty)))
        finally:
            st.close()
    for name, v in dev.items():
        a = np.asarray(v)
        p = a[:, 0] / a[:, 1]
        print(f"{name:24s} n={p.size} pull mean {p.mean():+.2f} sd {p.std(ddof=1) if p.size > 1 else 0.0:.2f} "
              f"max|p| {np.abs(p).max():.2f} beyond 3σ: {int((np.abs(p) > 3).sum())} "
              f"deviation {a[:, 0].mean():+.3g} uncertainty {a[:, 1].mean():.3g}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), epochs_only="--epochs-only" in sys.argv[3:])
