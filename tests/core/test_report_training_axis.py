"""Review s36 user F26: the report's training plot scaled its accuracy axis to the data (96.0–97.5 %), which
made a 1.5-point wobble look like a trend; the GUI draws 0–100 % (docs/gui.md). The report does too now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

import labqfl.report as report


def test_accuracy_axis_spans_0_to_100_percent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    axes: dict[str, Any] = {}

    def fig(path: Path, draw: Any, figsize: tuple[float, float] = (7.0, 3.6)) -> Path:
        _, ax = plt.subplots(figsize=figsize)
        draw(ax)
        axes[path.name] = ax
        return path

    class Run:
        def plot_path(self, name: str) -> Path:
            return tmp_path / name

    monkeypatch.setattr(report, "_fig", fig)
    rounds = [{"round": r, "test_accuracy": a, "test_loss": 0.2} for r, a in ((1, 0.96), (2, 0.975), (3, 0.97))]
    report.make_plots(Run(), {"train": {"rounds": rounds, "task": "mnist-qnn", "key_source": "qkd"}}, {})  # type: ignore[arg-type]
    assert axes["training.png"].get_ylim() == (0.0, 100.0)
    plt.close("all")
