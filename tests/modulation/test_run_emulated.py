"""The clients' modulation streamed by every front end, not only ``labqfl acquire``: the application
layer's Acquisition starts each client's pattern-generator stream, so ``labqfl run --in-process`` and a
live distillation (the DistillSession fed from an Acquisition, as ``distill --live``, the GUI's Live tab
and ``labqfl run`` do) run the whole emulated chain — client randomness → SwabianPulseStreamer → Pulse
Streamer emulators → simulated loop → tagger — and distil from played frames only.

Station: examples/station_emulated_hardware.toml cut to one pair (tests/modulation/test_emulated_station.py)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import labqfl.app.acquire as app_acquire
from labqfl.cli import app
from labqfl.config import parse_station_config
from labqfl.modulation import PlayedChoiceLog

pytest.importorskip("pulsestreamer")

F = 65_536  # slots per frame of the example station


@pytest.mark.slow
def test_labqfl_run_in_process_streams_the_clients_modulation(tmp_path: Path, emulated_pair_station: Any,
                                                              identical_keys: Any) -> None:
    """``labqfl run --in-process`` on the emulated station: every frame played at both clients (metrics
    ``acquisition.modulation``), key made from what the emulators played, identical at both ends."""
    station_file = emulated_pair_station()
    data_dir, runs = tmp_path / "data", tmp_path / "runs"
    duration = 0.06  # 92 frames; the block-size rule needs 0.05 s here
    r = CliRunner().invoke(app, ["run", "--config", str(station_file), "--duration", str(duration), "--rounds", "1",
                                 "--eps-sec", "1e-4", "--in-process", "--no-wait-for-key", "--data-dir", str(data_dir),
                                 "--out", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["status"] == "complete" and m["key_source"] == "qkd"
    n_frames = math.ceil(duration * 1e8 / F)
    for c in ("C1", "C2"):
        assert m["acquisition"]["modulation"][c] == {"frames": n_frames, "played": n_frames, "lost": 0, "late": 0,
                                                     "error": None}
    pair = m["distill"]["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["dropped_slots"] == 0
    assert pair["error_rate"]["X_key"] < 0.03  # the loop followed both clients' played choices
    identical_keys(data_dir)


@pytest.mark.slow
def test_live_distillation_drops_a_stalled_clients_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          emulated_station: Any, identical_keys: Any) -> None:
    """A DistillSession fed live from an Acquisition (no recording) while C1's randomness stalls for a few
    frames: the Distiller is handed C1's and C2's played-only logs, C1's lost frames are dropped and
    counted at both ends, and the keys in C1's and C2's stores are identical."""
    from labqfl.app.distill import DistillOptions, DistillSession
    from labqfl.app.station import open_station

    es = emulated_station
    station_file = es.emulated_pair_station(tmp_path)
    cfg = parse_station_config(tomllib.loads(station_file.read_text()), str(station_file))
    data_dir, duration = tmp_path / "data", es.DURATION
    real_start = app_acquire.start_client_streams
    stalled: list[Any] = []

    def start_with_stall(station: Any, logs: dict[str, Any], duration_s: float | None) -> Any:
        s = es.StalledLog(logs["C1"])
        stalled.append(s)
        streams = real_start(station, {**logs, "C1": s}, duration_s, max_wait_s=0.2)
        s.streams = streams
        s.ready.set()
        return streams

    monkeypatch.setattr(app_acquire, "start_client_streams", start_with_stall)
    total = int(round(duration * cfg.laser.rep_rate_hz))
    with open_station(cfg, base_dir=station_file.parent) as station, \
            DistillSession.open(cfg, DistillOptions(eps_sec=1e-4), duration, data_dir=data_dir) as session, \
            app_acquire.Acquisition(station) as acq:
        blocks = acq.start(duration)
        distiller = session.start(station.client_logs(), station.acquisition_id())
        assert all(isinstance(distiller.logs[c], PlayedChoiceLog) for c in ("C1", "C2"))
        for blk in blocks:
            session.push(blk)
        result = session.finish(total)["C1-C2"]
        lost = [f for f in acq.played_frames["C1"].lost if f * F < total]
        slot_stats = distiller.slotter.stats
    assert lost == list(range(es.STALL_FROM, es.STALL_FROM + len(lost))) and len(lost) >= es.N_STALL
    assert acq.modulation["C1"]["lost"] == len(lost) and acq.modulation["C2"]["lost"] == 0
    assert slot_stats.missing_markers >= 1
    assert result.dropped_slots >= len(lost) * F
    assert result.final_key_bits > 0 and not any(b.abort for b in result.blocks)
    identical_keys(data_dir)


@pytest.mark.slow
def test_an_open_ended_acquisition_streams_until_closed_then_a_new_segment_streams_again(
        emulated_pair_station: Any) -> None:
    """The GUI's Live tab: ``Acquisition.start()`` with no duration streams every client's frames until the
    blocks are closed (the frames not played by then are lost, never replayed); the next segment streams
    afresh from frame 0 of its own acquisition."""
    from labqfl.app.station import open_station

    station_file = emulated_pair_station()
    cfg = parse_station_config(tomllib.loads(station_file.read_text()), str(station_file))
    with open_station(cfg, base_dir=station_file.parent) as station, app_acquire.Acquisition(station) as acq:
        blocks = acq.start()
        assert all(isinstance(lg, PlayedChoiceLog) for lg in station.client_logs().values())
        for k, _ in enumerate(blocks, start=1):
            if k == 3:
                break
        blocks.close()
        whole = int(round(acq.t_s * cfg.laser.rep_rate_hz)) // F  # frames wholly inside the acquired time
        for c, rec in acq.played_frames.items():
            assert rec.played == list(range(whole)), c  # every frame played up to the cut, in order
            assert rec.lost and min(rec.lost) == whole  # the frame at the cut and those queued after it: lost
        first = acq.streams
        n = sum(1 for _ in acq.start(0.01))
        assert n == 1 and acq.streams is not first
        for c in ("C1", "C2"):
            assert acq.modulation[c] == {"frames": math.ceil(0.01 * 1e8 / F), "played": math.ceil(0.01 * 1e8 / F),
                                         "lost": 0, "late": 0, "error": None}


@pytest.mark.slow
def test_distill_live_on_the_emulated_station_streams_and_keys_agree(tmp_path: Path, emulated_pair_station: Any,
                                                                     identical_keys: Any) -> None:
    """``labqfl distill --live`` accepts a station whose pattern generators are drivers over emulators (the
    tagger is simulated): the clients stream, and the key made from what they played is identical at both
    ends."""
    station_file = emulated_pair_station()
    data_dir = tmp_path / "data"
    r = CliRunner().invoke(app, ["distill", "--live", "--config", str(station_file), "--duration", "0.06",
                                 "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    pair = json.loads(r.stdout)["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["dropped_slots"] == 0
    identical_keys(data_dir)
