"""Curves with markers keep pyqtgraph's symbol atlas at one entry however often they are redrawn.

A ``PlotDataItem`` with ``symbol*`` options hands its scatter new pen and brush copies on every
``setData``, and the ``SymbolAtlas`` keys rendered symbols by those objects' identity: the Live tab's
QBER plot (6 curves, 10 updates a second) grew the atlas by one symbol image per update, part of
the GUI's memory growth left running (docs/memory.md)."""

from __future__ import annotations

import numpy as np
from labqfl.gui import plots


def _atlas_after_updates(curve, scatter, qtbot, n: int = 400) -> int:  # type: ignore[no-untyped-def]
    t, y = [], []
    for i in range(n):
        t.append(float(i))
        y.append(float(np.sin(i)))
        curve.setData(np.asarray(t), np.asarray(y))
        if i % 50 == 0:
            qtbot.wait(1)  # let the view paint: the atlas fills when the symbols are drawn
    return len(scatter.fragmentAtlas._coords)


def test_a_marked_curve_renders_its_symbol_once(qtbot) -> None:  # type: ignore[no-untyped-def]
    w = plots.make_plot("t", "y")
    qtbot.addWidget(w)
    w.show()
    marked = plots.MarkedCurve(w, plots.pen(0), plots.colour(0), name="marked")
    assert _atlas_after_updates(marked, marked.scatter, qtbot) == 1
    x, y = marked.getData()
    assert len(x) == len(y) == 400
    # the pattern it replaces, for contrast: one atlas entry per update
    plain = w.plot(pen=plots.pen(1), symbol="o", symbolSize=5, symbolBrush=plots.colour(1), symbolPen=None)
    assert _atlas_after_updates(plain, plain.scatter, qtbot) > 100


def test_the_live_and_training_panels_use_marked_curves() -> None:
    import inspect

    from labqfl.gui.panels import live, training

    for mod in (live, training):
        assert "symbolBrush" not in inspect.getsource(mod), mod.__name__
