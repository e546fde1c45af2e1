"""SwabianTimeTagger adapter against a fake of the vendor SDK's surface (see conftest.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from labqfl.drivers.swabian_timetagger import SwabianTimeTagger

from labqfl.config import TimeTaggerConfig
from labqfl.errors import InstrumentError, LabqflError


@pytest.fixture
def cfg() -> TimeTaggerConfig:
    return TimeTaggerConfig(driver="SwabianTimeTagger", options={"serial": "1910000XYZ"}, trigger_level_v=0.3,
                            input_delays_ps={"D0": -3150, "D1": -3420})


@pytest.fixture
def tagger(cfg, fake_sdk):  # type: ignore[no-untyped-def]
    t = SwabianTimeTagger("time_tagger", cfg, sdk=fake_sdk)
    yield t
    t.close()


def test_timetagger_without_sdk_says_what_to_install(cfg: TimeTaggerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "TimeTagger", None)  # makes `import TimeTagger` fail
    with pytest.raises(LabqflError, match="Python SDK.*swabianinstruments"):
        SwabianTimeTagger("time_tagger", cfg)


def test_timetagger_sdk_found_by_import(cfg: TimeTaggerConfig, fake_sdk, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "TimeTagger", fake_sdk)
    t = SwabianTimeTagger("time_tagger", cfg)
    assert t.identity() == "Swabian Instruments,Time Tagger Ultra,1910000XYZ"
    t.close()


def test_timetagger_settings_applied_from_config(tagger: SwabianTimeTagger, fake_sdk) -> None:  # type: ignore[no-untyped-def]
    assert tagger.channels == [1, 2, 3]
    assert tagger.trigger_levels_v == {1: 0.3, 2: 0.3, 3: 0.3}
    assert tagger.input_delays_ps == {1: 0, 2: -3150, 3: -3420}
    tagger.trigger_levels_v = {2: -0.2}
    tagger.input_delays_ps = {1: 125}
    assert fake_sdk.created[0].levels[2] == -0.2 and tagger.input_delays_ps[1] == 125
    assert tagger.resolution_ps == 1.0
    for name, bad in [("trigger_levels_v", {2: 3.0}), ("trigger_levels_v", {7: 0.1}), ("input_delays_ps", {1: 5e6}),
                      ("channels", [0])]:
        with pytest.raises(ValueError):
            setattr(tagger, name, bad)
    snap = tagger.snapshot()
    assert snap["settings"]["trigger_levels_v"]["unit"] == "V"


def test_timetagger_stream_countrate_histogram(tagger: SwabianTimeTagger) -> None:
    blocks = list(tagger.stream(1e-3, block_duration_s=1e-4))
    assert len(blocks) == 3 and all(b.timestamps.dtype == np.int64 and b.channels.dtype == np.int16 for b in blocks)
    assert [b.overflow for b in blocks] == [False, True, False]
    ts = np.concatenate([b.timestamps for b in blocks])
    assert np.all(np.diff(ts) > 0)
    assert tagger.count_rates(0.01) == {1: 1000.0, 2: 2000.0, 3: 3000.0}
    h = tagger.histogram(1, 2, binwidth_ps=10, n_bins=64, integration_s=0.01)
    assert h.dtype == np.int64 and h.shape == (64,)
    with pytest.raises(ValueError, match="channel 9"):
        tagger.histogram(1, 9, 10, 64, 0.01)


def test_timetagger_sdk_errors_close_and_reconnect(tagger: SwabianTimeTagger, fake_sdk) -> None:  # type: ignore[no-untyped-def]
    fake_sdk.created[0].fail_next = "getTriggerLevel"
    with pytest.raises(InstrumentError, match="device disconnected.*time_tagger"):
        _ = tagger.trigger_levels_v
    tagger.reconnect()
    assert fake_sdk.created[0].freed and len(fake_sdk.created) == 2
    tagger.close()
    tagger.close()
    assert fake_sdk.created[1].freed
    with pytest.raises(InstrumentError, match="not connected"):
        tagger.count_rates()


def test_timetagger_two_threads(tagger: SwabianTimeTagger, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for k in range(20):
            if i:
                assert len(tagger.count_rates(0.001)) == 3
            else:
                tagger.trigger_levels_v = {1: 0.1 * (k % 5)}
    threads(work)
