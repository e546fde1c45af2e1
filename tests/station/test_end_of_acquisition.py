"""Review s36 lab H1 (the end-of-acquisition half of s36 M2): after its last block an acquisition reads the
instruments back before it is reported good. A laser that went off (interlock trip) or a detector that latched
during it refuses the acquisition in one line, and ``labqfl acquire`` closes its recording as incomplete (a
distill then refuses it unless ``--allow-incomplete``). Before, the recording was marked complete.

Faults injected in the emulated instruments:

* the example pyvisa-sim station's Thorlabs PRO8000 gets ``:LASER OFF`` after the first block, from outside
  labqfl (``:LASER?`` then reads OFF: pro8.c ``Pro8_LdcGetLdOutput``, PyMeasure ``LDCStatus``);
* the Single Quantum Eos channel of D0 (WebSQ emulator, labqfl.sim_backends.websq) latches after the first
  block: its counts port reports 0 ([W ``SQCounts.run``]) until its bias is taken away.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import h5py
import pytest

from labqfl.app.acquire import AcquireOptions, Acquisition, acquire
from labqfl.config import load_station_config, parse_station_config
from labqfl.errors import DataFormatError, InstrumentError
from labqfl.station import Station, open_recording

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"


def _acquire_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Any) -> Path:
    """``labqfl acquire`` of 0.03 s on the example station into ``rec.h5``, ``fault(station)`` after block 1."""
    seen: dict[str, Any] = {}
    arm = Acquisition.arm

    def arming(self: Acquisition) -> list[str]:
        seen["station"] = self.station
        return arm(self)

    monkeypatch.setattr(Acquisition, "arm", arming)

    def progress(done: int, total: int) -> None:
        if done == 1 and fault is not None:
            fault(seen["station"])

    out = tmp_path / "rec.h5"
    acquire(load_station_config(EXAMPLE), AcquireOptions(duration_s=0.03, block_s=0.01, out=out,
                                                         data_dir=tmp_path / "data"),
            base_dir=EXAMPLE.parent, progress=progress)
    return out


def test_a_laser_that_went_off_during_the_acquisition_refuses_it_and_its_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interlock_trips(st: Station) -> None:
        st["laser"].link.write(":LASER OFF")  # type: ignore[attr-defined]

    with pytest.raises(InstrumentError) as err:
        _acquire_with(tmp_path, monkeypatch, interlock_trips)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("the acquisition: at its end the instruments "
                           "no longer read as armed: laser: output_enabled reads False, expected True; "), line
    assert line.endswith("Refused: the whole recording is closed as incomplete: every block and each client's played "
                         "frames are in it; labqfl distill refuses it unless --allow-incomplete"), line
    out = tmp_path / "rec.h5"
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["complete"]) is False
    with pytest.raises(DataFormatError, match="incomplete"):
        open_recording(out)


def test_an_acquisition_with_every_instrument_as_armed_is_complete(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = _acquire_with(tmp_path, monkeypatch, None)
    rec = open_recording(out)
    try:
        assert rec.complete
    finally:
        rec.close()


@pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None, reason="pyvisa-py (the 'hardware' extra) is not installed")
def test_a_detector_that_latched_during_the_acquisition_refuses_it() -> None:
    from tests.station.test_emulated_detectors import _eos_station

    st = Station(parse_station_config(_eos_station(), "eos.toml"), guard=False)
    try:
        with Acquisition(st, block_s=0.01) as acq:
            # 6 blocks: the simulated loop runs a block or two ahead of the consumer, and D0 must be silent in
            # the last one (a channel that clicked there is not read: labqfl.station.acquisition_faults)
            blocks = acq.start(0.06)
            with pytest.raises(InstrumentError) as err:
                for k, _ in enumerate(blocks):
                    if k == 0:
                        st._detector_emulators.emulators[0].latch(1)  # D0 latched by a bright pulse
            blocks.close()
        line = str(err.value)
        assert "\n" not in line and "D0: channel 1 counted nothing over " in line and "latched during the acquisition" in line
        assert "D1" not in line
        assert st._detector_emulators.emulators[0].latched == [False, False]  # the safe state took the bias away
    finally:
        st.close()
