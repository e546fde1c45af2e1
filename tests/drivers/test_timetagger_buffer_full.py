"""A full ``TimeTagStream`` host buffer is lost data after its last record (review s36 M1, s36 lab2 M1).

SDK reference (swabian-timetagger 2.22.6, ``Swabian/TimeTagger/__init__.py``):
``TimeTagStream(tagger, n_max_events, channels)`` — "n_max_events: Buffer size for storing time tags";
``TimeTagStream.getData()`` — "Data loss may occur if getData() is not called frequently enough with
respect to n_max_events"; ``TimeTagStreamBuffer.size`` — "If the size equals the maximum size of the
buffer set in TimeTagStream via n_max_events, events have likely been discarded"; ``hasOverflows`` —
"this is independent of an overflow of the internal buffer of TimeTagStream"; ``tGetData`` — "the
data-stream time position of the call to TimeTagStream::getData()".
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from labqfl.drivers import swabian_timetagger as st

from labqfl.config import TimeTaggerConfig


@pytest.fixture
def small_buffer(monkeypatch: pytest.MonkeyPatch, fake_sdk):  # type: ignore[no-untyped-def]
    """A tagger whose stream buffer holds 4 records, so a poll of 4 records is a full buffer."""
    monkeypatch.setattr(st, "STREAM_BUFFER_EVENTS", 4)
    cfg = TimeTaggerConfig(driver="SwabianTimeTagger", options={"serial": "X"}, sync_divider=1024)
    t = st.SwabianTimeTagger("time_tagger", cfg, sdk=fake_sdk)
    yield t, fake_sdk.created[0]
    t.close()


def _b(cls, ts: list[int], t_get_data: int | None = None):  # type: ignore[no-untyped-def]
    b = cls(np.array(ts, np.int64), np.array([1] * len(ts), np.int32))
    if t_get_data is not None:
        b.tGetData = t_get_data
    return b


def test_full_stream_buffer_becomes_a_lost_interval_counted_and_warned_once(small_buffer, swabian_fakes,  # type: ignore[no-untyped-def]
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    tagger, dev = small_buffer
    buf = swabian_fakes.Buffer
    dev.script = [_b(buf, [100, 200, 300, 400]),  # full: what came after 400 ps until getData was discarded
                  _b(buf, [9_000_000, 9_000_100, 9_000_200, 9_000_300]),  # full again
                  _b(buf, [20_000_000, 20_000_100]),  # not full
                  _b(buf, [30_000_000])]
    with caplog.at_level(logging.WARNING):
        blocks = list(tagger.stream(1e-3, 1e-4))
    assert ("TimeTagStream", (4, [1, 2, 3]), {}) in dev.calls  # n_max_events as compared
    assert [b.lost_intervals_ps.tolist() for b in blocks] == [[], [[400, 9_000_000]], [[9_000_300, 20_000_000]], []]
    # the full buffers' own records are whole: only the gaps after them are lost (review s36 lab2 M1)
    assert [b.overflow for b in blocks] == [False, True, True, False]
    assert tagger.last_stream_buffer_full == 2
    warnings = [r.getMessage() for r in caplog.records if "stream buffer filled" in r.getMessage()]
    assert len(warnings) == 1 and "getData() called too rarely" in warnings[0] and "n_max_events = 4" in warnings[0]


def test_stream_ending_on_a_full_buffer_loses_up_to_its_get_data_time(small_buffer, swabian_fakes) -> None:  # type: ignore[no-untyped-def]
    tagger, dev = small_buffer
    dev.script = [_b(swabian_fakes.Buffer, [10, 20]), _b(swabian_fakes.Buffer, [100, 200, 300, 400], t_get_data=5_000)]
    blocks = list(tagger.stream(1e-3, 1e-4))
    assert blocks[-1].lost_intervals_ps.tolist() == [[400, 5_000]] and blocks[-1].overflow
    assert blocks[0].lost_intervals_ps.tolist() == [] and tagger.last_stream_buffer_full == 1


def test_the_emulated_sdk_discards_past_n_max_events_and_the_driver_records_the_loss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulated SDK (labqfl.sim_backends.timetagger_sdk) fills its host buffer as the SDK does: a poll of
    more than n_max_events records keeps the first n_max_events; the driver marks the rest lost."""
    from labqfl.sim_backends.timetagger_sdk import EmulatedTimeTaggerSDK, LightSettings

    from labqfl.config import load_station_config
    from labqfl.instruments.base import TagBlock

    cfg = load_station_config()
    cfg.time_tagger = cfg.time_tagger.model_copy(update={"driver": "SwabianTimeTagger"})
    cfg.simulation.emulate_time_tagger = True
    feed = [TagBlock(np.array([0, 100, 200, 300, 400, 500], np.int64), np.array([2, 3, 2, 3, 2, 3], np.int16)),
            TagBlock(np.array([9_000, 9_100], np.int64), np.array([2, 3], np.int16))]
    sdk = EmulatedTimeTaggerSDK(LightSettings.from_config(cfg), lambda capture_s: iter(feed))
    monkeypatch.setattr(st, "STREAM_BUFFER_EVENTS", 4)
    drv = st.SwabianTimeTagger("time_tagger", cfg.time_tagger, sdk=sdk)
    try:
        blocks = [b for b in drv.stream(1e-3, 1e-6) if len(b) or b.lost_intervals_ps.size]
    finally:
        drv.close()
    assert [b.timestamps.tolist() for b in blocks] == [[0, 100, 200, 300], [9_000, 9_100]]  # 400, 500 discarded
    assert blocks[1].lost_intervals_ps.tolist() == [[300, 9_000]] and drv.last_stream_buffer_full == 1


