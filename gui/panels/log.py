"""The Log panel: every ``labqfl`` log record, filtered by source and level.

Built from a :class:`~labqfl.gui.controller.Controller`; no panel touches an instrument."""

from __future__ import annotations

import logging
import time
from typing import Any

from labqfl.gui.controller import Controller
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)


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

