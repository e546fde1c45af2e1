"""LeNet-5: parameter count from the paper, batched-client forward equals the plain module."""

from __future__ import annotations

import numpy as np
import torch

from labqfl.fl.models.lenet import LeNet5, LeNetModel, count_parameters


def test_lenet5_has_61706_parameters() -> None:
    assert count_parameters(LeNet5()) == 61_706
    m = LeNetModel()
    assert m.n_params == 61_706
    assert m.init_params(0).shape == (61_706,)
    # 32-bit upload = 1,974,592 bits, 8-bit = 493,648 bits (QuNetQFL)
    assert 32 * m.n_params == 1_974_592 and 8 * m.n_params == 493_648


def test_vmapped_forward_matches_module() -> None:
    m = LeNetModel()
    p = np.stack([m.init_params(1), m.init_params(2)])
    x = torch.randn(2, 3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    z = m.logits(torch.as_tensor(p), x)
    for c in range(2):
        net = LeNet5()
        off = 0
        with torch.no_grad():
            for prm in net.parameters():
                n = prm.numel()
                prm.copy_(torch.as_tensor(p[c, off:off + n]).reshape(prm.shape))
                off += n
        assert torch.allclose(net(x[c]), z[c], atol=1e-5)


def test_init_is_seeded() -> None:
    m = LeNetModel()
    assert np.array_equal(m.init_params(7), m.init_params(7))
    assert not np.array_equal(m.init_params(7), m.init_params(8))
