"""Small pyqtgraph helpers: a light theme, a colour per pair, bounded time series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

#: tab10 palette: one colour per pair / client, stable by index.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
#: Points kept per plotted series (older points are dropped).
MAX_POINTS = 3000

_configured = False


def configure() -> None:
    """Light background, antialiasing (call once before creating plots)."""
    global _configured
    if not _configured:
        pg.setConfigOptions(antialias=True, background="w", foreground="#222222")
        _configured = True


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def make_plot(title: str, left: str, left_units: str | None = None, bottom: str = "acquired time",
              bottom_units: str | None = "s", legend: bool = True, legend_right: bool = True) -> pg.PlotWidget:
    """A PlotWidget with a title, axis labels (pyqtgraph adds SI prefixes to ``units``), a grid
    and a legend."""
    configure()
    w = pg.PlotWidget()
    item = w.getPlotItem()
    item.setTitle(f"<span style='font-size:11pt; font-weight:600'>{title}</span>")
    item.setLabel("left", left, units=left_units)
    if bottom:
        item.setLabel("bottom", bottom, units=bottom_units)
    item.showGrid(x=True, y=True, alpha=0.25)
    if legend:
        lg = item.addLegend(offset=(-8, 8) if legend_right else (8, 8), labelTextSize="9pt", colCount=4)
        lg.setBrush(pg.mkBrush(255, 255, 255, 200))
    w.setMinimumHeight(180)
    return w


class MarkedCurve:
    """A line with a marker at every point: the line a ``PlotDataItem``, the markers one
    ``ScatterPlotItem`` whose style is set once. A ``PlotDataItem`` with ``symbol*`` options hands its
    scatter fresh pen and brush copies on every ``setData``, and pyqtgraph's ``SymbolAtlas`` keys a
    rendered symbol by the identity of those objects: one more atlas entry (image and coordinates) per
    update, which kept growing the Live tab's QBER plot (6 curves, 10 updates a second; measured
    with pyqtgraph 0.14.0: 2 007 atlas entries after 2 000 updates of one curve, 1 with this class)."""

    def __init__(self, plot: pg.PlotWidget, pen: Any, colour: str, *, symbol: str = "o", size: float = 5,
                 name: str | None = None) -> None:
        self.line = plot.plot(name=name, pen=pen)
        self.scatter = pg.ScatterPlotItem(size=size, symbol=symbol, brush=pg.mkBrush(colour), pen=None)
        plot.addItem(self.scatter)

    def setData(self, x: Any, y: Any) -> None:  # noqa: N802 (pyqtgraph's name)
        self.line.setData(x, y)
        self.scatter.setData(x=np.asarray(x, dtype=float), y=np.asarray(y, dtype=float))

    def getData(self) -> tuple[Any, Any]:  # noqa: N802
        return self.line.getData()


class Series:
    """A bounded (t, y) series bound to one curve; ``append`` then ``flush`` once per update."""

    def __init__(self, curve: pg.PlotDataItem | MarkedCurve, maxlen: int = MAX_POINTS) -> None:
        self.curve = curve
        self.maxlen = maxlen
        self.t: list[float] = []
        self.y: list[float] = []

    def append(self, t: float, y: float | None) -> None:
        if y is None or not np.isfinite(y):
            return
        if self.t and t < self.t[-1]:  # a new run restarts the time axis
            self.clear()
        self.t.append(float(t))
        self.y.append(float(y))
        if len(self.t) > self.maxlen:
            del self.t[: len(self.t) - self.maxlen]
            del self.y[: len(self.y) - self.maxlen]

    def flush(self) -> None:
        self.curve.setData(np.asarray(self.t), np.asarray(self.y))

    def clear(self) -> None:
        self.t.clear()
        self.y.clear()
        self.curve.setData([], [])

    def __len__(self) -> int:
        return len(self.t)


def pen(i: int, dashed: bool = False, width: float = 2.0) -> pg.QtGui.QPen:
    p = pg.mkPen(colour(i), width=width)
    if dashed:
        p.setStyle(Qt.PenStyle.DashLine)
    return p


def category_axis(plot: pg.PlotWidget, names: Sequence[str]) -> None:
    """Label the bottom axis with ``names`` at x = 0, 1, …"""
    ax = plot.getPlotItem().getAxis("bottom")
    ax.setTicks([[(i, n) for i, n in enumerate(names)]])


def integer_ticks(plot: pg.PlotWidget, n: int) -> None:
    """Bottom-axis ticks at whole numbers 1..n (at most ~12 labels)."""
    step = max(1, math.ceil(n / 12))
    ax = plot.getPlotItem().getAxis("bottom")
    ax.setTicks([[(i, str(i)) for i in range(1, n + 1, step)], []])
    plot.getPlotItem().setXRange(0.5, n + 0.5, padding=0)
