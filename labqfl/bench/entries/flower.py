"""Benchmark ``flower``: labqfl's masked aggregation on Flower vs Flower's own SecAgg+ workflow.

Both run as Flower simulations on the Ray backend with the same model, the same clients and the
same local training (:func:`labqfl.fl.flower.client.train_update`). Figures per round: wall time
of the round (all stages, client compute included) and bytes per client (content of every message
to and from the client, as Flower serialises it). Baseline: ``SecAggPlusWorkflow`` (Flower's
defaults: clipping 8, quantisation 2^22, modulus 2^32) with ``secaggplus_mod`` on the clients,
``num_shares`` = k + 1 neighbours (the same sparse graph size as labqfl's ring-k),
reconstruction threshold ⌈num_shares/2⌉. Both sides are timed after a warm-up message that makes
every ClientApp load its data (labqfl's setup stage; a ``query`` message for SecAgg+). Quick mode: mnist-qnn (24 parameters), 4 clients,
1 round; full mode: LeNet-5 (61,706 parameters), 20 clients, ring-8, 2 rounds.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

from labqfl.bench import BenchResult, benchmark


class _CountingGrid:
    """Wraps a Flower Grid; counts serialised content bytes to (down) and from (up) each node."""

    def __init__(self, grid: Any) -> None:
        self._g = grid
        self.up: dict[int, int] = {}
        self.down: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._g, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        from labqfl.fl.flower.server import message_bytes

        msgs = list(messages)
        for m in msgs:
            self.down[m.metadata.dst_node_id] = self.down.get(m.metadata.dst_node_id, 0) + message_bytes(m)
        reps = list(self._g.send_and_receive(msgs, timeout=timeout))
        for r in reps:
            if not r.has_error():
                self.up[r.metadata.src_node_id] = self.up.get(r.metadata.src_node_id, 0) + message_bytes(r)
        return reps


def _secaggplus(spec: Any, num_cpus: int) -> dict[str, float]:
    """Flower SecAgg+ (legacy FedAvg strategy + SecAggPlusWorkflow) on Ray; per-round figures."""
    from flwr.app import Context
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    from labqfl.fl.flower.client import train_update
    from labqfl.fl.flower.engine import ray_backend_config

    model = spec.model()
    p0 = model.init_params(spec.seed)

    class _Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.name = name

        def get_properties(self, config: Any) -> Any:  # warm-up: load the data as labqfl's setup does
            return {"num_examples": len(spec.data().clients[self.name][1])}

        def fit(self, parameters: Any, config: Any) -> Any:
            g = np.asarray(parameters[0], dtype=np.float64)
            upd, n_ex, _ = train_update(spec, self.name, g, int(config.get("round", 1)) if config else 1)
            return [g + upd], n_ex, {}

    def client_fn(context: Context) -> Any:
        return _Client(f"C{int(context.node_config['partition-id']) + 1}").to_client()

    out: dict[str, float] = {}
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=spec.clients,
                      min_available_clients=spec.clients, initial_parameters=ndarrays_to_parameters([p0]))
    app = ServerApp()
    k = spec.secagg().k or spec.clients - 1

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cg = _CountingGrid(grid)
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=spec.rounds), strategy=strategy)
        wf = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=min(k + 1, spec.clients),
                                                             reconstruction_threshold=max(2, (k + 2) // 2)))
        from flwr.app import Message, RecordDict

        while len(list(grid.get_node_ids())) < spec.clients:
            time.sleep(0.2)
        # warm-up (as labqfl's setup stage): every ClientApp loads its data once before timing
        grid.send_and_receive([Message(RecordDict(), dst_node_id=n, message_type="query")
                               for n in grid.get_node_ids()])
        t0 = time.perf_counter()
        wf(cg, ctx)  # type: ignore[arg-type]
        out["round_s"] = (time.perf_counter() - t0) / spec.rounds
        out["up_bytes"] = float(np.mean(list(cg.up.values()))) / spec.rounds
        out["down_bytes"] = float(np.mean(list(cg.down.values()))) / spec.rounds

    run_simulation(server_app=app, client_app=ClientApp(client_fn=client_fn, mods=[secaggplus_mod]),
                   num_supernodes=spec.clients, backend_name="ray",
                   backend_config=ray_backend_config(num_cpus))  # type: ignore[arg-type]
    return out


def _labqfl(spec: Any, num_cpus: int) -> dict[str, float]:
    from labqfl.fl.flower.engine import run_simulation

    _, rounds, _ = run_simulation(spec, num_cpus=num_cpus)
    return {"round_s": float(np.mean([sum(f.stage_seconds.values()) for f in rounds])),
            "up_bytes": float(np.mean([f.upload_bytes_per_client for f in rounds])),
            "down_bytes": float(np.mean([f.download_bytes_per_client for f in rounds]))}


@benchmark("flower", "labqfl masked aggregation on Flower (Ray simulation) vs Flower's SecAgg+ workflow, "
           "same model and clients: time per round and bytes per client",
           target="time per round ≤ SecAgg+'s; upload bytes per client ≤ SecAgg+'s")
def _flower(quick: bool) -> BenchResult:
    from labqfl.fl.flower.spec import FlowerSpec

    if quick:
        spec = FlowerSpec.for_task("mnist-qnn", clients=4, q=16, rounds=1, keys="csprng", seed=0)
    else:
        spec = FlowerSpec.for_task("mnist-lenet5", clients=20, q=16, rounds=2, keys="csprng", seed=0,
                                   graph="ring-8")
    ncpu = os.cpu_count() or 1
    ours = _labqfl(spec, ncpu)
    base = _secaggplus(spec, ncpu)
    return BenchResult(
        figure=ours["round_s"], unit="s/round", baseline="Flower SecAgg+ (SecAggPlusWorkflow + secaggplus_mod)",
        baseline_figure=base["round_s"], higher_is_better=False,
        target="time per round ≤ SecAgg+'s; upload bytes per client ≤ SecAgg+'s",
        passed=bool(ours["round_s"] <= base["round_s"] and ours["up_bytes"] <= base["up_bytes"]),
        details={"task": spec.task, "n_params": spec.model().n_params, "clients": spec.clients, "rounds": spec.rounds,
                 "q": spec.q, "graph": spec.secagg().graph if spec.secagg().graph == "all" else f"ring-{spec.secagg().k}",
                 "labqfl": ours, "secaggplus": base, "machine": f"{platform.machine()}, {ncpu} CPU(s)"})
