"""Per-round overhead of federated training over node processes (issue 18 item 3).

Starts the server node and one SuperNode per client (:class:`labqfl.nodes.fl.FlNetwork`, as
``labqfl run``'s default path does), trains mnist-qnn over Flower with csprng keys (no key stores
needed; the qkd path differs only inside the ClientApp) and prints the wall time of the Flower run
(``ctl/train``), the seconds per round and each stage's seconds per round (the ServerApp's
``stage_seconds``). Every run uses fresh processes.

    .venv/bin/python docs/scripts/flower_round_overhead.py --clients 4 --rounds 5 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _mnist_cache(folder: Path) -> str:
    from labqfl.fl.datasets.mnist import load_embedded_mnist

    mn = load_embedded_mnist()
    np.savez(folder / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    return str(folder)


def one_run(clients: int, rounds: int, keep: str = "") -> dict[str, object]:
    from labqfl.fl.flower.spec import FlowerSpec
    from labqfl.nodes.fl import FlNetwork

    names = [f"C{i + 1}" for i in range(clients)]
    with tempfile.TemporaryDirectory(prefix="labqfl-bench-") as tmp:
        work = Path(keep or tmp)
        data = work / "mnist"
        data.mkdir(parents=True)
        spec = FlowerSpec.for_task("mnist-qnn", clients=clients, rounds=rounds, keys="csprng", q=8,
                                   stage_timeout_s=120.0, data_dir=_mnist_cache(data))
        t0 = time.perf_counter()
        net = FlNetwork(work / "fl", None, names, work / "data")
        net.start()
        start_s = time.perf_counter() - t0
        try:
            res = net.train(spec.to_config(), timeout_s=600)
        finally:
            t1 = time.perf_counter()
            codes = net.stop()
            stop_s = time.perf_counter() - t1
    fl = res.get("flower") or []
    stages: dict[str, list[float]] = {}
    for rd in fl:
        for k, v in (rd.get("stage_seconds") or {}).items():
            stages.setdefault(k, []).append(float(v))
    return {"wall_s": round(float(res["wall_s"]), 2), "start_s": round(start_s, 2), "stop_s": round(stop_s, 2),
            "rounds": len(fl), "stage_mean_s": {k: round(statistics.mean(v), 3) for k, v in stages.items()},
            "round_s": [round(sum((rd.get("stage_seconds") or {}).values()), 2) for rd in fl],
            "exit_codes": codes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keep", default="", help="run in this folder and keep the nodes' logs there")
    a = ap.parse_args()
    for _ in range(a.repeat):
        print(json.dumps(one_run(a.clients, a.rounds, a.keep)), flush=True)


if __name__ == "__main__":
    main()
