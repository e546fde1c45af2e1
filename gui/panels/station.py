"""The Station panel: every role with its settings (editable where the instrument allows), live status and Connect/Arm/Safe commands.

Built from a :class:`~labqfl.gui.controller.Controller`; no panel touches an instrument."""

from __future__ import annotations

from typing import Any

from labqfl.gui.controller import Controller
from labqfl.gui.core import format_value
from labqfl.gui.panels._common import ERR_COLOUR, MUTED, OK_COLOUR, ROLE_BG, heading
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)


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
        self.title = heading(f"Station  {cfg.name}")
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
        ctl.errorOccurred.connect(self._on_error)
        self._on_connected(False)

    # -- signals -----------------------------------------------------------------------------------
    def _on_busy(self, task: str, busy: bool) -> None:
        if task != "station":
            return
        self.connect_btn.setEnabled(not busy and not self.ctl.connected)
        if busy:
            self.state_label.setText("connecting…")
            self.state_label.setToolTip("")
        elif not self.ctl.connected:  # the connect failed (its error follows) or a disconnect ended
            self._on_connected(False)

    def _on_error(self, title: str, message: str) -> None:
        if title == "Connect failed" and not self.ctl.connected:
            self._on_connected(False)
            self.state_label.setText("○ not connected — connect failed")
            self.state_label.setStyleSheet(f"color: {ERR_COLOUR.name()}; font-weight: 600")
            self.state_label.setToolTip(message)

    def _on_connected(self, connected: bool) -> None:
        self.connect_btn.setEnabled(not connected)
        for b in (self.disconnect_btn, self.refresh_btn, self.safe_btn):
            b.setEnabled(connected)
        sim = self.ctl.config.all_simulated
        self.state_label.setText(("● connected" + (" (simulated)" if sim else "")) if connected else "○ not connected")
        self.state_label.setStyleSheet(f"color: {OK_COLOUR.name() if connected else MUTED.name()}; font-weight: 600")
        self.state_label.setToolTip("")
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
