"""The Calibration tab keeps its calibrated station file (review s36 user F23): in ``labqfl gui --screenshot`` it
offered "calibrated station file: /tmp/labqfl-gui-…/calibrated_station.toml (use it with --config)", a folder
deleted when the window closed. Now a temporary run folder is named as such, and "Save station file…" copies the
file to a place the user picks, proposed in the data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def _result(toml: Path, status: str = "done") -> dict[str, Any]:
    return {"procedure": "delays", "title": "Channel delays", "status": status, "run": str(toml.parent),
            "station_toml": str(toml), "failures": {}, "succeeded": 1, "seconds": 0.2, "plots": [],
            "quantities": [{"name": "D0.cable_delay_ps", "value": 3149.6, "uncertainty": 0.44, "unit": "ps"}]}


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "r1" / "calibrated_station.toml"
    path.parent.mkdir(parents=True)
    path.write_text("name = 'calibrated'\n", encoding="utf-8")
    return path


def test_a_temporary_run_folder_is_not_offered_for_use(make_win: Any, toml: Path) -> None:
    panel = make_win().calibration_panel
    panel.runs_temporary = True
    panel.show_result(_result(toml))
    text = panel.run_label.text()
    assert "temporary folder deleted when this window closes" in text and "Save station file…" in text
    assert "use it with --config" not in text
    assert panel.save_btn.isEnabled()


def test_save_copies_the_file_and_proposes_the_data_folder(make_win: Any, toml: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    panel = make_win().calibration_panel
    panel.show_result(_result(toml))
    assert "(use it with --config)" in panel.run_label.text()
    assert panel.save_default() == tmp_path / "data" / "calibrated_station.toml"  # the window's data folder
    monkeypatch.setenv("LABQFL_DATA_DIR", str(tmp_path / "userdata"))
    panel.runs_temporary = True  # a temporary window's data folder is never proposed
    assert panel.save_default() == tmp_path / "userdata" / "calibrated_station.toml"
    saved = panel.save_station_file(panel.save_default())
    assert saved is not None and saved.read_text(encoding="utf-8") == toml.read_text(encoding="utf-8")
    assert f"saved: {saved}" in panel.run_label.text()
    assert panel.save_default() == tmp_path / "userdata" / "calibrated_station-2.toml"  # the name is taken now


def test_nothing_to_save_after_a_cancelled_or_empty_result(make_win: Any, toml: Path) -> None:
    panel = make_win().calibration_panel
    panel.show_result(_result(toml, status="cancelled"))
    assert not panel.save_btn.isEnabled()
    panel.show_result({**_result(toml), "quantities": [], "station_toml": "", "status": "failed"})
    assert not panel.save_btn.isEnabled()


def test_screenshot_mode_marks_its_runs_temporary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``screenshot()`` without a runs folder tells the panel its run folders are temporary."""
    from labqfl.gui import app as gui_app

    seen: dict[str, bool] = {}

    def stop(app: Any, win: Any, tabs: Any, out: Any, shots: Any) -> None:
        seen["temporary"] = win.calibration_panel.runs_temporary
        raise RuntimeError("stop here")

    monkeypatch.setattr(gui_app, "_save_tabs", stop)
    monkeypatch.setattr(gui_app, "_connect", lambda *a: None)
    monkeypatch.setattr(gui_app, "_start_jobs", lambda *a: None)
    monkeypatch.setattr(gui_app, "_pump", lambda *a, **k: True)
    with pytest.raises(RuntimeError, match="stop here"):
        gui_app.screenshot(tmp_path / "gui.png", tabs=["station"], after_s=0.0)
    assert seen == {"temporary": True}
