"""The emulated Swabian Time Tagger SDK (labqfl.sim_backends.timetagger_sdk) under the real driver
(drivers/swabian_timetagger.py): what reaches the TagBlocks is what the feed delivered, changed only as the
instrument would change it (channels recorded, event divider, input delay, dead time, lost data), and what it
cannot emulate is refused in one line. The surface it offers is the vendor SDK's (swabian-timetagger 2.22.6,
``Swabian/TimeTagger/__init__.py``: TimeTagger, TimeTagStream, TimeTagStreamBuffer, TagType)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from labqfl.drivers.swabian_timetagger import SwabianTimeTagger
from labqfl.sim_backends.timetagger_sdk import (
    EmulatedStream,
    EmulatedTagger,
    EmulatedTimeTaggerSDK,
    LightSettings,
)

from labqfl.config import load_station_config
from labqfl.errors import ConfigError, InstrumentError
from labqfl.instruments.base import TagBlock
from labqfl.qkd.slotting import Slotter, SlottingParams

SYNC, D0, D1 = 1, 2, 3


def _cfg(**tt: Any) -> Any:
    cfg = load_station_config()
    cfg.time_tagger = cfg.time_tagger.model_copy(update={"driver": "SwabianTimeTagger", **tt})
    cfg.simulation.emulate_time_tagger = True
    return cfg


def _block(ts: list[int], ch: list[int], lost: list[tuple[int, int]] | None = None) -> TagBlock:
    return TagBlock(np.asarray(ts, np.int64), np.asarray(ch, np.int16),
                    lost_intervals_ps=np.asarray(lost or [], np.int64).reshape(-1, 2))


def _feed(blocks: list[TagBlock]) -> Any:
    def feed(capture_s: float) -> Iterator[TagBlock]:
        return iter(blocks)
    return feed


def _open(cfg: Any, blocks: list[TagBlock], **kw: Any) -> tuple[SwabianTimeTagger, EmulatedTimeTaggerSDK]:
    sdk = EmulatedTimeTaggerSDK(LightSettings.from_config(cfg), _feed(blocks), **kw)
    return SwabianTimeTagger("time_tagger", cfg.time_tagger, sdk=sdk), sdk


def _stream(drv: SwabianTimeTagger) -> list[TagBlock]:
    return list(drv.stream(1e-3, 1e-6))


def _all(blocks: list[TagBlock]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([b.timestamps for b in blocks]) if blocks else np.zeros(0, np.int64),
            np.concatenate([b.channels for b in blocks]) if blocks else np.zeros(0, np.int16))


FEED = [_block([0, 1000, 2500, 9000], [SYNC, D0, 9, D1]), _block([], []),
        _block([10_240_000, 10_240_900, 10_250_000], [SYNC, D1, D0])]


def test_the_driver_on_the_emulated_sdk_records_the_feed_of_its_channels_unchanged() -> None:
    drv, sdk = _open(_cfg(), FEED)
    try:
        assert "emulated" in drv.identity()
        out = _stream(drv)
        ts, ch = _all(out)
        assert ts.tolist() == [0, 1000, 9000, 10_240_000, 10_240_900, 10_250_000]  # channel 9 is not recorded
        assert ch.tolist() == [SYNC, D0, D1, SYNC, D1, D0]
        assert all(b.lost_intervals_ps.size == 0 for b in out) and drv.last_stream_overflows == 0
        tagger = sdk.created[0]
        assert tagger.dividers == {SYNC: 1024} and tagger.trigger_levels == dict.fromkeys(drv.channels, 0.5)
    finally:
        drv.close()
    assert sdk.created[0].freed


def test_an_event_divider_beyond_the_lights_passes_every_nth_sync_and_another_one_is_refused() -> None:
    syncs = [_block([k * 1000 for k in range(0, 5)], [SYNC] * 5), _block([k * 1000 for k in range(5, 9)], [SYNC] * 4)]
    drv, _ = _open(_cfg(sync_divider=4), syncs)
    try:
        drv.event_dividers = {SYNC: 8}  # the light arrives divided by 4: every second of its tags passes
        assert _all(_stream(drv))[0].tolist() == [0, 2000, 4000, 6000, 8000]
        drv.event_dividers = {SYNC: 6}
        with pytest.raises(InstrumentError, match=r"event divider 6 on channel 1.*expected a multiple of 4"):
            _stream(drv)
    finally:
        drv.close()


def test_an_input_delay_shifts_its_channel_and_the_stream_stays_in_time_order() -> None:
    drv, _ = _open(_cfg(input_delays_ps={"D0": 100.0}), [_block([0, 500, 700, 900], [SYNC, D0, D1, D0])])
    try:
        drv.input_delays_ps = {D0: 400}  # 300 ps more than the light already has
        ts, ch = _all(_stream(drv))
        assert ts.tolist() == [0, 700, 800, 1200] and ch.tolist() == [SYNC, D1, D0, D0]
    finally:
        drv.close()


def test_the_dead_time_drops_tags_after_the_last_recorded_one_across_polls() -> None:
    blocks = [_block([0, 60_000, 120_000], [D0, D0, D0]), _block([150_000, 250_000, 260_000], [D0, D1, D1])]
    drv, _ = _open(_cfg(dead_times_ps={"D0": 100_000, "D1": 5_000}), blocks)
    try:
        ts, ch = _all(_stream(drv))
        # D0: 60 ns is inside, 120 ns is 120 ns after the last recorded (a dropped tag does not restart it),
        # 150 ns is inside again (across the poll); D1: 10 ns apart, beyond 5 ns
        assert ts.tolist() == [0, 120_000, 250_000, 260_000] and ch.tolist() == [D0, D0, D1, D1]
    finally:
        drv.close()


def test_an_overflow_across_polls_becomes_one_lost_interval_its_tags_missed_and_its_slots_dropped() -> None:
    cfg = _cfg(sync_divider=8)
    p = SlottingParams.from_config(cfg)
    period, d0 = int(p.period_ps), p.delays_ps[0]

    def tags(k0: int, k1: int) -> TagBlock:  # a sync every 8 slots, a D0 click from every slot
        t = sorted([(k * period, SYNC) for k in range(0, 100, 8)] * (k0 == 0) + [(k * period + d0, D0) for k in range(k0, k1)])
        return _block([x[0] for x in t], [x[1] for x in t])

    begin, end = 40 * period + d0 - 1000, 60 * period + d0 - 1000  # the clicks of slots 40 … 59, in both polls
    drv, sdk = _open(cfg, [tags(0, 50), tags(50, 100)], overflow_intervals_ps=[(begin, end)])
    try:
        out = _stream(drv)
        ts, _ = _all(out)
        assert ts.size == 113 - 20 and not np.any((ts >= begin) & (ts <= end))
        lost = np.concatenate([b.lost_intervals_ps for b in out])
        assert lost[:, 0].min() == begin and lost[:, 1].max() == end  # covered from OverflowBegin to OverflowEnd
        assert drv.last_stream_overflows == 1 and drv.last_stream_missed_events == 20
        assert sdk.created[0].getOverflows() == 1
        slotter = Slotter(p)  # slotting drops and counts the slots inside, and announces no click there
        events = [slotter.push(b) for b in out] + [slotter.finish()]
        clicked = np.concatenate([e.slots for e in events])
        assert slotter.dropped.count(40, 60) == 20 and slotter.dropped.count(0, 100) <= 22
        assert not np.any((clicked >= 40) & (clicked < 60)) and np.count_nonzero(clicked < 39) == 39
    finally:
        drv.close()


def test_the_feeds_own_lost_data_reaches_the_driver_as_overflow_records() -> None:
    drv, _ = _open(_cfg(), [_block([0, 5000, 9000], [D0, D1, D0], lost=[(4000, 6000)])])
    try:
        out = _stream(drv)
        ts, _ = _all(out)
        assert ts.tolist() == [0, 9000]
        assert np.concatenate([b.lost_intervals_ps for b in out]).tolist() == [[4000, 6000]]
        assert drv.last_stream_missed_events == 1
    finally:
        drv.close()


def test_what_is_not_emulated_is_refused_in_one_line() -> None:
    with pytest.raises(InstrumentError, match="does not emulate the conditional filter") as e:
        _open(_cfg(conditional_filter_trigger=["D0"], conditional_filter_filtered=["D1"]), [])
    assert "\n" not in str(e.value)
    cfg = _cfg()
    drv = SwabianTimeTagger("time_tagger", cfg.time_tagger, sdk=EmulatedTimeTaggerSDK(LightSettings.from_config(cfg)))
    try:
        with pytest.raises(InstrumentError, match="no light"):
            _stream(drv)
        with pytest.raises(InstrumentError, match="no count-rate read-out"):
            drv.count_rates(0.01)
    finally:
        drv.close()
    with pytest.raises(ConfigError, match=r"simulation.emulate_time_tagger.*expected time_tagger.driver = \"SwabianTimeTagger\""):
        from labqfl.config import parse_station_config
        d = load_station_config().model_dump(mode="json", exclude_none=True)
        d["simulation"]["emulate_time_tagger"] = True
        parse_station_config(d, "station.toml")


def test_every_sdk_call_the_emulator_offers_is_spelled_as_in_the_vendor_sdk() -> None:
    import Swabian.TimeTagger as sdk  # swabian-timetagger is a dev dependency (pyproject.toml): never skipped

    for ours, theirs in ((EmulatedTagger, sdk.TimeTagger), (EmulatedStream, sdk.TimeTagStream)):
        names = [n for n in vars(ours) if n[:1].islower() and callable(getattr(ours, n)) and n[0] != "_"
                 and any(c.isupper() for c in n) or n in ("stop",)]
        assert names and all(hasattr(theirs, n) for n in names), [n for n in names if not hasattr(theirs, n)]
    for n in ("getTimestamps", "getChannels", "getEventTypes", "getMissedEvents"):
        assert hasattr(sdk.TimeTagStreamBuffer, n)
    for n in ("createTimeTagger", "freeTimeTagger", "TimeTagStream", "Countrate", "Histogram"):
        assert hasattr(sdk, n) and hasattr(EmulatedTimeTaggerSDK, n)
    assert {t.name: int(t) for t in sdk.TagType} == {t.name: int(t) for t in EmulatedTimeTaggerSDK.TagType}


def test_a_station_with_the_emulated_tagger_reads_the_loop_through_the_driver_outside_acquisitions_too() -> None:
    """Calibration and the GUI read the tagger directly (count rates, histograms, a stream): the Station's
    emulated SDK then records a fresh acquisition of its loop; an Acquisition's segment is recorded once."""
    from labqfl.station import Station

    cfg = _cfg()
    with Station(cfg, guard=False) as st:
        tt = st.time_tagger
        assert isinstance(tt, SwabianTimeTagger) and "emulated" in tt.identity()
        rates = tt.count_rates(0.002)
        assert rates[SYNC] == pytest.approx(cfg.laser.rep_rate_hz / cfg.time_tagger.sync_divider, rel=0.01)
        assert rates[D0] > 0 and rates[D1] > 0
        blocks = list(tt.stream(0.002, 0.001))
        assert sum(len(b) for b in blocks) > 0
        hist = tt.histogram(SYNC, D0, 1000, 100, 0.002)
        assert hist.shape == (100,) and hist.sum() > 0
        st.prepare_acquisition(0.002, 0.001)  # the segment's light is the one recorded next, and only once
        epoch = st.acquisition_id()
        assert sum(len(b) for b in tt.stream(0.002, 0.001)) > 0 and st.acquisition_id() == epoch
        assert sum(len(b) for b in tt.stream(0.002, 0.001)) > 0 and st.acquisition_id() != epoch
