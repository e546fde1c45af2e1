"""A whole GUI session in its own process (issue 19, item 1): 20 s live with acquisition,
distillation and federated training, then the window is closed as a user closes it. The process
must exit 0 — no "Fatal Python error" at interpreter shutdown — with every worker thread
stopped (``labqfl gui`` fails with "worker threads still running after the window closed"
otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from labqfl.config import StationConfig, station_to_toml_dict
from labqfl.runs import dump_toml

LIVE_S = 20


@pytest.mark.slow
def test_gui_runs_live_then_closes_with_exit_0_and_no_worker_left(small_config: StationConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    station = tmp_path / "station.toml"
    station.write_text(dump_toml(station_to_toml_dict(small_config)), encoding="utf-8")
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    cmd = [sys.executable, "-c", "from labqfl.cli import main; main()", "gui", "--config", str(station),
           "--screenshot", str(shot), "--after", str(LIVE_S), "--tab", "live,training", "--rounds", "2",
           "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert "Fatal Python error" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["errors"] == []
    # the session did what a user does: acquired, distilled (sifted bits counted by the distiller;
    # whether a whole block closes within 20 s depends on the machine) and trained
    assert report["distillation"]["C1-C2"]["sifted_bits"] > 0, report["distillation"]
    assert report["training_rounds"] >= 1
    assert report["wall_s"] >= LIVE_S
    for p in report["screenshots"]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
