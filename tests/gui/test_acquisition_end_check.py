"""Review s37 lab3 M2: the GUI's acquisition segments are open-ended and end with ``break`` (Stop, a distillation
attached or detached), so the end-of-acquisition check, which ran only when the tagger's blocks ran out, never ran
in the GUI. Now a segment that ends without an error is checked before the safe state (``Blocks.close(check=
True)``): a laser switched off from outside mid-segment (an interlock trip: the pyvisa-sim PRO8000 then reads
``:LASER?`` OFF, pro8.c ``Pro8_LdcGetLdOutput``) is reported as "Acquisition failed" naming it. Before: no
error, the acquisition looked good."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest
from labqfl.gui.core import TestbedCore

from labqfl.config import load_station_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"


class _Events:
    """A core's events, collected while waiting for a condition."""

    def __init__(self, core: TestbedCore) -> None:
        self.core, self.events = core, []  # type: list[Any]

    def kinds(self, kind: str) -> list[Any]:
        self.events.extend(self.core.drain())
        return [e.data for e in self.events if e.kind == kind]

    def wait(self, pred: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"not met within {timeout} s: {self.kinds('error')}"
            time.sleep(0.02)


def _run(tmp_path: Path, fault: bool) -> list[Any]:
    """Connect to the example pyvisa-sim station, acquire until block 3, (``fault``: the laser off from outside
    after block 1), Stop; the "error" events."""
    core = TestbedCore(load_station_config(EXAMPLE), base_dir=EXAMPLE.parent, data_dir=tmp_path / "data",
                       runs_dir=tmp_path / "runs")
    try:
        events = _Events(core)
        core.connect().result(timeout=120)
        core.start_acquisition(block_s=0.01)
        blocks = lambda: max([s.get("blocks", 0) for s in events.kinds("acq_status")] or [0])  # noqa: E731
        events.wait(lambda: blocks() >= 1 or bool(events.kinds("error")), timeout=60)
        if fault:
            core.station["laser"].link.write(":LASER OFF")  # the interlock trips, not labqfl
        n = blocks()
        events.wait(lambda: blocks() >= n + 2 or bool(events.kinds("error")), timeout=60)
        core.stop_acquisition()
        events.wait(lambda: ("acquisition", False) in events.kinds("busy"), timeout=60)
        return events.kinds("error")
    finally:
        core.shutdown(20.0)


def test_the_gui_reports_a_laser_that_went_off_during_an_acquisition(tmp_path: Path) -> None:
    errors = _run(tmp_path, fault=True)
    assert len(errors) == 1, errors
    title, msg = errors[0]
    assert title == "Acquisition failed"
    assert "laser: output_enabled reads False, expected True" in msg
    assert "any key block already distilled from this acquisition stays stored" in msg  # what it costs


def test_a_gui_acquisition_with_every_instrument_as_armed_stops_without_an_error(tmp_path: Path) -> None:
    assert _run(tmp_path, fault=False) == []
