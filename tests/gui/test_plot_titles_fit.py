"""Review s38 user F2: the Training tab's "Mask bits drawn (CSPRNG masks, no QKD key used; all pairs)" plot was cut
off on the right (title, legend "cumulativ…", the 12th bar and its tick): a title one line long set the plot's
minimum width above its grid cell's. Titles wrap to the plot's width now (gui/plots.py fit_title); every plot of
every tab lies inside its widget, title and legend included, at the documented minimum size and at 1440×900."""

from __future__ import annotations

import pyqtgraph as pg
import pytest
from labqfl.gui.main_window import MIN_SIZE, MainWindow

TABS = ("station", "live", "calibration", "training", "nodes", "log")


def _rounds(n: int) -> list[dict]:
    return [{"round": i, "test_accuracy": 0.97, "test_loss": 0.19, "train_loss": 0.2, "key_bits_total": 1152,
             "key_bits_cumulative": 1152 * i, "key_bits_per_pair": 192} for i in range(1, n + 1)]


def _clipped(w: MainWindow) -> list[str]:
    """What of each visible plot lies beyond its widget's right (or bottom) edge."""
    out = []
    for p in w.findChildren(pg.PlotWidget):
        if not p.isVisible():
            continue
        item = p.getPlotItem()
        name = item.titleLabel.text
        parts = {"plot": item.sceneBoundingRect(), "title": item.titleLabel.item.sceneBoundingRect()}
        if item.legend is not None and item.legend.isVisible():
            parts["legend"] = item.legend.sceneBoundingRect()
        out += [f"{what} of {name!r}: right edge {r.right():.0f} > {p.width()}" for what, r in parts.items()
                if r.right() > p.width() + 0.5]
        if item.minimumWidth() > p.width() + 0.5:
            out.append(f"{name!r}: minimum width {item.minimumWidth():.0f} > {p.width()}")
        if item.sceneBoundingRect().bottom() > p.height() + 0.5:
            out.append(f"{name!r}: bottom edge {item.sceneBoundingRect().bottom():.0f} > {p.height()}")
    return out


@pytest.mark.parametrize("keys", ["csprng", "qkd"])
@pytest.mark.parametrize("size", [(1440, 900), MIN_SIZE])
def test_every_plot_lies_inside_its_widget(qtbot, make_win, keys: str, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    w = make_win()
    w.show()
    tp = w.training_panel
    tp._on_started({"keys": keys, "task": "mnist-qnn", "model": "hea-4q3l-amp", "n_params": 24, "q": 8,
                    "pairs": ["C1-C2"] * 6, "clients": {}})
    rounds = _rounds(12)
    tp._rounds = rounds[:-1]
    tp._on_round({"metrics": rounds[-1], "clients": {}})
    w.resize(*size)
    clipped = []
    for tab in TABS:
        w.show_tab(tab)
        qtbot.wait(50)
        clipped += [f"{tab}: {c}" for c in _clipped(w)]
    assert w.width() <= size[0] + 1
    assert not clipped, "\n".join(clipped)
    assert "no QKD key" in tp.key_plot.getPlotItem().titleLabel.text or keys == "qkd"
