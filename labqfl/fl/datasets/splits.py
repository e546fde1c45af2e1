"""Client splits of a training set: IID (shuffled equal shards) and non-IID label skew (Dirichlet).

Non-IID follows Hsu, Qi, Brown, arXiv:1909.06335: for every class, the shares of its examples that go
to each client are drawn from Dirichlet(α·1); small α gives strong label skew.
"""

from __future__ import annotations

import numpy as np

from labqfl.errors import ConfigError


class TooFewExamplesError(ConfigError, ValueError):
    """A training set too small to give every client its share."""


def split_iid(n_examples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle indices 0..n-1 and deal them into ``n_clients`` shards of near-equal size (int64 arrays)."""
    if n_clients < 1 or n_examples < n_clients:
        raise TooFewExamplesError(f"cannot split {n_examples} training examples over {n_clients} clients "
                                  f"(each needs ≥ 1: at most {n_examples} clients)")
    perm = rng.permutation(n_examples)
    return [np.sort(s).astype(np.int64) for s in np.array_split(perm, n_clients)]


def split_dirichlet(labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator,
                    min_size: int = 2) -> list[np.ndarray]:
    """Label-skewed split: class c's examples are shared out with proportions ~ Dirichlet(α).

    Redraws (up to 100 times) until every client holds at least ``min_size`` examples.
    """
    labels = np.asarray(labels)
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    if len(labels) < n_clients * min_size:
        raise TooFewExamplesError(f"cannot give {n_clients} clients ≥ {min_size} training examples each from "
                                  f"{len(labels)} (at most {len(labels) // min_size} clients)")
    for _ in range(100):
        shards: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for i, part in enumerate(np.split(idx, cuts)):
                shards[i].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shards]
    raise ValueError(f"Dirichlet split with alpha={alpha} left a client with < {min_size} examples; raise alpha")
