"""Numbers of docs/protocol.md §5.1: what a stopping-time block would cost, and the key of fixed-slot blocks.

1. Union bound over K possible stopping points (each Kato bound at ε_PE/K, ε_PA unchanged) against
   fixed-N blocks, predicted with the station model (`keyrate.predict_pair`, default station).
2. Total final key of one recording of the small test station distilled with fixed-slot blocks
   (`DistillSettings(block_bits=...)` → block_slots from the model), ε_sec = 1e-4.

Run: .venv/bin/python docs/scripts/fixed_block_cost.py [--recording rec.h5]
(without --recording, 0.5 s of the small test station are recorded into a temporary folder).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from labqfl.config import load_station_config
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.keyrate import predict_pair, station_pair_channel
from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink


def union_bound_cost() -> None:
    cfg = load_station_config()
    base = SecurityParameters()
    for pair in (("C1", "C4"), ("C2", "C3")):
        ch = station_pair_channel(cfg, pair)
        for n in (1e9, 1e10):
            ref = predict_pair(ch, n, len(cfg.pairs()), cfg.laser.rep_rate_hz, params=base).report.key_length_bits
            row = [f"{pair[0]}-{pair[1]} N={n:.0e}: fixed N {ref} bits"]
            for k in (1e3, 1e6):
                epa, epe = base.eps_pa, base.eps_pe / k
                p = SecurityParameters(eps_sec=math.sqrt(2 * (epa + epe)), eps_pa_fraction=epa / (epa + epe))
                ell = predict_pair(ch, n, len(cfg.pairs()), cfg.laser.rep_rate_hz, params=p).report.key_length_bits
                row.append(f"K={k:.0e}: {ell} ({100 * (ell / ref - 1):+.2f} %)")
            print("; ".join(row))


def recording_key(path: Path) -> None:
    from labqfl.sim_backends.recording import read_recording

    for bb in (20_000, 50_000, 200_000):
        with read_recording(path) as rec:
            cfg = rec.config
            d = Distiller(cfg, {c: rec.client_log(c) for c in cfg.client_names}, MemorySink(),
                          DistillSettings(block_bits=bb, params=SecurityParameters(eps_sec=1e-4)))
            for b in rec.blocks():
                d.push(b)
            for name, r in d.finish(int(rec.duration_s * cfg.laser.rep_rate_hz)).items():
                print(f"block_bits={bb}: {name} block_slots={r.block_slots} blocks={len(r.blocks)} "
                      f"sifted={r.sifted_bits} dropped={r.dropped_bits} final={r.final_key_bits}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recording", type=Path, default=None)
    args = ap.parse_args()
    union_bound_cost()
    if args.recording is not None:
        recording_key(args.recording)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "qkd_pipeline"))
    from qkdpp_helpers import record_small_station

    with tempfile.TemporaryDirectory() as tmp:
        recording_key(record_small_station(Path(tmp), 0.5))


if __name__ == "__main__":
    main()
