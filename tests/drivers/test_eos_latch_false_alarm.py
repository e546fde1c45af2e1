"""Review s36 lab2 L1: the SNSPD latch check's false alarms at low dark rates.

The check runs in the dark at arming (a working channel then counts only dark counts, Poisson of rate r). With
one window of 1/(dark_count_rate_hz/10) a working channel whose real dark rate is 0.1x the station file's nominal
value counted nothing with probability e^-1 = 0.37 and had its bias cycled; refused with e^-2 = 0.14. Now the
screening window W is followed, when it counted nothing, by a confirmation window C = ln(1/P)/r_min - W
(P = 1e-4, r_min = nominal/10): P_false(r) = exp(-r (W + C)) (drivers/singlequantum_eos.py, "Windows and false
alarms"). Checked analytically and by drawing the counts port's counts ([W ``SQCounts.run``]: one line of counts
per measurement period) from a Poisson law, with the controller's I/O replaced by those draws.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np
import pytest
from labqfl.drivers.singlequantum_eos import LATCH_FALSE_ALARM, SingleQuantumEos

from labqfl.config import DetectorConfig
from labqfl.errors import InstrumentError


class _Offline(SingleQuantumEos):
    """The driver's latch logic with no controller: the counts port draws Poisson counts at ``rate_hz``; a bias
    ramp to 0 µA is counted as a reset."""

    def __init__(self, dark_hz: float, rate_hz: float, rng: np.random.Generator, **options: Any) -> None:
        cfg = DetectorConfig(driver="SingleQuantumEos", resource="TCPIP0::192.0.2.1::12000::SOCKET",
                             dark_count_rate_hz=dark_hz, options=options)
        self.opts = self.parse_options("D0", cfg)
        self.name, self.resource, self.channel = "D0", cfg.resource, 1
        self._dark_hz, self.rate_hz, self.rng = dark_hz, rate_hz, rng
        self.log = logging.LoggerAdapter(logging.getLogger("test.eos"), {})
        self.resets = self.seconds_read = 0.0
        self.lock = threading.RLock()  # the bias reset holds it (issue 19)

    @property
    def bias_now_ua(self) -> float:  # type: ignore[override]
        return 10.0

    def _read_rate(self, integration_s: float) -> float:
        self.seconds_read += integration_s
        return float(self.rng.poisson(self.rate_hz * integration_s)) / integration_s

    def _ramp_bias(self, target_ua: float) -> None:
        if target_ua == 0.0:
            self.resets += 1

    def _disarm(self) -> None:
        pass


def test_the_windows_give_the_stated_false_alarm_probability() -> None:
    d = _Offline(50.0, 50.0, np.random.default_rng(0))
    r_min, window, confirm = d._latch_params()  # type: ignore[misc]
    assert (r_min, window) == (5.0, pytest.approx(0.2))
    assert confirm == pytest.approx(math.log(1 / LATCH_FALSE_ALARM) / 5.0 - 0.2)  # 1.642 s
    assert d.latch_false_alarm(5.0) == pytest.approx(LATCH_FALSE_ALARM)  # 0.1x nominal
    assert d.latch_false_alarm(10.0) == pytest.approx(1e-8)  # 0.2x nominal: P^2
    assert d.latch_false_alarm(50.0) < 1e-39
    # the station file's range for SNSPDs (10-100 /s nominal): at 0.1x nominal at most 1e-4
    for nominal in (10.0, 20.0, 50.0, 100.0):
        dn = _Offline(nominal, nominal, np.random.default_rng(0))
        assert dn.latch_false_alarm(nominal / 10) <= LATCH_FALSE_ALARM * (1 + 1e-9)
    # very dark nanowires: C is clamped at 10 s, and the probability at r_min is stated, not hidden
    dark = _Offline(2.0, 2.0, np.random.default_rng(0))
    assert dark._latch_params()[1:] == (pytest.approx(5.0), pytest.approx(10.0))  # type: ignore[index]
    assert dark.latch_false_alarm(0.2) == pytest.approx(math.exp(-0.2 * 15.0))


def test_a_working_channel_at_a_tenth_of_its_nominal_dark_rate_is_almost_never_reset() -> None:
    """20 000 armings in the dark of a working channel at 5 /s against a nominal 50 /s: expected resets
    20 000 · 1e-4 = 2 (before: 20 000 · e^-1 ≈ 7 360), refusals 20 000 · 1e-8 ≈ 0 (before ≈ 2 700)."""
    d = _Offline(50.0, 5.0, np.random.default_rng(20261207))
    refused = 0
    for _ in range(20_000):
        try:
            d._recover_if_latched(None)
        except InstrumentError:
            refused += 1
    assert d.resets <= 10, d.resets  # P(Poisson(2) > 10) ~ 1e-5
    assert refused == 0
    # time spent: W, plus C whenever W counted nothing (e^-1 here; e^-10 at the nominal rate)
    r_min, window, confirm = d._latch_params()  # type: ignore[misc]
    assert d.seconds_read / 20_000 == pytest.approx(window + math.exp(-5.0 * window) * confirm, rel=0.03)


def test_a_latched_channel_is_still_found_and_refused() -> None:
    d = _Offline(50.0, 0.0, np.random.default_rng(1))  # a latched nanowire counts nothing
    with pytest.raises(InstrumentError) as err:
        d._recover_if_latched(None)
    line = str(err.value)
    assert d.resets == 1 and "\n" not in line
    assert line.startswith("D0: channel 1 latched: no count over 1.84 s at 10 µA after its bias was ramped to 0 µA "
                           "and back (a working channel of at least 5 dark counts/s"), line
    assert "counts none there with probability 1e-04" in line
