"""The abort reason names the likely causes of a key error rate at 1/2 (unrelated bits): slot numbers off
(a lost first sync tag without frame markers), patterns not aligned, no interference. Before, such a
block aborted with "error rate 0.5012 above threshold" only."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from labqfl.qkd.estimation import HALF_MIN_BITS, HALF_SIGMAS, secure_key_length
from labqfl.qkd.keyrate import expected_counts

HINT = "slot numbers off? (a lost first sync tag without frame markers shifts every slot: set " \
       "time_tagger.time_zero_is_pulse_zero"


@pytest.fixture(scope="module")
def counts(channel_factory: Any):  # type: ignore[no-untyped-def]
    c = expected_counts(channel_factory(), 1e10)
    return replace(c, clicks=np.round(c.clicks).astype(np.int64), errors_x2=np.round(c.errors_x2).astype(np.int64),
                   double_clicks=np.round(c.double_clicks).astype(np.int64))


def _edge(n: int) -> float:
    return HALF_SIGMAS * 0.5 / math.sqrt(n)


@pytest.mark.parametrize(("qber", "n_bits", "hint"), [
    (0.5012, 45_949, True),  # a slotting shifted by the sync divider: unrelated bits
    (0.4968, 200_000, True),
    (0.5 - 0.99 * _edge(HALF_MIN_BITS), HALF_MIN_BITS, True),  # at the edge of the band
    (0.5 - 1.01 * _edge(HALF_MIN_BITS), HALF_MIN_BITS, False),  # just outside it
    (0.45, 200_000, False),  # 45 σ from 1/2: correlated, just noisy
    (0.30, 45_949, False),  # noise
    (0.50, HALF_MIN_BITS - 1, False),  # too few bits to tell
])
def test_a_key_error_rate_at_one_half_names_slot_numbering_and_alignment(counts, qber, n_bits, hint):  # type: ignore[no-untyped-def]
    rep = secure_key_length(counts, n_bits, qber, int(n_bits * 0.6))
    assert rep.abort and rep.abort_reason.startswith(f"error rate {100 * qber:.2f} % above threshold")
    assert (HINT in rep.abort_reason) is hint
    assert "\n" not in rep.abort_reason
    if hint:
        assert "clients' patterns not aligned" in rep.abort_reason
        assert "D0/D1 swapped" not in rep.abort_reason
