"""Review s36 user F2, F13: over nodes a run reports one count-rate point and one timeline point per pair (the
whole acquisition). The report drew them as lines without markers, so count_rates.png was blank, and key_rate.png
and qber.png were single dots on a 9.5–10.5 s axis under titles promising solid lines. A series of one point is
drawn with a marker now, the time axis starts at 0 and the titles say what is drawn."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

import labqfl.report as report

PAIRS = ("C1-C2", "C1-C3")


def _metrics(points: list[float]) -> dict[str, Any]:
    return {"acquire": {"count_rate_series": {"t_s": points, "rates_hz": {
                "sync": [97656.3] * len(points), "D0": [1.12e6] * len(points), "D1": [1.09e6] * len(points)}}},
            "distill": {"timeline": [{"pair": p, "t_s": t, "sifted_rate_bps": 2.2e5, "qber": 0.015,
                                      "qber_events": None} for p in PAIRS for t in points],
                        "pairs": {p: {"qber_x": 0.0058, "secure_key_rate_bps": 8.1e4} for p in PAIRS}}}


def _data_lines(ax: Any) -> list[Any]:
    """The plotted series (not the dashed axhlines of the final values)."""
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) and ln.get_linestyle() != "--"]


def test_one_point_series_are_visible_and_titled_as_such(drawn: dict[str, Any]) -> None:
    report.make_plots(drawn["run"], _metrics([10.0]), {})
    for name in ("count_rates.png", "qber.png", "key_rate.png"):
        ax = drawn[name]
        lines = _data_lines(ax)
        assert lines, name
        for ln in lines:  # a single point needs a marker to be drawn at all
            assert ln.get_marker() not in (None, "None", "", " "), (name, ln.get_label())
        assert ax.get_xlim()[0] == 0.0, name  # the point covers 0..10 s, not a 1-s window around 10 s
        assert "solid" not in ax.get_title().split("(")[1].split(")")[0], (name, ax.get_title())
    assert "one point" in drawn["count_rates.png"].get_title()
    assert "dots: over the acquisition" in drawn["key_rate.png"].get_title()
    plt.close("all")


def test_series_of_several_points_keep_their_lines(drawn: dict[str, Any]) -> None:
    report.make_plots(drawn["run"], _metrics([5.0, 10.0]), {})
    assert drawn["count_rates.png"].get_title() == "Detector count rates"
    assert "(solid)" in drawn["key_rate.png"].get_title()
    assert all(ln.get_linestyle() == "-" for ln in _data_lines(drawn["count_rates.png"]))
    plt.close("all")
