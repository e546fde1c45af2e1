"""The main window driven through its controller: settings editing, live data, errors, closing."""

from __future__ import annotations

import threading
import time

import pytest
from labqfl.gui.controller import Controller
from labqfl.gui.main_window import TABS, MainWindow
from PySide6.QtCore import Qt, QTimer


@pytest.fixture
def win(qtbot, small_config, tmp_path):  # type: ignore[no-untyped-def]
    ctl = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    w = MainWindow(ctl)
    qtbot.addWidget(w)
    w.show()
    yield w
    ctl.shutdown(20.0)


def _connect(qtbot, w: MainWindow) -> None:  # type: ignore[no-untyped-def]
    qtbot.mouseClick(w.station_panel.connect_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.station_panel.value_of("laser", "power_mw") not in ("", "—"), timeout=60_000)


def test_building_the_window_does_no_work(win: MainWindow) -> None:
    assert not win.ctl.connected and not any(win.ctl.busy.values())
    assert [win.tabs.tabText(i) for i in range(win.tabs.count())] == list(TABS.values())
    assert not win.live_panel.acq_start.isEnabled()
    assert "connect" in win.live_panel.acq_start.toolTip()


def test_ctrl_number_shortcuts_switch_tabs(win: MainWindow) -> None:
    from PySide6.QtGui import QShortcut

    shortcuts = {s.key().toString(): s for s in win.findChildren(QShortcut)}
    assert sorted(shortcuts) == [f"Ctrl+{i + 1}" for i in range(win.tabs.count())]
    shortcuts["Ctrl+3"].activated.emit()
    assert win.tabs.currentIndex() == 2
    shortcuts["Ctrl+1"].activated.emit()
    assert win.tabs.currentIndex() == 0


