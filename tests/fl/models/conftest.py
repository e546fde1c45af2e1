"""Shared fixtures for the federated-learning model/dataset/training tests (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_states(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    s = rng.normal(size=(count, 1 << n)) + 1j * rng.normal(size=(count, 1 << n))
    return s / np.linalg.norm(s, axis=1, keepdims=True)
