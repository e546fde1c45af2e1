"""``labqfl distill`` of a recording in which a pattern-generator client has no played-frames record
(review s37 lab3 L1, left by session 37).

A client on a pattern generator (``clients.<C>.pattern_generator``) streams its logged choices to the generator
while the acquisition runs, and a frame the generator could not play in time (an underflow) is lost: its slots
did not carry the logged states. ``labqfl acquire`` stores which frames were played (``/clients/<C>/played_frames``,
sim_backends/recording.py) and distill sifts only those. Without the record the whole log was used, silently: a
lost frame's slots were sifted with choices that were never sent, which the key's security analysis (the decoy
bound, the phase-error estimate: docs/protocol.md) assumes were. Now distill refuses such a recording with one
line naming the client and the way on, before any key store is opened. A recording missing the record cannot be
repaired (what the generator played is known only while it plays), so the way on is a new acquisition.

Recorded: 0.2 s of examples/station_emulated_hardware.toml (Pulse Streamer emulators as the four clients'
generators)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")
runner = CliRunner()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, emulated_hardware_file: Any) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("rec-played")
    rec, data = tmp / "rec.h5", tmp / "data"
    example = emulated_hardware_file(tmp)  # the example on loopback addresses of its own
    r = runner.invoke(app, ["acquire", "--config", str(example), "--duration", "0.2", "--out", str(rec),
                            "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    with h5py.File(rec, "r") as f:
        assert all("played_frames" in f["clients"][c] for c in f["clients"]), "the example's clients all stream"
    return SimpleNamespace(tmp=tmp, rec=rec, data=data)


def _without_record(recorded: SimpleNamespace, name: str, *clients: str) -> Path:
    out = recorded.tmp / name
    shutil.copy(recorded.rec, out)
    with h5py.File(out, "r+") as f:
        for c in clients:
            del f["clients"][c]["played_frames"]
    return out


@pytest.mark.parametrize("as_json", [False, True])
def test_distill_refuses_a_pattern_generator_client_without_its_played_frames(recorded: SimpleNamespace,
                                                                            as_json: bool) -> None:
    rec = _without_record(recorded, f"no-played-{as_json}.h5", "C1", "C3")
    data = recorded.tmp / f"data-{as_json}"
    shutil.copytree(recorded.data, data)  # the CSPRNG clients' private logs
    r = runner.invoke(app, ["distill", str(rec), "--block-bits", "1000", "--data-dir", str(data),
                            "--out", str(recorded.tmp / "runs"), *(["--json"] if as_json else [])])
    line = error_line(r)
    assert "clients C1, C3 streamed to a pattern generator" in line, line
    assert "no played-frames record" in line and "/clients/C1/played_frames" in line, line
    assert "were never sent" in line and "labqfl acquire --out" in line, line
    assert not (data / "keystore").exists() or not list((data / "keystore").glob("*.sqlite")), \
        "refused before any key store is opened"
    assert not (recorded.tmp / "runs").exists() or not list((recorded.tmp / "runs").iterdir()), "no run folder"


def test_a_recording_with_every_record_gives_each_streaming_client_its_played_frames(
        recorded: SimpleNamespace) -> None:
    from labqfl.app.distill import recording_inputs
    from labqfl.modulation import PlayedChoiceLog
    from labqfl.station import open_recording

    with open_recording(recorded.rec) as rec:
        logs, _ = recording_inputs(rec, rec.config, recorded.data)
    assert sorted(logs) == ["C1", "C2", "C3", "C4"]
    assert all(isinstance(lg, PlayedChoiceLog) for lg in logs.values()), logs
