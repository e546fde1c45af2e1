"""Review s38 user F5: report.html's "Key pools against consumption" plot put this run's distilled bits beside the
key store's lifetime authentication consumption (26 368 bits on C1-C4, 26 112 of them spent by earlier runs), so a
reader took it for this block's authentication cost (384 bits). The plot shows this run's cost
(``keys.pairs.*.auth_consumed_run_bits``) and says so; metrics without that field say their bar is the store's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import labqfl.report as report
from labqfl.runs import RunRecord


def _drawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: dict[str, Any]) -> dict[str, list[float]]:
    import matplotlib.pyplot as plt

    bars: dict[str, list[float]] = {}
    real = report._fig

    def fig(path: Path, draw: Any, figsize: Any = (7.0, 3.6)) -> Path:
        if path.name == "key_pools.png":
            _, ax = plt.subplots()
            draw(ax)
            for c in ax.containers:
                bars[str(c.get_label())] = [float(b.get_height()) for b in c]
            plt.close(ax.figure)
        return real(path, draw, figsize)

    monkeypatch.setattr(report, "_fig", fig)
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        report.write_report(run, {"status": "complete", "keys": {"pairs": {"C1-C4": pair}}})
    return bars


BASE = {"distilled_bits": 586_242, "consumed_bits": 26_880, "auth_consumed_bits": 26_368}


def test_the_plot_shows_this_runs_authentication_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _drawn(tmp_path, monkeypatch, {**BASE, "auth_consumed_run_bits": 384})
    assert bars == {"distilled (this run)": [586_242], "consumed by FL masks and any refs tags (this run)": [26_880],
                    "consumed by authentication (this run)": [384]}


def test_older_metrics_say_their_bar_is_the_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _drawn(tmp_path, monkeypatch, dict(BASE))
    assert bars["consumed by authentication (key store, all runs)"] == [26_368]
