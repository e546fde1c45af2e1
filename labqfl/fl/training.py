"""In-process federated training: local updates, secure aggregation, evaluation, metrics.

The pieces are pure functions so that other engines (Flower) reuse them:

* :func:`local_train` — Adam on each client's data from the same global parameters; clients are
  trained together in one batched computation (their losses are independent; a functional Adam
  with a per-client step mask makes the result identical to training them one by one);
* :func:`local_updates` — the update each client sends: (local − global) flattened, float64;
* :func:`evaluate` — loss and accuracy of a parameter vector on a dataset;
* :func:`run_federated` — the loop: per round local updates → :func:`labqfl.fl.secure.secure_round`
  (clip, quantise, one-time-pad masks, modular sum, dequantise, weighted FedAvg) → global update
  → evaluation, with per-round metrics and key/communication accounting and a progress callback.

Seeding: client c in round r shuffles with ``numpy.random.default_rng([seed, r, c])``;
stochastic rounding uses ``default_rng([seed, 9000, r])``; the initial model comes from ``seed``.
Masks come from the key source (QKD key store or OS CSPRNG), never from these seeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from labqfl.fl.models.base import FLModel
from labqfl.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class LocalTrainConfig:
    """Local optimisation: ``epochs`` passes of mini-batch Adam (lr, betas, eps as torch.optim.Adam)."""

    epochs: int = 1
    lr: float = 0.05
    batch_size: int = 16
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    client_chunk: int = 64  # clients trained together in one batched computation

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.client_chunk < 1:
            raise ValueError("epochs, batch_size and client_chunk must be ≥ 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")


def _schedule(sizes: Sequence[int], offsets: Sequence[int] | np.ndarray, cfg: LocalTrainConfig,
              seeds: Sequence[Sequence[int] | int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mini-batch schedule: indices (S, C, bs) into the concatenated data, weights (S, C, bs) and
    active flags (S, C). Client c runs epochs·⌈n_c/bs⌉ steps; its batches are padded with weight 0."""
    bs = cfg.batch_size
    per_client: list[list[np.ndarray]] = []
    for n, seed in zip(sizes, seeds, strict=True):
        rng = np.random.default_rng(seed)
        batches: list[np.ndarray] = []
        for _ in range(cfg.epochs):
            perm = rng.permutation(n)
            batches.extend(perm[i:i + bs] for i in range(0, n, bs))
        per_client.append(batches)
    S = max(len(b) for b in per_client)
    C = len(sizes)
    idx = np.zeros((S, C, bs), dtype=np.int64)
    wts = np.zeros((S, C, bs), dtype=np.float64)
    active = np.zeros((S, C), dtype=bool)
    for c, batches in enumerate(per_client):
        for s, b in enumerate(batches):
            idx[s, c, :len(b)] = offsets[c] + b
            idx[s, c, len(b):] = offsets[c]
            wts[s, c, :len(b)] = 1.0
            active[s, c] = True
    return idx, wts, active


def local_train(model: FLModel, global_params: np.ndarray, datasets: Sequence[tuple[np.ndarray, np.ndarray]],
                cfg: LocalTrainConfig, seeds: Sequence[Sequence[int] | int]) -> tuple[np.ndarray, np.ndarray]:
    """Train every client from ``global_params`` on its own data.

    ``datasets``: one (x (n_c, …), y (n_c,)) per client; ``seeds``: one shuffling seed per client.
    Returns (new parameters (C, P) float64, mean training loss per client over its last epoch (C,)).
    Per client this is exactly ``torch.optim.Adam`` on mini-batches of its data (tested).
    """
    if len(datasets) != len(seeds):
        raise ValueError("need one seed per client dataset")
    g = np.asarray(global_params, dtype=np.float64)
    if g.shape != (model.n_params,):
        raise ValueError(f"global parameters must have shape ({model.n_params},), got {g.shape}")
    out = np.empty((len(datasets), model.n_params), dtype=np.float64)
    losses = np.empty(len(datasets), dtype=np.float64)
    for start in range(0, len(datasets), cfg.client_chunk):
        sl = slice(start, start + cfg.client_chunk)
        p, lo = _train_chunk(model, g, datasets[sl], cfg, seeds[sl])
        out[sl] = p
        losses[sl] = lo
    return out, losses


