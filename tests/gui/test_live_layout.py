"""The Live tab as it is drawn (review s31, items 8 and 10): the distillation's first-key line, the
Block size box, the key-pool legend, the status bar and the window's minimum size."""

from __future__ import annotations

import pytest
from labqfl.gui.controller import Controller
from labqfl.gui.main_window import MIN_SIZE, MainWindow
from labqfl.gui.panels.live import first_key_text
from PySide6.QtCore import QPoint, QPointF


def _m(eta: float, key: int = 0) -> dict:
    return {"first_key_eta_s": eta, "final_key_bits": key}


def test_first_key_line_while_the_first_block_is_distilled() -> None:
    assert "expected after ≈ 1.2 s more data" in first_key_text({"C1-C2": _m(1.2), "C1-C3": _m(0.4)})
    # the data for the first block is in, the block is being processed: not "after ≈ 0 s more data"
    text = first_key_text({"C1-C2": _m(0.0), "C1-C3": _m(0.0)})
    assert "being distilled" in text and "0 s" not in text
    assert "being distilled" in first_key_text({"C1-C2": _m(0.0, key=4000), "C1-C3": _m(0.0)})
    assert first_key_text({"C1-C2": _m(0.0, key=4000), "C1-C3": _m(0.0, key=10)}) == "running"  # keys exist


@pytest.fixture
def win(qtbot, tmp_path):  # type: ignore[no-untyped-def]
    from labqfl.config import load_station_config

    ctl = Controller(load_station_config(), data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")  # 6 pairs
    w = MainWindow(ctl)
    qtbot.addWidget(w)
    w.show()
    w.show_tab("live")
    yield w
    ctl.shutdown(5.0)


def _legend_clear_of_bars(w: MainWindow) -> None:
    lp = w.live_panel
    item = lp.pool_plot.getPlotItem()
    legend = item.legend.sceneBoundingRect()
    top = max(float(sum(p.values())) for p in lp._pools.values())
    for i in range(len(lp.pairs)):
        bar_top = item.vb.mapViewToScene(QPointF(i, top)).y()  # scene y grows downwards
        bar_x = item.vb.mapViewToScene(QPointF(i, 0)).x()
        if legend.left() - 30 <= bar_x <= legend.right() + 30:
            assert bar_top > legend.bottom(), f"the legend covers the bar of {lp.pairs[i]}"


@pytest.mark.parametrize("size", [(1440, 900), MIN_SIZE])
def test_live_tab_text_fits(qtbot, win: MainWindow, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    win.resize(*size)
    lp = win.live_panel
    pools = {p: {"auth": 2000 + 500 * i, "general": 18_000 + 1000 * i} for i, p in enumerate(lp.pairs)}
    lp._on_pools(pools)
    msg = "running · 0.783 s of data (live distillation attached, first block being distilled) " * 3
    win._on_progress("acquisition", 0.5, msg)
    qtbot.wait(200)
    assert win.width() >= size[0] - 1 and win.height() >= size[1] - 1
    # the Block size box shows its whole special text ("ıto (key-rate rule)" was cut)
    assert lp.block_bits.width() >= lp.block_bits.sizeHint().width()
    _legend_clear_of_bars(win)
    # the status bar ends in "…" instead of cutting a word, the whole message in its tooltip
    assert win.message.text().endswith("…") and win.message.toolTip() == f"acquisition: {msg}"
    # every plot lies inside the tab (at the minimum size the right-hand plots were cut off)
    for plot in (lp.rate_plot, lp.qber_plot, lp.rate_key_plot, lp.pool_plot):
        right = plot.mapTo(lp, QPoint(plot.width(), 0)).x()
        assert right <= lp.width(), f"{plot.getPlotItem().titleLabel.text} cut off"
    # the control column's rows do not overlap (the acquisition status ran into the check box)
    assert lp.acq_status.mapTo(lp, QPoint(0, 0)).y() >= lp.arm_box.mapTo(lp, QPoint(0, lp.arm_box.height())).y()
