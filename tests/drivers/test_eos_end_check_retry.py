"""Review s37 lab3 L2: the latch windows are clamped at 10 s, so for a nominal dark rate below about 9.2 /s a working
channel at r_min = nominal / 10 counts nothing over W + C with probability exp(-r_min (W + C)) > 1e-4 (0.135 at a
nominal 1 /s). Arming resets and re-checks, but the end-of-acquisition check did not: one false alarm refused a
whole recording. Now the end check reads a second W + C before calling a channel latched (P_false squared), and the
driver warns at open when the windows are clamped, with the probabilities. Counts drawn from a Poisson law, as in
tests/drivers/test_eos_latch_false_alarm.py."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import pytest

from tests.drivers.test_eos_latch_false_alarm import _Offline


class _EndCheck(_Offline):
    """The offline driver, armed at its operating bias (10 µA), for :meth:`acquisition_fault`."""

    def __init__(self, dark_hz: float, rate_hz: float, rng: np.random.Generator, **options: Any) -> None:
        super().__init__(dark_hz, rate_hz, rng, **options)
        self.lock = threading.RLock()
        self._operating_bias = 10.0

    def _keeping_period(self, read: Any) -> Any:
        return read()


def test_a_working_channel_that_counts_nothing_once_at_the_end_is_read_again_and_passes() -> None:
    d = _EndCheck(1.0, 0.1, np.random.default_rng(0))
    reads = iter([0.0, 0.0, 0.3])  # W, C: nothing; the second W: one count

    d._read_rate = lambda s: next(reads)  # type: ignore[method-assign]
    assert d.acquisition_fault() is None  # before: "latched during the acquisition"


def test_a_latched_channel_is_still_found_at_the_end() -> None:
    d = _EndCheck(1.0, 0.0, np.random.default_rng(0))  # a latched nanowire counts nothing
    why = d.acquisition_fault()
    assert why is not None and "latched during the acquisition" in why
    assert "counted nothing over 40 s" in why  # W + C = 10 + 10 s, twice
    assert "with probability 1.8e-02" in why  # exp(-0.1 * 20) squared: what the user is told


def test_end_check_false_alarms_at_a_low_nominal_dark_rate() -> None:
    """Nominal 1 /s, a working channel at r_min = 0.1 /s: refused with exp(-2) = 0.135 before, exp(-4) = 0.018 now."""
    rng = np.random.default_rng(7)
    trials = 3000
    refused = sum(_EndCheck(1.0, 0.1, rng).acquisition_fault() is not None for _ in range(trials))
    expected = np.exp(-4.0) * trials  # 55
    assert abs(refused - expected) < 5 * np.sqrt(expected), refused  # before: about 406


def test_clamped_windows_are_warned_at_open(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="test.eos"):
        _EndCheck(50.0, 50.0, np.random.default_rng(0))._warn_clamped_windows()
        assert caplog.text == ""  # nominal 50 /s: W 0.2 s, C 1.64 s, 1e-4 as stated
        _EndCheck(1.0, 1.0, np.random.default_rng(0))._warn_clamped_windows()
    assert "latch check windows clamped (W 10 s + C 10 s" in caplog.text
    assert "reset as latched with probability 0.14, refused at arming with 0.018 and at an acquisition's end " \
           "with 0.018 (not 0.0001)" in caplog.text
