"""Review s38 user F7: `labqfl station show` (human) left out the time tagger (resolution, channels, cable delays),
the node loss, the clients' insertion loss and the pulse width, and named no field, while the unknown-field error
said "see `labqfl station show` for valid fields" and suggested nothing for `fibre_loss_db_per_km`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"


def test_station_show_gives_the_tagger_losses_and_pulse_width() -> None:
    r = runner.invoke(app, ["station", "show"])
    assert r.exit_code == 0, r.output
    text = " ".join((r.stdout + r.stderr).split())
    cfg, tt = load_station_config(), load_station_config().time_tagger
    assert f"time tagger: resolution {tt.resolution_ps:g} ps" in text
    assert f"sync {tt.sync_channel} (one tag per {tt.sync_divider} pulses)" in text
    assert all(f"{d} → {ch}" in text for d, ch in tt.detector_channels.items())
    assert "cable delays [ps]: " + ", ".join(f"{k} {v:g}" for k, v in tt.cable_delays_ps.items()) in text
    assert f"pulses {cfg.laser.pulse_width_ps:g} ps" in text and f"node loss {cfg.loop.node_loss_db:g} dB" in text
    assert "insertion" in text and "[dB]" in text  # the clients table's column (its header may wrap)
    assert "`labqfl station show --json`" in text


def test_an_unknown_field_gets_the_nearest_name(tmp_path: Path) -> None:
    bad = tmp_path / "typo.toml"
    bad.write_text(EXAMPLE.read_text(encoding="utf-8").replace("fiber_loss_db_per_km", "fibre_loss_db_per_km"),
                   encoding="utf-8")
    r = runner.invoke(app, ["station", "show", "--config", str(bad), "--json"])
    assert r.exit_code == 1
    err = json.loads(r.stdout)["error"]
    assert "field 'loop.fibre_loss_db_per_km': unknown field (did you mean 'fiber_loss_db_per_km'?" in err, err
    assert "`labqfl station show --json` lists the valid fields" in err
    bad.write_text(EXAMPLE.read_text(encoding="utf-8").replace("insertion_loss_db", "insertion_los_db", 1),
                   encoding="utf-8")
    err = json.loads(runner.invoke(app, ["station", "show", "--config", str(bad), "--json"]).stdout)["error"]
    assert "did you mean 'insertion_loss_db'?" in err, err  # inside a list of clients
