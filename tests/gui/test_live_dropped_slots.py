"""The Live tab shows dropped slots live (issue 17, item 4): a time tagger that reports lost-data
intervals (overflow / missed events) feeds the GUI's acquisition and distillation threads; the
counts reach the "Dropped slots" box (by cause) and the per-pair table's "Dropped slots" column."""

from __future__ import annotations

from typing import Any

import numpy as np
from labqfl.gui.controller import Controller
from labqfl.gui.panels.live import LivePanel

from labqfl.instruments.base import TagBlock

#: tag blocks (by index in the stream) the tagger reports with a lost-data interval
LOST_BLOCKS = (2, 5)
LOST_PS = 1_000_000  # each interval: 1 µs


def _live_panel(qtbot, small_config, tmp_path) -> tuple[Controller, LivePanel]:  # type: ignore[no-untyped-def]
    """A controller on the small station and its Live tab (the caller connects and shuts down)."""
    ctl = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    panel = LivePanel(ctl)
    qtbot.addWidget(panel)
    return ctl, panel


def test_lost_data_intervals_show_in_the_live_tab_by_cause_and_per_pair(qtbot, small_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl, panel = _live_panel(qtbot, small_config, tmp_path)
    try:
        ctl.connect_station()
        qtbot.waitUntil(lambda: ctl.connected, timeout=60_000)
        tagger = ctl.core.station.time_tagger
        real = tagger.stream

        def with_lost_data(duration_s: float, block_duration_s: float | None = None):  # type: ignore[no-untyped-def]
            blocks = real(duration_s, block_duration_s)

            def gen():  # type: ignore[no-untyped-def]
                try:
                    for k, blk in enumerate(blocks):
                        if k in LOST_BLOCKS and blk.timestamps.size:
                            t0 = int(blk.timestamps[blk.timestamps.size // 2])
                            blk = TagBlock(blk.timestamps, blk.channels, overflow=True,
                                           lost_intervals_ps=np.array([[t0, t0 + LOST_PS]], dtype=np.int64))
                        yield blk
                finally:
                    blocks.close()
            return gen()

        tagger.stream = with_lost_data  # type: ignore[method-assign]
        assert panel.dropped_text() == "—\n—\n—"  # nothing counted before the acquisition
        ctl.start_distillation(block_bits=2000, engine="cascade")

        def counted() -> bool:
            d: dict[str, Any] = panel._dropped
            return d.get("lost_intervals", 0) >= len(LOST_BLOCKS) and d.get("dropped_slots_lost_data", 0) > 0

        qtbot.waitUntil(counted, timeout=60_000)
        ctl.stop_acquisition()
        qtbot.waitUntil(lambda: not ctl.busy.get("acquisition") and not ctl.busy.get("distillation"), timeout=60_000)
        qtbot.waitUntil(lambda: panel.table.item(0, 1).text() != "—", timeout=10_000)
    finally:
        ctl.shutdown(20.0)

    lost_slots = panel._dropped["dropped_slots_lost_data"]
    # every slot of a 1 µs interval is dropped (and a window's reach either side)
    assert lost_slots >= len(LOST_BLOCKS) * int(LOST_PS * 1e-12 * small_config.laser.rep_rate_hz)
    text = panel.dropped_text()
    assert f"{len(LOST_BLOCKS)} intervals, {len(LOST_BLOCKS)} overflow blocks → " \
           f"{lost_slots:,} slots" in text, text
    assert "0 missing, 0 duplicated/stray → 0 slots" in text, text  # no markers lost: 0, not blank
    assert "0 frames (no client streams)" in text, text
    col = LivePanel.PAIR_COLS.index("Dropped slots")
    # one pair: every dropped slot is its slot, all sifted by the final snapshot
    assert panel.table.item(0, col).text() == f"{lost_slots:,}"


def test_an_acquisition_stopped_before_its_first_status_still_shows_the_unplayed_frames(qtbot, small_config, tmp_path,  # type: ignore[no-untyped-def]
                                                                                       monkeypatch) -> None:
    """The acquisition's last status carries the frames each client did not play: a stop within the
    first status interval (no periodic status at all here) left the "Not played" line at "—" (seen
    in CI, where the lost-data test above stopped its acquisition within 0.1 s)."""
    from labqfl.gui.workers import acquisition

    monkeypatch.setattr(acquisition, "EMIT_INTERVAL_S", 1e9)  # no periodic status: only the final one
    ctl, panel = _live_panel(qtbot, small_config, tmp_path)
    try:
        ctl.connect_station()
        qtbot.waitUntil(lambda: ctl.connected, timeout=60_000)
        ctl.start_acquisition()
        qtbot.waitUntil(lambda: bool(ctl.busy.get("acquisition")), timeout=60_000)
        ctl.stop_acquisition()
        qtbot.waitUntil(lambda: not ctl.busy.get("acquisition"), timeout=60_000)
    finally:
        ctl.shutdown(20.0)
    assert panel.dropped_frames.text() == "0 frames (no client streams)", panel.dropped_text()
