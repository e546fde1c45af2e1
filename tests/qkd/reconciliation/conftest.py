"""Shared helpers for the reconciliation tests; makes this folder's helper modules (``cascade_helpers``)
importable by its test modules, which pytest imports in importlib mode (no package, no sys.path entry)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def make_frame(n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Alice's random bits and Bob's copy with exactly round(qber·n) flipped positions."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    y = x.copy()
    y[rng.choice(n, int(round(qber * n)), replace=False)] ^= 1
    return x, y


@pytest.fixture
def frame():
    return make_frame
