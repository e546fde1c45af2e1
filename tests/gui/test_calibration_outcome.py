"""What the Calibration panel says about an outcome: done, partial, failed or cancelled (review s31,
items 1, 2, 7 and 11): a failed procedure looks failed and offers no station file, a procedure
that needs light works from the safe state, a double click runs once without an error dialog."""

from __future__ import annotations

from typing import Any

import pytest
from labqfl.gui.controller import Controller
from labqfl.gui.core import TestbedCore
from labqfl.gui.main_window import MainWindow
from labqfl.gui.panels.calibration import CalibrationPanel
from PySide6.QtCore import Qt


def _run_to_end(core: TestbedCore, events: Any, name: str) -> dict[str, Any]:
    core.run_calibration(name, quick=True)
    events.wait(lambda: events.kinds("calibration_result") and not core.busy("calibration"), timeout=120)
    return events.kinds("calibration_result")[-1]


def test_delays_after_safe_state_succeeds(core: TestbedCore, events) -> None:  # type: ignore[no-untyped-def]
    """Safe state closes the shutters and switches the modulators off; the delays procedure opens
    the light path itself (it turned only the laser and the detectors on: "no light or no sync")."""
    core.connect().result(60)
    core.safe_state().result(30)
    st = core.station
    assert not st.laser.output_enabled and all(st.attenuator(c).shutter_closed for c in st.config.client_names)
    res = _run_to_end(core, events, "delays")
    assert res["status"] == "done", res["failures"]
    assert {q["name"] for q in res["quantities"]} == {"D0.cable_delay_ps", "D1.cable_delay_ps"}
    assert not events.kinds("error")
    # the procedure restored what it changed: the station is back in its safe state
    assert not st.laser.output_enabled and all(st.attenuator(c).shutter_closed for c in st.config.client_names)
    # the timing jitter of the detector group needs light too (it failed the same way)
    res = _run_to_end(core, events, "detector")
    assert res["status"] == "done", res["failures"]
    assert {"D0.jitter_ps", "D1.jitter_ps"} <= {q["name"] for q in res["quantities"]}


def test_a_failed_procedure_is_reported_failed_without_a_station_file(core: TestbedCore, events) -> None:  # type: ignore[no-untyped-def]
    core.connect().result(60)
    core.set_setting("laser", "power_mw", "0").result(10)  # laser "on" but dark: no light
    res = _run_to_end(core, events, "delays")
    assert res["status"] == "failed" and res["quantities"] == [] and res["station_toml"] == ""
    assert "no light" in res["failures"]["delays"]
    steps = [m for task, _f, m in events.kinds("progress") if task == "calibration"]
    assert steps[-1].startswith("failed: ") and "no light" in steps[-1] and "done" not in steps[-1]
    assert "instruments put in their safe state" not in steps[-1]  # the short reason, not the library's tail
    assert events.kinds("error")


def _result(status: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"procedure": "delays", "title": "Channel delays", "status": status, "quantities": [],
                            "plots": [], "run": "/runs/r1", "station_toml": "", "failures": {}, "succeeded": 0,
                            "seconds": 0.2}
    base.update(kw)
    return base


_Q = {"name": "D0.cable_delay_ps", "value": 5123.0, "uncertainty": 0.5, "unit": "ps", "true": 5123.0, "pull": 0.1}


@pytest.fixture
def panel(qtbot, small_config, tmp_path):  # type: ignore[no-untyped-def]
    ctl = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    p = CalibrationPanel(ctl)
    qtbot.addWidget(p)
    yield p
    ctl.shutdown(5.0)


def test_panel_shows_failed_partial_done_and_cancelled(panel: CalibrationPanel) -> None:
    panel.show_result(_result("done", quantities=[_Q], station_toml="/runs/r1/calibrated_station.toml", succeeded=1))
    assert "use it with --config" in panel.run_label.text() and panel.qtable.rowCount() == 1
    assert "failed" not in panel.result_title.text()

    panel.show_result(_result("failed", failures={"delays": "calibration delays failed: D0: no light"}))
    assert "failed" in panel.result_title.text()
    assert "calibrated station file" not in panel.run_label.text() and "--config" not in panel.run_label.text()
    assert "nothing calibrated" in panel.run_label.text()
    assert panel.qtable.rowCount() == 0 and "D0: no light" in panel.failure_label.text()
    assert not panel.failure_label.isHidden()

    panel.show_result(_result("partial", quantities=[_Q], station_toml="/runs/r1/calibrated_station.toml",
                              failures={"timing_jitter": "no peak"}, succeeded=4))
    assert "partial" in panel.result_title.text()
    assert "only the 4 procedure(s) that succeeded" in panel.run_label.text()
    assert "timing_jitter: no peak" in panel.failure_label.text()

    panel.show_result(_result("cancelled"))  # the previous result does not stay next to "cancelled"
    assert "cancelled" in panel.result_title.text() and panel.qtable.rowCount() == 0
    assert panel.failure_label.isHidden() and "cancelled" in panel.run_label.text()
    assert panel.plot_scroll.isHidden()  # no empty plot area with scroll bars


def test_double_click_on_run_runs_once_without_an_error(qtbot, small_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    w = MainWindow(ctl)
    qtbot.addWidget(w)
    try:
        with qtbot.waitSignal(ctl.connectedChanged, timeout=60_000):
            ctl.connect_station()
        qtbot.waitUntil(lambda: w.calibration_panel.run_btn.isEnabled(), timeout=10_000)
        cp = w.calibration_panel
        cp.list.setCurrentRow([s.name for s in cp.specs].index("delays"))
        qtbot.mouseClick(cp.run_btn, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(cp.run_btn, Qt.MouseButton.LeftButton)  # before the controller's next drain
        assert not cp.run_btn.isEnabled()
        qtbot.waitUntil(lambda: bool(w.errors) or (not ctl.busy["calibration"] and cp.step.text().endswith("done")),
                        timeout=120_000)
        assert not w.errors
        assert cp.run_btn.isEnabled()
    finally:
        ctl.shutdown(20.0)
