"""Widgets and formats shared by the panels (colours, number formats, read-only tables, headings)."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
)

OK_COLOUR = QColor("#1a7f37")
ERR_COLOUR = QColor("#c62828")
MUTED = QColor("#777777")
ROLE_BG = QColor("#eef2f7")


def fmt_bits(n: float | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit, f in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n:.0f} bit"


def fmt_kbps(bps: float | None) -> str:
    """A key rate in kbit/s with three significant digits and thousands separators, one notation
    for every value (``6.51 kbit/s``, ``11.0 kbit/s``, ``1,234 kbit/s``; ``0 kbit/s``)."""
    if bps is None:
        return "—"
    k = float(bps) / 1e3
    if k == 0:
        return "0 kbit/s"
    digits = max(0, 2 - math.floor(math.log10(abs(k))))
    return f"{k:,.{digits}f} kbit/s"


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def table_item(text: str, align_right: bool = False, tooltip: str = "") -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if tooltip:
        it.setToolTip(tooltip)
    return it


def read_only_table(headers: list[str]) -> QTableWidget:
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


def heading(text: str) -> QLabel:
    lab = QLabel(text)
    f = lab.font()
    f.setPointSizeF(f.pointSizeF() * 1.25)
    f.setBold(True)
    lab.setFont(f)
    return lab
