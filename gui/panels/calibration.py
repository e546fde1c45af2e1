"""The Calibration panel: the procedures by group, their results and plots, and writing the calibration file.

Built from a :class:`~labqfl.gui.controller.Controller`; no panel touches an instrument."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labqfl.gui.controller import Controller
from labqfl.gui.panels._common import ERR_COLOUR, heading, read_only_table, table_item
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)


def measured_cells(value: float, uncertainty: float) -> tuple[str, str]:
    """``value`` and its 1σ ``uncertainty`` as table cells: the uncertainty to 2 significant digits and the value
    to the same decimal place (GUM, JCGM 100:2008 §7.2.6: the uncertainty with at most two significant digits, the
    result rounded to match). Review s38 user F11: bias phases read -0.00611983 ± 0.0049 (6 significant digits, up
    to 9 decimals) beside Vπ at 4. Outside 1e-5…1e6 (or no finite uncertainty): 4 and 2 significant digits."""
    import math

    u = abs(float(uncertainty))
    if not (math.isfinite(u) and 1e-5 <= u < 1e6) or not math.isfinite(float(value)):
        return f"{float(value):.4g}", f"{float(uncertainty):.2g}"
    dec = max(0, 1 - math.floor(math.log10(u)))  # the uncertainty's second significant digit
    if round(u, dec) >= 10 ** (2 - dec):  # rounding carried into a third digit (9.96 -> 10.0): one fewer
        dec = max(0, dec - 1)
    return f"{float(value):.{dec}f}", f"{u:.{dec}f}"


class CalibrationPanel(QWidget):
    """Pick a procedure, run it on the station, see its calibrated quantities and plots."""

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        self.specs, self.unavailable = ctl.calibrations()

        left_w = self._build_procedures()
        right = self._build_results()

        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addLayout(right, 1)

        #: the run folders are in a temporary folder deleted when the window closes (``labqfl gui --screenshot``
        #: without --runs-dir): the station file is then offered only through "Save station file…"
        self.runs_temporary = False
        self._station_toml = ""
        ctl.calibrationResult.connect(self.show_result)
        ctl.busyChanged.connect(self._update)
        ctl.connectedChanged.connect(self._update)
        ctl.progress.connect(self._on_progress)
        self._on_select()
        self._update()

    def _build_procedures(self) -> QWidget:
        """The left column: the procedure list, its description, the quick option, run/cancel and progress."""
        self.list = QListWidget()
        for s in self.specs:
            it = QListWidgetItem(s.title)
            it.setToolTip(s.description)
            it.setData(Qt.ItemDataRole.UserRole, s.name)
            self.list.addItem(it)
        if self.specs:
            self.list.setCurrentRow(0)
        self.desc = QLabel()
        self.desc.setWordWrap(True)
        self.desc.setStyleSheet("color: #444")
        self.desc.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.quick = QCheckBox("Quick (shorter integrations)")
        self.quick.setChecked(True)
        self.quick.setToolTip("Fewer points and shorter integration times: faster, larger uncertainties")
        self.run_btn = QPushButton("▶ Run calibration")
        self.cancel_btn = QPushButton("■ Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.step = QLabel("")
        self.step.setWordWrap(True)
        self.list.currentItemChanged.connect(self._on_select)
        self.run_btn.clicked.connect(self._run)
        self.cancel_btn.clicked.connect(self.ctl.cancel_calibration)

        left = QVBoxLayout()
        left.addWidget(heading("Procedures"))
        self.list.setFixedHeight(max(60, 22 * max(1, len(self.specs)) + 8))
        left.addWidget(self.list)
        left.addWidget(self.desc)
        left.addWidget(self.quick)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        left.addLayout(row)
        left.addWidget(self.progress)
        left.addWidget(self.step)
        left.addStretch(1)
        left_w = QWidget()
        left_w.setLayout(left)
        left_w.setFixedWidth(320)
        return left_w

    def _build_results(self) -> QVBoxLayout:
        """The right column: the result's title, its quantities table, its plots and the run's record."""
        self.result_title = heading("No result yet")
        self.qtable = read_only_table(["Quantity", "Value", "± (1σ)", "Unit", "Simulator truth", "Pull (σ)"])
        self.qtable.horizontalHeader().setStretchLastSection(False)
        self.qtable.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.qtable.setMaximumHeight(230)
        self.plot_box = QWidget()
        self.plot_grid = QGridLayout(self.plot_box)
        self.plot_scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.plot_box)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.failure_label = QLabel("")
        self.failure_label.setWordWrap(True)
        self.failure_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.failure_label.setStyleSheet(f"color: {ERR_COLOUR.name()}")
        self.failure_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.failure_label.setVisible(False)
        self.run_label = QLabel("")
        self.run_label.setWordWrap(True)
        self.run_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.run_label.setStyleSheet("color: #555")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        right = QVBoxLayout()
        right.addWidget(self.result_title)
        right.addWidget(self.failure_label)
        right.addWidget(self.qtable)
        right.addWidget(scroll, 1)
        self.no_plots = QWidget()  # keeps the run record at the bottom while the plot area is hidden
        right.addWidget(self.no_plots, 1)
        # review s36 user F23: the file was offered only where it lay, a temporary folder in screenshot mode
        self.save_btn = QPushButton("Save station file…")
        self.save_btn.setToolTip("Copy the calibrated station file to a file you choose (proposed: the labqfl data "
                                 "folder); use it with --config")
        self.save_btn.setEnabled(False)
        self.save_btn.clicked.connect(self._ask_save)
        record = QHBoxLayout()
        record.addWidget(self.run_label, 1)
        record.addWidget(self.save_btn, 0, Qt.AlignmentFlag.AlignTop)
        right.addLayout(record)
        scroll.setVisible(False)
        return right

    def save_default(self) -> Path:
        """Where "Save station file…" proposes to save: ``calibrated_station.toml`` in the data folder (the one the
        window was given, else the labqfl data folder, :func:`labqfl.keystore.store.default_data_dir`; never a
        temporary one), with a number added if that name is taken."""
        from labqfl.keystore.store import default_data_dir

        given = self.ctl.core.data_dir
        folder = Path(given) if given is not None and not self.runs_temporary else default_data_dir()
        path, n = folder / "calibrated_station.toml", 1
        while path.exists():
            n += 1
            path = folder / f"calibrated_station-{n}.toml"
        return path

    def _ask_save(self) -> None:
        proposed = self.save_default()
        name, _ = QFileDialog.getSaveFileName(self, "Save the calibrated station file", str(proposed),
                                              "Station TOML (*.toml)")
        if name:
            self.save_station_file(Path(name))

    def save_station_file(self, path: Path) -> Path | None:
        """Copy the shown result's calibrated station file to ``path`` (its folder made; a file there is replaced:
        the dialog asked first) and say so under the result; None, with the reason shown, if it cannot be."""
        try:
            if not self._station_toml:
                raise OSError("no calibrated station file to save")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Path(self._station_toml).read_bytes())
        except OSError as exc:
            self.run_label.setText(f"{self.run_label.text()}   ·   not saved to {path}: {exc}")
            self.run_label.setStyleSheet(f"color: {ERR_COLOUR.name()}")
            return None
        self.run_label.setText(f"{self.run_label.text()}   ·   saved: {path} (use it with --config)")
        return path

    def _on_select(self, *_: Any) -> None:
        it = self.list.currentItem()
        if it is None:
            self.desc.setText(self.unavailable or "")
            return
        spec = next(s for s in self.specs if s.name == it.data(Qt.ItemDataRole.UserRole))
        self.desc.setText(spec.description)

    def selected(self) -> str | None:
        it = self.list.currentItem()
        return it.data(Qt.ItemDataRole.UserRole) if it is not None else None

    def _run(self) -> None:
        name = self.selected()
        if not name:
            return
        # disabled at once: a second click of a double click must not reach the core before the
        # controller's next drain delivers the busy state (it was refused with an error dialog)
        self.run_btn.setEnabled(False)
        self.ctl.run_calibration(name, quick=self.quick.isChecked())
        if not self.ctl.core.busy("calibration"):  # refused (its error is on the way): the button back
            self._update()

    def _update(self, *_: Any) -> None:
        b = self.ctl.busy
        running = bool(b.get("calibration"))
        ok = bool(self.specs) and self.ctl.connected and not running and not b.get("acquisition")
        self.run_btn.setEnabled(ok)
        self.cancel_btn.setEnabled(running)
        self.list.setEnabled(bool(self.specs) and not running)
        if not self.specs:
            why = self.unavailable or "no calibration procedures available"
            self.run_btn.setToolTip(why)
            self.list.setToolTip(why)
        elif not self.ctl.connected:
            self.run_btn.setToolTip("connect the station first")
        elif b.get("acquisition"):
            self.run_btn.setToolTip("stop the acquisition first: a calibration needs the station to itself")
        else:
            self.run_btn.setToolTip("run the selected procedure")
        self.progress.setRange(0, 0 if running else 1)
        self.progress.setVisible(running)

    def _on_progress(self, task: str, frac: float, msg: str) -> None:
        if task == "calibration":
            self.step.setText(msg)
            failed = msg.startswith(("failed", "partial"))
            self.step.setStyleSheet(f"color: {ERR_COLOUR.name()}" if failed else "")

    def show_result(self, res: dict[str, Any]) -> None:
        """Show one procedure's outcome (``status``: done, partial, failed or cancelled): the
        quantities and plots it calibrated, what failed, and the files only when something was
        calibrated. Replaces the previous result entirely."""
        status = res.get("status", "done")
        label = {"done": "", "partial": "partial", "failed": "failed", "cancelled": "cancelled"}.get(status, status)
        title = f"{res['title']}  ·  {res['seconds']:.1f} s" + (f"  ·  {label}" if label else "")
        self.result_title.setText(title)
        self.result_title.setStyleSheet(f"color: {ERR_COLOUR.name()}" if status in ("partial", "failed") else "")
        failures: dict[str, str] = res.get("failures") or {}
        if failures:
            lines = [f"✗ {name}: {msg}" for name, msg in failures.items()]
            self.failure_label.setText("\n".join(lines))
        self.failure_label.setVisible(bool(failures))
        qs = res["quantities"]
        self.qtable.setRowCount(len(qs))
        for r, q in enumerate(qs):
            true = q.get("true")
            pull = q.get("pull")
            value, unc = measured_cells(q["value"], q["uncertainty"])
            vals = [q["name"], value, unc, q["unit"],
                    "—" if true is None else measured_cells(true, q["uncertainty"])[0],
                    "—" if pull is None else f"{pull:+.2f}"]
            for c, v in enumerate(vals):
                self.qtable.setItem(r, c, table_item(v, align_right=c in (1, 2, 4, 5)))
        while self.plot_grid.count():
            item = self.plot_grid.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        paths = res.get("plots", [])
        for i, path in enumerate(paths):
            lab = QLabel()
            pm = QPixmap(path)
            if pm.isNull():
                lab.setText(f"(cannot show {path})")
            else:
                lab.setPixmap(pm.scaledToWidth(min(pm.width(), 520), Qt.TransformationMode.SmoothTransformation))
            lab.setToolTip(path)
            self.plot_grid.addWidget(lab, i // 2, i % 2)
        self.plot_scroll.setVisible(bool(paths))
        self.no_plots.setVisible(not paths)
        run, toml = res.get("run", ""), res.get("station_toml", "")
        self._station_toml = toml if status != "cancelled" and qs else ""
        self.save_btn.setEnabled(bool(self._station_toml))
        use = ("in a temporary folder deleted when this window closes: “Save station file…” keeps a copy"
               if self.runs_temporary else "use it with --config")
        if status == "cancelled":
            text = "cancelled: nothing calibrated; settings restored, instruments in their safe state"
        elif not qs or not toml:
            text = "nothing calibrated: no station file to use" + (f"   ·   run folder: {run}" if run else "")
        elif status == "partial":
            n_ok = res.get("succeeded", 0)
            text = (f"run folder: {run}   ·   calibrated station file (only the {n_ok} procedure(s) that succeeded): "
                    f"{toml} ({use})")
        else:
            text = f"run folder: {run}   ·   calibrated station file: {toml} ({use})"
        self.run_label.setText(text)
        self.run_label.setStyleSheet("color: #555" if qs and toml else f"color: {ERR_COLOUR.name()}")