def test_station_tree_shows_units_and_edits_through_the_controller(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    _connect(qtbot, win)
    sp = win.station_panel
    it = sp.item("laser", "power_mw")
    assert it.text(2) == "mW" and it.flags() & Qt.ItemFlag.ItemIsEditable
    assert not (sp.item("D0", "temperature_k").flags() & Qt.ItemFlag.ItemIsEditable)
    it.setText(1, "3.5")  # as the inline editor does
    qtbot.waitUntil(lambda: sp.status_of("laser", "power_mw") == "✓ applied", timeout=10_000)
    assert win.ctl.core.station.laser.power_mw == 3.5
    it.setText(1, "500")
    qtbot.waitUntil(lambda: sp.status_of("laser", "power_mw").startswith("⚠"), timeout=10_000)
    assert "power_mw" in sp.status_of("laser", "power_mw")
    assert sp.value_of("laser", "power_mw") == "3.5"  # the old value is back
    sw = sp.item("D1", "enabled")
    assert sw.checkState(1) == Qt.CheckState.Unchecked  # connected in the safe state: nothing armed
    sw.setCheckState(1, Qt.CheckState.Checked)
    qtbot.waitUntil(lambda: sp.status_of("D1", "enabled") == "✓ applied", timeout=10_000)
    assert win.ctl.core.station.detector("D1").enabled


def test_live_panel_plots_rates_and_pair_metrics(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    _connect(qtbot, win)
    lp = win.live_panel
    lp.block_bits.setValue(2000)
    qtbot.mouseClick(lp.dist_start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(lp.rate_series["D0"]) >= 2 and len(lp.qber_x["C1-C2"]) >= 1, timeout=60_000)
    assert lp.table.item(0, 0).text() == "C1-C2" and lp.table.item(0, 1).text() != "—"
    assert lp.acq_stop.isEnabled() and not lp.acq_start.isEnabled()
    qtbot.mouseClick(lp.acq_stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.ctl.busy["acquisition"], timeout=30_000)
    assert not win.ctl.core.station.laser.output_enabled


def test_error_shows_in_a_dialog_and_the_log(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    win.ctl.start_acquisition()  # not connected → error
    qtbot.waitUntil(lambda: win.error_box is not None and win.error_box.isVisible(), timeout=5000)
    assert "Cannot start acquisition" in win.error_box.text()
    qtbot.waitUntil(lambda: any("Cannot start acquisition" in r["message"] for r in win.log_panel.records), timeout=5000)
    assert win.isEnabled()  # no modal freeze


def test_log_filter_per_instrument(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    _connect(qtbot, win)
    win.ctl.core.station.laser.log.warning("laser says hello")
    win.ctl.core.station.detector("D0").log.warning("D0 says hello")
    lg = win.log_panel
    qtbot.waitUntil(lambda: sum("says hello" in r["message"] for r in lg.records) == 2, timeout=5000)
    lg.set_source("D0")
    msgs = [r["message"] for r in lg.visible_records()]
    assert any("D0 says hello" in m for m in msgs) and not any("laser says" in m for m in msgs)
    assert "D0 says hello" in lg.view.toPlainText() and "laser says" not in lg.view.toPlainText()
    lg.set_source("")
    assert all(r["source"] == "" for r in lg.visible_records())


def test_closing_the_window_leaves_instruments_safe(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    _connect(qtbot, win)
    st = win.ctl.core.station
    win.ctl.start_acquisition()
    qtbot.waitUntil(lambda: len(win.live_panel.rate_series["D0"]) >= 1, timeout=30_000)
    assert st.laser.output_enabled
    assert "labqfl-acquisition" in win.ctl.live_threads()
    with qtbot.waitSignal(win.ctl.shutdownFinished, timeout=30_000):
        win.close()
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=5000)
    assert st.closed and not st.laser.output_enabled and not st.detector("D0").enabled
    assert win.ctl.live_threads(wait_s=10.0) == []  # every worker, and the shutdown helper, ended


def test_closing_reports_a_worker_that_does_not_stop(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    from labqfl.gui.app import _app, _close

    release = threading.Event()
    stuck = win.ctl.core._thread(release.wait, (), "labqfl-stuck")  # a worker that ignores stop requests
    stuck.start()
    try:
        problems = _close(_app(), win, win.ctl, timeout_s=30.0, thread_wait_s=0.2)
    finally:
        release.set()
    assert not win.isVisible()
    assert problems == ["worker threads still running after the window closed: labqfl-stuck"]
    assert win.ctl.live_threads(wait_s=10.0) == []


def test_training_dashboard_follows_rounds(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    tp = win.training_panel
    tp.rounds.setValue(2)
    tp.task.setCurrentText("mnist-qnn")
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.errors or (not win.ctl.busy["training"] and tp.rounds_shown == 2), timeout=120_000)
    assert not win.errors
    assert tp.clients_table.rowCount() == 2
    assert tp.clients_table.item(0, 2).text() == "aggregated"
    assert "finished" in tp.status.text()
    x, y = tp.acc_curve.getData()
    assert list(x) == [1.0, 2.0] and all(0 <= v <= 100 for v in y)


def test_calibration_runs_from_the_panel_and_keeps_the_loop_responsive(qtbot, win: MainWindow, assert_loop_responsive) -> None:  # type: ignore[no-untyped-def]
    cp = win.calibration_panel
    assert [s.name for s in cp.specs][:4] == ["detector", "delays", "vpi", "visibility"]
    assert not cp.run_btn.isEnabled() and "connect" in cp.run_btn.toolTip()
    _connect(qtbot, win)
    cp.list.setCurrentRow([s.name for s in cp.specs].index("visibility"))
    ticks: list[float] = []
    probe = QTimer()
    probe.timeout.connect(lambda: ticks.append(time.monotonic()))
    probe.start(10)
    t0 = time.monotonic()
    qtbot.mouseClick(cp.run_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.ctl.busy["calibration"], timeout=5000)
    assert not win.live_panel.acq_start.isEnabled()  # the station belongs to the calibration
    qtbot.waitUntil(lambda: not win.ctl.busy["calibration"], timeout=120_000)
    probe.stop()
    assert not win.errors
    assert_loop_responsive(ticks, time.monotonic() - t0)
    names = [cp.qtable.item(r, 0).text() for r in range(cp.qtable.rowCount())]
    assert "loop.visibility" in names
    assert cp.plot_grid.count() >= 1 and "calibrated station file" in cp.run_label.text()
