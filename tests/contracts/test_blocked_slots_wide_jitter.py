"""Review s36 input F1: channel_model.blocked_slots summed one Φ term per slot within ±10 σ of the dead time,
so a jitter of 1e30 ps (σ/T ~ 1e22) looped for ever. Above σ/T = BLOCKED_SLOTS_SUM_MAX_SIGMA_SLOTS it now
uses the Euler–Maclaurin closed form of the sum; these tests pin its accuracy and that any jitter costs O(1)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from labqfl.contracts import channel_model as cm


def _direct_sum(tau: float, period: float, sigma: float) -> float:
    k_lo = max(math.floor((tau - 10.0 * sigma) / period), 0)
    k_hi = math.ceil((tau + 10.0 * sigma) / period)
    return k_lo + sum(0.5 * math.erfc(-(tau - k * period) / (sigma * math.sqrt(2.0)))
                      for k in range(k_lo + 1, k_hi + 1))


def test_huge_jitter_finishes_in_a_second() -> None:
    # old code: ~2e305 loop iterations; run in a child so that the old code fails by timeout instead of hanging
    code = ("from labqfl.contracts.channel_model import blocked_slots; "
            "print(blocked_slots(30e-9, 1e-8, 1e296)); print(blocked_slots(30e-9, 1e-8, 1e18))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("blocked_slots with a 1e296 s jitter did not finish in 30 s")
    big, mid = (float(v) for v in out.stdout.split())
    # σ ≫ τ: about σ/(T·√(2π)) slots are blocked (half the Gaussian's mean excess over 0)
    assert big == pytest.approx(1e296 / 1e-8 / math.sqrt(2 * math.pi), rel=1e-9)
    assert mid == pytest.approx(1e18 / 1e-8 / math.sqrt(2 * math.pi), rel=1e-9)


@pytest.mark.parametrize(("tau", "sigma"), [(30e-9, 2e-5), (30e-9, 1e-4), (1e-3, 2e-5), (1e-3, 1e-4)])
def test_closed_form_matches_the_sum(tau: float, sigma: float) -> None:
    period = 1e-8
    assert cm._blocked_slots_wide_jitter(tau, period, sigma) == pytest.approx(_direct_sum(tau, period, sigma),
                                                                               rel=1e-12)


def test_continuous_across_the_switch() -> None:
    period = 1e-8
    sigma = cm.BLOCKED_SLOTS_SUM_MAX_SIGMA_SLOTS * period
    below = cm.blocked_slots(30e-9, period, sigma)  # summed
    above = cm.blocked_slots(30e-9, period, sigma * (1 + 1e-12))  # closed form
    assert above == pytest.approx(below, rel=1e-11)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_times_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        cm.blocked_slots(30e-9, 1e-8, bad)
    with pytest.raises(ValueError, match="finite"):
        cm.blocked_slots(bad, 1e-8, 1e-12)