def _train_chunk(model: FLModel, g: np.ndarray, datasets: Sequence[tuple[np.ndarray, np.ndarray]],
                 cfg: LocalTrainConfig, seeds: Sequence[Sequence[int] | int]) -> tuple[np.ndarray, np.ndarray]:
    sizes = [len(y) for _, y in datasets]
    if min(sizes) < 1:
        raise ValueError("every client needs at least one training example")
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    x_all = model.inputs_tensor(np.concatenate([x for x, _ in datasets]))
    y_all = torch.as_tensor(np.concatenate([y for _, y in datasets]).astype(np.int64))
    idx, wts, active = _schedule(sizes, offsets, cfg, seeds)
    C = len(datasets)
    dt = model.dtype
    params = torch.tensor(np.broadcast_to(g, (C, g.size)).copy(), dtype=dt, requires_grad=True)
    m = torch.zeros_like(params, requires_grad=False)
    v = torch.zeros_like(params, requires_grad=False)
    t = torch.zeros(C, dtype=torch.float64)
    b1, b2 = cfg.betas
    steps_per_epoch = [math.ceil(n / cfg.batch_size) for n in sizes]
    last_epoch_loss = torch.zeros(C, dtype=torch.float64)
    last_epoch_w = torch.zeros(C, dtype=torch.float64)
    for s in range(idx.shape[0]):
        ii = torch.as_tensor(idx[s])
        w = torch.as_tensor(wts[s])
        act = torch.as_tensor(active[s])
        xb = x_all[ii]
        yb = y_all[ii]
        per = model.per_example_loss(params, xb, yb).to(torch.float64)
        denom = w.sum(dim=1).clamp(min=1.0)
        client_loss = (per * w).sum(dim=1) / denom
        (grad,) = torch.autograd.grad(client_loss.sum(), params)
        with torch.no_grad():
            in_last = torch.as_tensor([s >= (cfg.epochs - 1) * spe for spe in steps_per_epoch]) & act
            last_epoch_loss += torch.where(in_last, (per.detach() * w).sum(dim=1), 0.0)
            last_epoch_w += torch.where(in_last, w.sum(dim=1), 0.0)
            a = act[:, None]
            grad = grad.to(dt)
            m.copy_(torch.where(a, b1 * m + (1 - b1) * grad, m))
            v.copy_(torch.where(a, b2 * v + (1 - b2) * grad * grad, v))
            t += act.to(torch.float64)
            tc = t.clamp(min=1.0)[:, None]
            step_size = (cfg.lr / (1 - b1**tc)).to(dt)
            bc2_sqrt = torch.sqrt(1 - b2**tc).to(dt)
            upd = step_size * m / (v.sqrt() / bc2_sqrt + cfg.eps)
            params.sub_(torch.where(a, upd, torch.zeros_like(upd)))
    losses = (last_epoch_loss / last_epoch_w.clamp(min=1.0)).numpy()
    return params.detach().to(torch.float64).numpy(), losses


