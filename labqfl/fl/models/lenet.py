"""LeNet-5 (LeCun et al. 1998) for 28×28 MNIST with a padded first convolution.

conv(1→6, 5×5, pad 2) → tanh → avgpool 2 → conv(6→16, 5×5) → tanh → avgpool 2 → fc 400→120 → tanh
→ fc 120→84 → tanh → fc 84→10. Parameters: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 (the
figure in QuNetQFL, arXiv 2501.12709: 1,974,592 bits per upload at 32 bit). Cross-entropy loss.

:class:`LeNetModel` batches clients with ``torch.func.vmap`` over a (C, P) float32 parameter
matrix (``functional_call`` on one shared module skeleton).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap


class LeNet5(nn.Module):
    """LeNet-5, input (B, 1, 28, 28) → logits (B, 10)."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = x.flatten(1)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class LeNetModel:
    """LeNet-5 as a federated model with flat float32 parameters (P = 61,706)."""

    dtype = torch.float32
    loss_name = "cross-entropy"

    def __init__(self, n_classes: int = 10) -> None:
        self.name = "lenet5"
        self.net = LeNet5(n_classes)
        self._shapes = [(k, tuple(v.shape)) for k, v in self.net.named_parameters()]
        self.n_params = count_parameters(self.net)

        def _fwd(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, p, (x,))

        self._vfwd = vmap(_fwd)

    def init_params(self, seed: int) -> np.ndarray:
        """PyTorch's default layer initialisation under ``torch.manual_seed`` (forked RNG), (P,) float64."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = LeNet5(self.net.fc3.out_features)
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double().numpy()

    def unflatten(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """(C, P) → {name: (C, *shape)} views."""
        out: dict[str, torch.Tensor] = {}
        off = 0
        C = params.shape[0]
        for k, shape in self._shapes:
            n = int(np.prod(shape))
            out[k] = params[:, off:off + n].reshape((C,) + shape)
            off += n
        return out

    def inputs_tensor(self, x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"lenet5: inputs must have shape (N, 1, 28, 28), got {x.shape}")
        return torch.as_tensor(x)

    def logits(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """params (C, P), x (C, B, 1, 28, 28) → logits (C, B, n_classes)."""
        return self._vfwd(self.unflatten(params.to(torch.float32)), x)

    def per_example_loss(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.logits(params, x)
        return nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1), reduction="none").reshape(y.shape)

    def predict(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.logits(params, x).argmax(dim=-1)
