"""``phases_s`` of ``labqfl run``'s metrics: :class:`labqfl.mainjob.PhaseClock` (the end-to-end runs of
tests/mainjob/test_phases.py check the field on a real run)."""

from __future__ import annotations

import time

import pytest

from labqfl.mainjob import PhaseClock


def test_phases_are_timed_add_up_and_sum_to_at_most_the_total():
    clock = PhaseClock()
    with clock.phase("setup"):
        time.sleep(0.02)
    time.sleep(0.03)  # between phases: counted in total_s only
    with clock.phase("train"):
        time.sleep(0.01)
    with clock.phase("train"):  # a phase entered twice adds up
        time.sleep(0.01)
    d = clock.as_dict()
    assert set(d) == {"setup", "train", "total_s"}
    assert d["setup"] >= 0.02 and d["train"] >= 0.02
    assert d["setup"] + d["train"] + 0.03 <= d["total_s"] + 1e-3


def test_a_phase_under_way_counts_its_seconds_so_far():
    """The report is written inside the ``report`` phase and shows phases_s (review s38 user F1)."""
    clock = PhaseClock()
    with clock.phase("train"):
        time.sleep(0.01)
    with clock.phase("report"):
        time.sleep(0.02)
        d = clock.as_dict()
        assert set(d) == {"train", "report", "total_s"} and d["report"] >= 0.02
        assert d["train"] + d["report"] <= d["total_s"] + 1e-3
    assert clock.as_dict()["report"] >= d["report"]


def test_a_phase_that_raises_is_still_timed():
    clock = PhaseClock()
    with pytest.raises(RuntimeError), clock.phase("acquire"):
        time.sleep(0.01)
        raise RuntimeError("node failed")
    d = clock.as_dict()
    assert 0.01 <= d["acquire"] <= d["total_s"]
