"""The federated-training recipe, defined once below the layers that use it.

:class:`labqfl.app.training.TrainingSetup` (``labqfl train``, ``labqfl run``, the GUI) builds its
run from these functions, and so does :class:`labqfl.fl.flower.spec.FlowerSpec`, which every
Flower node process rebuilds from the serialised spec (it cannot import :mod:`labqfl.app`:
layers point down, docs/decisions/0005 and 0009):

- :func:`local_config`: the task's local-training defaults (:data:`labqfl.fl.tasks.TASK_DEFAULTS`)
  under the values given;
- :func:`update_clip`: the task's update clip unless one is given;
- :func:`secagg_config`: the :class:`~labqfl.fl.secure.SecAggConfig` (q, rounding, mask graph,
  self-masks and threshold, DP plan) and, for N clients, its bit budget (N values of b bits
  summed exactly mod 2^q, :meth:`~labqfl.fl.secure.SecAggConfig.check_bit_budget`);
- :func:`dp_plan`: the distributed-DP plan (:func:`labqfl.fl.dp.plan_dp`).

Bad settings raise :class:`~labqfl.errors.ConfigError` with one line (a bit budget that a sum
could wrap: :class:`~labqfl.errors.BitBudgetError`, a ValueError).
"""

from __future__ import annotations

from typing import Any

from labqfl.errors import ConfigError
from labqfl.fl.tasks import TASK_DEFAULTS


def task_defaults(task: str) -> tuple[int, float, int, float]:
    """(local epochs, learning rate, batch size, update clip) of ``task``."""
    if task not in TASK_DEFAULTS:
        raise ConfigError(f"task {task!r} unknown; expected mnist-qnn, ntangled, magic or mnist-lenet5")
    return TASK_DEFAULTS[task]


def local_config(task: str, *, epochs: int | None = None, lr: float | None = None,
                 batch_size: int | None = None) -> Any:
    """The :class:`~labqfl.fl.training.LocalTrainConfig` of ``task``: its defaults where a value
    is not given (``None``; 0 epochs or batch size count as not given)."""
    from labqfl.fl.training import LocalTrainConfig

    d_ep, d_lr, d_bs, _ = task_defaults(task)
    return LocalTrainConfig(epochs=epochs or d_ep, lr=lr if lr is not None else d_lr, batch_size=batch_size or d_bs)


def update_clip(task: str, clip: float | None = None) -> float:
    """The update clip: ``clip`` if given, else the task's default."""
    return float(clip) if clip is not None else task_defaults(task)[3]


def secagg_config(*, q: int, clip: float, graph: str = "all", k: int = 0, self_masks: bool = False,
                  threshold: int | None = None, rounding: str = "stochastic", min_survivors: int = 2,
                  dp: Any = None, n_clients: int | None = None) -> Any:
    """The secure-aggregation config; with ``n_clients``, its bit budget checked for that many clients."""
    from labqfl.fl.secure import SecAggConfig

    try:
        cfg = SecAggConfig(q=q, clip=clip, rounding=rounding,  # type: ignore[arg-type]
                           graph=graph, k=k, min_survivors=min_survivors, self_masks=self_masks,
                           threshold=threshold, dp=dp)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if n_clients is not None:
        cfg.check_bit_budget(n_clients)
    return cfg


def dp_plan(*, epsilon: float, delta: float, honest: int, l2_clip: float, n_params: int, n_clients: int, q: int,
            rounds: int, what: str = "dp") -> Any:
    """The distributed discrete-Gaussian plan for ``rounds`` rounds of ``n_clients`` clients'
    ``n_params``-parameter updates at total (ε, δ); bad settings: ``ConfigError("<what>: …")``."""
    from labqfl.fl.dp import DPConfig, plan_dp

    try:
        return plan_dp(DPConfig(epsilon=epsilon, delta=delta, honest=honest, l2_clip=l2_clip),
                       n_params=n_params, n_clients=n_clients, q=q, rounds=rounds)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


__all__ = ["dp_plan", "local_config", "secagg_config", "task_defaults", "update_clip"]
