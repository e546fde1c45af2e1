"""Review s36 lab2 L3 and s36 lab H1 on a node: a failed arming while another acquisition holds the node's
instruments armed (``NodeInstruments._armed`` >= 1) leaves them to it, and that acquisition is refused at its end.

Before, ``arm_instruments``' failure path put every instrument of the node in its safe state (laser ramped off,
detectors un-biased, master clock dark) under the running acquisition, which was not told (its count stayed 1).

The bench of tests/nodes/test_node_instruments.py: a Thorlabs PRO8000 on pyvisa-sim over loopback TCP
(``:LASER?``: pro8.c ``Pro8_LdcGetLdOutput``), a Single Quantum Eos controller (WebSQ emulator) and a Pulse
Streamer master clock (emulator; read back with the vendor client's ``isStreaming()``). The fault: the master
clock stops on its own and accepts ``stream()`` again without playing (an external reference lost).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from labqfl.config import parse_station_config
from labqfl.errors import InstrumentError
from labqfl.nodes.common import NodeInstruments, owned_roles

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                 reason="pyvisa-py (the 'hardware' extra) is not installed"),
              pytest.mark.skipif(importlib.util.find_spec("pulsestreamer") is None,
                                 reason="pulsestreamer (the 'hardware' extra) is not installed")]


def _detection_node(small_station_file: Path) -> tuple[Any, NodeInstruments]:
    from tests.nodes.test_node_instruments import Bench, _small

    bench = Bench()
    cfg = parse_station_config(bench.detection(_small(small_station_file)), "bench")
    return bench, NodeInstruments("detector", cfg, owned_roles(cfg, "detector", "detector"), None)


def test_a_failed_arming_leaves_the_running_acquisitions_instruments_and_refuses_it_at_its_end(
        small_station_file: Path) -> None:
    bench, ni = _detection_node(small_station_file)
    try:
        ni.open()
        ni.arm()  # acquisition A runs
        assert ni.acquisition_faults() == []
        assert bench.laser.ask(":LASER?") == "ON" and bench.snspd.state()["enabled"] is True
        bench.clock._stop_playing((0, 0, 0), 0)  # the trigger drops out ...
        bench.clock._begin = lambda slot_nr: None  # ... and stream() is accepted without playing
        with pytest.raises(InstrumentError, match=r"^master_clock: stream\(trigger, REPEAT_INFINITELY\) accepted but "
                           r"isStreaming\(\) reads output_enabled=False"):
            ni.arm()  # acquisition B is refused ...
        # ... and A keeps its laser and detectors: no safe state under it
        assert bench.laser.ask(":LASER?") == "ON"
        assert bench.snspd.state()["enabled"] is True and bench.snspd.state()["bias_ua"] == [4.0, 3.0]
        faults = ni.acquisition_faults()  # what the detection node checks before it tells the clients "ann/end"
        assert faults[0].startswith("arming another acquisition failed meanwhile: master_clock: stream(trigger"), faults
        assert "master_clock: output_enabled reads False, expected True" in faults
        since = bench.sent()
        assert ni.disarm() == {}  # A ends: the count goes to 0, the safe state now
        bench.assert_safe(since, modulators=False)
        assert ni.acquisition_faults() == []  # told; the next acquisition starts clean
    finally:
        ni.close()
        bench.close()


def test_a_laser_that_went_off_during_the_acquisition_is_a_fault_at_its_end(small_station_file: Path) -> None:
    """The interlock trips mid-acquisition: ``:LASER OFF`` reaches the pyvisa-sim PRO8000 from outside labqfl."""
    bench, ni = _detection_node(small_station_file)
    try:
        ni.open()
        ni.arm()
        bench.laser.ask(":LASER OFF")
        assert ni.acquisition_faults() == ["laser: output_enabled reads False, expected True"]
        ni.disarm()
    finally:
        ni.close()
        bench.close()