def local_updates(model: FLModel, global_params: np.ndarray, clients: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  cfg: LocalTrainConfig, seed: int, round_index: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The update (local − global, flattened float64 (P,)) and last-epoch training loss of every client.

    Client i (0-based position in ``clients``) shuffles with ``default_rng([seed, round_index, i])``.
    """
    names = list(clients)
    seeds = [[seed, round_index, i] for i in range(len(names))]
    new, losses = local_train(model, global_params, [clients[c] for c in names], cfg, seeds)
    g = np.asarray(global_params, dtype=np.float64)
    return ({c: new[i] - g for i, c in enumerate(names)}, {c: float(losses[i]) for i, c in enumerate(names)})


def evaluate(model: FLModel, params: np.ndarray, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy in [0, 1]) of parameters (P,) on inputs x (N, …) and labels y (N,)."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    p = torch.as_tensor(np.asarray(params, dtype=np.float64)[None]).to(model.dtype)
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = model.inputs_tensor(x[i:i + batch])[None]
            yb = torch.as_tensor(np.asarray(y[i:i + batch], dtype=np.int64))[None]
            total_loss += float(model.per_example_loss(p, xb, yb).sum())
            correct += int((model.predict(p, xb) == yb).sum())
    return total_loss / len(y), correct / len(y)


# --------------------------------------------------------------------------------------------
# The federated loop
# --------------------------------------------------------------------------------------------
@dataclass
class RoundMetrics:
    """One round's results. Bits are per round; key bits are those consumed by the mask graph.

    ``train_loss`` (the clients' sample-weighted last-epoch training loss) and ``clipped_values`` are
    statistics of private data outside the DP accountant: under DP they are NaN and 0 (not published).
    """

    round: int
    test_accuracy: float
    test_loss: float
    train_loss: float
    key_bits_per_pair: int
    key_bits_total: int
    pairs: int
    upload_bits_per_client: int
    baseline_upload_bits_per_client: int
    clipped_values: int
    seconds: float
    #: with DP: ε (at the plan's δ) spent by rounds 1..this one, from the accountant
    privacy_epsilon_spent: float | None = None


@dataclass
class FederatedResult:
    """A whole run: initial and per-round metrics, final parameters, accounting summary."""

    task: str
    model: str
    n_params: int
    key_source: str
    initial_accuracy: float
    initial_loss: float
    rounds: list[RoundMetrics] = field(default_factory=list)
    final_params: np.ndarray | None = field(default=None, repr=False)
    #: with DP: {mechanism, epsilon, delta, honest_clients_assumed, rounds, ...} (see labqfl.fl.dp)
    privacy: dict[str, Any] | None = None

    @property
    def final_test_accuracy(self) -> float:
        return self.rounds[-1].test_accuracy if self.rounds else self.initial_accuracy

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics (no parameters, no key material)."""
        from labqfl.fl.secure import communication_saving

        r = self.rounds
        return {
            "task": self.task,
            "model": self.model,
            "n_params": self.n_params,
            "key_source": self.key_source,
            "final_test_accuracy": self.final_test_accuracy,
            "final_test_loss": r[-1].test_loss if r else self.initial_loss,
            "initial_test_accuracy": self.initial_accuracy,
            "initial_test_loss": self.initial_loss,
            "test_accuracy": [x.test_accuracy for x in r],
            "test_loss": [x.test_loss for x in r],
            "train_loss": [x.train_loss for x in r],
            "key_bits_per_pair_per_round": r[-1].key_bits_per_pair if r else 0,
            "key_bits_per_pair_total": sum(x.key_bits_per_pair for x in r),
            "key_bits_total": sum(x.key_bits_total for x in r),
            "pairs": r[-1].pairs if r else 0,
            "upload_bits_per_client_per_round": r[-1].upload_bits_per_client if r else 0,
            "baseline_upload_bits_per_client_per_round": r[-1].baseline_upload_bits_per_client if r else 0,
            "communication_saving": (communication_saving(r[-1].upload_bits_per_client,
                                                          r[-1].baseline_upload_bits_per_client) if r else 0.0),
            "rounds": [asdict(x) for x in r],
            "privacy": self.privacy,
        }


ProgressFn = Callable[[RoundMetrics], None]


def _published_client_stats(dp_plan: Any, train_losses: Mapping[str, float], weights: Mapping[str, float],
                            res: Any) -> tuple[float, int]:
    """The round's training loss (sample-weighted mean of the clients' last-epoch losses) and clipped-value
    count as published in the metrics. Under DP neither is: both are statistics of the clients' private
    data outside the accountant, so the round's loss is NaN and its clipped count 0, as on the Flower
    engine (review s35 F2; docs/metrics.md)."""
    if dp_plan is not None:
        return float("nan"), 0
    tl = float(np.average([train_losses[c] for c in weights], weights=list(weights.values())))
    return tl, int(getattr(res, "clipped_values", 0))


def run_federated(model: FLModel, data: Any, *, rounds: int, local: LocalTrainConfig, secagg: Any,
                  key_source: Any, seed: int = 0, progress: ProgressFn | None = None,
                  secure_round_fn: Callable[..., Any] | None = None,
                  init_params: np.ndarray | None = None, start_round: int = 1,
                  on_round_end: Callable[[RoundMetrics, np.ndarray], None] | None = None) -> FederatedResult:
    """Federated training of ``model`` on ``data`` (:class:`~labqfl.fl.datasets.tasks.FederatedData`).

    Per round r (1-based): every client trains locally from the global parameters
    (:func:`local_updates`); the updates go through ``secure_round`` (default
    :func:`labqfl.fl.secure.secure_round` with ``secagg`` and ``key_source``), FedAvg weights =
    client sample counts; the global parameters move by the aggregate; the test set is evaluated.
    ``progress`` is called with each round's :class:`RoundMetrics`.

    Resuming (``labqfl run --resume``): ``init_params`` (the global parameters after round
    ``start_round - 1``) and ``start_round`` continue a run; rounds are seeded by their index, so a
    resumed run trains as the uninterrupted one would, but with fresh mask keys.
    ``on_round_end(metrics, params)`` is called after each round with the new global parameters
    (for checkpoints).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    if secure_round_fn is None:
        from labqfl.fl.secure import secure_round

        secure_round_fn = secure_round
    if start_round < 1:
        raise ValueError(f"start_round must be ≥ 1, got {start_round}")
    dp_plan = getattr(secagg, "dp", None)
    if dp_plan is not None and rounds > dp_plan.rounds:
        raise ValueError(f"the DP plan accounts for {dp_plan.rounds} rounds, {rounds} requested")
    params = model.init_params(seed) if init_params is None else np.asarray(init_params, dtype=np.float64).copy()
    loss0, acc0 = evaluate(model, params, data.x_test, data.y_test)
    result = FederatedResult(data.task, model.name, model.n_params, str(getattr(key_source, "name", key_source)), acc0, loss0)
    weights = {c: float(len(y)) for c, (_, y) in data.clients.items()}
    for r in range(start_round, rounds + 1):
        t0 = time.perf_counter()
        updates, train_losses = local_updates(model, params, data.clients, local, seed, r)
        res = secure_round_fn(updates, weights, secagg, key_source, round_index=r,
                              rng=np.random.default_rng([seed, 9000, r]))
        params = params + np.asarray(res.aggregate, dtype=np.float64).reshape(-1)
        loss, acc = evaluate(model, params, data.x_test, data.y_test)
        per_pair = res.key_bits_per_pair
        pair_bits = max(per_pair.values()) if isinstance(per_pair, Mapping) and per_pair else int(per_pair or 0)
        n_pairs = len(per_pair) if isinstance(per_pair, Mapping) else 0
        tl, n_clipped = _published_client_stats(dp_plan, train_losses, weights, res)
        m = RoundMetrics(r, acc, loss, tl, pair_bits, int(res.key_bits_total), n_pairs,
                         int(res.upload_bits_per_client), int(res.baseline_upload_bits_per_client),
                         n_clipped, time.perf_counter() - t0)
        if dp_plan is not None:
            from labqfl.fl.dp import accounted_epsilon

            m.privacy_epsilon_spent = accounted_epsilon(dp_plan.epsilon_round_zcdp, r, dp_plan.delta)
        result.rounds.append(m)
        log.info("round %d: test accuracy %.4f, test loss %.4f, key bits/pair %d", r, acc, loss, pair_bits)
        if on_round_end is not None:
            on_round_end(m, params)
        if progress is not None:
            progress(m)
    result.final_params = params
    if dp_plan is not None:
        result.privacy = dp_plan.privacy()
    return result
