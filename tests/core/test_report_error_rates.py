"""report.html's error-rate plot is titled for what it shows and draws the key QBER beside the test data
(physics review s34 F4).

It was titled "QBER per pair" and drew only the timeline's test-data error rate (equal bases, equal non-zero
intensities): ≈ 1.5 % on pairs whose key QBER is ≈ 0.55 % (equal pulses leaving two clients arrive unequal
over unequal paths), and 0 % from a handful of decoy–decoy clicks. Now: the title says "test-data error rate",
points from fewer than ``MIN_TEST_CLICKS`` clicks are left out (and said so under the plot), and each pair's
key QBER is a dashed line of the same colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

import labqfl.report as report
from labqfl.config import load_station_config
from labqfl.report import ERROR_RATE_PLOT, MIN_TEST_CLICKS, write_report
from labqfl.runs import RunRecord


def _metrics() -> dict[str, Any]:
    timeline = [
        # C1-C2: a sparse interval (5 clicks, 0 %) and a full one
        {"pair": "C1-C2", "t_s": 5.0, "qber": 0.0, "qber_events": 5, "sifted_rate_bps": 2e5},
        {"pair": "C1-C2", "t_s": 10.0, "qber": 0.0156, "qber_events": 5000, "sifted_rate_bps": 2e5},
        # C1-C4: the nodes' path, one point over the acquisition without a count
        {"pair": "C1-C4", "t_s": 10.0, "qber": 0.0059, "qber_events": None, "sifted_rate_bps": 2e5},
        # C3-C4: a count exactly at the minimum is drawn
        {"pair": "C3-C4", "t_s": 10.0, "qber": 0.0163, "qber_events": MIN_TEST_CLICKS, "sifted_rate_bps": 2e5},
    ]
    pair = {"sifted_bits": 2_000_000, "phase_error_bound": 0.16, "leaked_ec_bits": 10, "efficiency_f": 1.04,
            "final_key_bits": 500_000, "secure_key_rate_bps": 5e4, "status": "ok"}
    pairs = {"C1-C2": {**pair, "qber_x": 0.0056, "error_rate": {"X_key": 0.0056, "X_test": 0.0156, "Y_test": 0.0}},
             "C1-C4": {**pair, "error_rate": {"X_key": 0.0053, "X_test": 0.0059, "Y_test": 0.0059}},
             "C3-C4": {**pair, "qber_x": None, "final_key_bits": 0, "status": "no key"}}
    return {"status": "complete", "station": "s", "key_source": "qkd",
            "distill": {"pairs": pairs, "timeline": timeline}}


@pytest.fixture
def drawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """(report.html, every plot's lines by axis title: label, x, y, line style)."""
    lines: dict[str, list[dict[str, Any]]] = {}
    fig_before = report._fig

    def spy(path: Path, draw: Any, figsize: tuple[float, float] = (7.0, 3.6)) -> Path:
        def draw_and_record(ax: Any) -> None:
            draw(ax)
            lines[ax.get_title()] = [{"label": ln.get_label(), "x": list(ln.get_xdata()), "y": list(ln.get_ydata()),
                                      "ls": ln.get_linestyle()} for ln in ax.get_lines()]
        return fig_before(path, draw_and_record, figsize)

    monkeypatch.setattr(report, "_fig", spy)
    run = RunRecord.create("report-error-rates", load_station_config(), tmp_path)
    try:
        html = write_report(run, _metrics()).read_text(encoding="utf-8")
    finally:
        run.close()
    plt.close("all")
    return html, lines


def test_plot_is_titled_for_the_test_data_and_says_what_it_left_out(drawn) -> None:
    html, _ = drawn
    assert f"<h2>{ERROR_RATE_PLOT}</h2>" in html
    assert "<h2>QBER per pair</h2>" not in html
    assert f"fewer than {MIN_TEST_CLICKS} test clicks" in html
    assert "Left out (fewer clicks): C1-C2 1 point(s)." in html
    assert "No key QBER (no block processed): C3-C4." in html
    assert "QBER X (key)" in html  # the distillation table's column


def test_sparse_points_are_left_out_and_the_key_qber_is_drawn_beside(drawn) -> None:
    _, lines = drawn
    (title, ls), = [(t, v) for t, v in lines.items() if t.startswith("Test-data error rate")]
    assert "key QBER" in title
    by = {ln["label"]: ln for ln in ls}
    assert by["C1-C2 test"]["x"] == [10.0] and by["C1-C2 test"]["y"] == pytest.approx([1.56])  # not the 5-click 0 %
    assert by["C1-C4 test"]["y"] == pytest.approx([0.59])  # no count: drawn (the nodes' one point)
    assert by["C3-C4 test"]["y"] == pytest.approx([1.63])
    key = by["C1-C2 key 0.56 %"]
    assert key["ls"] == "--" and key["y"] == pytest.approx([0.56, 0.56])
    assert by["C1-C4 key 0.53 %"]["y"] == pytest.approx([0.53, 0.53])  # from error_rate.X_key
    assert not any(k.startswith("C3-C4 key") for k in by)
