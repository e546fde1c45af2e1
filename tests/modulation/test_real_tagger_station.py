"""A real time tagger on real hardware in one process (issue 17: "client randomness → driver → instrument → loop →
time tagger", the tagger's light unknown to labqfl): ``labqfl acquire`` arms every client's generator itself
(``Station.prepare_acquisition``: a fresh CSPRNG key per client and acquisition), streams the frames to the
clients' Pulse Streamers through the real driver, records the tags of the real Swabian driver and saves each
client's log in its own folder; ``labqfl distill`` makes the key from them.

The lab is stood in for by the test: the Pulse Streamer emulators of the simulated loop play what the drivers
sent, and the loop's tags (from what the generators played only) reach the Swabian driver through an emulated
SDK module put where the vendor's SDK is imported. The Station knows nothing of that loop's own client logs:
low error rates and identical keys at both ends show the key came from the logs the Station armed and streamed.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import labqfl.app.acquire as app_acquire
from labqfl.cli import app
from labqfl.config import parse_station_config
from labqfl.serialize import dump_toml

pytest.importorskip("pulsestreamer")

DURATION = 0.06


@pytest.mark.slow
def test_a_real_tagger_station_arms_streams_and_records_its_clients_own_logs_and_distils_identical_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identical_keys: Any, emulated_pair_station: Any) -> None:
    import labqfl.sim_backends as sim_backends
    from labqfl.sim_backends.recording import read_recording
    from labqfl.sim_backends.timetagger_sdk import EmulatedTimeTaggerSDK, LightSettings

    d = tomllib.loads(emulated_pair_station(emulated_detectors=False).read_text(encoding="utf-8"))
    d["time_tagger"]["driver"] = "SwabianTimeTagger"  # a real tagger: its SDK not emulated, no light known
    d["simulation"]["emulate_time_tagger"] = False
    station_file = tmp_path / "real_tagger.toml"
    station_file.write_text(dump_toml(d), encoding="utf-8")
    cfg = parse_station_config(d, str(station_file))

    # -- the lab: the loop playing the generators, its tags through an SDK module the driver imports -------------
    testbeds: list[Any] = []
    real_create = sim_backends.create_simulated_instruments

    def create(config: Any, testbed: Any = None) -> Any:
        out = real_create(config, testbed)
        testbeds.append(next(iter(out.values())).testbed)
        return out

    def light(capture_s: float) -> Any:  # what the generators played, never a log
        return testbeds[-1].stream_with(dict.fromkeys(cfg.client_names), capture_s, hardware=True)

    real_start = app_acquire.start_client_streams

    def start(station: Any, logs: dict[str, Any], duration: float | None, **kw: Any) -> Any:
        testbeds[-1].hardware.align()  # the emulators' clocks together before the first upload (the master clock's job)
        return real_start(station, logs, duration, **kw)

    sdk = EmulatedTimeTaggerSDK(LightSettings.from_config(cfg), light)
    monkeypatch.setattr(sim_backends, "create_simulated_instruments", create)
    monkeypatch.setattr(app_acquire, "start_client_streams", start)
    monkeypatch.setitem(sys.modules, "Swabian.TimeTagger", sdk)

    data, rec_path = tmp_path / "data", tmp_path / "rec.h5"
    runner = CliRunner()
    r = runner.invoke(app, ["acquire", "--config", str(station_file), "--duration", str(DURATION), "--out",
                            str(rec_path), "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    acq = json.loads(r.stdout)
    assert sdk.created and sdk.created[0].freed  # the Swabian driver recorded, through the SDK, and let it go
    assert acq["acquisition_id"] is not None and acq["client_randomness"] == {"C1": "csprng", "C2": "csprng"}
    for c in ("C1", "C2"):
        assert acq["modulation"][c]["played"] == acq["modulation"][c]["frames"] > 0 and acq["modulation"][c]["lost"] == 0
    with pytest.raises(ValueError, match="has no log"):  # the loop armed no client: the only logs are the Station's
        testbeds[-1].client_logs()
    with read_recording(rec_path) as rec:
        assert rec.source == "hardware" and rec.acquisition_id == acq["acquisition_id"]
    for c in ("C1", "C2"):  # each client's log in its own folder, nowhere else
        assert len(list((data / "nodes" / c / "choices").glob("*.key"))) == 1

    r = runner.invoke(app, ["distill", str(rec_path), "--data-dir", str(data), "--out", str(tmp_path / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    pair = json.loads(r.stdout)["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["dropped_slots"] == 0
    assert pair["error_rate"]["X_key"] < 0.03  # ~50 % had the light played other choices than the streamed logs
    identical_keys(data)


def test_live_distillation_with_a_real_tagger_needs_every_client_on_a_pattern_generator(
        tmp_path: Path, emulated_pair_station: Any) -> None:
    d = tomllib.loads(emulated_pair_station(emulated_detectors=False).read_text(encoding="utf-8"))
    d["time_tagger"]["driver"] = "SwabianTimeTagger"
    d["simulation"]["emulate_time_tagger"] = False
    d["simulation"]["emulate_pattern_generators"] = False
    del d["clients"][1]["pattern_generator"]
    station_file = tmp_path / "bare.toml"
    station_file.write_text(dump_toml(d), encoding="utf-8")
    r = CliRunner().invoke(app, ["distill", "--live", "--config", str(station_file), "--duration", "0.05"])
    assert r.exit_code != 0
    assert "live distillation with a real time tagger needs every client on a pattern generator" in r.output
