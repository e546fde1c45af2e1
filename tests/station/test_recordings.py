"""The Station is the one door to recordings and the per-pair acquisition report: the CLI and the
GUI never import the simulator (tests/core/test_import_graph.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labqfl.config import load_station_config
from labqfl.instruments.base import TagBlock
from labqfl.station import Station, open_recording


def test_channel_counts_accumulate() -> None:
    b = TagBlock(np.arange(5, dtype=np.int64), np.array([1, 2, 2, 3, 2], dtype=np.int16))
    counts: dict[int, int] = {7: 1}
    assert b.channel_counts(counts) is counts
    assert counts == {7: 1, 1: 1, 2: 3, 3: 1}
    assert TagBlock(np.empty(0, np.int64), np.empty(0, np.int16)).channel_counts() == {}
    # a tagger's falling edges are negative channel numbers; the extremes of int16 too
    rng = np.random.default_rng(2)
    for chans in (rng.integers(-9, 9, 5000), rng.choice([-32768, -1, 0, 5, 32767], 300), np.full(7, 4),
                  np.full(3, -2)):
        ch = np.asarray(chans, np.int16)
        want: dict[int, int] = {}
        for c in ch.tolist():
            want[c] = want.get(c, 0) + 1
        assert TagBlock(np.arange(ch.size, dtype=np.int64), ch).channel_counts() == want


def test_record_report_and_replay_through_the_station(tmp_path: Path) -> None:
    cfg = load_station_config()
    with Station.open(cfg, guard=False) as st:
        assert st.pair_report() is None  # no acquisition yet
        blocks = st.time_tagger.stream(0.004, 0.002)
        report = st.pair_report()
        writer = st.recorder(tmp_path / "r.h5", data_dir=tmp_path / "data")
        counts: dict[int, int] = {}
        for b in blocks:
            writer.append(b)
            report.add(b)
            b.channel_counts(counts)
        writer.close(duration_s=0.004, complete=True)
        report.finish()
        acq = st.acquisition_id()
    assert set(report.summary()) == {f"C{i}-C{j}" for i in range(1, 5) for j in range(i + 1, 5)}
    rec = open_recording(tmp_path / "r.h5")
    try:
        assert rec.acquisition_id == acq
        replayed: dict[int, int] = {}
        for b in rec.blocks():
            b.channel_counts(replayed)
        assert replayed == counts and sum(counts.values()) > 0
        # each CSPRNG client's private log was kept in its own folder, and only there
        logs = {c: rec.client_log(c, tmp_path / "data") for c in cfg.client_names}
        assert set(logs) == set(cfg.client_names)
        try:
            rec.client_log("C1", tmp_path / "elsewhere")
        except FileNotFoundError as exc:
            assert "C1" in str(exc) and acq in str(exc)
        else:
            raise AssertionError("a private log was found where none was saved")
    finally:
        rec.close()
