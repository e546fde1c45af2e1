"""The simulator benchmark's parts (no timing asserted): the path each run took and the free-cores probe that
says whether the all-cores figure could beat the one-thread figure on this machine."""

from __future__ import annotations

from labqfl.bench.entries.simulator import _speed, free_cores
from labqfl.config import load_station_config


def test_speed_reports_the_path_the_testbed_took():
    cfg = load_station_config()
    auto = _speed(cfg, 0.002, repeats=1, threads=(1,))["1_thread"]
    forced = _speed(cfg, 0.002, repeats=1, threads=(1,), on_demand=False)["1_thread"]
    assert auto["path"] == "on demand"  # the default station's candidates are few (docs/simulator.md)
    assert forced["path"] == "drive patterns"
    assert auto["tags"] > 0 and forced["tags"] > 0


def test_free_cores_probe_is_between_none_and_the_threads_asked():
    got = free_cores(2, 200_000)
    assert 0.0 < got <= 2.5
