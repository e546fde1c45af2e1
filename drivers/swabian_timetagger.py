"""Swabian Instruments Time Tagger (20 / Ultra / X) over the vendor's Python SDK.

The SDK module ``TimeTagger`` ships with Swabian's Time Tagger software (it is not on PyPI under
that name); it is imported only when this driver is opened. Without it, opening raises a
:class:`~labqfl.errors.LabqflError` saying what to install.

SDK calls used: ``createTimeTagger(serial)``, ``freeTimeTagger``, ``setTriggerLevel`` /
``getTriggerLevel`` [V], ``setInputDelay`` / ``getInputDelay`` [ps], ``getSerial``,
``TimeTagStream(tagger, n_max_events, channels)`` with ``startFor(ps)``, ``isRunning``,
``getData()`` → buffer with ``getTimestamps()`` (int64 ps), ``getChannels()`` and
``hasOverflows``; ``Countrate(tagger, channels)`` and ``Histogram(tagger, click_channel,
start_channel, binwidth, n_values)`` with ``startFor``/``waitUntilFinished``/``getData``.

Configuration: ``options.serial`` picks one tagger when several are connected; channels are the
station's ``time_tagger.sync_channel`` and ``detector_channels``; at open the driver applies
``time_tagger.trigger_level_v`` to every channel and ``time_tagger.input_delays_ps`` (keys
``sync``, ``D0``, ``D1``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
from pydantic import Field

from labqfl.config import DriverOptions, InstrumentConfig
from labqfl.errors import InstrumentError, LabqflError
from labqfl.instruments.base import TagBlock
from labqfl.instruments.interfaces import TimeTagger

from ._base import DriverDeclaration, Limit, check_range

TRIGGER_LEVEL_V = (-2.5, 2.5)
INPUT_DELAY_PS = (-2_000_000, 2_000_000)
STREAM_BUFFER_EVENTS = 10_000_000
SDK_HINT = ("the Swabian Time Tagger driver needs the vendor's Python SDK (module 'TimeTagger'): install the "
            "Time Tagger software from https://www.swabianinstruments.com/time-tagger/downloads/ and make its "
            "Python package importable in this environment")


def load_sdk() -> ModuleType:
    """Import the vendor SDK or raise a :class:`LabqflError` saying what to install."""
    try:
        return importlib.import_module("TimeTagger")
    except ImportError as exc:
        raise LabqflError(SDK_HINT) from exc


class SwabianTimeTaggerOptions(DriverOptions):
    """``options`` of a :class:`SwabianTimeTagger` role."""

    serial: str = Field("", description="serial number of the tagger to open ('' = the only one connected)")


class SwabianTimeTagger(DriverDeclaration, TimeTagger):
    """Adapter from the Swabian SDK to the :class:`TimeTagger` interface."""

    Options = SwabianTimeTaggerOptions

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {"trigger_level_v": (*TRIGGER_LEVEL_V, "V"), "input_delays_ps": (*INPUT_DELAY_PS, "ps")}

    def __init__(self, name: str, config: InstrumentConfig, *, sdk: ModuleType | None = None) -> None:
        opts = self.parse_options(name, config)
        super().__init__(name, config.resource or opts.serial or "TimeTagger")
        self.config = config
        self.sdk = sdk if sdk is not None else load_sdk()
        self.serial = opts.serial or (config.resource or "")
        sync = int(getattr(config, "sync_channel", 1))
        det = dict(getattr(config, "detector_channels", {"D0": 2, "D1": 3}))
        self.channel_names: dict[str, int] = {"sync": sync, **{k: int(v) for k, v in det.items()}}
        self._channels = sorted(self.channel_names.values())
        self._resolution_ps = float(getattr(config, "resolution_ps", 1.0))
        self._running: list[Any] = []
        self.tagger: Any = None
        self._open()

    # -- lifecycle ------------------------------------------------------------------------------
    def _sdk_call(self, command: str, fn: Any, *args: Any) -> Any:
        with self.lock:
            if self.tagger is None and command != "createTimeTagger":
                raise InstrumentError("time tagger is not connected (closed); call reconnect()",
                                      instrument=self.name, resource=self.resource, command=command)
            try:
                return fn(*args)
            except (InstrumentError, ValueError):
                raise
            except Exception as exc:  # the SDK raises RuntimeError and friends
                raise InstrumentError(f"Time Tagger SDK error: {type(exc).__name__}: {exc}", instrument=self.name,
                                      resource=self.resource, command=command) from exc

    def _open(self) -> None:
        with self.lock:
            self.tagger = self._sdk_call("createTimeTagger", self.sdk.createTimeTagger, self.serial)
            try:
                level = float(getattr(self.config, "trigger_level_v", 0.5))
                self.trigger_levels_v = dict.fromkeys(self._channels, level)
                delays = dict(getattr(self.config, "input_delays_ps", {}))
                unknown = set(delays) - set(self.channel_names)
                if unknown:
                    raise ValueError(f"input_delays_ps names unknown channels {sorted(unknown)}; expected {sorted(self.channel_names)}")
                self.input_delays_ps = {self.channel_names[k]: int(round(v)) for k, v in delays.items()}
            except BaseException:
                self._free()
                raise
            self._closed = False

    def _free(self) -> None:
        tagger, self.tagger = self.tagger, None
        if tagger is not None:
            try:
                self.sdk.freeTimeTagger(tagger)
            except Exception as exc:
                self.log.warning("freeTimeTagger failed: %s", exc)

    def reconnect(self) -> None:
        with self.lock:
            self.safe_state()
            self._free()
            self._open()

    def _close(self) -> None:
        self._free()

    def identity(self) -> str:
        model = self._sdk_call("getModel", getattr(self.tagger, "getModel", lambda: "Time Tagger"))
        serial = self._sdk_call("getSerial", self.tagger.getSerial)
        return f"Swabian Instruments,{model},{serial}"

    def status(self) -> dict[str, Any]:
        return {"connected": self.tagger is not None, "channels": self.channels}

    def safe_state(self) -> None:
        """Stop every running measurement (a tagger has no hazardous state)."""
        with self.lock:
            for m in self._running:
                try:
                    m.stop()
                except Exception as exc:
                    self.log.warning("stopping a measurement failed: %s", exc)
            self._running.clear()

    # -- settings -------------------------------------------------------------------------------
    @property
    def channels(self) -> list[int]:
        return list(self._channels)

    @channels.setter
    def channels(self, value: list[int]) -> None:
        chans = sorted({int(c) for c in value})
        if not chans or any(c == 0 or abs(c) > 18 for c in chans):
            raise ValueError(f"channels must be tagger inputs ±1 … ±18, got {value!r}")
        self._channels = chans

    @property
    def resolution_ps(self) -> float:
        return self._resolution_ps

    @property
    def trigger_levels_v(self) -> dict[int, float]:
        return {c: float(self._sdk_call("getTriggerLevel", self.tagger.getTriggerLevel, c)) for c in self._channels}

    @trigger_levels_v.setter
    def trigger_levels_v(self, value: dict[int, float]) -> None:
        checked = {self._channel(c): check_range(f"trigger_levels_v[{c}]", v, *TRIGGER_LEVEL_V, "V") for c, v in value.items()}
        with self.lock:
            for c, v in checked.items():
                self._sdk_call(f"setTriggerLevel({c}, {v})", self.tagger.setTriggerLevel, c, v)

    @property
    def input_delays_ps(self) -> dict[int, int]:
        return {c: int(self._sdk_call("getInputDelay", self.tagger.getInputDelay, c)) for c in self._channels}

    @input_delays_ps.setter
    def input_delays_ps(self, value: dict[int, int]) -> None:
        checked = {self._channel(c): int(check_range(f"input_delays_ps[{c}]", v, *INPUT_DELAY_PS, "ps"))
                   for c, v in value.items()}
        with self.lock:
            for c, v in checked.items():
                self._sdk_call(f"setInputDelay({c}, {v})", self.tagger.setInputDelay, c, v)

    def _channel(self, c: int) -> int:
        if int(c) not in self._channels:
            raise ValueError(f"channel {c!r} is not enabled; enabled channels are {self._channels}")
        return int(c)

    # -- measurements ---------------------------------------------------------------------------
    def _measure(self, label: str, m: Any, duration_s: float) -> Any:
        with self.lock:
            self._running.append(m)
        try:
            self._sdk_call(label, m.startFor, int(round(duration_s * 1e12)))
            self._sdk_call(label, m.waitUntilFinished)
            return self._sdk_call(label, m.getData)
        finally:
            with self.lock:
                if m in self._running:
                    self._running.remove(m)

    def stream(self, duration_s: float, block_duration_s: float | None = None) -> Iterator[TagBlock]:
        """Stream tags for ``duration_s`` s, one :class:`TagBlock` per ``block_duration_s`` poll."""
        duration = check_range("duration_s", duration_s, 1e-9, 1e6, "s")
        poll = check_range("block_duration_s", block_duration_s if block_duration_s is not None else 0.01, 1e-6, 60.0, "s")
        s = self._sdk_call("TimeTagStream", self.sdk.TimeTagStream, self.tagger, STREAM_BUFFER_EVENTS, self._channels)
        with self.lock:
            self._running.append(s)
        try:
            self._sdk_call("TimeTagStream.startFor", s.startFor, int(round(duration * 1e12)))
            while True:
                running = bool(self._sdk_call("TimeTagStream.isRunning", s.isRunning))
                if running:
                    time.sleep(poll)
                block = self._block(self._sdk_call("TimeTagStream.getData", s.getData))
                if len(block):
                    yield block
                if not running:
                    break
        finally:
            with self.lock:
                if s in self._running:
                    s.stop()
                    self._running.remove(s)

    @staticmethod
    def _block(buf: Any) -> TagBlock:
        overflow = getattr(buf, "hasOverflows", False)
        overflow = overflow() if callable(overflow) else overflow
        return TagBlock(np.ascontiguousarray(buf.getTimestamps(), dtype=np.int64),
                        np.ascontiguousarray(buf.getChannels(), dtype=np.int16), bool(overflow))

    def count_rates(self, integration_s: float = 0.1) -> dict[int, float]:
        t = check_range("integration_s", integration_s, 1e-6, 3600.0, "s")
        m = self._sdk_call("Countrate", self.sdk.Countrate, self.tagger, self._channels)
        data = np.asarray(self._measure("Countrate", m, t), dtype=np.float64)
        return {c: float(r) for c, r in zip(self._channels, data, strict=True)}

    def histogram(self, start_channel: int, click_channel: int, binwidth_ps: int, n_bins: int,
                  integration_s: float) -> np.ndarray:
        start, click = self._channel(start_channel), self._channel(click_channel)
        bw = int(check_range("binwidth_ps", binwidth_ps, 1, 1e12, "ps"))
        n = int(check_range("n_bins", n_bins, 1, 1e8))
        t = check_range("integration_s", integration_s, 1e-6, 3600.0, "s")
        m = self._sdk_call("Histogram", self.sdk.Histogram, self.tagger, click, start, bw, n)
        return np.asarray(self._measure("Histogram", m, t), dtype=np.int64)
