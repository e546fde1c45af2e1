"""The interface every federated model implements: flat parameters, batched over clients.

Parameters travel as one flat float vector (P,) — the update a client sends is (local − global)
flattened. Inside local training the models work on a (C, P) torch tensor: one row per client, so
C clients train in one batched computation (their losses are independent, so the gradient of the
summed loss gives every client its own gradient).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class FLModel(Protocol):
    """A model the federated engine can train.

    ``name``: short id; ``n_params``: P; ``dtype``: torch dtype of the parameters;
    ``loss_name``: "mse" or "cross-entropy".
    """

    name: str
    n_params: int
    dtype: torch.dtype
    loss_name: str

    def init_params(self, seed: int) -> np.ndarray:
        """Initial global parameters, (P,) float64, deterministic for ``seed``."""
        ...

    def inputs_tensor(self, x: np.ndarray) -> torch.Tensor:
        """Convert a numpy input batch (N, …) into the tensor the forward pass takes."""
        ...

    def per_example_loss(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Losses (C, B) for params (C, P), inputs (C, B, …) and integer labels (C, B)."""
        ...

    def predict(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels (C, B) int64."""
        ...
