"""The abort reason names the likely cause of a key error rate far above 1/2 (lab review s33 L1: D0/D1
swapped was reported only as "error rate 0.99")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from labqfl.qkd.estimation import secure_key_length
from labqfl.qkd.keyrate import expected_counts


@pytest.fixture(scope="module")
def counts(channel_factory: Any):  # type: ignore[no-untyped-def]
    c = expected_counts(channel_factory(), 1e10)
    return replace(c, clicks=np.round(c.clicks).astype(np.int64), errors_x2=np.round(c.errors_x2).astype(np.int64),
                   double_clicks=np.round(c.double_clicks).astype(np.int64))


@pytest.mark.parametrize(("qber", "n_bits", "hint"), [
    (0.994, 45_949, True),  # the reviewer's g_swap recording: every pair near 1
    (0.80, 100, True),
    (0.74, 45_949, False),  # above 1/2 but not clearly inverted
    (0.30, 45_949, False),  # noise
    (0.99, 99, False),  # too few bits to tell
])
def test_a_key_error_rate_near_1_names_swapped_detector_channels(counts, qber, n_bits, hint):  # type: ignore[no-untyped-def]
    rep = secure_key_length(counts, n_bits, qber, int(n_bits * 0.6))
    assert rep.abort and rep.abort_reason.startswith(f"error rate {100 * qber:.2f} % above threshold")
    assert ("D0/D1 swapped? check time_tagger.detector_channels" in rep.abort_reason) is hint
