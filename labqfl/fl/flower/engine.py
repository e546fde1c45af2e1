"""Entry points of the Flower engine: Ray simulation and the deployable apps.

- :func:`run_simulation` — ``flwr.simulation.run_simulation`` on the Ray backend: the ServerApp
  runs in a thread of this process, each virtual SuperNode's ClientApp in Ray worker processes.
- :func:`make_server_app` — a ServerApp for a given spec (simulation) and :data:`server_app` /
  :data:`client_app` in :mod:`labqfl.fl.flower.app` for a deployment (spec from the run config).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from labqfl.errors import ConfigError
from labqfl.fl.flower.client import make_client_app
from labqfl.fl.flower.server import FlowerRound, LabqflServer
from labqfl.fl.flower.spec import FlowerSpec


def make_server_app(spec: FlowerSpec, sink: dict[str, Any],
                    on_round: Callable[[FlowerRound, np.ndarray], None] | None = None,
                    progress: Callable[[Any], None] | None = None) -> ServerApp:
    """A ServerApp that runs ``spec`` and stores the result in ``sink["result"]`` (and the
    per-round Flower records in ``sink["rounds"]``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        srv = LabqflServer(spec, on_round=on_round, progress=progress)
        sink["rounds"] = srv.rounds
        sink["result"] = srv.run(grid)

    return app


def ray_backend_config(num_cpus: int | None = None, cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Ray backend settings: ``num_cpus`` for the local Ray cluster (default: all cores)."""
    n = num_cpus or os.cpu_count() or 1
    return {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
            "init_args": {"num_cpus": n, "include_dashboard": False, "logging_level": logging.ERROR,
                          "log_to_driver": False}}


def _drop_run_simulation_deprecation(record: logging.LogRecord) -> bool:
    """Drop Flower's "DEPRECATED FEATURE: The `run_simulation` function is deprecated" warning (three
    lines on every ``labqfl train --engine flower``): labqfl calls it on purpose, in-process, where
    ``flwr run`` would start another process; docs/flower.md says so. Every other record passes."""
    return not ("DEPRECATED FEATURE" in str(record.msg) and "run_simulation" in str(record.args))


def run_simulation(spec: FlowerSpec, *, num_cpus: int | None = None, cpus_per_client: float = 1.0,
                   on_round: Callable[[FlowerRound, np.ndarray], None] | None = None,
                   progress: Callable[[Any], None] | None = None, verbose: bool = False) -> tuple[Any, list[FlowerRound], float]:
    """Run ``spec`` as a Flower simulation on the Ray backend with ``spec.clients`` virtual SuperNodes.

    Returns (:class:`~labqfl.fl.training.FederatedResult`, per-round :class:`FlowerRound`,
    wall seconds including Ray start-up). Raises what the ServerApp raised.
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    sink: dict[str, Any] = {}
    t0 = time.perf_counter()
    flwr_log = logging.getLogger("flwr")
    flwr_log.addFilter(_drop_run_simulation_deprecation)
    try:
        flwr_run_simulation(server_app=make_server_app(spec, sink, on_round, progress), client_app=make_client_app(),
                            num_supernodes=spec.clients, backend_name="ray",
                            backend_config=ray_backend_config(num_cpus, cpus_per_client),  # type: ignore[arg-type]
                            verbose_logging=verbose)
    finally:
        flwr_log.removeFilter(_drop_run_simulation_deprecation)
    wall = time.perf_counter() - t0
    if "result" not in sink:
        raise RuntimeError("the Flower simulation ended without a result (see the Flower log above)")
    return sink["result"], list(sink["rounds"]), wall


def dp_spec_fields(plan: Any) -> dict[str, Any]:
    """The :class:`FlowerSpec` DP fields that rebuild ``plan`` (a :class:`~labqfl.fl.dp.DPPlan` made
    by :func:`~labqfl.fl.dp.plan_dp` with the default ``DPConfig`` extras), ``{}`` for ``None``."""
    if plan is None:
        return {}
    return {"dp_epsilon": float(plan.target_epsilon), "dp_delta": float(plan.delta), "dp_honest": int(plan.honest),
            "dp_clip": float(plan.l2_clip)}


def run_federated_flower(model: Any, data: Any, *, rounds: int, local: Any, secagg: Any, keys: str, seed: int,
                         progress: Callable[[Any], None] | None = None, keystore_dir: Any = None,
                         wait_for_keys: float = 0.0, data_options: dict[str, Any] | None = None,
                         num_cpus: int | None = None) -> Any:
    """``labqfl train --engine flower``: the arguments of :func:`labqfl.fl.training.run_federated`
    (plus the data options the clients need to rebuild their data) run as a Ray simulation.
    Returns the same :class:`~labqfl.fl.training.FederatedResult`; ``flower`` accounting is added
    to it as the attribute ``flower_rounds``."""
    opts = dict(data_options or {})
    if "digits" in opts and not isinstance(opts["digits"], str):
        opts["digits"] = ",".join(str(d) for d in opts["digits"])
    if opts.get("data_dir") is None:
        opts.pop("data_dir", None)
    else:
        opts["data_dir"] = str(opts["data_dir"])
    spec = FlowerSpec(task=data.task, clients=len(data.clients), q=secagg.q, rounds=rounds, keys=keys, seed=seed,
                      local_epochs=local.epochs, lr=local.lr, batch_size=local.batch_size, clip=float(secagg.clip),
                      rounding=secagg.rounding, graph=secagg.graph if secagg.graph == "all" else f"ring-{secagg.k}",
                      k=secagg.k, min_survivors=secagg.min_survivors,
                      self_masks=bool(getattr(secagg, "self_masks", False)),
                      threshold=int(getattr(secagg, "threshold", None) or 0),
                      keystore_dir=str(keystore_dir) if keystore_dir is not None else "",
                      wait_for_keys_s=float(wait_for_keys), **opts, **dp_spec_fields(getattr(secagg, "dp", None)))
    if spec.dp_plan() != getattr(secagg, "dp", None):
        raise ConfigError("the Flower engine rebuilds the DP plan from (epsilon, delta, honest, clip) with the "
                          "default DPConfig; this plan was made with other settings (beta, flatten_beta, k_stddevs)")
    result, frs, _ = run_simulation(spec, num_cpus=num_cpus, progress=progress)
    result.flower_rounds = frs
    return result
