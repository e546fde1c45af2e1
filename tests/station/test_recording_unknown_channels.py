"""Tags on a channel a recording's config does not use (neither sync, a detector nor a frame-marker
input) are left out of slotting; the reader now says so in one WARNING with their count and channels
(review s32 L9: every 7th tag moved to channel 99 lost ~14 % of the data without a word)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from labqfl.sim_backends import create_simulated_instruments, record

from labqfl.config import load_station_config
from labqfl.station import open_recording


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    cfg = load_station_config()
    inst = create_simulated_instruments(cfg)
    return record(inst["time_tagger"], tmp_path / "r.h5", 0.003, cfg, block_duration_s=0.001,
                  data_dir=tmp_path / "data")


def _read_all(path: Path) -> int:
    rec = open_recording(path)
    try:
        n = sum(len(b) for b in rec.blocks())
        n += sum(len(b) for b in rec.blocks(max_tags=1000))  # a second pass warns no more
        return n
    finally:
        rec.close()


def _warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "channel" in r.getMessage()]


def test_tags_on_an_unknown_channel_are_named_in_one_warning(recording: Path, caplog: Any) -> None:
    with h5py.File(recording, "r+") as f:
        ch = f["tags/channels"][...]
        ch[::7] = 99
        ch[1::50] = 42
        f["tags/channels"][...] = ch
        want = int(np.count_nonzero((ch == 99) | (ch == 42)))
    with caplog.at_level(logging.WARNING):
        _read_all(recording)
    assert len(_warnings(caplog)) == 1, _warnings(caplog)
    msg = _warnings(caplog)[0]
    assert f": {want} tags on channel(s) 42, 99, which the recording's config does not use" in msg
    assert "sync 1" in msg and "D0" in msg


def test_a_recording_on_the_configured_channels_gives_no_warning(recording: Path, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING):
        assert _read_all(recording) > 0
    assert _warnings(caplog) == []
