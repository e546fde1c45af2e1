"""What `labqfl acquire`, `distill` and `run` show a lab user of the four-client emulated-hardware example
(examples/station_emulated_hardware.toml; docs/lab_setup.md "The four-client example, end to end").

Found running the example end to end (issue 17): `acquire` printed a "QBER XX" of 11-14 % per pair while
`distill` found 0.5 % (the acquire column counted every intensity pair, signal against decoy too, whose
interference is unbalanced); the four frame-marker inputs were reported as channels "4" … "7"; `distill`
and `run` showed neither dropped slots, missing markers nor frames lost; `run --duration 0.05` made a run
folder and printed a plan of six starving pairs before it refused. Fast: no acquisition is run."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from labqfl.sim_backends.analysis import PairReport
from rich.console import Console

from labqfl.app.acquire import Acquisition, pair_summary
from labqfl.app.distill import TagSource
from labqfl.cli import acquire as acquire_cli
from labqfl.cli import distill as distill_cli
from labqfl.cli.common import rate_clicks_cell
from labqfl.config import load_station_config
from labqfl.instruments.interfaces import PlayedFrames
from labqfl.modulation import PlayedChoiceLog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_emulated_hardware.toml"
D0, D1, BOTH = 1, 2, 3  # outcome codes of the pair report (0: no click)


def _report() -> PairReport:
    """The example's pair report with hand-filled counts (combo[k_i, k_j, a_i, a_j, outcome]; a = bit·2 +
    basis; intensity 0 signal (the key intensity: C1 0.0294, C2 0.0216, C4 0.0294), 1 decoy (0.442), 2 vacuum)."""
    cfg = load_station_config(EXAMPLE)
    rep = PairReport(cfg, logs={})
    c = rep.counts["C1-C2"]["combo"]
    c[0, 0, 0, 0, D0], c[0, 0, 0, 0, D1], c[0, 0, 0, 0, BOTH] = 988, 8, 4  # key cell, equal bits: 8 + 4/2 errors
    c[1, 1, 0, 2, D1], c[1, 1, 0, 2, D0] = 95, 5  # decoy-decoy X, different bits: D0 is the error
    c[0, 1, 0, 0, D1] = 500  # signal against decoy, X: unbalanced interference, no cell of the QBER
    c[2, 2, 0, 0, D1] = 50  # vacuum-vacuum: zero intensity, no test cell
    c[0, 0, 1, 1, D0], c[0, 0, 1, 1, D1] = 33, 7  # signal-signal Y, but C1's and C2's signals differ: no test cell
    c[1, 1, 3, 1, D0], c[1, 1, 3, 1, D1] = 2, 18  # decoy-decoy Y, different bits: 2 errors
    c14 = rep.counts["C1-C4"]["combo"]  # C1 and C4 share their signal intensity: signal-signal Y is a test cell
    c14[0, 0, 1, 1, D0], c14[0, 0, 1, 1, D1] = 29, 1
    c14[1, 1, 1, 1, D0], c14[1, 1, 1, 1, BOTH] = 9, 2
    for name in ("C1-C2", "C1-C4"):
        rep.counts[name]["outcomes"][:] = rep.counts[name]["combo"].sum(axis=(0, 1, 2, 3))
    return rep


def test_acquire_reports_the_qber_on_distills_cells_not_over_every_intensity_pair() -> None:
    cfg = load_station_config(EXAMPLE)
    out = pair_summary(_report(), cfg)
    er = out["C1-C2"]["error_rate"]
    assert er["X_key"] == pytest.approx(10 / 1000)
    assert er["X_test"] == pytest.approx(5 / 100)
    assert er["Y_test"] == pytest.approx(2 / 20)
    assert out["C1-C4"]["error_rate"] == {"X_key": None, "X_test": None, "Y_test": pytest.approx(2 / 41)}
    assert out["C1-C2"]["error_rate_counts"] == {"X_key": 1000, "X_test": 100, "Y_test": 20}
    assert out["C1-C4"]["error_rate_counts"] == {"X_key": 0, "X_test": 0, "Y_test": 41}
    # the old column: every intensity pair of XX, the signal-decoy clicks counted as errors
    assert out["C1-C2"]["by_basis_pair"]["XX"]["error_rate"] > 0.3
    assert out["C3-C4"]["error_rate"] == {"X_key": None, "X_test": None, "Y_test": None}

    text = io.StringIO()
    data = {"duration_s": 0.05, "wall_s": 2.0, "speed_x_real_time": 0.025, "n_tags": 115935,
            "count_rates_hz": {"sync": 97660.0, "marker.C1": 1540.0}, "pairs": out,
            "modulation": {"C1": {"frames": 77, "played": 76, "lost": 1, "late": 1, "error": None}}}
    acquire_cli._render(Console(file=text, width=200), cfg.name, data, None)
    s = text.getvalue()
    assert "QBER X key (clicks)" in s and "X test (clicks)" in s and "Y test (clicks)" in s
    # each rate with the clicks it is over; the Y test rate of C1-C2 (2 errors in 20 decoy-decoy clicks) and
    # of C1-C4 (41 clicks) are too few clicks to read: n/a with the count, not "10.00 %" (physics review s34 F4)
    row = next(ln for ln in s.splitlines() if " C1-C2 " in ln)
    assert "1.00 % (1,000)" in row and "5.00 % (100)" in row and "n/a (20 clicks)" in row and "10.00 %" not in row
    row = next(ln for ln in s.splitlines() if " C1-C4 " in ln)
    assert "n/a (41 clicks)" in row and "4.88 %" not in row and row.count("n/a (0 clicks)") == 2
    assert rate_clicks_cell(0.0, 1) == "n/a (1 click)"
    assert "n/a below 100 clicks" in " ".join(s.split()) and "not the key QBER" in " ".join(s.split())
    assert "115,935 tags" in s and "C1 76/77 (1)" in s and "marker.C1 1,540 /s" in s


def test_acquire_names_each_clients_frame_marker_input() -> None:
    cfg = load_station_config(EXAMPLE)  # marker_channels = { C1 = 4, C2 = 5, C3 = 6, C4 = 7 }
    acq = Acquisition(SimpleNamespace(config=cfg))
    acq.counts = {1: 10, 2: 20, 3: 30, 4: 1, 5: 2, 6: 3, 7: 4, 9: 5}
    rates = acq.count_rates_hz(1.0)
    assert list(rates) == ["sync", "D0", "D1", "marker.C1", "marker.C2", "marker.C3", "marker.C4", "9"]
    assert rates["marker.C3"] == 3.0


def test_distill_shows_frames_lost_dropped_slots_and_missing_markers() -> None:
    cfg = load_station_config(EXAMPLE)
    rec = PlayedFrames(65536)
    for f in range(5):  # frame 4: the dark padding of the last upload, past the data
        rec.mark(f, f not in (1, 4))
    src = object.__new__(distill_cli._Source)
    src.acquisition, src.cfg, src.duration_s = None, cfg, 0.002  # 200,000 slots: frames 0-3
    src.tags = TagSource([], {"C1": PlayedChoiceLog(SimpleNamespace(client="C1"), rec), "C2": object()}, None)
    assert src.modulation() == {"C1": {"frames": 4, "played": 3, "lost": 1}}

    slotting = {"sync_tags": 195, "dropped_syncs": 0, "spurious_syncs": 0, "clicked_slots": 4000, "marker_tags": 7,
                "missing_markers": 1, "spurious_markers": 0, "dropped_slots_sync": 131072, "dropped_slots_lost_data": 0}
    pair = {"n_slots": 100000, "dropped_slots": 65536, "sifted_bits": 1200, "final_key_bits": 0,
            "error_rate": {"X_key": 0.005, "Y_test": None}, "phase_error_bound": None, "efficiency_f": None,
            "secure_key_rate_bps": None, "aborted_blocks": 0, "blocks": 1, "abort_reasons": []}
    data = {"source": "rec.h5", "duration_s": 0.002, "wall_s": 1.0, "engine": "cascade", "slotting": slotting,
            "modulation": src.modulation(), "pairs": {"C1-C2": pair}, "run": "runs/x"}
    text = io.StringIO()
    distill_cli._render(Console(file=text, width=200), data, None, SimpleNamespace(block_bits=1000))
    s = text.getvalue()
    assert "C1 3/4 (1)" in s and "1 missing" in s and "131,072 (sync/markers)" in s
    row = next(line for line in s.splitlines() if line.strip().startswith("C1-C2"))
    assert row.split()[1:4] == ["100,000", "65,536", "1,200"]


def test_run_shows_frames_played_and_dropped_slots_per_pair() -> None:
    from labqfl.cli import run as run_cli

    metrics = {"run": "r", "status": "complete",
               "acquisition": {"path": "nodes", "startup_s": {"total_s": 8.3}, "acquisition_wall_s": 33.8,
                               "exit_codes": {"C1": 0},
                               "modulation": {"C1": {"frames": 1526, "played": 1520, "lost": 6, "late": 6, "error": None}}},
               "distill": {"pairs": {"C1-C2": {"sifted_bits": 228708, "qber_x": 0.0057, "final_key_bits": 32985,
                                               "secure_key_rate_bps": 32985.0, "dropped_slots": 393216, "status": "ok"}}}}
    text = io.StringIO()
    run_cli._render(Console(file=text, width=200), metrics, Path("runs/r"))
    s = text.getvalue()
    assert "C1 1520/1526 (6)" in s and "393,216 slots dropped" in s and "QBER 0.57 %" in s


def test_run_refuses_a_too_short_duration_before_making_a_run_folder(tmp_path: Path) -> None:
    """`labqfl run --duration 0.05` on the example used to make a run folder and print a whole plan of
    starving pairs before it refused; now one line, nothing written."""
    from typer.testing import CliRunner

    from labqfl.cli import app

    r = CliRunner().invoke(app, ["run", "--config", str(EXAMPLE), "--duration", "0.05", "--rounds", "1",
                                 "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")])
    assert r.exit_code != 0
    assert "--duration (0.05 s) is too short" in r.output and "needs ≥ 9.4 s of data" in r.output and "limiting pair C1-C4" in r.output
    assert "plan:" not in r.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
