"""The main window: tabs Station · Live · Calibration · Training · Nodes · Log, built from a Controller.

The window does no work in ``__init__`` beyond building widgets: it neither connects the station
nor starts anything, so tests construct it around a controller and drive it. Closing the window
stops every job and puts the instruments in their safe state on a helper thread, and stops the
Nodes panel's local set of node processes (the window stays responsive and closes once both
:attr:`Controller.shutdownFinished` and :attr:`NodesPanel.shutdownFinished` arrived). Errors from any worker
show in one non-modal dialog and in the log.
"""

from __future__ import annotations

from typing import Any

from labqfl.gui.controller import Controller
from labqfl.gui.panels import (
    CalibrationPanel,
    LivePanel,
    LogPanel,
    NodesPanel,
    StationPanel,
    TrainingPanel,
)
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QResizeEvent, QShortcut
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QSizePolicy, QTabWidget, QWidget

#: Tab keys (for ``--tab``) → titles.
TABS = {"station": "Station", "live": "Live", "calibration": "Calibration", "training": "Training", "nodes": "Nodes",
        "log": "Log"}


#: The window's minimum size [px].
MIN_SIZE = (1100, 680)


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" when it is too narrow (the status bar cut its message
    mid-word); the whole text is in its tooltip."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self._full = text
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = self.contentsRect().width()
        shown = self._full if width <= 0 else self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width)
        super().setText(shown)


class MainWindow(QMainWindow):
    """See the module docstring."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        cfg = controller.config
        self.setWindowTitle(f"labqfl — {cfg.name}")
        self.resize(1440, 900)
        # below this the Live tab's four plots clip their titles and legends (a 1366×768 laptop still fits)
        self.setMinimumSize(*MIN_SIZE)

        self.station_panel = StationPanel(controller)
        self.live_panel = LivePanel(controller)
        self.calibration_panel = CalibrationPanel(controller)
        self.training_panel = TrainingPanel(controller)
        self.nodes_panel = NodesPanel(controller)
        self.log_panel = LogPanel(controller)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for key, panel in (("station", self.station_panel), ("live", self.live_panel),
                           ("calibration", self.calibration_panel), ("training", self.training_panel),
                           ("nodes", self.nodes_panel), ("log", self.log_panel)):
            self.tabs.addTab(panel, TABS[key])
        self.setCentralWidget(self.tabs)
        for i in range(self.tabs.count()):
            shortcut = QShortcut(QKeySequence(f"Ctrl+{i + 1}"), self)
            shortcut.activated.connect(lambda i=i: self.tabs.setCurrentIndex(i))

        # status bar: one indicator per job, plus the latest progress message
        self._indicators: dict[str, QLabel] = {}
        sb = self.statusBar()
        self.message = ElidedLabel("")
        sb.addWidget(self.message, 1)
        self._titles = {"station": "Station", "acquisition": "Acquisition", "distillation": "Distillation",
                        "calibration": "Calibration", "training": "Training"}
        for task in self._titles:
            lab = QLabel()
            lab.setMinimumWidth(110)
            self._indicators[task] = lab
            sb.addPermanentWidget(lab)
        for t in self._indicators:
            self._show_busy(t, False)

        self.error_box: QMessageBox | None = None
        self.errors: list[tuple[str, str]] = []
        self._closing = False
        self._closed_ok = False
        self._shut_down: set[str] = set()  # "station", "nodes": what has finished shutting down
        controller.errorOccurred.connect(self.show_error)
        controller.busyChanged.connect(self._show_busy)
        controller.connectedChanged.connect(self._on_connected_changed)
        controller.progress.connect(self._on_progress)
        controller.shutdownFinished.connect(self._on_station_shutdown)  # bound methods: gone with the window
        self.nodes_panel.shutdownFinished.connect(self._on_nodes_shutdown)
        # Every slot on the controller's signals is a bound method of this window: Qt disconnects those when the
        # window is destroyed. A lambda stays connected and, once the window is gone, raises "Internal C++ object
        # (MainWindow) already deleted" on the controller's next queued signal (tests/gui/test_window_slots_gone.py).

    def _on_connected_changed(self, _connected: bool) -> None:
        self._show_busy("station", self.ctl.busy.get("station", False))

    # -- navigation --------------------------------------------------------------------------------
    def show_tab(self, key: str) -> None:
        titles = list(TABS)
        if key not in TABS:
            raise ValueError(f"unknown tab {key!r}; expected one of {', '.join(titles)}")
        self.tabs.setCurrentIndex(titles.index(key))

    # -- status ------------------------------------------------------------------------------------
    def _show_busy(self, task: str, busy: bool) -> None:
        lab = self._indicators.get(task)
        if lab is None:
            return
        if task == "station":
            on = self.ctl.connected
            text, colour = ("connected" if on else ("connecting" if busy else "offline")), ("#1a7f37" if on else "#777")
        else:
            text, colour = ("running" if busy else "idle"), ("#1a7f37" if busy else "#777")
        lab.setText(f"<span style='color:{colour}'>●</span> {self._titles[task]}: {text}")

    def _on_progress(self, task: str, frac: float, msg: str) -> None:
        self.message.setText(f"{task}: {msg}")

    # -- errors ------------------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        """One non-modal dialog; further errors update it (the log keeps all of them)."""
        self.errors.append((title, message))
        if self.error_box is None:
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Warning)
            box.setStandardButtons(QMessageBox.StandardButton.Ok)
            box.setWindowModality(Qt.WindowModality.NonModal)
            box.finished.connect(self._error_closed)
            self.error_box = box
        box = self.error_box
        box.setWindowTitle(title)
        n = len(self.errors)
        box.setText(f"<b>{title}</b>")
        box.setInformativeText(message + (f"\n\n({n} errors so far; see the Log tab)" if n > 1 else ""))
        box.show()
        self.message.setText(f"error: {title}: {message}")

    def _error_closed(self, *_: Any) -> None:
        self.errors.clear()

    # -- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self._closed_ok:
            event.accept()
            return
        event.ignore()
        if not self._closing:
            self._closing = True
            self.message.setText("closing: stopping jobs, instruments to safe state…")
            self.setEnabled(False)
            self.nodes_panel.shutdown_async()
            self.ctl.shutdown_async()

    def _on_station_shutdown(self) -> None:
        self._on_shutdown("station")

    def _on_nodes_shutdown(self) -> None:
        self._on_shutdown("nodes")

    def _on_shutdown(self, what: str) -> None:
        """Close once the station is shut down and the Nodes panel is too (or has nothing open)."""
        self._shut_down.add(what)
        if self._closed_ok or "station" not in self._shut_down or not (
                "nodes" in self._shut_down or self.nodes_panel.idle):
            return
        self._closed_ok = True
        QTimer.singleShot(0, self.close)


__all__ = ["MainWindow", "TABS"]
