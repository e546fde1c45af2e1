"""Accuracy against ε: MNIST LeNet-5, many clients, distributed discrete Gaussian DP, with dropouts.

Each setting is what ``labqfl train --task mnist-lenet5 --clients N --q 32 --rounds R --keys csprng
--seed S --graph ring-k --k K --dp-epsilon E --dp-delta D --dp-honest H --dp-clip C`` runs (same
data, model, local training, :func:`labqfl.fl.dp.plan_dp`, :func:`labqfl.fl.secure.secure_round`),
plus dropouts: in every round a fresh random set of ⌈drop·N⌉ clients (seeded by the round) masks
its update and is lost before upload; its surviving partners reveal the pair keys, and the server
averages the survivors. Rows with H > 1 honest clients run without dropouts: labqfl refuses a DP
round with H > 1 that lacks any of the plan's N clients (a missing client may be an honest one whose
noise the plan counts on; docs/secure_aggregation.md §12). The script loads the data once and loops over the settings (``labqfl
train`` would reload the embedded MNIST set per run).

The ``no DP`` row uses the task's per-value clip and quantisation at the same q, graph and
dropouts. Self-masks are off by default (``--self-masks`` turns them on): they are removed exactly
and change no aggregate (``tests/fl/secure/test_selfmask.py``), so accuracy does not
depend on them; they only cost time and key.

Writes a figure (accuracy against ε, one line per H), a JSON of all numbers, and the table and
the exact settings between the markers ``<!-- dp-sweep:begin -->`` / ``<!-- dp-sweep:end -->`` of
docs/secure_aggregation.md.

Full sweep (issue 21):  .venv/bin/python docs/scripts/dp_epsilon_sweep.py --clients 200 --rounds 20 \
    --eps 1,4,16,64,256 --honest 1,half
Reduced (what fits ~10 min of CPU): see the settings recorded in docs/secure_aggregation.md §14.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labqfl.fl.datasets.tasks import load_task
from labqfl.fl.dp import DPConfig, plan_dp
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.secure import SecAggConfig, secure_round
from labqfl.fl.tasks import TASK_DEFAULTS, make_model
from labqfl.fl.training import LocalTrainConfig, run_federated

DOCS = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- dp-sweep:begin -->", "<!-- dp-sweep:end -->"


def dropping_round(drop: float, seed: int) -> Any:
    """``secure_round`` that loses ⌈drop·N⌉ random clients after masking, a fresh set each round."""

    def fn(updates: Any, weights: Any, cfg: Any, key_source: Any, *, round_index: int, rng: Any) -> Any:
        names = sorted(updates, key=lambda c: int(c[1:]))
        k = math.ceil(drop * len(names))
        lost = np.random.default_rng([seed, 77, round_index]).choice(names, k, replace=False).tolist() if k else []
        return secure_round(updates, weights, cfg, key_source, round_index=round_index, rng=rng, dropped=lost)

    return fn


def run_setting(model: Any, data: Any, local: LocalTrainConfig, secagg: SecAggConfig, a: argparse.Namespace,
                label: str) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_federated(model, data, rounds=a.rounds, local=local, secagg=secagg, key_source=CsprngKeySource(),
                        seed=a.seed, secure_round_fn=dropping_round(a.drop, a.seed))
    out = {"label": label, "accuracy": [m.test_accuracy for m in res.rounds], "initial_accuracy": res.initial_accuracy,
           "final_accuracy": res.final_test_accuracy, "best_accuracy": max(m.test_accuracy for m in res.rounds),
           "epsilon_spent": [m.privacy_epsilon_spent for m in res.rounds], "privacy": res.privacy,
           "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    print(f"# {label}: accuracy {[round(100 * x, 1) for x in out['accuracy']]} "
          f"({out['wall_s']:.0f} s wall, {out['cpu_s']:.0f} s CPU)", file=sys.stderr, flush=True)
    return out


def render(results: list[dict[str, Any]], a: argparse.Namespace, cmd: str, fig: Path) -> str:
    lines = [BEGIN, "",
             f"Run: `{cmd}` — {a.clients} clients, {a.rounds} round(s), {a.local_epochs} local epoch(s) "
             f"(Adam lr {a.lr}, batch 16), q = 32, ring-{a.k} mask graph, csprng masks, self-masks "
             f"{'on' if a.self_masks else 'off'}, ⌈{a.drop}·N⌉ = {math.ceil(a.drop * a.clients)} clients lost after "
             f"masking in every round (a fresh random set), DP L2 clip {a.dp_clip}, δ = {a.delta}, "
             f"embedded MNIST ({a.train_per_client} training images per client, {a.test_size:,} test images), "
             f"seed {a.seed}. "
             f"Machine: the shared 2-core development VM.", "",
             "| setting | ε reported (accountant) | σ/Δ₂ per client | accuracy per round | final | best |",
             "|---|---|---|---|---|---|"]
    for r in results:
        p = r["privacy"]
        eps = f"{p['epsilon']:.3g}" if p else "—"
        ratio = f"{p['noise_sigma_per_client'] / p['l2_sensitivity']:.3g}" if p else "—"
        accs = ", ".join(f"{100 * x:.1f}" for x in r["accuracy"])
        lines.append(f"| {r['label']} | {eps} | {ratio} | {accs} % | {100 * r['final_accuracy']:.1f} % | "
                     f"{100 * r['best_accuracy']:.1f} % |")
    cpu = ", ".join(f"{r['cpu_s']:.0f} s" for r in results)
    lines += ["", f"Initial accuracy (untrained model): {100 * results[0]['initial_accuracy']:.1f} %. "
              f"CPU time per setting: {cpu}.", "",
              f"![accuracy against ε]({fig.name})", "", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--eps", default="1,4,16,64,256", help="total ε over all rounds, comma-separated")
    ap.add_argument("--honest", default="1,half", help="H values: integers or 'half' (N/2)")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--dp-clip", type=float, default=1.0, help="L2 clip of each update")
    ap.add_argument("--drop", type=float, default=0.02, help="fraction of clients lost after masking per round")
    ap.add_argument("--k", type=int, default=8, help="ring-k mask graph")
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--self-masks", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip the no-DP row")
    ap.add_argument("--only", default="", help="run only these settings, e.g. '100:1,100:half'")
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/secure_aggregation.md")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cmd = "python docs/scripts/dp_epsilon_sweep.py " + " ".join(sys.argv[1:])

    task = "mnist-lenet5"
    _, _, bs, clip = TASK_DEFAULTS[task]
    local = LocalTrainConfig(epochs=a.local_epochs, lr=a.lr, batch_size=bs)
    t0 = time.perf_counter()
    data = load_task(task, a.clients, a.seed)
    model = make_model(task)
    print(f"# data in {time.perf_counter() - t0:.0f} s; {a.clients} clients, test {len(data.y_test)}", file=sys.stderr)
    a.train_per_client = int(np.median([len(y) for _, y in data.clients.values()]))
    a.test_size = len(data.y_test)
    base = SecAggConfig(q=32, clip=clip, rounding="stochastic", graph="ring-k", k=a.k, self_masks=a.self_masks)
    settings = [(float(e), a.clients // 2 if h == "half" else int(h)) for e in a.eps.split(",") for h in a.honest.split(",")]
    if a.only:
        want = {(float(e), a.clients // 2 if h == "half" else int(h)) for e, h in (x.split(":") for x in a.only.split(","))}
        settings = [s for s in settings if s in want]
    results = []
    if not a.no_baseline:
        results.append(run_setting(model, data, local, base, a, "no DP"))
    for eps, h in settings:
        plan = plan_dp(DPConfig(epsilon=eps, delta=a.delta, honest=h, l2_clip=a.dp_clip), n_params=model.n_params,
                       n_clients=a.clients, q=32, rounds=a.rounds)
        # A DP round with H > 1 honest clients needs every one of the plan's N clients (docs §12,
        # "Dropouts under DP"): such rows run without dropouts, and their label says so.
        a_h = a if h == 1 or a.drop == 0 else argparse.Namespace(**{**vars(a), "drop": 0.0})
        label = f"ε = {eps:g}, H = {h}" + ("" if a_h is a else " (no dropouts: refused with H > 1)")
        results.append(run_setting(model, data, local, dataclasses.replace(base, dp=plan), a_h, label))

    stem = DOCS / "secure_aggregation_dp_lenet5"
    Path(f"{stem}.json").write_text(json.dumps({"command": cmd, "args": vars(a), "results": results}, indent=1),
                                    encoding="utf-8")
    fig = Path(f"{stem}.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for h in sorted({p["privacy"]["honest_clients_assumed"] for p in results if p["privacy"]}):
        pts = sorted((r["privacy"]["epsilon"], r["final_accuracy"]) for r in results
                     if r["privacy"] and r["privacy"]["honest_clients_assumed"] == h)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=f"H = {h}")
    for r in results:
        if not r["privacy"]:
            ax.axhline(100 * r["final_accuracy"], color="grey", ls="--", label="no DP")
    ax.set_xscale("log")
    ax.set_xlabel(f"ε over {a.rounds} round(s) (δ = {a.delta:g})")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"LeNet-5, {a.clients} clients, {math.ceil(a.drop * a.clients)} lost per round", fontsize=9)
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(fig)
    print(f"# wrote {fig} and {stem}.json", file=sys.stderr)
    block = render(results, a, cmd, fig)
    if a.write_docs:
        md = DOCS / "secure_aggregation.md"
        text = md.read_text(encoding="utf-8")
        if BEGIN in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n## 14. Accuracy against ε: LeNet-5, many clients, dropouts\n\n" + block + "\n"
        md.write_text(text, encoding="utf-8")
        print(f"# wrote the table into {md}", file=sys.stderr)
    print(block)


if __name__ == "__main__":
    main()
