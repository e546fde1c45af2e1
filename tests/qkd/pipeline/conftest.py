"""Makes this folder's shared helpers (``qkdpp_helpers``) importable by its test modules, which
pytest imports in importlib mode (no package, no sys.path entry of their own)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

#: seconds of the small one-pair station that :func:`small_acquisition` records (one key block)
SMALL_ACQUISITION_S = 0.1


@pytest.fixture(scope="module")
def small_acquisition():  # type: ignore[no-untyped-def]
    """(station, tag blocks, client logs, acquisition ID) of 0.1 s of the pipeline tests' small one-pair
    station (``qkdpp_helpers.small_station``): one key block."""
    from labqfl.sim_backends import SagnacTestbed
    from qkdpp_helpers import small_station

    from labqfl.contracts.types import acquisition_id

    cfg = small_station()
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(SMALL_ACQUISITION_S))
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    return cfg, blocks, logs, acquisition_id(cfg, tb.last_epoch)
