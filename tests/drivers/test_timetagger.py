"""SwabianTimeTagger: against the real SDK (swabian-timetagger 2.22, as far as it loads without a
device) and against a fake of its surface (conftest.py) for the rest.

Reference for every call: the docstrings of the SDK's Python wrapper
(``Swabian/TimeTagger/__init__.py`` of swabian-timetagger 2.22.6 = the Time Tagger user manual's
Python API): TimeTaggerSource.setInputDelay / setDelayHardware / getDelayHardwareRange /
setDeadtime / setConditionalFilter / setEventDivider / getOverflows / setReferenceClock,
TimeTaggerBase.setSoftwareClock, TimeTagStream, TimeTagStreamBuffer.getEventTypes, Tag.Type.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from labqfl.drivers.swabian_timetagger import SDK_MODULES, SwabianTimeTagger, load_sdk

from labqfl.config import TimeTaggerConfig
from labqfl.errors import InstrumentError, LabqflError
from labqfl.instruments.base import TagBlock


def _real_sdk() -> ModuleType | None:
    try:
        return importlib.import_module("Swabian.TimeTagger")
    except ImportError:
        return None


REAL = _real_sdk()
needs_real_sdk = pytest.mark.skipif(REAL is None, reason="swabian-timetagger not installed (pip install 'labqfl[hardware]')")


@pytest.fixture
def cfg() -> TimeTaggerConfig:
    return TimeTaggerConfig(driver="SwabianTimeTagger", options={"serial": "1910000XYZ"}, trigger_level_v=0.3,
                            input_delays_ps={"D0": -3150, "D1": -3420}, sync_divider=1024, marker_channel=4,
                            reference_clock_channel=5, reference_clock_hz=10e6, reference_clock_divider=100,
                            dead_times_ps={"D0": 20_000, "D1": 1_500}, conditional_filter_trigger=["D0", "D1"],
                            conditional_filter_filtered=["sync"])


@pytest.fixture
def tagger(cfg, fake_sdk):  # type: ignore[no-untyped-def]
    t = SwabianTimeTagger("time_tagger", cfg, sdk=fake_sdk)
    yield t
    t.close()


# -- the real SDK ----------------------------------------------------------------------------------
@needs_real_sdk
def test_real_sdk_is_found_under_its_pypi_import_path() -> None:
    assert SDK_MODULES[0] == "Swabian.TimeTagger"
    assert load_sdk() is REAL
    assert {t.name: int(t) for t in REAL.TagType} == {  # type: ignore[union-attr]
        "TimeTag": 0, "Error": 1, "OverflowBegin": 2, "OverflowEnd": 3, "MissedEvents": 4}


@needs_real_sdk
def test_real_sdk_without_a_device_fails_to_open_with_a_clear_error(cfg: TimeTaggerConfig) -> None:
    # createTimeTagger: ":raises: RuntimeError if no Time Tagger devices are available"
    with pytest.raises(InstrumentError, match="Time Tagger SDK error: RuntimeError.*time_tagger"):
        SwabianTimeTagger("time_tagger", cfg)


def _doc_params(fn: Any) -> list[str]:
    return re.findall(r":param (\w+):", fn.__doc__ or "")


@needs_real_sdk
def test_fake_sdk_has_the_real_sdks_names_and_parameters(swabian_fakes: SimpleNamespace) -> None:
    real_tagger = REAL.TimeTagger  # type: ignore[union-attr]
    for cls in (swabian_fakes.FakeTagger, swabian_fakes.FakeTaggerOldSdk):
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            real = getattr(real_tagger, name)  # AttributeError = the fake invents a method
            ours = list(inspect.signature(fn).parameters)[1:]
            theirs = [p for p in inspect.signature(real).parameters if p != "self"]
            if theirs == ["args", "kwargs"]:  # SWIG *args/**kwargs: the names are in the docstring
                theirs = _doc_params(real)
            assert ours == theirs, name
    buf = REAL.TimeTagStreamBuffer  # type: ignore[union-attr]
    for name in ("getTimestamps", "getChannels", "getEventTypes", "getMissedEvents"):
        assert hasattr(buf, name) and hasattr(swabian_fakes.Buffer, name)
    assert isinstance(buf.hasOverflows, property) and isinstance(buf.size, property)
    stream = [p for p in inspect.signature(REAL.TimeTagStream.__init__).parameters if p != "self"]  # type: ignore[union-attr]
    assert stream == ["tagger", "n_max_events", "channels"]
    assert REAL.CHANNEL_UNUSED == swabian_fakes.make_fake_sdk().CHANNEL_UNUSED  # type: ignore[union-attr]


@needs_real_sdk
@pytest.mark.parametrize("old_sdk", [False, True])
def test_every_call_the_driver_makes_is_accepted_by_the_real_sdk(cfg: TimeTaggerConfig, old_sdk: bool,
                                                                 swabian_fakes: SimpleNamespace) -> None:
    # Replay each recorded call on the real SDK's (native) method with a stand-in for the tagger:
    # the SWIG layer parses argument count and keyword names before it converts `self`, so a call
    # the real SDK would reject fails differently from "argument 1 of type ...".
    sdk = swabian_fakes.make_fake_sdk(swabian_fakes.FakeTaggerOldSdk if old_sdk else swabian_fakes.FakeTagger)
    t = SwabianTimeTagger("time_tagger", cfg, sdk=sdk)
    list(t.stream(1e-3, 1e-4))
    t.count_rates(0.01)
    t.histogram(1, 2, 10, 64, 0.01)
    _ = (t.identity(), t.trigger_levels_v, t.input_delays_ps, t.event_dividers)
    t.close()
    calls = sdk.created[0].calls  # type: ignore[attr-defined]
    names = {c[0] for c in calls}
    assert {"setEventDivider", "setDeadtime", "setConditionalFilter", "setDelayHardware", "getOverflows",
            "clearOverflows", "TimeTagStream"} <= names
    assert ("setReferenceClock" in names) != ("setSoftwareClock" in names)
    for name, args, kwargs in calls:
        if name in ("TimeTagStream", "Countrate", "Histogram"):
            fn, cls = getattr(REAL, name), REAL.TimeTaggerBase  # type: ignore[union-attr]
        else:
            fn, cls = getattr(REAL.TimeTagger, name), None  # type: ignore[union-attr]
        with pytest.raises(TypeError) as exc:
            fn(object(), *args, **kwargs)
        assert re.search(r"argument \d+ of type|in method", str(exc.value)), (name, args, kwargs, str(exc.value))
        if cls is None:
            assert "invalid keyword" not in str(exc.value) and "unexpected keyword" not in str(exc.value)


# -- import path -----------------------------------------------------------------------------------
def test_timetagger_without_sdk_says_what_to_install(cfg: TimeTaggerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SDK_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(LabqflError, match="pip install swabian-timetagger.*Swabian.TimeTagger"):
        SwabianTimeTagger("time_tagger", cfg)


@pytest.mark.parametrize("module", SDK_MODULES)
def test_timetagger_sdk_found_by_import(cfg: TimeTaggerConfig, module: str, monkeypatch: pytest.MonkeyPatch,
                                       fake_sdk: ModuleType) -> None:
    fake = fake_sdk
    for name in SDK_MODULES:
        monkeypatch.setitem(sys.modules, name, fake if name == module else None)
    t = SwabianTimeTagger("time_tagger", cfg)
    assert t.identity() == "Swabian Instruments,Time Tagger Ultra,1910000XYZ"
    t.close()


# -- settings applied at open ----------------------------------------------------------------------
def test_timetagger_settings_applied_from_config(tagger: SwabianTimeTagger, fake_sdk) -> None:  # type: ignore[no-untyped-def]
    dev = fake_sdk.created[0]
    assert tagger.channels == [1, 2, 3, 4]  # sync, D0, D1, marker
    assert tagger.trigger_levels_v == {1: 0.3, 2: 0.3, 3: 0.3, 4: 0.3}
    # the conditional filter is on, so the delays went to setDelayHardware (docstring: the filter
    # acts after the hardware delay, setDelaySoftware does not affect it)
    assert dev.hardware_delays == {2: -3150, 3: -3420} and dev.delays == {}
    assert tagger.input_delays_ps == {1: 0, 2: -3150, 3: -3420, 4: 0}
    assert dev.dividers == {1: 1024, 5: 100} and tagger.event_dividers == {1: 1024, 5: 100}
    # setReferenceClock takes the frequency at the input, before the divider
    assert dev.reference == {"channel": 5, "frequency": 10e6}
    assert tagger.reference_clock["locked"] and tagger.reference_clock["api"] == "setReferenceClock"
    # setDeadtime returns the value set: 1.5 ns is below the Ultra's 2 ns and comes back rounded up
    assert tagger.dead_times_ps == {2: 20_000, 3: 2_000}
    assert dev.filter == ([2, 3], [1]) and tagger.conditional_filter == ([2, 3], [1])
    order = [c[0] for c in dev.calls]
    assert order.index("setConditionalFilter") < order.index("setDelayHardware")
    snap = tagger.snapshot()
    assert snap["settings"]["trigger_levels_v"]["unit"] == "V"
    assert snap["settings"]["event_dividers"]["value"] == {1: 1024, 5: 100}
    assert tagger.status()["overflows"] == 0


def test_timetagger_old_sdk_uses_the_software_clock_with_the_divided_frequency(
        cfg: TimeTaggerConfig, swabian_fakes: SimpleNamespace) -> None:
    sdk = swabian_fakes.make_fake_sdk(swabian_fakes.FakeTaggerOldSdk)
    t = SwabianTimeTagger("time_tagger", cfg, sdk=sdk)
    # setSoftwareClock: "input_frequency: the frequency of the software clock after application of
    # setEventDivider() (e.g. a 10 MHz clock signal with divider = 20 has input_frequency = 500 000)"
    assert sdk.created[0].reference == {"channel": 5, "frequency": 100e3}  # type: ignore[attr-defined]
    assert t.reference_clock["api"] == "setSoftwareClock"
    t.close()


def test_timetagger_without_filter_uses_set_input_delay(cfg: TimeTaggerConfig, fake_sdk) -> None:  # type: ignore[no-untyped-def]
    plain = cfg.model_copy(update={"conditional_filter_trigger": [], "conditional_filter_filtered": [],
                                   "reference_clock_channel": None})
    t = SwabianTimeTagger("time_tagger", plain, sdk=fake_sdk)
    dev = fake_sdk.created[0]
    assert dev.delays == {2: -3150, 3: -3420} and dev.hardware_delays == {}
    assert ("clearConditionalFilter", (), {}) in dev.calls and dev.reference is None
    assert dev.dividers == {1: 1024}
    t.close()


def test_timetagger_setting_errors_name_the_setting(tagger: SwabianTimeTagger) -> None:
    for name, bad, msg in [("trigger_levels_v", {2: 3.0}, "trigger_levels_v"), ("trigger_levels_v", {7: 0.1}, "channel 7"),
                           ("input_delays_ps", {1: 5e6}, "input_delays_ps"), ("channels", [0], "channels"),
                           ("event_dividers", {1: 70_000}, "event_dividers"), ("dead_times_ps", {2: 100}, "dead_times_ps"),
                           ("conditional_filter", ([2], []), "together")]:
        with pytest.raises(ValueError, match=msg):
            setattr(tagger, name, bad)


def test_timetagger_config_names_unknown_channel() -> None:
    with pytest.raises(ValueError, match=r"dead_times_ps names unknown channels \['D7'\]"):
        TimeTaggerConfig(dead_times_ps={"D7": 1000.0})
    with pytest.raises(ValueError, match="must not contain 'marker'"):
        TimeTaggerConfig(marker_channel=4, conditional_filter_trigger=["D0"], conditional_filter_filtered=["marker"])
    with pytest.raises(ValueError, match="without markers slotting needs every"):
        TimeTaggerConfig(conditional_filter_trigger=["D0"], conditional_filter_filtered=["sync"])


# -- event types -----------------------------------------------------------------------------------
@pytest.fixture
def buf(swabian_fakes: SimpleNamespace):  # type: ignore[no-untyped-def]
    """``buf([(time, channel, event type), …], missed={row: count})`` → a stream buffer."""
    return lambda rows, missed=None: _buf(swabian_fakes.Buffer, rows, missed)


def _buf(cls: Any, rows: list[tuple[int, int, int]], missed: dict[int, int] | None = None) -> Any:
    ts = np.array([r[0] for r in rows], np.int64)
    ch = np.array([r[1] for r in rows], np.int32)
    ty = np.array([r[2] for r in rows], np.uint8)
    m = np.zeros(len(rows), np.uint16)
    for i, n in (missed or {}).items():
        m[i] = n
    return cls(ts, ch, ty, m)


def test_overflow_and_missed_event_records_become_lost_intervals_not_tags(tagger: SwabianTimeTagger, fake_sdk,  # type: ignore[no-untyped-def]
                                                                           buf, swabian_fakes) -> None:
    dev, f = fake_sdk.created[0], swabian_fakes
    dev.script = [
        buf([(100, 2, 0), (200, 1, 0), (300, 0, f.OVERFLOW_BEGIN), (400, 3, 0)]),  # overflow open at the end
        buf([(900, 0, f.OVERFLOW_END), (900, 2, f.MISSED), (900, 3, f.MISSED), (1000, 2, 0)], missed={1: 7, 2: 5}),
        buf([(2000, 1, 0), (2500, 3, f.MISSED), (2600, 2, 0)], missed={1: 2}),  # missed events outside an overflow
        buf([(3000, 4, 0)]),
    ]
    dev.overflows = 0
    blocks = list(tagger.stream(1e-3, 1e-4))
    assert [b.timestamps.tolist() for b in blocks] == [[100, 200, 400], [1000], [2000, 2600], [3000]]
    assert [b.channels.tolist() for b in blocks] == [[2, 1, 3], [2], [1, 2], [4]]
    assert [b.lost_intervals_ps.tolist() for b in blocks] == [[[300, 400]], [[400, 900]], [[2000, 2500]], []]
    assert [b.overflow for b in blocks] == [True, True, True, False]
    assert tagger.last_stream_missed_events == 14
    assert all(isinstance(b, TagBlock) for b in blocks)


def test_error_record_stops_the_stream_after_the_data_before_it(tagger: SwabianTimeTagger, fake_sdk, buf,  # type: ignore[no-untyped-def]
                                                                 swabian_fakes) -> None:
    dev = fake_sdk.created[0]
    dev.script = [buf([(100, 2, 0), (200, 1, 0), (250, 0, swabian_fakes.ERROR), (300, 3, 0)]), buf([(900, 2, 0)])]
    got: list[TagBlock] = []
    with pytest.raises(InstrumentError, match="Error record at 250 ps.*time base"):
        for b in tagger.stream(1e-3, 1e-4):
            got.append(b)
    assert [b.timestamps.tolist() for b in got] == [[100, 200]]
    assert got[0].lost_intervals_ps.tolist() == [[200, 250]]
    assert not tagger._running  # the stream was stopped


def test_stream_reads_and_reports_overflows(tagger: SwabianTimeTagger, fake_sdk, caplog, buf, swabian_fakes) -> None:  # type: ignore[no-untyped-def]
    dev, f = fake_sdk.created[0], swabian_fakes
    dev.script = [buf([(100, 2, 0), (300, 0, f.OVERFLOW_BEGIN), (500, 0, f.OVERFLOW_END)])]
    orig = dev.getOverflows

    def after_stream() -> int:
        dev.overflows = 1
        return orig()

    dev.getOverflows = after_stream
    blocks = list(tagger.stream(1e-3, 1e-4))
    assert blocks[0].lost_intervals_ps.tolist() == [[300, 500]]
    assert tagger.last_stream_overflows == 1 and "1 overflows" in caplog.text
    assert ("clearOverflows", (), {}) in dev.calls


def test_timetagger_stream_countrate_histogram(tagger: SwabianTimeTagger) -> None:
    blocks = list(tagger.stream(1e-3, block_duration_s=1e-4))
    assert len(blocks) == 3 and all(b.timestamps.dtype == np.int64 and b.channels.dtype == np.int16 for b in blocks)
    assert [b.overflow for b in blocks] == [False, False, False]
    ts = np.concatenate([b.timestamps for b in blocks])
    assert np.all(np.diff(ts) > 0)
    assert tagger.count_rates(0.01) == {1: 1000.0, 2: 2000.0, 3: 3000.0, 4: 4000.0}
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
    assert fake_sdk.created[1].dividers == {1: 1024, 5: 100}  # settings re-applied on reconnect
    tagger.close()
    tagger.close()
    assert fake_sdk.created[1].freed
    with pytest.raises(InstrumentError, match="not connected"):
        tagger.count_rates()


def test_timetagger_failed_setting_at_open_frees_the_tagger(cfg: TimeTaggerConfig, swabian_fakes, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class NoDivider(swabian_fakes.FakeTagger):  # type: ignore[name-defined,misc]
        def setEventDivider(self, channel: int, divider: int) -> None:  # noqa: N802
            raise RuntimeError("divider not supported")

    sdk = swabian_fakes.make_fake_sdk(NoDivider)
    with pytest.raises(InstrumentError, match="divider not supported"):
        SwabianTimeTagger("time_tagger", cfg, sdk=sdk)
    assert sdk.created[0].freed


def test_timetagger_two_threads(tagger: SwabianTimeTagger, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for k in range(20):
            if i:
                assert len(tagger.count_rates(0.001)) == 4
            else:
                tagger.trigger_levels_v = {1: 0.1 * (k % 5)}
    threads(work)


def test_station_load_refuses_a_sync_divider_the_tagger_cannot_set() -> None:
    # setEventDivider: "The divider is a 16 bit integer, so the maximum value is 65535."
    from labqfl.config import load_station_config
    from labqfl.errors import ConfigError
    from labqfl.station import validate_driver_roles

    cfg = load_station_config()
    cfg.time_tagger = TimeTaggerConfig(driver="SwabianTimeTagger", sync_divider=100_000)
    with pytest.raises(ConfigError, match=r"field 'time_tagger\.sync_divider' \(role time_tagger\): outside what "
                                          r"SwabianTimeTagger can set; expected 1 to 65535; got 100000$"):
        validate_driver_roles(cfg, "station.toml")
    cfg.time_tagger = TimeTaggerConfig(driver="SwabianTimeTagger", dead_times_ps={"D0": 500.0})
    with pytest.raises(ConfigError, match=r"time_tagger\.dead_times_ps\.D0"):
        validate_driver_roles(cfg, "station.toml")
    cfg.time_tagger = TimeTaggerConfig(driver="SwabianTimeTagger", sync_divider=65_535, dead_times_ps={"D0": 2000.0})
    validate_driver_roles(cfg, "station.toml")
