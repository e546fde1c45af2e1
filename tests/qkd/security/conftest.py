"""Shared fixtures for the QKD security-analysis tests."""

from __future__ import annotations

import pytest

from labqfl.config import StationConfig, load_station_config
from labqfl.contracts.channel_model import PairChannel


def make_channel(
    eta_i: float = 0.3, eta_j: float = 0.3, *, mu: tuple[float, float, float] = (0.03, 0.1, 0.0),
    probs: tuple[float, float, float] = (0.9, 0.05, 0.05), px: float = 0.85, p_dark: float = 1e-7,
    visibility: float = 0.99, eff: float = 0.8,
) -> PairChannel:
    """A symmetric-detector pair channel with explicit parameters (η per arm, before detectors)."""
    return PairChannel(
        pair=("C1", "C2"), eta_cw=eta_i, eta_ccw=eta_j, eta_d0=eff, eta_d1=eff, p_dark_d0=p_dark,
        p_dark_d1=p_dark, splitter_t=0.5, visibility=visibility, intensities_i=mu, intensities_j=mu,
        intensity_probs_i=probs, intensity_probs_j=probs, basis_x_prob_i=px, basis_x_prob_j=px,
    )


@pytest.fixture(scope="session")
def station() -> StationConfig:
    return load_station_config()


@pytest.fixture(scope="session")
def channel_factory():  # type: ignore[no-untyped-def]
    """The :func:`make_channel` factory (test modules cannot import conftest in importlib mode)."""
    return make_channel
