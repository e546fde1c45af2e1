"""Fixtures for driver tests: isolated copies of the packaged pyvisa-sim devices, configs, and a
fake of the Swabian Time Tagger SDK surface."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

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
class _Buffer:
    def __init__(self, ts: np.ndarray, ch: np.ndarray, overflow: bool) -> None:
        self._ts, self._ch, self.hasOverflows = ts, ch, overflow

    def getTimestamps(self) -> np.ndarray:  # noqa: N802 - SDK spelling
        return self._ts

    def getChannels(self) -> np.ndarray:  # noqa: N802
        return self._ch


class _Measurement:
    def __init__(self) -> None:
        self.started_ps: int | None = None
        self.stopped = False

    def startFor(self, duration_ps: int, clear: bool = True) -> None:  # noqa: N802
        self.started_ps = int(duration_ps)

    def waitUntilFinished(self, timeout: int = -1) -> bool:  # noqa: N802
        return True

    def stop(self) -> None:
        self.stopped = True


class FakeTagger:
    def __init__(self, serial: str) -> None:
        self.serial = serial or "1910000ABC"
        self.levels: dict[int, float] = {}
        self.delays: dict[int, int] = {}
        self.freed = False
        self.fail_next: str | None = None

    def _maybe_fail(self, name: str) -> None:
        if self.fail_next == name:
            self.fail_next = None
            raise RuntimeError(f"{name}: device disconnected")

    def setTriggerLevel(self, ch: int, v: float) -> None:  # noqa: N802
        self._maybe_fail("setTriggerLevel")
        self.levels[ch] = float(v)

    def getTriggerLevel(self, ch: int) -> float:  # noqa: N802
        self._maybe_fail("getTriggerLevel")
        return self.levels.get(ch, 0.5)

    def setInputDelay(self, ch: int, d: int) -> None:  # noqa: N802
        self.delays[ch] = int(d)

    def getInputDelay(self, ch: int) -> int:  # noqa: N802
        return self.delays.get(ch, 0)

    def getSerial(self) -> str:  # noqa: N802
        return self.serial

    def getModel(self) -> str:  # noqa: N802
        return "Time Tagger Ultra"


class FakeStream(_Measurement):
    """Delivers ``blocks`` chunks of tags, then reports not running."""

    blocks = 3

    def __init__(self, tagger: FakeTagger, n_max_events: int, channels: list[int]) -> None:
        super().__init__()
        self.channels = list(channels)
        self._polls = 0
        self._t = 0

    def isRunning(self) -> bool:  # noqa: N802
        return self._polls < self.blocks - 1 and not self.stopped

    def getData(self) -> _Buffer:  # noqa: N802
        self._polls += 1
        n = 5
        ts = self._t + np.arange(n, dtype=np.int64) * 1000
        self._t = int(ts[-1]) + 1000
        ch = np.array([self.channels[i % len(self.channels)] for i in range(n)], dtype=np.int32)
        return _Buffer(ts, ch, overflow=self._polls == 2)


class FakeCountrate(_Measurement):
    def __init__(self, tagger: FakeTagger, channels: list[int]) -> None:
        super().__init__()
        self.channels = list(channels)

    def getData(self) -> np.ndarray:  # noqa: N802
        return np.array([1000.0 * c for c in self.channels])


class FakeHistogram(_Measurement):
    def __init__(self, tagger: FakeTagger, click_channel: int, start_channel: int, binwidth: int, n_values: int) -> None:
        super().__init__()
        self.args = (click_channel, start_channel, binwidth, n_values)

    def getData(self) -> np.ndarray:  # noqa: N802
        return np.arange(self.args[3], dtype=np.int32)


def make_fake_sdk() -> ModuleType:
    sdk = ModuleType("TimeTagger")
    sdk.created = []  # type: ignore[attr-defined]

    def create(serial: str = "") -> FakeTagger:
        t = FakeTagger(serial)
        sdk.created.append(t)  # type: ignore[attr-defined]
        return t

    def free(t: FakeTagger) -> None:
        t.freed = True

    sdk.createTimeTagger = create  # type: ignore[attr-defined]
    sdk.freeTimeTagger = free  # type: ignore[attr-defined]
    sdk.TimeTagStream = FakeStream  # type: ignore[attr-defined]
    sdk.Countrate = FakeCountrate  # type: ignore[attr-defined]
    sdk.Histogram = FakeHistogram  # type: ignore[attr-defined]
    return sdk


@pytest.fixture
def fake_sdk() -> ModuleType:
    return make_fake_sdk()


def copy_packaged(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copy(SIM_DIR / name, dst)
    return dst


