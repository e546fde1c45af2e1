"""The Live tab shows the Y test error rate with its clicks, not as a pair's QBER (physics review s34 F4).

Its column "QBER Y (test)" printed "0.00 %" from the handful of decoy–decoy clicks that are the Y test data
of two clients with unequal signal intensities, and the QBER plot drew that rate as a dashed line beside the
key QBER. Now the worker's pair metrics carry ``qber_y_clicks``, the column "Y test (clicks)" reads
"r % (n)" or "n/a (n clicks)" below ``MIN_TEST_CLICKS`` clicks (:func:`labqfl.cli.common.rate_clicks_cell`,
the cell of ``labqfl acquire`` and ``distill``), the plot leaves such points out, and the plot title and the
note say which line is the key QBER and which the test data.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from labqfl.gui.workers.acquisition import pair_metrics

from labqfl.cli.common import MIN_TEST_CLICKS
from labqfl.qkd.pipeline import PairResult


def _distiller(y_clicks: int, y_errors_x2: int) -> Any:
    r = PairResult("C1-C2", sifted_bits=500, test_clicks={"X": 300, "Y": y_clicks},
                   test_errors_x2={"X": 9, "Y": y_errors_x2})
    st = SimpleNamespace(result=r, n_bits=500, block_index=0)
    return SimpleNamespace(settings=SimpleNamespace(block_bits=1000), pairs={"C1-C2": st},
                           block_slots={"C1-C2": 10**6}, cfg=SimpleNamespace(laser=SimpleNamespace(rep_rate_hz=1e8)))


def test_the_workers_pair_metrics_carry_the_y_test_clicks() -> None:
    m = pair_metrics(_distiller(5, 0), 0.5)["C1-C2"]
    assert m["qber_y"] == 0.0 and m["qber_y_clicks"] == 5
    m = pair_metrics(_distiller(0, 0), 0.5)["C1-C2"]
    assert m["qber_y"] is None and m["qber_y_clicks"] == 0


def _snap(t: float, y: float | None, clicks: int) -> dict[str, Any]:
    return {"t_s": t, "pairs": {"C1-C2": {
        "sifted_bits": 1000, "block_fill": 0.5, "qber_x": 0.0055, "qber_y": y, "qber_y_clicks": clicks, "blocks": 1,
        "aborted_blocks": 0, "final_key_bits": 100, "key_rate_bps": 100.0, "dropped_slots": 0, "last_abort": "",
        "first_key_eta_s": 0.0}}}


def test_the_y_test_cell_shows_its_clicks_and_na_below_the_minimum(make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    lp = make_win(small_config).live_panel
    assert "Y test (clicks)" in lp.PAIR_COLS and "QBER X (key)" in lp.PAIR_COLS
    assert not any(c.startswith("QBER Y") for c in lp.PAIR_COLS)
    col = lp.PAIR_COLS.index("Y test (clicks)")
    lp._on_pairs(_snap(0.5, 0.0, 5))  # the review's case: 0 errors in 5 decoy-decoy clicks
    assert lp.table.item(0, col).text() == "n/a (5 clicks)"
    assert lp.table.item(0, lp.PAIR_COLS.index("QBER X (key)")).text() == "0.55 %"
    assert lp.qber_y["C1-C2"].y == []  # not drawn
    lp._on_pairs(_snap(1.0, 0.0156, 12_345))
    assert lp.table.item(0, col).text() == "1.56 % (12,345)"
    assert lp.qber_y["C1-C2"].y == [pytest.approx(1.56)]
    lp._on_pairs(_snap(1.5, 0.02, MIN_TEST_CLICKS))
    assert lp.table.item(0, col).text() == f"2.00 % ({MIN_TEST_CLICKS})"


def test_the_plot_and_the_note_say_test_data_vs_key_qber(make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    from labqfl.gui.panels.live import ERROR_RATE_TITLE, LIVE_NOTE

    lp = make_win(small_config).live_panel
    title = lp.qber_plot.getPlotItem().titleLabel.text
    assert "X key QBER" in title and "Y test data" in title and f"{MIN_TEST_CLICKS} clicks" in title
    assert ERROR_RATE_TITLE in title
    assert "not the key QBER" in LIVE_NOTE and f"n/a below {MIN_TEST_CLICKS} clicks" in LIVE_NOTE
