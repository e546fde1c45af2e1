"""Review s37 lab3 L1, L9: a recording refused by the end-of-acquisition check (or interrupted) still holds each
pattern-generator client's played-frames record. Before, ``_save_played_frames`` ran only on success, so the
refused recording had none and ``distill --allow-incomplete`` fell back to the clients' whole logs: frames lost
to an underflow would have been treated as played. The error also says what the refusal costs on this path.

``labqfl acquire`` of 0.2 s on examples/station_emulated_hardware.toml (Pulse Streamer emulators as the clients'
pattern generators), with one fault added to what the end check reads (a false latch alarm's stand-in)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import h5py
import pytest

import labqfl.app.acquire as acq_mod
from labqfl.app.acquire import AcquireOptions, acquire
from labqfl.config import load_station_config
from labqfl.errors import InstrumentError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")


def test_a_recording_refused_at_its_end_keeps_every_clients_played_frames(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        emulated_hardware_file: Any) -> None:
    example = emulated_hardware_file(tmp_path)  # the example on loopback addresses of its own
    real = acq_mod.acquisition_faults
    monkeypatch.setattr(acq_mod, "acquisition_faults",
                        lambda *a: [*real(*a), "D0: channel 1 counted nothing (injected)"])
    out = tmp_path / "rec.h5"
    with pytest.raises(InstrumentError) as err:
        acquire(load_station_config(example), AcquireOptions(duration_s=0.2, block_s=0.05, out=out,
                                                             data_dir=tmp_path / "data"), base_dir=example.parent)
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["complete"]) is False
        clients = sorted(f["clients"])
        assert clients == ["C1", "C2", "C3", "C4"]
        assert all("played_frames" in f["clients"][c] for c in clients), {c: list(f["clients"][c]) for c in clients}
    assert "D0: channel 1 counted nothing (injected)" in str(err.value)
    assert "Refused: the whole recording is closed as incomplete" in str(err.value)
