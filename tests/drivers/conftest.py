"""Fixtures for driver tests: isolated copies of the packaged pyvisa-sim devices, configs, and a
fake of the Swabian Time Tagger SDK surface."""

from __future__ import annotations

import enum
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from labqfl.sim_backends.timetagger_sdk import StreamBuffer

SIM_DIR = Path(__file__).resolve().parents[2] / "sim_backends" / "visa"


@pytest.fixture
def sim_library(tmp_path: Path) -> Callable[[str], str]:
    """``sim_library("keysight_n7764a.yaml")`` → a fresh ``<copy>@sim`` (device state per test)."""

    def make(name: str, edit: Callable[[str], str] | None = None) -> str:
        text = (SIM_DIR / name).read_text(encoding="utf-8")
        dst = tmp_path / name
        dst.write_text(edit(text) if edit else text, encoding="utf-8")
        return f"{dst}@sim"

    return make


def run_threads(fn: Callable[[int], None], n_threads: int = 2) -> None:
    """Run ``fn(thread_index)`` in ``n_threads`` threads at once; re-raise the first failure."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def target(i: int) -> None:
        try:
            barrier.wait()
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]


@pytest.fixture
def threads() -> Callable[..., None]:
    return run_threads


# -- fake Swabian SDK ------------------------------------------------------------------------------
# Method and parameter names copy swabian-timetagger 2.22.6 (Swabian/TimeTagger/__init__.py);
# tests/drivers/test_timetagger.py checks them, and every call the driver makes, against the
# installed SDK.
TAG_TIMETAG, TAG_ERROR, TAG_OVERFLOW_BEGIN, TAG_OVERFLOW_END, TAG_MISSED = 0, 1, 2, 3, 4


class TagType(enum.IntEnum):
    TimeTag = TAG_TIMETAG
    Error = TAG_ERROR
    OverflowBegin = TAG_OVERFLOW_BEGIN
    OverflowEnd = TAG_OVERFLOW_END
    MissedEvents = TAG_MISSED


class _Buffer(StreamBuffer):
    """The emulated SDK's ``TimeTagStreamBuffer`` built from lists: every record a time tag unless ``types``
    says otherwise; ``overflow`` overrides ``hasOverflows`` (a buffer flagged without records)."""

    def __init__(self, ts: np.ndarray, ch: np.ndarray, types: np.ndarray | None = None,
                 missed: np.ndarray | None = None, overflow: bool | None = None) -> None:
        t = np.asarray(ts, np.int64)
        super().__init__(t, np.asarray(ch, np.int32),
                         np.zeros(t.size, np.uint8) if types is None else np.asarray(types, np.uint8),
                         np.zeros(t.size, np.uint16) if missed is None else np.asarray(missed, np.uint16))
        if overflow is not None:
            self.hasOverflows = overflow


class _Measurement:
    def __init__(self) -> None:
        self.started_ps: int | None = None
        self.stopped = False

    def startFor(self, capture_duration: int, clear: bool = True) -> None:  # noqa: N802
        self.started_ps = int(capture_duration)

    def waitUntilFinished(self, timeout: int = -1) -> bool:  # noqa: N802
        return True

    def stop(self) -> None:
        self.stopped = True


class _ClockState:
    def __init__(self, locked: bool) -> None:
        self.is_locked = locked
        self.enabled = locked


class FakeTagger:
    """Records every SDK call in :attr:`calls` as (method, args, kwargs)."""

    def __init__(self, serial: str) -> None:
        self.serial = serial or "1910000ABC"
        self.levels: dict[int, float] = {}
        self.delays: dict[int, int] = {}
        self.hardware_delays: dict[int, int] = {}
        self.dividers: dict[int, int] = {}
        self.dead_times: dict[int, int] = {}
        self.filter: tuple[list[int], list[int]] = ([], [])
        self.reference: dict[str, object] | None = None
        self.overflows = 0
        self.freed = False
        self.fail_next: str | None = None
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
        #: buffers the next TimeTagStream delivers (None: three plain buffers of five tags)
        self.script: list[_Buffer] | None = None

    def _call(self, name: str, *args: object, **kwargs: object) -> None:
        self.calls.append((name, args, kwargs))
        if self.fail_next == name:
            self.fail_next = None
            raise RuntimeError(f"{name}: device disconnected")

    def setTriggerLevel(self, channel: int, voltage: float) -> None:  # noqa: N802
        self._call("setTriggerLevel", channel, voltage)
        self.levels[channel] = float(voltage)

    def getTriggerLevel(self, channel: int) -> float:  # noqa: N802
        self._call("getTriggerLevel", channel)
        return self.levels.get(channel, 0.5)

    def setInputDelay(self, channel: int, delay: int) -> None:  # noqa: N802
        self._call("setInputDelay", channel, delay)
        self.delays[channel] = int(delay)

    def getInputDelay(self, channel: int) -> int:  # noqa: N802
        self._call("getInputDelay", channel)
        return self.delays.get(channel, 0) + self.hardware_delays.get(channel, 0)

    def setDelayHardware(self, channel: int, delay: int) -> None:  # noqa: N802
        self._call("setDelayHardware", channel, delay)
        self.hardware_delays[channel] = int(delay)

    def getDelayHardwareRange(self, channel: int) -> list[int]:  # noqa: N802
        self._call("getDelayHardwareRange", channel)
        return [-2_000_000, 2_000_000]  # Time Tagger Ultra (docstring of getDelayHardwareRange)

    def setEventDivider(self, channel: int, divider: int) -> None:  # noqa: N802
        self._call("setEventDivider", channel, divider)
        self.dividers[channel] = int(divider)

    def getEventDivider(self, channel: int) -> int:  # noqa: N802
        self._call("getEventDivider", channel)
        return self.dividers.get(channel, 1)

    def setDeadtime(self, channel: int, deadtime: int) -> int:  # noqa: N802
        self._call("setDeadtime", channel, deadtime)
        actual = max(int(deadtime), 2000)  # Ultra: minimum 2 ns, returns the value set
        self.dead_times[channel] = actual
        return actual

    def setConditionalFilter(self, trigger: list[int], filtered: list[int]) -> None:  # noqa: N802
        self._call("setConditionalFilter", trigger, filtered)
        self.filter = (list(trigger), list(filtered))

    def clearConditionalFilter(self) -> None:  # noqa: N802
        self._call("clearConditionalFilter")
        self.filter = ([], [])

    def setReferenceClock(self, clock_channel: int, clock_frequency: float = 10e6, time_constant: float = 1e-3,  # noqa: N802
                          synchronization_channel: int = -134217728, synchronization_offset: int = 0,
                          wait_until_locked: bool = True) -> None:
        self._call("setReferenceClock", clock_channel=clock_channel, clock_frequency=clock_frequency,
                   time_constant=time_constant, wait_until_locked=wait_until_locked)
        self.reference = {"channel": clock_channel, "frequency": clock_frequency}

    def getReferenceClockState(self) -> _ClockState:  # noqa: N802
        self._call("getReferenceClockState")
        return _ClockState(self.reference is not None)

    def getOverflows(self) -> int:  # noqa: N802
        self._call("getOverflows")
        return self.overflows

    def clearOverflows(self) -> None:  # noqa: N802
        self._call("clearOverflows")
        self.overflows = 0

    def getSerial(self) -> str:  # noqa: N802
        self._call("getSerial")
        return self.serial

    def getModel(self) -> str:  # noqa: N802
        self._call("getModel")
        return "Time Tagger Ultra"


class FakeTaggerOldSdk(FakeTagger):
    """An SDK without setReferenceClock: the software clock of older releases."""

    def __getattribute__(self, name: str) -> object:
        if name in ("setReferenceClock", "getReferenceClockState"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    def setSoftwareClock(self, input_channel: int, input_frequency: float = 10e6, averaging_periods: float = 1000,  # noqa: N802
                         wait_until_locked: bool = True) -> None:
        self._call("setSoftwareClock", input_channel=input_channel, input_frequency=input_frequency,
                   averaging_periods=averaging_periods, wait_until_locked=wait_until_locked)
        self.reference = {"channel": input_channel, "frequency": input_frequency}

    def getSoftwareClockState(self) -> _ClockState:  # noqa: N802
        self._call("getSoftwareClockState")
        return _ClockState(self.reference is not None)


class FakeStream(_Measurement):
    """Delivers the tagger's ``script`` of buffers (default: three buffers of five tags), one per
    ``getData``; running until the last one."""

    def __init__(self, tagger: FakeTagger, n_max_events: int, channels: list[int]) -> None:
        super().__init__()
        tagger._call("TimeTagStream", n_max_events, list(channels))
        self.channels = list(channels)
        if tagger.script is not None:
            self._buffers = list(tagger.script)
        else:
            self._buffers = []
            for k in range(3):
                ts = 5000 * k + np.arange(5, dtype=np.int64) * 1000
                ch = np.array([self.channels[i % len(self.channels)] for i in range(5)], dtype=np.int32)
                self._buffers.append(_Buffer(ts, ch))
        self._polls = 0

    def isRunning(self) -> bool:  # noqa: N802
        return self._polls < len(self._buffers) - 1 and not self.stopped

    def getData(self) -> _Buffer:  # noqa: N802
        self._polls += 1
        if self._polls > len(self._buffers):
            return _Buffer(np.zeros(0, np.int64), np.zeros(0, np.int32))
        return self._buffers[self._polls - 1]


class FakeCountrate(_Measurement):
    def __init__(self, tagger: FakeTagger, channels: list[int]) -> None:
        super().__init__()
        tagger._call("Countrate", list(channels))
        self.channels = list(channels)

    def getData(self) -> np.ndarray:  # noqa: N802
        return np.array([1000.0 * c for c in self.channels])


class FakeHistogram(_Measurement):
    def __init__(self, tagger: FakeTagger, click_channel: int, start_channel: int, binwidth: int, n_bins: int) -> None:
        super().__init__()
        tagger._call("Histogram", click_channel, start_channel, binwidth, n_bins)
        self.args = (click_channel, start_channel, binwidth, n_bins)

    def getData(self) -> np.ndarray:  # noqa: N802
        return np.arange(self.args[3], dtype=np.int32)


def make_fake_sdk(tagger_class: type[FakeTagger] = FakeTagger) -> ModuleType:
    """A module with the SDK's surface that the driver uses; ``sdk.created`` lists the taggers."""
    sdk = ModuleType("TimeTagger")
    sdk.created = []  # type: ignore[attr-defined]

    def create(serial: str = "", resolution: int = 0) -> FakeTagger:
        t = tagger_class(serial)
        sdk.created.append(t)  # type: ignore[attr-defined]
        return t

    def free(t: FakeTagger) -> None:
        t.freed = True

    sdk.createTimeTagger = create  # type: ignore[attr-defined]
    sdk.freeTimeTagger = free  # type: ignore[attr-defined]
    sdk.TimeTagStream = FakeStream  # type: ignore[attr-defined]
    sdk.Countrate = FakeCountrate  # type: ignore[attr-defined]
    sdk.Histogram = FakeHistogram  # type: ignore[attr-defined]
    sdk.TagType = TagType  # type: ignore[attr-defined]
    sdk.CHANNEL_UNUSED = -134217728  # type: ignore[attr-defined]
    return sdk


@pytest.fixture
def fake_sdk() -> ModuleType:
    return make_fake_sdk()


@pytest.fixture
def swabian_fakes() -> SimpleNamespace:
    """The fake SDK's parts, for tests that script streams or need the older SDK's tagger."""
    return SimpleNamespace(FakeTagger=FakeTagger, FakeTaggerOldSdk=FakeTaggerOldSdk, Buffer=_Buffer,
                           make_fake_sdk=make_fake_sdk, TIMETAG=TAG_TIMETAG, ERROR=TAG_ERROR,
                           OVERFLOW_BEGIN=TAG_OVERFLOW_BEGIN, OVERFLOW_END=TAG_OVERFLOW_END, MISSED=TAG_MISSED)


def copy_packaged(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copy(SIM_DIR / name, dst)
    return dst


