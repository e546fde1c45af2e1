"""The main window's views. Each panel is built from a :class:`~labqfl.gui.controller.Controller`:
it calls the controller's commands and listens to its signals; no panel touches an instrument."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from labqfl.gui import plots
from labqfl.gui.controller import Controller
from labqfl.gui.core import TrainingOptions, format_value
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

OK_COLOUR = QColor("#1a7f37")
ERR_COLOUR = QColor("#c62828")
MUTED = QColor("#777777")
ROLE_BG = QColor("#eef2f7")


def _fmt_bits(n: float | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit, f in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n:.0f} bit"


def _fmt_pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _item(text: str, align_right: bool = False, tooltip: str = "") -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if tooltip:
        it.setToolTip(tooltip)
    return it


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setAlternatingRowColors(True)
    h = t.horizontalHeader()
    h.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    h.setStretchLastSection(True)
    return t


def _heading(text: str) -> QLabel:
    lab = QLabel(text)
    f = lab.font()
    f.setPointSizeF(f.pointSizeF() * 1.25)
    f.setBold(True)
    lab.setFont(f)
    return lab


# ================================================================================================
# Station
# ================================================================================================
class StationPanel(QWidget):
    """Connect/disconnect, and every role's settings with units; writable ones are edited in place
    (double-click the value; switches are check boxes). Rejected values show the instrument's
    message in the Status column and the old value comes back."""

    COLS = ("Role / setting", "Value", "Unit", "Description", "Status")

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        self._items: dict[tuple[str, str], QTreeWidgetItem] = {}
        self._values: dict[tuple[str, str], Any] = {}
        self._role_items: dict[str, QTreeWidgetItem] = {}
        self._updating = False

        cfg = ctl.config
        self.title = _heading(f"Station  {cfg.name}")
        self.subtitle = QLabel(cfg.description or "")
        self.subtitle.setStyleSheet("color: #555")
        self.connect_btn = QPushButton("Connect")
        self.disconnect_btn = QPushButton("Disconnect")
        self.refresh_btn = QPushButton("Refresh")
        self.safe_btn = QPushButton("Safe state")
        self.safe_btn.setToolTip("Stop acquisition; laser off, detector bias off, modulators off, shutters closed")
        self.state_label = QLabel("not connected")
        self.connect_btn.clicked.connect(ctl.connect_station)
        self.disconnect_btn.clicked.connect(ctl.disconnect_station)
        self.refresh_btn.clicked.connect(ctl.refresh_settings)
        self.safe_btn.clicked.connect(ctl.safe_state)

        top = QHBoxLayout()
        titles = QVBoxLayout()
        titles.addWidget(self.title)
        titles.addWidget(self.subtitle)
        top.addLayout(titles, 1)
        top.addWidget(self.state_label)
        for b in (self.connect_btn, self.disconnect_btn, self.refresh_btn, self.safe_btn):
            top.addWidget(b)

        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(self.COLS))
        self.tree.setHeaderLabels(list(self.COLS))
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
                                  | QAbstractItemView.EditTrigger.SelectedClicked)
        hdr = self.tree.header()
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        hdr.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        hdr.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(3, QHeaderView.ResizeMode.Interactive)
        hdr.setStretchLastSection(True)
        self.tree.setColumnWidth(0, 250)
        self.tree.setColumnWidth(1, 210)
        self.tree.setColumnWidth(3, 420)
        self.tree.itemChanged.connect(self._on_item_changed)

        hint = QLabel("Double-click a value to edit it; switches are check boxes. Grey values are read-only. "
                      "Values are checked by the instrument; a rejected value shows why in the Status column.")
        hint.setStyleSheet("color: #555")
        hint.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.tree, 1)
        lay.addWidget(hint)

        ctl.connectedChanged.connect(self._on_connected)
        ctl.stationInfo.connect(self._on_info)
        ctl.settingsSnapshot.connect(self._on_snapshot)
        ctl.settingApplied.connect(self._on_applied)
        ctl.settingRejected.connect(self._on_rejected)
        ctl.busyChanged.connect(self._on_busy)
        self._on_connected(False)

    # -- signals -----------------------------------------------------------------------------------
    def _on_busy(self, task: str, busy: bool) -> None:
        if task == "station":
            self.connect_btn.setEnabled(not busy and not self.ctl.connected)
            self.state_label.setText("connecting…" if busy else self.state_label.text())

    def _on_connected(self, connected: bool) -> None:
        self.connect_btn.setEnabled(not connected)
        for b in (self.disconnect_btn, self.refresh_btn, self.safe_btn):
            b.setEnabled(connected)
        sim = self.ctl.config.all_simulated
        self.state_label.setText(("● connected" + (" (simulated)" if sim else "")) if connected else "○ not connected")
        self.state_label.setStyleSheet(f"color: {OK_COLOUR.name() if connected else MUTED.name()}; font-weight: 600")
        if not connected:
            self.tree.setEnabled(False)

    def _on_info(self, info: dict[str, Any]) -> None:
        self._roles_info = info.get("roles", {})

    def _role_item(self, role: str) -> QTreeWidgetItem:
        it = self._role_items.get(role)
        if it is None:
            it = QTreeWidgetItem(self.tree, [role, "", "", "", ""])
            info = getattr(self, "_roles_info", {}).get(role, {})
            kind = info.get("kind") or ""
            drv = info.get("driver", "")
            it.setText(3, f"{kind}  ({'simulated' if info.get('simulated') else 'driver ' + drv})" if kind else drv)
            f = QFont(it.font(0))
            f.setBold(True)
            it.setFont(0, f)
            for c in range(len(self.COLS)):
                it.setBackground(c, QBrush(ROLE_BG))
            it.setFlags(Qt.ItemFlag.ItemIsEnabled)
            it.setExpanded(True)
            self._role_items[role] = it
        return it

    def _on_snapshot(self, snap: dict[str, list[dict[str, Any]]]) -> None:
        self._updating = True
        try:
            self.tree.setEnabled(True)
            for role, rows in snap.items():
                parent = self._role_item(role)
                for row in rows:
                    key = (role, row["name"])
                    it = self._items.get(key)
                    if it is None:
                        it = QTreeWidgetItem(parent, [row["name"], "", row["unit"], row["doc"], ""])
                        it.setToolTip(3, row["doc"])
                        self._items[key] = it
                    self._show_value(it, key, row.get("value"), row["writable"])
                    if row.get("error"):
                        it.setText(4, f"⚠ {row['error']}")
                        it.setForeground(4, QBrush(ERR_COLOUR))
                parent.setExpanded(True)
        finally:
            self._updating = False

    def _show_value(self, it: QTreeWidgetItem, key: tuple[str, str], value: Any, writable: bool | None = None) -> None:
        self._values[key] = value
        if writable is None:
            writable = bool(it.data(0, Qt.ItemDataRole.UserRole))
        it.setData(0, Qt.ItemDataRole.UserRole, writable)
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if isinstance(value, bool):
            it.setText(1, "on" if value else "off")
            if writable:
                flags |= Qt.ItemFlag.ItemIsUserCheckable
            it.setCheckState(1, Qt.CheckState.Checked if value else Qt.CheckState.Unchecked)
        else:
            it.setText(1, format_value(value))
            if writable:
                flags |= Qt.ItemFlag.ItemIsEditable
        it.setFlags(flags)
        it.setForeground(1, QBrush(QColor("#000000") if writable else MUTED))
        it.setToolTip(1, ("editable" if writable else "read-only") + f": {value!r}")

    def _on_item_changed(self, it: QTreeWidgetItem, column: int) -> None:
        if self._updating or column != 1:
            return
        key = next((k for k, v in self._items.items() if v is it), None)
        if key is None:
            return
        old = self._values.get(key)
        if isinstance(old, bool):
            new: Any = it.checkState(1) == Qt.CheckState.Checked
            if new == old:
                return
        else:
            new = it.text(1)
            if new == format_value(old):
                return
        self._updating = True
        try:
            it.setText(4, "applying…")
            it.setForeground(4, QBrush(MUTED))
        finally:
            self._updating = False
        self.ctl.set_setting(key[0], key[1], new)

    def _on_applied(self, role: str, name: str, value: Any) -> None:
        it = self._items.get((role, name))
        if it is None:
            return
        self._updating = True
        try:
            self._show_value(it, (role, name), value)
            it.setText(4, "✓ applied")
            it.setForeground(4, QBrush(OK_COLOUR))
            it.setToolTip(4, "")
        finally:
            self._updating = False

    def _on_rejected(self, role: str, name: str, message: str) -> None:
        it = self._items.get((role, name))
        if it is None:
            return
        self._updating = True
        try:
            self._show_value(it, (role, name), self._values.get((role, name)))
            it.setText(4, f"⚠ {message}")
            it.setForeground(4, QBrush(ERR_COLOUR))
            it.setToolTip(4, message)
        finally:
            self._updating = False

    def status_of(self, role: str, name: str) -> str:
        """Text of the Status cell (tests)."""
        it = self._items.get((role, name))
        return it.text(4) if it is not None else ""

    def value_of(self, role: str, name: str) -> str:
        it = self._items.get((role, name))
        return it.text(1) if it is not None else ""

    def item(self, role: str, name: str) -> QTreeWidgetItem | None:
        return self._items.get((role, name))


# ================================================================================================
# Live: acquisition + distillation
# ================================================================================================
def key_provenance_text(cfg: Any) -> str:
    """One line for the key-pool panel: the provenance of the keys this station distils (the weakest
    pair's, from the station config: physical layer and the clients' configured randomness) and what
    their security rests on (:func:`labqfl.provenance.security_statement`)."""
    from labqfl.provenance import pair_provenance, security_statement, weakest

    w = weakest(pair_provenance(cfg, pr) for pr in cfg.pairs())
    if w is None:
        return "Key provenance: the station has no pairs"
    return f"Keys distilled here ({w.label}): {security_statement(w)}"


class LivePanel(QWidget):
    """Acquisition and distillation controls, four live plots and a per-pair table."""

    PAIR_COLS = ["Pair", "Sifted", "Next block", "QBER X (key)", "QBER Y (test)", "Blocks", "Final key",
                 "Key rate", "Key pool", "Last block"]

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        cfg = ctl.config
        self.pairs = [f"{a}-{b}" for a, b in cfg.pairs()]
        self.detectors = list(cfg.detectors)
        self._pools: dict[str, dict[str, int]] = {}
        self._pairs_data: dict[str, dict[str, Any]] = {}

        # -- controls -------------------------------------------------------------------------------
        acq = QGroupBox("Acquisition")
        self.acq_start = QPushButton("▶ Start")
        self.acq_stop = QPushButton("■ Stop")
        self.arm_box = QCheckBox("Arm instruments on start")
        self.arm_box.setChecked(True)
        self.arm_box.setToolTip("Laser on, detectors armed, modulators on, shutters open before streaming")
        self.acq_status = QLabel("idle")
        self.acq_status.setWordWrap(True)
        al = QGridLayout(acq)
        al.addWidget(self.acq_start, 0, 0)
        al.addWidget(self.acq_stop, 0, 1)
        al.addWidget(self.arm_box, 1, 0, 1, 2)
        al.addWidget(self.acq_status, 2, 0, 1, 2)
        self.acq_start.clicked.connect(lambda: ctl.start_acquisition(arm=self.arm_box.isChecked()))
        self.acq_stop.clicked.connect(ctl.stop_acquisition)
        self.acq_stop.setToolTip("Stop streaming; every instrument goes to its safe state")

        dist = QGroupBox("Distillation")
        self.block_bits = QSpinBox()
        self.block_bits.setRange(0, 100_000_000)
        self.block_bits.setSingleStep(10_000)
        self.block_bits.setSpecialValueText("auto (key-rate rule)")
        self.block_bits.setValue(0)
        self.block_bits.setSuffix(" bit")
        self.block_bits.setToolTip("Sifted bits per key block and pair (finite-key block size). auto: the block-size "
                                   "rule picks the smallest blocks expected to give key with a margin; smaller manual "
                                   "blocks show QBER and abort reasons.")
        self.engine = QComboBox()
        self.engine.addItems(["cascade", "ldpc"])
        self.dist_start = QPushButton("▶ Start")
        self.dist_stop = QPushButton("■ Stop")
        self.dist_status = QLabel("idle")
        self.dist_status.setWordWrap(True)
        dl = QFormLayout(dist)
        dl.addRow("Block size", self.block_bits)
        dl.addRow("Error correction", self.engine)
        row = QHBoxLayout()
        row.addWidget(self.dist_start)
        row.addWidget(self.dist_stop)
        dl.addRow(row)
        dl.addRow(self.dist_status)
        self.dist_start.clicked.connect(self._start_distillation)
        self.dist_stop.clicked.connect(ctl.stop_distillation)

        note = QLabel("Count rates are per second of acquired data. QBER X is measured by error correction on each "
                      "key block; QBER Y is the Y-basis test error so far. Key pools are the free bits in the "
                      "nodes' key stores.")
        note.setWordWrap(True)
        note.setStyleSheet("color: #555")

        legend = QGroupBox("Pairs")
        lg = QGridLayout(legend)
        for i, p in enumerate(self.pairs):
            sw = QLabel(f"<span style='color:{plots.colour(i)}; font-size:14pt'>━━</span> {p}")
            lg.addWidget(sw, i // 2, i % 2)

        left = QVBoxLayout()
        left.addWidget(acq)
        left.addWidget(dist)
        left.addWidget(legend)
        left.addWidget(note)
        left.addStretch(1)
        left_w = QWidget()
        left_w.setLayout(left)
        left_w.setFixedWidth(270)

        # -- plots ----------------------------------------------------------------------------------
        self.rate_plot = plots.make_plot("Count rate per detector", "rate", "Hz")
        self.rate_series = {d: plots.Series(self.rate_plot.plot(name=d, pen=plots.pen(i))) for i, d in enumerate(self.detectors)}
        self.qber_plot = plots.make_plot("QBER per pair  (solid: X key · dashed: Y test)", "QBER", "%", legend=False)
        self.qber_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.qber_x = {p: plots.Series(self.qber_plot.plot(name=p, pen=plots.pen(i), symbol="o", symbolSize=5,
                                                              symbolBrush=plots.colour(i), symbolPen=None))
                       for i, p in enumerate(self.pairs)}
        self.qber_y = {p: plots.Series(self.qber_plot.plot(pen=plots.pen(i, dashed=True, width=1.5)))
                       for i, p in enumerate(self.pairs)}
        self.rate_key_plot = plots.make_plot("Secure key rate per pair", "rate", "bit/s", legend=False)
        self.rate_key_plot.getPlotItem().setYRange(0, 1)
        self.rate_zero = pg.TextItem("", color="#777", anchor=(0.5, 0.5))
        self.rate_key_plot.addItem(self.rate_zero)
        self.key_rate = {p: plots.Series(self.rate_key_plot.plot(name=p, pen=plots.pen(i))) for i, p in enumerate(self.pairs)}
        self.pool_plot = plots.make_plot("Key pools per pair (free bits in the key stores)", "free key", "bit",
                                         bottom="", bottom_units=None, legend=True, legend_right=True)
        plots.category_axis(self.pool_plot, self.pairs)
        self.pool_plot.getPlotItem().setXRange(-0.6, len(self.pairs) - 0.4)
        self.pool_plot.getPlotItem().setMouseEnabled(x=False, y=False)
        self._pool_bars: list[pg.BarGraphItem] = []
        self.pool_empty = pg.TextItem("no key in the key stores yet", color="#777", anchor=(0.5, 0.5))
        self.pool_empty.setToolTip("distil with blocks large enough for a positive finite-key length")
        self.pool_plot.addItem(self.pool_empty)
        self.pool_empty.setPos((len(self.pairs) - 1) / 2, 0.5)
        self.pool_plot.getPlotItem().setYRange(0, 1)
        #: what the keys this station distils rest on (labqfl.provenance; from the config, no I/O)
        self.provenance_label = QLabel(key_provenance_text(cfg))
        self.provenance_label.setWordWrap(True)
        self.provenance_label.setToolTip("Physical layer (simulated/hardware) and the clients' randomness "
                                         "(qrng/csprng/seeded) of the keys distilled here, recorded in every key "
                                         "block; `labqfl keys status` shows the stored blocks.")

        grid = QGridLayout()
        grid.addWidget(self.rate_plot, 0, 0)
        grid.addWidget(self.qber_plot, 0, 1)
        grid.addWidget(self.rate_key_plot, 1, 0)
        grid.addWidget(self.pool_plot, 1, 1)
        grid.addWidget(self.provenance_label, 2, 0, 1, 2)
        plots_w = QWidget()
        plots_w.setLayout(grid)

        self.table = _table(self.PAIR_COLS)
        self.table.setRowCount(len(self.pairs))
        for r, p in enumerate(self.pairs):
            self.table.setItem(r, 0, _item(p))
            for c in range(1, len(self.PAIR_COLS)):
                self.table.setItem(r, c, _item("—", align_right=c < len(self.PAIR_COLS) - 1))
        self.table.setMinimumHeight(60)

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(plots_w)
        split.addWidget(self.table)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setSizes([620, 230])

        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addWidget(split, 1)

        ctl.countRates.connect(self._on_rates)
        ctl.pairMetrics.connect(self._on_pairs)
        ctl.keyPools.connect(self._on_pools)
        ctl.acquisitionStatus.connect(self._on_acq_status)
        ctl.busyChanged.connect(self._update_buttons)
        ctl.connectedChanged.connect(self._update_buttons)
        ctl.stationInfo.connect(self._on_info)
        self._distill_ok, self._distill_why = ctl.core.distill_available()
        self._update_buttons()

    def _start_distillation(self) -> None:
        self.ctl.start_distillation(self.block_bits.value() or None, self.engine.currentText())

    def _on_info(self, info: dict[str, Any]) -> None:
        self.provenance_label.setText(key_provenance_text(self.ctl.config))
        self._distill_ok = bool(info.get("distill_available", True))
        self._distill_why = info.get("distill_reason", "")
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        b = self.ctl.busy
        conn = self.ctl.connected
        acq, dist, cal = b.get("acquisition"), b.get("distillation"), b.get("calibration")
        self.acq_start.setEnabled(conn and not acq and not cal)
        self.acq_stop.setEnabled(bool(acq))
        self.dist_start.setEnabled(conn and not dist and not cal and self._distill_ok)
        self.dist_stop.setEnabled(bool(dist))
        self.block_bits.setEnabled(not dist)
        self.engine.setEnabled(not dist)
        if not self._distill_ok:
            self.dist_start.setToolTip(self._distill_why)
        elif not conn:
            self.dist_start.setToolTip("connect the station first")
        elif cal:
            self.dist_start.setToolTip("a calibration is running")
        else:
            self.dist_start.setToolTip("Start acquisition (if needed) with the post-processing pipeline attached; "
                                       "keys go to the nodes' key stores")
        tip = "connect the station first" if not conn else ("a calibration is running" if cal else "Stream time tags")
        self.acq_start.setToolTip(tip)
        if not acq:
            self.acq_status.setText(self.acq_status.text().replace("running", "stopped") if self.acq_status.text() != "idle" else "idle")
        self.dist_status.setText("running" if dist else ("idle" if self._distill_ok else "unavailable: " + self._distill_why))

    def _on_acq_status(self, s: dict[str, Any]) -> None:
        running = self.ctl.busy.get("acquisition")
        speed = s["t_s"] / s["wall_s"] if s.get("wall_s") else 0.0
        self.acq_status.setText(f"{'running' if running else 'stopped'} · {s['t_s']:.2f} s of data · "
                                f"{s['tags']:,} tags · {speed:.2f}× real time")

    def _on_rates(self, points: list[tuple[float, dict[str, float]]]) -> None:
        for t, rates in points:
            for d, s in self.rate_series.items():
                s.append(t, rates.get(d))
        for s in self.rate_series.values():
            s.flush()
        top = max((max(s.y) for s in self.rate_series.values() if s.y), default=0.0)
        if top > 0:  # from zero, with headroom for the legend
            self.rate_plot.getPlotItem().setYRange(0, 1.3 * top, padding=0)

    def pair_metrics(self) -> dict[str, dict[str, Any]]:
        """The latest per-pair numbers shown in the table (see :func:`labqfl.gui.core.pair_metrics`)."""
        return {p: dict(m) for p, m in self._pairs_data.items()}

    def _on_pairs(self, snap: dict[str, Any]) -> None:
        t = snap["t_s"]
        etas = [m.get("first_key_eta_s") for m in snap["pairs"].values()]
        if etas and all(e is not None for e in etas) and max(etas) > 0 and not snap.get("final"):
            self.dist_status.setText(f"running · first key on every pair expected after ≈ {max(etas):.0f} s more data")
        for r, p in enumerate(self.pairs):
            m = snap["pairs"].get(p)
            if m is None:
                continue
            self._pairs_data[p] = m
            sx = self.qber_x[p]
            if m["qber_x"] is not None and m["blocks"] and (not sx.t or m["blocks"] > getattr(sx, "_blocks", 0) or t < sx.t[-1]):
                sx.append(t, 100 * m["qber_x"])
                sx._blocks = m["blocks"]  # type: ignore[attr-defined]
            self.qber_y[p].append(t, None if m["qber_y"] is None else 100 * m["qber_y"])
            self.key_rate[p].append(t, m["key_rate_bps"])
            vals = [f"{m['sifted_bits']:,}", f"{100 * m['block_fill']:.0f} %", _fmt_pct(m["qber_x"]),
                    _fmt_pct(m["qber_y"]), f"{m['blocks']} ({m['aborted_blocks']} aborted)" if m["blocks"] else "0",
                    _fmt_bits(m["final_key_bits"]), f"{m['key_rate_bps']:.4g} bit/s",
                    _fmt_bits(sum(self._pools.get(p, {}).values())),
                    ("aborted: " + m["last_abort"]) if m["last_abort"] else ("key delivered" if m["blocks"] else "—")]
            for c, v in enumerate(vals, start=1):
                it = self.table.item(r, c)
                it.setText(v)
                if c == len(vals):
                    it.setToolTip(m["last_abort"])
                    it.setForeground(QBrush(ERR_COLOUR if m["last_abort"] else OK_COLOUR))
        for s in (*self.qber_x.values(), *self.qber_y.values(), *self.key_rate.values()):
            s.flush()
        self._scale_key_rate()

    def _scale_key_rate(self) -> None:
        top = max((max(s.y) for s in self.key_rate.values() if s.y), default=0.0)
        t_max = max((s.t[-1] for s in self.key_rate.values() if s.t), default=1.0)
        item = self.rate_key_plot.getPlotItem()
        item.setYRange(0, top * 1.15 if top > 0 else 1.0, padding=0)
        if top <= 0 and any(len(s) for s in self.key_rate.values()):
            self.rate_zero.setText("no secret key yet: every block so far was too small for a\n"
                                   "positive finite-key length (see 'Last block' below)")
            self.rate_zero.setPos(t_max / 2, 0.5)
            self.rate_zero.setVisible(True)
        else:
            self.rate_zero.setVisible(False)

    def _on_pools(self, pools: dict[str, dict[str, int]]) -> None:
        self._pools = pools
        for b in self._pool_bars:
            self.pool_plot.removeItem(b)
        self._pool_bars.clear()
        pool_names = ["auth", "fl", "etsi", "general"]
        x = np.arange(len(self.pairs), dtype=float)
        base = np.zeros(len(self.pairs))
        total = 0
        for i, pool in enumerate(pool_names):
            h = np.array([pools.get(p, {}).get(pool, 0) for p in self.pairs], dtype=float)
            if not h.any():
                continue
            bar = pg.BarGraphItem(x=x, height=h, y0=base.copy(), width=0.6, brush=plots.colour(i + 4), pen=None, name=pool)
            self.pool_plot.addItem(bar)
            self._pool_bars.append(bar)
            base += h
            total += int(h.sum())
        self.pool_empty.setVisible(total == 0)
        self.pool_plot.getPlotItem().setYRange(0, max(1.0, float(base.max()) * 1.1 if len(base) else 1.0))
        for r, p in enumerate(self.pairs):
            self.table.item(r, 8).setText(_fmt_bits(sum(pools.get(p, {}).values())))


# ================================================================================================
# Calibration
# ================================================================================================
class CalibrationPanel(QWidget):
    """Pick a procedure, run it on the station, see its calibrated quantities and plots."""

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        self.specs, self.unavailable = ctl.calibrations()

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
        self.cancel_btn.clicked.connect(ctl.cancel_calibration)

        left = QVBoxLayout()
        left.addWidget(_heading("Procedures"))
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

        self.result_title = _heading("No result yet")
        self.qtable = _table(["Quantity", "Value", "± (1σ)", "Unit", "Simulator truth", "Pull (σ)"])
        self.qtable.horizontalHeader().setStretchLastSection(False)
        self.qtable.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.qtable.setMaximumHeight(230)
        self.plot_box = QWidget()
        self.plot_grid = QGridLayout(self.plot_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.plot_box)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.run_label = QLabel("")
        self.run_label.setWordWrap(True)
        self.run_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.run_label.setStyleSheet("color: #555")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        right = QVBoxLayout()
        right.addWidget(self.result_title)
        right.addWidget(self.qtable)
        right.addWidget(scroll, 1)
        right.addWidget(self.run_label)

        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addLayout(right, 1)

        ctl.calibrationResult.connect(self.show_result)
        ctl.busyChanged.connect(self._update)
        ctl.connectedChanged.connect(self._update)
        ctl.progress.connect(self._on_progress)
        self._on_select()
        self._update()

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
        if name:
            self.ctl.run_calibration(name, quick=self.quick.isChecked())

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

    def show_result(self, res: dict[str, Any]) -> None:
        self.result_title.setText(f"{res['title']}  ·  {res['seconds']:.1f} s")
        qs = res["quantities"]
        self.qtable.setRowCount(len(qs))
        for r, q in enumerate(qs):
            true = q.get("true")
            pull = q.get("pull")
            vals = [q["name"], f"{q['value']:.6g}", f"{q['uncertainty']:.3g}", q["unit"],
                    "—" if true is None else f"{true:.6g}", "—" if pull is None else f"{pull:+.2f}"]
            for c, v in enumerate(vals):
                self.qtable.setItem(r, c, _item(v, align_right=c in (1, 2, 4, 5)))
        while self.plot_grid.count():
            w = self.plot_grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        for i, path in enumerate(res.get("plots", [])):
            lab = QLabel()
            pm = QPixmap(path)
            if pm.isNull():
                lab.setText(f"(cannot show {path})")
            else:
                lab.setPixmap(pm.scaledToWidth(min(pm.width(), 520), Qt.TransformationMode.SmoothTransformation))
            lab.setToolTip(path)
            self.plot_grid.addWidget(lab, i // 2, i % 2)
        self.run_label.setText(f"run folder: {res.get('run', '')}   ·   calibrated station file: "
                               f"{res.get('station_toml', '')} (use it with --config)")


# ================================================================================================
# Training
# ================================================================================================
class TrainingPanel(QWidget):
    """Federated training: options, accuracy and loss per round, key consumption, clients."""

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        n_clients = len(ctl.config.clients)
        box = QGroupBox("Federated training")
        self.task = QComboBox()
        self.task.addItems(["mnist-qnn", "ntangled", "magic", "mnist-lenet5"])
        self.clients = QSpinBox()
        self.clients.setRange(2, 64)
        self.clients.setValue(n_clients)
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 1000)
        self.rounds.setValue(10)
        self.q = QComboBox()
        self.q.addItems(["8", "16", "32"])
        self.keys = QComboBox()
        self.keys.addItems(["csprng", "qkd"])
        self.keys.setItemData(0, "AES-CTR masks from the OS CSPRNG (stand-in for QKD keys)", Qt.ItemDataRole.ToolTipRole)
        self.keys.setItemData(1, "one-time-pad masks from the nodes' QKD key stores (needs distilled key)",
                              Qt.ItemDataRole.ToolTipRole)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form = QFormLayout(box)
        form.addRow("Task", self.task)
        form.addRow("Clients", self.clients)
        form.addRow("Rounds", self.rounds)
        form.addRow("Bits per parameter q", self.q)
        form.addRow("Mask keys", self.keys)
        form.addRow("Seed", self.seed)
        self.start_btn = QPushButton("▶ Start training")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setToolTip("Stop after the current round")
        row = QHBoxLayout()
        row.addWidget(self.start_btn)
        row.addWidget(self.stop_btn)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.start_btn.clicked.connect(self._start)
        self.stop_btn.clicked.connect(ctl.stop_training)

        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #333")
        left = QVBoxLayout()
        left.addWidget(box)
        left.addWidget(self.summary)
        left.addStretch(1)
        left_w = QWidget()
        left_w.setLayout(left)
        left_w.setFixedWidth(300)

        self.acc_plot = plots.make_plot("Test accuracy per round", "accuracy", "%", bottom="round", bottom_units=None, legend=False)
        self.acc_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.acc_curve = self.acc_plot.plot(pen=plots.pen(0), symbol="o", symbolSize=6, symbolBrush=plots.colour(0), symbolPen=None)
        self.loss_plot = plots.make_plot("Loss per round", "loss", None, bottom="round", bottom_units=None)
        self.loss_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.test_loss_curve = self.loss_plot.plot(name="test", pen=plots.pen(1), symbol="o", symbolSize=6,
                                                   symbolBrush=plots.colour(1), symbolPen=None)
        self.train_loss_curve = self.loss_plot.plot(name="train (clients' mean)", pen=plots.pen(2, dashed=True))
        self.key_plot = plots.make_plot("Key consumption (mask key, all pairs)", "key", "bit", bottom="round",
                                        bottom_units=None)
        self.key_bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=plots.colour(4), pen=None, name="per round")
        self.key_plot.addItem(self.key_bars)
        self.key_cum = self.key_plot.plot(name="cumulative", pen=plots.pen(3), symbol="s", symbolSize=5,
                                          symbolBrush=plots.colour(3), symbolPen=None)
        self.clients_table = _table(["Client", "Samples", "Status", "Round", "Update ‖Δ‖", "FedAvg weight"])

        grid = QGridLayout()
        grid.addWidget(self.acc_plot, 0, 0)
        grid.addWidget(self.loss_plot, 0, 1)
        grid.addWidget(self.key_plot, 1, 0)
        cl = QVBoxLayout()
        cl.addWidget(QLabel("<b>Clients</b>"))
        cl.addWidget(self.clients_table)
        cw = QWidget()
        cw.setLayout(cl)
        grid.addWidget(cw, 1, 1)

        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addLayout(grid, 1)

        self._rounds: list[dict[str, Any]] = []
        self._initial: tuple[float, float] | None = None
        ctl.trainingStarted.connect(self._on_started)
        ctl.trainingRound.connect(self._on_round)
        ctl.trainingFinished.connect(self._on_finished)
        ctl.busyChanged.connect(self._update)
        ctl.progress.connect(self._on_progress)
        self._update()

    def options(self) -> TrainingOptions:
        return TrainingOptions(task=self.task.currentText(), clients=self.clients.value(), rounds=self.rounds.value(),
                               q=int(self.q.currentText()), keys=self.keys.currentText(), seed=self.seed.value())

    def _start(self) -> None:
        self.ctl.start_training(self.options())

    def _update(self, *_: Any) -> None:
        running = bool(self.ctl.busy.get("training"))
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        for w in (self.task, self.clients, self.rounds, self.q, self.keys, self.seed):
            w.setEnabled(not running)

    def _on_progress(self, task: str, frac: float, msg: str) -> None:
        if task != "training":
            return
        if frac < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(round(100 * frac)))
        self.status.setText(msg)

    def _on_started(self, info: dict[str, Any]) -> None:
        self._rounds.clear()
        self.acc_curve.setData([], [])
        self.test_loss_curve.setData([], [])
        self.train_loss_curve.setData([], [])
        self.key_cum.setData([], [])
        self.key_bars.setOpts(x=[], height=[])
        self.summary.setText(f"<b>{info['task']}</b> · model {info['model']} ({info['n_params']} parameters) · "
                             f"q = {info['q']} · keys: {info['keys']} · {len(info['pairs'])} key pairs")
        cl = info["clients"]
        self.clients_table.setRowCount(len(cl))
        for r, (c, v) in enumerate(cl.items()):
            for col, text in enumerate([c, str(v["samples"]), "training", "—", "—", "—"]):
                self.clients_table.setItem(r, col, _item(text, align_right=col in (1, 3, 4, 5)))

    def _on_round(self, d: dict[str, Any]) -> None:
        m = d["metrics"]
        self._rounds.append(m)
        r = np.array([x["round"] for x in self._rounds], dtype=float)
        self.acc_curve.setData(r, [100 * x["test_accuracy"] for x in self._rounds])
        self.test_loss_curve.setData(r, [x["test_loss"] for x in self._rounds])
        self.train_loss_curve.setData(r, [x["train_loss"] for x in self._rounds])
        self.key_bars.setOpts(x=r, height=[x["key_bits_total"] for x in self._rounds], width=0.6)
        self.key_cum.setData(r, [x["key_bits_cumulative"] for x in self._rounds])
        self.key_plot.getPlotItem().setYRange(0, 1.3 * max(x["key_bits_cumulative"] for x in self._rounds), padding=0)
        for p in (self.acc_plot, self.loss_plot, self.key_plot):
            plots.integer_ticks(p, len(self._rounds))
        rows = {self.clients_table.item(i, 0).text(): i for i in range(self.clients_table.rowCount())}
        for c, v in d["clients"].items():
            i = rows.get(c)
            if i is None:
                continue
            vals = [c, str(v["samples"]), v["status"], str(v["round"]), f"{v['update_norm']:.3g}", f"{v['weight']:.3f}"]
            for col, text in enumerate(vals):
                it = self.clients_table.item(i, col)
                it.setText(text)
                if col == 2:
                    it.setForeground(QBrush(OK_COLOUR if text == "aggregated" else ERR_COLOUR))
        avail = d.get("available_bits") or {}
        extra = f" · key left (min over pairs) {_fmt_bits(min(avail.values()))}" if avail else ""
        self.status.setText(f"round {m['round']}: accuracy {100 * m['test_accuracy']:.1f} %, test loss {m['test_loss']:.4f}, "
                            f"{_fmt_bits(m['key_bits_per_pair'])} per pair{extra}")

    def _on_finished(self, s: dict[str, Any]) -> None:
        if s.get("stopped"):
            self.status.setText("stopped by the user" + (f" after round {self._rounds[-1]['round']}" if self._rounds else ""))
            return
        self.status.setText(f"finished: accuracy {100 * s['final_test_accuracy']:.1f} % "
                            f"(from {100 * s['initial_test_accuracy']:.1f} %), key used {_fmt_bits(s['key_bits_total'])}")

    @property
    def rounds_shown(self) -> int:
        return len(self._rounds)


# ================================================================================================
# Log
# ================================================================================================
class LogPanel(QWidget):
    """Every ``labqfl`` log record, filtered by source (one instrument, or the application) and
    level; the newest at the bottom."""

    MAX_RECORDS = 5000
    LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}
    COLOURS = {"DEBUG": "#888888", "INFO": "#222222", "WARNING": "#b26a00", "ERROR": "#c62828", "CRITICAL": "#c62828"}

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        self.records: list[dict[str, Any]] = []
        self.source = QComboBox()
        self.source.addItem("All sources", "*")
        self.source.addItem("Application (not instruments)", "")
        for role in ctl.config.roles():
            self.source.addItem(f"Instrument {role}", role)
        self.level = QComboBox()
        for name in self.LEVELS:
            self.level.addItem(name, self.LEVELS[name])
        self.level.setCurrentText("INFO")
        self.search = QLineEdit()
        self.search.setPlaceholderText("contains…")
        self.search.setClearButtonEnabled(True)
        self.clear_btn = QPushButton("Clear")
        self.count = QLabel("")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Source"))
        bar.addWidget(self.source, 1)
        bar.addWidget(QLabel("Level ≥"))
        bar.addWidget(self.level)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.clear_btn)
        bar.addWidget(self.count)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(self.MAX_RECORDS)
        f = QFont("monospace")
        f.setStyleHint(QFont.StyleHint.Monospace)
        self.view.setFont(f)
        self.view.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.view, 1)
        self.source.currentIndexChanged.connect(self.rebuild)
        self.level.currentIndexChanged.connect(self.rebuild)
        self.search.textChanged.connect(self.rebuild)
        self.clear_btn.clicked.connect(self._clear)
        ctl.logRecords.connect(self.add_records)

    def set_source(self, source: str) -> None:
        """Show only one instrument role ('' = application, '*' = all)."""
        i = self.source.findData(source)
        if i >= 0:
            self.source.setCurrentIndex(i)

    def accepts(self, rec: dict[str, Any]) -> bool:
        src = self.source.currentData()
        if src != "*" and rec.get("source", "") != src:
            return False
        if rec.get("levelno", 0) < self.level.currentData():
            return False
        needle = self.search.text().strip().lower()
        return not needle or needle in rec["message"].lower() or needle in rec["name"].lower()

    def _html(self, rec: dict[str, Any]) -> str:
        import html

        ts = time.strftime("%H:%M:%S", time.localtime(rec["time"])) + f".{int((rec['time'] % 1) * 1000):03d}"
        colour = self.COLOURS.get(rec["level"], "#222")
        who = rec["source"] or rec["name"].removeprefix("labqfl.")
        return (f"<span style='color:#888'>{ts}</span> <span style='color:{colour}; font-weight:600'>{rec['level']:<7}</span> "
                f"<span style='color:#1f4e99'>{html.escape(who)}</span>: <span style='color:{colour}'>"
                f"{html.escape(rec['message'])}</span>")

    def add_records(self, recs: list[dict[str, Any]]) -> None:
        self.records.extend(recs)
        if len(self.records) > self.MAX_RECORDS:
            del self.records[: len(self.records) - self.MAX_RECORDS]
        shown = [self._html(r) for r in recs if self.accepts(r)]
        if shown:
            self.view.appendHtml("<br>".join(shown))
        self._count()

    def rebuild(self, *_: Any) -> None:
        self.view.clear()
        shown = [self._html(r) for r in self.records if self.accepts(r)]
        if shown:
            self.view.appendHtml("<br>".join(shown))
        self._count()

    def visible_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if self.accepts(r)]

    def _count(self) -> None:
        self.count.setText(f"{len(self.visible_records())} / {len(self.records)} records")

    def _clear(self) -> None:
        self.records.clear()
        self.view.clear()
        self._count()


__all__ = ["CalibrationPanel", "LivePanel", "LogPanel", "StationPanel", "TrainingPanel"]

