"""Small pyqtgraph helpers: a light theme, a colour per pair, bounded time series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextOption

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


#: Title row of a plot: pyqtgraph's fixed 30 px (PlotItem.setTitle), more where the title wraps onto more lines.
TITLE_ROW_PX = 30.0


def fit_title(w: pg.PlotWidget, width: float | None = None) -> None:
    """Wrap the title of plot ``w`` onto more lines where it is wider than the plot's middle column at widget width
    ``width`` (None: the present one). A title one line long sets the plot's minimum width, and a plot in a narrower
    grid cell was drawn cut off on the right: title, legend, last bar and tick (review s38 user F2, the Training
    tab's "Mask bits drawn (CSPRNG masks, no QKD key used; all pairs)")."""
    item = w.getPlotItem()
    label = item.titleLabel
    if not label.isVisible():
        return
    text = label.item
    text.setTextWidth(-1)  # its one-line width
    axes = sum(item.getAxis(a).width() for a in ("left", "right") if item.getAxis(a).isVisible())
    room = (w.width() if width is None else width) - axes - 16  # the layout's margins and spacing
    if text.boundingRect().width() > room:
        text.setTextWidth(max(room, 80.0))
        text.document().setDefaultTextOption(QTextOption(Qt.AlignmentFlag.AlignHCenter))
    row = max(TITLE_ROW_PX, text.boundingRect().height())
    label.setMaximumHeight(row)
    item.layout.setRowFixedHeight(0, row)
    label.updateMin()


def set_title(w: pg.PlotWidget, title: str) -> None:
    """Set the title of plot ``w`` (11 pt, bold), wrapped to the plot's width (:func:`fit_title`)."""
    w.getPlotItem().setTitle(f"<span style='font-size:11pt; font-weight:600'>{title}</span>")
    fit_title(w)


class PlotWidget(pg.PlotWidget):
    """A ``pg.PlotWidget`` whose title wraps to its width on every resize (:func:`fit_title`), and whose plot is
    fitted to it again where it grew wider than the widget afterwards (its axes' labels widened with the data:
    the plot keeps the width its minimum forced on it until the next resize)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fitting = False
        self.plotItem.geometryChanged.connect(self._keep_inside)

    def resizeEvent(self, ev: Any) -> None:  # noqa: N802 (Qt's name)
        if getattr(self, "plotItem", None) is not None:  # pyqtgraph calls it with None while it is being made
            fit_title(self, None if ev is None else float(ev.size().width()))
        super().resizeEvent(ev)

    def _keep_inside(self) -> None:
        if self._fitting or self.plotItem.geometry().width() <= self.width() + 0.5:
            return
        self._fitting = True
        try:
            fit_title(self)
            pg.GraphicsView.resizeEvent(self, None)  # the plot to the widget's size again
        finally:
            self._fitting = False


def make_plot(title: str, left: str, left_units: str | None = None, bottom: str = "acquired time",
              bottom_units: str | None = "s", legend: bool = True, legend_right: bool = True) -> pg.PlotWidget:
    """A PlotWidget with a title (wrapped to its width), axis labels (pyqtgraph adds SI prefixes to ``units``), a
    grid and a legend."""
    configure()
    w = PlotWidget()
    item = w.getPlotItem()
    set_title(w, title)
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
