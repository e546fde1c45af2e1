"""Review s36 user F26: the report's training plot scaled its accuracy axis to the data (96.0–97.5 %), which
made a 1.5-point wobble look like a trend; the GUI draws 0–100 % (docs/gui.md). The report does too now."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

import labqfl.report as report


def test_accuracy_axis_spans_0_to_100_percent(drawn: dict[str, Any]) -> None:
    rounds = [{"round": r, "test_accuracy": a, "test_loss": 0.2} for r, a in ((1, 0.96), (2, 0.975), (3, 0.97))]
    report.make_plots(drawn["run"], {"train": {"rounds": rounds, "task": "mnist-qnn", "key_source": "qkd"}}, {})
    assert drawn["training.png"].get_ylim() == (0.0, 100.0)
    plt.close("all")
