"""Cost of the top-up planner as `labqfl run` calls it (docs/scaling.md, "The top-up planner's cost").

In a fresh process: ``warm`` makes the run's plan first (``make_plan`` at the run's --duration, as
``labqfl run`` does before any top-up), ``cold`` does not (it reads the pairs from the plan a
``warm`` run saved next to the station file). Then ``plan_top_up`` for the 8 slowest graph pairs,
short by one or two rounds, and ``plan_blocks`` for the whole station at the chosen duration (what
the top-up's ``DistillSession.open`` does next). Prints one JSON line: wall and CPU seconds of each
step, the chosen duration and the predicted key per short pair, the load average.

    python docs/scripts/scaling_top_up_planner_cost.py STATION warm|cold Q ROUNDS DURATION K

To compare with older code, run it with ``PYTHONPATH`` set to a copy of that tree
(``git archive <commit> labqfl | tar -x -C DIR``), alternating with the current tree; ``CODE`` in
the environment labels the line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import labqfl.planning as P
from labqfl.config import load_station_config
from labqfl.qkd.blocksize import plan_blocks
from labqfl.qkd.estimation import SecurityParameters


def main() -> None:
    st, mode, q, rounds, dur, k = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
                                   int(sys.argv[6]))
    cfg = load_station_config(st)
    saved = f"{st}.plan_q{q}r{rounds}.json"
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "warm":
        plan = P.make_plan(cfg, "mnist-qnn", q, rounds, graph="ring-k", k=k, duration_s=dur).as_dict()
        with open(saved, "w") as f:
            json.dump(plan, f)
    else:
        with open(saved) as f:
            plan = json.load(f)
    t_plan, cpu_plan = time.perf_counter() - t0, time.process_time() - c0
    pairs = plan["pairs"]
    slow = sorted(pairs, key=lambda n: pairs[n]["key_rate_bps"])[:8]
    need = pairs[slow[0]]["need_bits_per_round"]
    deficit = {n: need * (1 + i % 2) - 100 * i for i, n in enumerate(slow)}  # the same for every code version
    t1, c1 = time.perf_counter(), time.process_time()
    tp = P.plan_top_up(cfg, deficit)
    t_top, cpu_top = time.perf_counter() - t1, time.process_time() - c1
    t2, c2 = time.perf_counter(), time.process_time()
    plan_blocks(cfg, tp.duration_s, params=SecurityParameters(eps_sec=1e-10))
    t_rule, cpu_rule = time.perf_counter() - t2, time.process_time() - c2
    print(json.dumps({"code": os.environ.get("CODE"), "mode": mode, "station": st,
                      "plan_s": round(t_plan, 2), "plan_cpu_s": round(cpu_plan, 2),
                      "top_up_wall_s": round(t_top, 3), "top_up_cpu_s": round(cpu_top, 3),
                      "rule_wall_s": round(t_rule, 3), "rule_cpu_s": round(cpu_rule, 3),
                      "duration_s": tp.duration_s, "predicted": {p: round(v, 6) for p, v in tp.predicted_key_bits.items()},
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