def test_slotting_keeps_a_full_buffers_own_slots_and_drops_only_the_gap_after_it(  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch, fake_sdk, swabian_fakes) -> None:
    """Through the Slotter: a full buffer used to come out as ``overflow=True`` with no interval, and
    ``block_lost_intervals`` then dropped all of its slots (up to 10^7 good records), not only the gap."""
    from labqfl.instruments.base import TagBlock
    from labqfl.qkd.slotting import Slotter, SlottingParams

    sync, d0 = 1, 2
    monkeypatch.setattr(st, "STREAM_BUFFER_EVENTS", 40)
    cfg = TimeTaggerConfig(driver="SwabianTimeTagger", options={"serial": "X"}, sync_divider=1024)
    tagger = st.SwabianTimeTagger("time_tagger", cfg, sdk=fake_sdk)
    dev = fake_sdk.created[0]

    def buf(syncs: list[int]):  # type: ignore[no-untyped-def]  # a sync every 4 slots, a D0 click 1 slot after each
        ts = sorted([*syncs, *(t + 1000 for t in syncs)])
        return swabian_fakes.Buffer(np.array(ts, np.int64), np.array([sync if t in syncs else d0 for t in ts], np.int32))

    dev.script = [buf(list(range(0, 80_000, 4000))),  # 40 records: full, its last one the click at 77 000 ps
                  buf(list(range(200_000, 240_000, 4000)))]  # 20 records
    try:
        blocks: list[TagBlock] = list(tagger.stream(1e-3, 1e-4))
    finally:
        tagger.close()
    assert [b.lost_intervals_ps.tolist() for b in blocks] == [[], [[77_000, 200_000]]]
    p = SlottingParams(period_ps=1000.0, sync_divider=4, sync_channel=sync, detector_channels=(d0, 3),
                       sync_delay_ps=0, delays_ps=(0, 0), window_ps=(1000.0, 1000.0))
    s = Slotter(p)
    slots = np.concatenate([e.slots for e in s.run(blocks)]).tolist()
    first = [k for k in slots if k < 77]
    assert first == list(range(1, 77, 4))  # the full buffer's clicks are key slots, not dropped
    assert [k for k in slots if k > 200] == list(range(201, 238, 4))
    assert 77 not in slots and s.stats.dropped_slots_lost_data == 200 - 77 + 1  # slots 77..200: the gap only
