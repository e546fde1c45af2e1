"""Numbers of docs/experiments.md §6: federated QNN accuracy against gate/readout noise and shots.

Each point is exactly what ``labqfl train --task T --clients N --q 8 --rounds R --keys csprng
--seed S --noise depolarizing=λ,amplitude_damping=λ,readout=λ [--shots K --shot-grad G]`` runs
(same data, model, local training, secure aggregation, seeds); the script loads each task's data
once and loops over the noise levels, because generating the ntangled states alone takes minutes
on the shared development machine.

Run: .venv/bin/python docs/scripts/noise_sweep.py --task magic --rounds 4 --levels 0,0.01,0.03,0.1,0.3
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from labqfl.fl.datasets.tasks import load_task
from labqfl.fl.keysource import make_key_source
from labqfl.fl.models.noisy import NoiseModel, noisy_qnn
from labqfl.fl.secure import SecAggConfig
from labqfl.fl.tasks import TASK_DEFAULTS, make_model
from labqfl.fl.training import LocalTrainConfig, run_federated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=("mnist-qnn", "ntangled", "magic"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--q", type=int, default=8)
    ap.add_argument("--levels", default="0,0.01,0.03,0.1,0.3",
                    help="λ values: each of --channels = λ")
    ap.add_argument("--channels", default="depolarizing,amplitude_damping,readout",
                    help="which noise parameters are set to λ (the others stay 0)")
    ap.add_argument("--shots", default="", help="comma-separated shot counts, run at every level (empty: exact)")
    ap.add_argument("--shot-grad", default="parameter-shift", choices=("parameter-shift", "straight-through"))
    ap.add_argument("--json", action="store_true", help="print all results as JSON at the end")
    a = ap.parse_args()
    torch.set_num_threads(1)

    d_ep, d_lr, d_bs, d_clip = TASK_DEFAULTS[a.task]
    local = LocalTrainConfig(epochs=d_ep, lr=d_lr, batch_size=d_bs)
    secagg = SecAggConfig(q=a.q, clip=d_clip, rounding="stochastic")
    t0 = time.perf_counter()
    data = load_task(a.task, a.clients, a.seed, samples_per_client=30, test_size=400)
    print(f"# {a.task}: data in {time.perf_counter() - t0:.0f} s; sizes {data.sizes()}, test {len(data.y_test)}",
          file=sys.stderr)
    shots_list: list[int | None] = [int(s) for s in a.shots.split(",") if s.strip()] or [None]
    results = []
    for lam in (float(x) for x in a.levels.split(",")):
        for shots in shots_list:
            chans = {c.strip(): lam for c in a.channels.split(",") if c.strip()}
            noise = NoiseModel(**chans, shots=shots, shot_grad=a.shot_grad)  # type: ignore[arg-type]
            model = noisy_qnn(make_model(a.task), noise, a.seed)
            t1 = time.perf_counter()
            res = run_federated(model, data, rounds=a.rounds, local=local, secagg=secagg,
                                key_source=make_key_source("csprng"), seed=a.seed)
            row = {"task": a.task, "lambda": lam, "channels": sorted(chans), "shots": shots,
                   "shot_grad": a.shot_grad if shots else None,
                   "initial_accuracy": res.initial_accuracy,
                   "accuracy": [m.test_accuracy for m in res.rounds],
                   "final_loss": res.rounds[-1].test_loss, "seconds": time.perf_counter() - t1,
                   "shots_used": model.shots_used}
            results.append(row)
            print(f"{a.task} {'+'.join(sorted(chans))} λ={lam:g} shots={shots or 'exact'}: acc {100 * res.initial_accuracy:.1f} → "
                  + " ".join(f"{100 * x:.1f}" for x in row["accuracy"])
                  + f" %, loss {row['final_loss']:.4f}, {row['seconds']:.0f} s", flush=True)
    if a.json:
        print(json.dumps(results, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))


if __name__ == "__main__":
    main()
