"""Review s36 user F2: over nodes ``labqfl run``'s count-rate series had one point (the detector's tag totals
over the acquisition), so the report's count-rate plot was a single point. The detector node counts tags per
channel and second of acquisition (``ctl/ran``'s ``channel_counts_series``, by the tags' timestamps), and the
run's series has a point per second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.instruments.base import TagBlock
from labqfl.nodes.launch import LocalNetwork

PS = 10**12


def _block(t_s: list[float], ch: list[int]) -> TagBlock:
    return TagBlock(np.array([round(t * PS) for t in t_s], dtype=np.int64), np.array(ch, dtype=np.int16))


def test_detector_counts_tags_per_second_and_channel() -> None:
    from labqfl.nodes.detector import _by_channel, count_bins

    bins: dict[int, dict[int, int]] = {}
    count_bins(_block([0.1, 0.5, 0.9], [1, 2, 1]), bins)
    count_bins(_block([0.95, 1.0, 1.5, 2.2, 2.3], [1, 1, 2, 1, 3]), bins)  # spans the edges at 1 s and 2 s
    count_bins(_block([], []), bins)
    assert _by_channel(bins) == {1: [3, 1, 1], 2: [1, 1, 0], 3: [0, 0, 1]}


def test_run_series_has_a_point_per_second() -> None:
    from labqfl.nodes.runjob import _series

    det = {"channel_counts": json.dumps({"1": 600, "2": 300}),
           "channel_counts_series": json.dumps({"bin_s": 1.0, "counts": {"1": [200, 200, 100, 100],
                                                                          "2": [100, 100, 100]}})}
    s = _series({1: "sync", 2: "D0"}, det, 2.5)  # the tag stamped at 2.5 s (bin 3) counts in the last bin
    assert s["t_s"] == [1.0, 2.0, 2.5]
    assert s["rates_hz"] == {"sync": [200.0, 200.0, 400.0], "D0": [100.0, 100.0, 200.0]}
    # a sliver of a last bin joins the one before; a detector without a series: one point, as before
    assert _series({1: "sync"}, det, 2.05)["t_s"] == [1.0, 2.05]
    assert _series({1: "sync"}, {"channel_counts": det["channel_counts"]}, 2.5) == {"t_s": [2.5],
                                                                                     "rates_hz": {"sync": [240.0]}}


def test_node_up_reports_the_series(tmp_path: Path, small_station_writer: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalNetwork, "warm_jit", lambda self: None)  # the launcher's own warm-up: not asked here
    station = small_station_writer(tmp_path, name="small-series")
    r = CliRunner().invoke(app, ["node", "up", "--config", str(station), "--duration", "0.2", "--workdir",
                                 str(tmp_path / "w"), "--json"])
    assert r.exit_code == 0, r.output
    det = json.loads(r.stdout)["detector"]
    series = det["channel_counts_series"]
    assert series["bin_s"] == 1.0
    assert {k: sum(v) for k, v in series["counts"].items()} == {k: v for k, v in det["channel_counts"].items()}
