"""Review s37 lab3 L2: a detector whose channel has tags in the acquisition's last block did not latch before then
(a latched nanowire clicks no more until its bias is taken away), so the end check does not read its counts port:
no counting window (W + C per channel, 20 s at a nominal 1 /s) and no false alarm. A channel silent in the last
block is still read (tests/station/test_end_of_acquisition.py: latched during the acquisition)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from labqfl.app.acquire import Acquisition
from labqfl.config import parse_station_config
from labqfl.station import Station, acquisition_faults


def test_acquisition_faults_skips_the_detectors_that_clicked() -> None:
    read: list[str] = []

    def detector(role: str) -> SimpleNamespace:
        return SimpleNamespace(acquisition_fault=lambda: read.append(role) or "counted nothing: latched")

    inst = {"D0": detector("D0"), "D1": detector("D1")}
    assert acquisition_faults(inst, {"D0"}) == ["D1: counted nothing: latched"]  # type: ignore[arg-type]
    assert read == ["D1"]


@pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None, reason="pyvisa-py (the 'hardware' extra) is not installed")
def test_an_acquisition_whose_detectors_clicked_to_the_end_reads_no_counts_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.drivers.singlequantum_eos import SingleQuantumEos

    from tests.station.test_emulated_detectors import _eos_station

    read: list[int] = []
    monkeypatch.setattr(SingleQuantumEos, "acquisition_fault", lambda self: read.append(self.channel))
    st = Station(parse_station_config(_eos_station(), "eos.toml"), guard=False)
    try:
        with Acquisition(st, block_s=0.01) as acq:
            blocks = acq.start(0.03)
            for _ in blocks:
                pass
            blocks.close()
        assert acq.counts  # D0 and D1 clicked in every block (light on)
    finally:
        st.close()
    assert read == []  # before: [1, 2], each reading W = 0.2 s of counts or more
