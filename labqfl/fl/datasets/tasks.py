"""The four federated tasks of the paper's experiments, as client-partitioned datasets.

======================  =====================================================================
``mnist-qnn``           MNIST digit pair (default 0 vs 1), 16 amplitudes, 4-qubit QNN
``ntangled``            6-qubit states, CE classes (default 0.15 vs 0.35), 6-qubit QNN
``magic``               6-qubit T-doped Clifford states, M2 classes, 6-qubit QNN
``mnist-lenet5``        MNIST, all 10 digits, 28×28, LeNet-5
======================  =====================================================================

Quantum datasets are drawn per client from prefix-stable streams: with ``samples_per_client`` m,
client Ci gets states [(i−1)·m/2, i·m/2) of each class, so adding a client adds data and leaves the
others' data unchanged (the paper's "adding a client" experiment). The test set is a separate
stream. MNIST tasks split the training set over the clients (IID or Dirichlet label skew).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.fl.datasets.magic import MagicConfig, magic_states
from labqfl.fl.datasets.mnist import downsample_16, lenet_inputs, load_mnist, select_digits
from labqfl.fl.datasets.ntangled import NTangledConfig, ntangled_states
from labqfl.fl.datasets.splits import split_dirichlet, split_iid

TASKS = ("mnist-qnn", "ntangled", "magic", "mnist-lenet5")


@dataclass
class FederatedData:
    """Per-client training data and a shared test set.

    ``clients``: client name ("C1".."CN") → (x (n_i, …), y (n_i,) int64); ``x_test``/``y_test``;
    ``meta``: provenance and generation settings (JSON-ready).
    """

    task: str
    clients: dict[str, tuple[np.ndarray, np.ndarray]]
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def client_names(self) -> list[str]:
        return list(self.clients)

    def sizes(self) -> dict[str, int]:
        return {c: len(y) for c, (_, y) in self.clients.items()}


def client_names(n: int) -> list[str]:
    return [f"C{i + 1}" for i in range(n)]


def _split(y: np.ndarray, n_clients: int, rng: np.random.Generator, non_iid: bool, alpha: float) -> list[np.ndarray]:
    return split_dirichlet(y, n_clients, alpha, rng) if non_iid else split_iid(len(y), n_clients, rng)


def _quantum_clients(states: np.ndarray, labels: np.ndarray, per_class: int, n_clients: int,
                     n_classes: int, non_iid: bool, alpha: float, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = client_names(n_clients)
    if non_iid:
        parts = split_dirichlet(labels, n_clients, alpha, rng)
        return {c: (states[p], labels[p]) for c, p in zip(names, parts, strict=True)}
    share = per_class // n_clients
    out = {}
    for i, c in enumerate(names):
        idx = np.concatenate([k * per_class + np.arange(i * share, (i + 1) * share) for k in range(n_classes)])
        out[c] = (states[idx], labels[idx])
    return out


def load_task(task: str, n_clients: int, seed: int = 0, *, non_iid: bool = False, alpha: float = 0.5,
              data_dir: Path | str | None = None, digits: tuple[int, int] = (0, 1),
              samples_per_client: int = 100, test_size: int = 400,
              ntangled: NTangledConfig | None = None, magic: MagicConfig | None = None) -> FederatedData:
    """Build the client datasets for ``task`` (see module docstring). Deterministic for ``seed``.

    ``samples_per_client`` and ``test_size`` apply to the generated quantum datasets (rounded to
    whole classes); the MNIST tasks use the whole (digit-filtered) training set.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if n_clients < 1:
        raise ValueError(f"need at least one client, got {n_clients}")
    rng = np.random.default_rng([seed, 5150])
    if task in ("ntangled", "magic"):
        n_classes = 2
        per_client_class = max(1, samples_per_client // n_classes)
        per_class = per_client_class * n_clients
        test_per_class = max(1, test_size // n_classes)
        if task == "ntangled":
            cfg_n = ntangled or NTangledConfig()
            xtr, ytr, ctr = ntangled_states(cfg_n, seed, per_class, "train")
            xte, yte, cte = ntangled_states(cfg_n, seed, test_per_class, "test")
            meta: dict[str, Any] = {"generator": "NTangled-style HEA generators", "measure": "concentratable entanglement",
                                    "targets": list(cfg_n.targets), "tol": cfg_n.tol, "n_qubits": cfg_n.n_qubits,
                                    "train_measure_range": [float(ctr.min()), float(ctr.max())]}
        else:
            cfg_m = magic or MagicConfig()
            xtr, ytr, ctr = magic_states(cfg_m, seed, per_class, "train")
            xte, yte, cte = magic_states(cfg_m, seed, test_per_class, "test")
            meta = cfg_m.describe()
        clients = _quantum_clients(xtr, ytr, per_class, n_clients, n_classes, non_iid, alpha, rng)
        meta.update(samples_per_client=per_client_class * n_classes, test_size=len(yte), seed=seed)
        return FederatedData(task, clients, xte, yte, n_classes, meta)

    mn = load_mnist(data_dir)
    if task == "mnist-qnn":
        xtr, ytr = select_digits(mn.x_train, mn.y_train, digits)
        xte, yte = select_digits(mn.x_test, mn.y_test, digits)
        ftr, fte = downsample_16(xtr), downsample_16(xte)
        n_classes = 2
        meta = {"source": mn.source, "digits": list(digits), "features": "20x20 centre crop, 5x5 mean pool, L2-normalised (16 amplitudes)"}
    else:
        ftr, ytr, fte, yte = lenet_inputs(mn.x_train), mn.y_train, lenet_inputs(mn.x_test), mn.y_test
        n_classes = 10
        meta = {"source": mn.source, "digits": list(range(10)), "features": "28x28 standardised pixels"}
    parts = _split(ytr, n_clients, rng, non_iid, alpha)
    clients = {c: (ftr[p], ytr[p]) for c, p in zip(client_names(n_clients), parts, strict=True)}
    meta.update(train_size=int(len(ytr)), test_size=int(len(yte)), split="dirichlet" if non_iid else "iid",
                alpha=alpha if non_iid else None, seed=seed)
    return FederatedData(task, clients, fte, yte, n_classes, meta)
