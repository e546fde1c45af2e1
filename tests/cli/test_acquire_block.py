"""``labqfl acquire --block`` (review s32 M5): a block shorter than 1 ms is refused in one line naming
the minimum and the value (``--duration 0.2 --block 1e-9`` ran for minutes), and the progress total is
the number of blocks the tagger streams (it counted duration/block while the stream cuts whole laser
periods: the bar stopped at 10 % for sub-period blocks, and one block short or over at a rounding edge)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.app.acquire import AcquireOptions, acquire
from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.errors import ConfigError


@pytest.mark.parametrize("block", ["1e-9", "1.5e-8", "0.0009"])
def test_a_block_below_1_ms_is_refused_in_one_line(block: str) -> None:
    r = CliRunner().invoke(app, ["acquire", "--duration", "0.2", "--block", block])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (f"error: --block must be at least 0.001 s (1 ms, the shortest block an acquisition "
                                f"streams), got {float(block)!r}")


def test_the_minimum_block_is_accepted_and_counted_in_whole_periods() -> None:
    cfg = load_station_config()  # 100 MHz
    assert AcquireOptions(duration_s=0.2, block_s=1e-3).n_blocks(cfg) == 200
    # 200 000.4 slots are 200 000: two blocks of 100 000 slots (duration/block counted 3)
    assert AcquireOptions(duration_s=0.002000004, block_s=1e-3).n_blocks(cfg) == 2
    with pytest.raises(ConfigError, match=r"^block must be at least 0\.001 s"):
        AcquireOptions(duration_s=0.2, block_s=9.99e-4)


def test_the_progress_total_is_what_the_acquisition_streams(small_station_file: Path, tmp_path: Path) -> None:
    cfg = load_station_config(small_station_file)
    calls: list[tuple[int, int]] = []
    acquire(cfg, AcquireOptions(duration_s=0.002000004, block_s=1e-3, data_dir=tmp_path / "data"),
            progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
