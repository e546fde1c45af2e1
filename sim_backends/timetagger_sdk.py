"""An emulated Swabian Time Tagger SDK whose tags come from the simulated loop (issue 17).

The real driver (:class:`labqfl.drivers.swabian_timetagger.SwabianTimeTagger`) runs unchanged on it:
``simulation.emulate_time_tagger = true`` with ``time_tagger.driver = "SwabianTimeTagger"`` opens the driver
with ``sdk=`` an :class:`EmulatedTimeTaggerSDK` instead of the vendor's module, so every call the driver
makes (settings, ``TimeTagStream``, event types, overflows) goes through the code a lab runs, and only the
instrument behind it is emulated. A time tagger is a USB device driven through a closed native library: there
is no documented wire protocol to emulate, so the emulation sits at the SDK's Python API, spelled as in
``Swabian/TimeTagger/__init__.py`` of swabian-timetagger 2.22.6 (the version the driver's tests replay against;
tests/drivers/test_timetagger.py checks this surface against the installed SDK).

**Where the tags come from.** A *feed* (:attr:`EmulatedTimeTaggerSDK.feed`): a callable taking the capture
duration [s] and returning the simulated tagger's blocks (:class:`~labqfl.instruments.base.TagBlock`) of that
acquisition: in process the simulated station's own tagger (the loop driven by what the clients' emulated
pattern generators played), over node processes the optics node's ``optics/tags`` service, opened by the
detection node for each acquisition. The simulated tagger is built from the same station file: it already
applies the file's ``input_delays_ps`` and ``sync_divider`` (the *light's* settings, :class:`LightSettings`).

**What the emulated instrument does to them, as the hardware would** (Time Tagger user manual, "Software
Defined Features" and the SDK docstrings):

* records only the channels its ``TimeTagStream`` was created with;
* ``setEventDivider(channel, n)`` ("only every n-th event passes"): a divider that is a multiple of the light's
  (the sync arrives divided by ``sync_divider`` already) passes every (n / light)-th tag, the first one first;
  any other divider is refused when the stream starts (the loop's undivided sync is never simulated);
* ``setInputDelay`` / ``setDelayHardware``: tags are shifted by the set delay minus the light's, and the stream
  stays sorted in time;
* ``setDeadtime(channel, t)``: a tag within ``t`` of the previous recorded tag of its channel is not recorded
  (the value is rounded as on a Time Tagger X: arbitrary above 1.333 ns);
* lost data — the feed's own ``lost_intervals_ps`` and the intervals given in ``overflow_intervals_ps`` (a USB
  overflow a test wants) — removes every tag inside the interval and streams ``OverflowBegin`` at its start,
  ``OverflowEnd`` at its end and, per channel that lost tags, ``MissedEvents`` records with the counts
  (``getMissedEvents``), as the SDK's ``TimeTagStreamBuffer`` does; ``getOverflows`` counts the intervals.

**What it refuses** (a ``RuntimeError``, as the SDK raises, which the driver turns into one line): the
conditional filter (its semantics are the vendor's in-depth guide's, not emulated here), and a stream started
without a feed. ``Countrate`` and ``Histogram`` are served by the callables given as ``count_rates`` and
``histogram`` (the simulated tagger's own read-outs, in process); without them they are refused.

The reference clock (``setReferenceClock``) locks at once: the simulated loop has one time base.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labqfl.instruments.base import TagBlock

__all__ = ["EmulatedTimeTaggerSDK", "LightSettings", "StreamBuffer", "TagType"]

#: CHANNEL_UNUSED of the SDK: the channel of records that are not time tags.
CHANNEL_UNUSED = -134217728
#: Dead time limits of a Time Tagger X [ps] (setDeadtime docstring: minimum 1.333 ns, maximum 716 µs).
DEAD_TIME_X_PS = (1_333, 716_000_000)
#: The largest count one MissedEvents record carries (uint16 in the SDK's buffer).
MISSED_PER_RECORD = 65_535


class TagType(enum.IntEnum):
    """``TagType`` of the SDK (``Tag.Type_*``)."""

    TimeTag = 0
    Error = 1
    OverflowBegin = 2
    OverflowEnd = 3
    MissedEvents = 4


@dataclass(frozen=True)
class LightSettings:
    """What the simulated tagger behind the feed already applied, per tagger channel: the event divider
    (the sync's ``sync_divider``) and the input delay [ps] of the station file."""

    dividers: dict[int, int] = field(default_factory=dict)
    delays_ps: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Any) -> LightSettings:
        """From a :class:`~labqfl.config.StationConfig` (its ``time_tagger`` section)."""
        tt = cfg.time_tagger
        names = {"sync": int(tt.sync_channel), **{k: int(v) for k, v in tt.detector_channels.items()},
                 **tt.marker_inputs()}
        return cls(dividers={int(tt.sync_channel): int(tt.sync_divider)},
                   delays_ps={names[k]: int(round(v)) for k, v in tt.input_delays_ps.items() if k in names})


class _ClockState:
    def __init__(self, locked: bool) -> None:
        self.is_locked = locked
        self.enabled = locked


class EmulatedTagger:
    """The tagger object ``createTimeTagger`` returns: holds the settings the driver writes."""

    def __init__(self, sdk: EmulatedTimeTaggerSDK, serial: str) -> None:
        self.sdk = sdk
        self.serial = serial or "EMULATED"
        self.trigger_levels: dict[int, float] = {}
        self.delays: dict[int, int] = dict(sdk.light.delays_ps)
        self.dividers: dict[int, int] = {}
        self.dead_times: dict[int, int] = {}
        self.reference: dict[str, Any] | None = None
        self.overflows = 0
        self.freed = False

    @staticmethod
    def _check(channel: int) -> int:
        c = int(channel)
        if c == 0 or abs(c) > 18:
            raise RuntimeError(f"invalid channel {channel}: expected 1 … 18 (rising) or -1 … -18 (falling)")
        return c

    def setTriggerLevel(self, channel: int, voltage: float) -> None:  # noqa: N802 - SDK spelling
        self.trigger_levels[self._check(channel)] = float(voltage)

    def getTriggerLevel(self, channel: int) -> float:  # noqa: N802
        return self.trigger_levels.get(self._check(channel), 0.5)

    def setInputDelay(self, channel: int, delay: int) -> None:  # noqa: N802
        self.delays[self._check(channel)] = int(delay)

    setDelayHardware = setInputDelay  # noqa: N815 - the emulated delay is exact either way

    def getInputDelay(self, channel: int) -> int:  # noqa: N802
        return self.delays.get(self._check(channel), 0)

    def getDelayHardwareRange(self, channel: int) -> list[int]:  # noqa: N802
        self._check(channel)
        return [-2_000_000, 2_000_000]

    def setEventDivider(self, channel: int, divider: int) -> None:  # noqa: N802
        d = int(divider)
        if not 1 <= d <= 65_535:
            raise RuntimeError(f"event divider {divider} out of range: the divider is a 16 bit integer (1 … 65535)")
        self.dividers[self._check(channel)] = d

    def getEventDivider(self, channel: int) -> int:  # noqa: N802
        return self.dividers.get(self._check(channel), 1)

    def setDeadtime(self, channel: int, deadtime: int) -> int:  # noqa: N802
        t = int(deadtime)
        if not DEAD_TIME_X_PS[0] <= t <= DEAD_TIME_X_PS[1]:
            raise RuntimeError(f"dead time {t} ps out of range {DEAD_TIME_X_PS[0]} … {DEAD_TIME_X_PS[1]} ps")
        self.dead_times[self._check(channel)] = t
        return t

    def setConditionalFilter(self, trigger: list[int], filtered: list[int]) -> None:  # noqa: N802
        raise RuntimeError("the emulated Time Tagger does not emulate the conditional filter "
                           "(labqfl.sim_backends.timetagger_sdk); leave time_tagger.conditional_filter_* empty")

    def clearConditionalFilter(self) -> None:  # noqa: N802
        return None

    def setReferenceClock(self, clock_channel: int, clock_frequency: float = 10e6,  # noqa: N802
                          time_constant: float = 1e-3, synchronization_channel: int = CHANNEL_UNUSED,
                          wait_until_locked: bool = True) -> None:
        self.reference = {"channel": self._check(clock_channel), "frequency_hz": float(clock_frequency)}

    def getReferenceClockState(self) -> _ClockState:  # noqa: N802
        return _ClockState(self.reference is not None)

    def getOverflows(self) -> int:  # noqa: N802
        return self.overflows

    def clearOverflows(self) -> None:  # noqa: N802
        self.overflows = 0

    def getSerial(self) -> str:  # noqa: N802
        return self.serial

    def getModel(self) -> str:  # noqa: N802
        return "Time Tagger X (emulated)"


class StreamBuffer:
    """``TimeTagStreamBuffer``: one poll's records (time stamps int64 ps, channels, ``TagType`` per record, the
    missed-event count of each ``MissedEvents`` record); ``hasOverflows`` when any record is not a time tag."""

    def __init__(self, ts: np.ndarray, ch: np.ndarray, types: np.ndarray, missed: np.ndarray) -> None:
        self._ts, self._ch, self._types, self._missed = ts, ch, types, missed
        self.size = int(ts.size)
        self.hasOverflows = bool(np.any(types != TagType.TimeTag))

    def getTimestamps(self) -> np.ndarray:  # noqa: N802
        return self._ts

    def getChannels(self) -> np.ndarray:  # noqa: N802
        return self._ch

    def getEventTypes(self) -> np.ndarray:  # noqa: N802
        return self._types

    def getMissedEvents(self) -> np.ndarray:  # noqa: N802
        return self._missed


_EMPTY = StreamBuffer(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.uint16))


class _Records:
    """Non-tag records of one poll, collected before they are merged with the tags in time order."""

    # order at equal times, indexed by TagType: OverflowBegin, tags (and errors), OverflowEnd, MissedEvents
    _RANK = np.array([1, 1, 0, 2, 3], np.int8)

    def __init__(self) -> None:
        self.t: list[int] = []
        self.type: list[int] = []
        self.missed: list[int] = []

    def add(self, t: int, kind: TagType, missed: int = 0) -> None:
        self.t.append(int(t))
        self.type.append(int(kind))
        self.missed.append(int(missed))

    def missed_counts(self, t: int, lost_channels: np.ndarray) -> None:
        """MissedEvents records at ``t``: per channel, the count of its tags lost (≤ 65535 per record)."""
        chans, counts = np.unique(lost_channels, return_counts=True)
        for _c, n in zip(chans.tolist(), counts.tolist(), strict=True):
            while n > 0:
                self.add(t, TagType.MissedEvents, min(n, MISSED_PER_RECORD))
                n -= MISSED_PER_RECORD

    def merge(self, ts: np.ndarray, ch: np.ndarray) -> StreamBuffer:
        n_rec = len(self.t)
        if not n_rec:
            return StreamBuffer(ts, ch.astype(np.int32), np.zeros(ts.size, np.uint8), np.zeros(ts.size, np.uint16))
        all_t = np.concatenate([ts, np.asarray(self.t, np.int64)])
        types = np.concatenate([np.zeros(ts.size, np.uint8), np.asarray(self.type, np.uint8)])
        order = np.lexsort((self._RANK[types], all_t))
        chans = np.concatenate([ch.astype(np.int32), np.full(n_rec, CHANNEL_UNUSED, np.int32)])
        missed = np.concatenate([np.zeros(ts.size, np.uint16), np.asarray(self.missed, np.uint16)])
        return StreamBuffer(all_t[order], chans[order], types[order], missed[order])


class _Processor:
    """One stream's hardware behaviour on the feed's blocks (module docstring), state carried across polls."""

    def __init__(self, tagger: EmulatedTagger, channels: list[int], light: LightSettings,
                 injected: list[tuple[int, int]]) -> None:
        self.tagger = tagger
        self.channels = np.array(sorted(set(int(c) for c in channels)), np.int16)
        self.steps: dict[int, int] = {}
        for c in self.channels.tolist():
            have, want = light.dividers.get(c, 1), tagger.dividers.get(c, 1)
            if want % have:
                raise RuntimeError(f"event divider {want} on channel {c}: the emulated tagger's input arrives divided by "
                                   f"{have} already (the station file's sync_divider); expected a multiple of {have}")
            if want // have > 1:
                self.steps[c] = want // have
        self.seen: dict[int, int] = dict.fromkeys(self.steps, 0)
        self.shift = {c: tagger.delays.get(c, 0) - light.delays_ps.get(c, 0) for c in self.channels.tolist()}
        self.dead = {c: t for c, t in tagger.dead_times.items() if c in set(self.channels.tolist())}
        self.last_kept: dict[int, int] = {}
        self.injected = sorted((int(b), int(e)) for b, e in injected)
        self.next_injected = 0
        self.open_end: int | None = None  # end of an injected interval whose OverflowBegin went out already

    def block(self, blk: TagBlock) -> StreamBuffer:
        ts, ch = np.asarray(blk.timestamps, np.int64), np.asarray(blk.channels, np.int16)
        keep = np.isin(ch, self.channels)
        ts, ch = ts[keep], ch[keep]
        ts, ch = self._divide(ts, ch)
        ts, ch = self._delay(ts, ch)
        rec = _Records()
        intervals = [(int(b), int(e)) for b, e in np.asarray(blk.lost_intervals_ps, np.int64).reshape(-1, 2).tolist()]
        ts, ch = self._lose(ts, ch, intervals, rec, injected=False)
        ts, ch = self._lose(ts, ch, self.injected, rec, injected=True)
        ts, ch = self._dead_time(ts, ch)
        return rec.merge(ts, ch)

    def finish(self) -> StreamBuffer:
        """Closing records of an injected overflow still open when the feed ended."""
        rec = _Records()
        if self.open_end is not None:
            rec.add(self.open_end, TagType.OverflowEnd)
            self.open_end = None
        return rec.merge(np.zeros(0, np.int64), np.zeros(0, np.int16)) if rec.t else _EMPTY

    def _divide(self, ts: np.ndarray, ch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.steps:
            return ts, ch
        keep = np.ones(ts.size, bool)
        for c, step in self.steps.items():
            idx = np.flatnonzero(ch == c)
            k = self.seen[c] + np.arange(idx.size)
            keep[idx[k % step != 0]] = False
            self.seen[c] += int(idx.size)
        return ts[keep], ch[keep]

    def _delay(self, ts: np.ndarray, ch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not any(self.shift.values()):
            return ts, ch
        ts = ts.copy()
        for c, d in self.shift.items():
            if d:
                ts[ch == c] += d
        order = np.argsort(ts, kind="stable")
        return ts[order], ch[order]

    def _lose(self, ts: np.ndarray, ch: np.ndarray, intervals: list[tuple[int, int]], rec: _Records,
              *, injected: bool) -> tuple[np.ndarray, np.ndarray]:
        """Tags inside ``intervals`` removed, their records added. Injected intervals may span polls: each
        opens in the poll that reaches its start and closes in the one that reaches its end."""
        if not intervals:
            return ts, ch
        if injected:
            t_max = int(ts[-1]) if ts.size else None
            todo: list[tuple[int, int]] = []
            if self.open_end is not None:
                todo.append((-(2**62), self.open_end))
            while self.next_injected < len(self.injected) and t_max is not None and \
                    self.injected[self.next_injected][0] <= t_max:
                todo.append(self.injected[self.next_injected])
                self.next_injected += 1
            cut_all = np.zeros(ts.size, bool)
            for b, e in intervals:  # every injected interval removes its tags, whichever poll announces it
                cut_all |= (ts >= b) & (ts <= e)
            for b, e in todo:
                if b > -(2**62):
                    rec.add(b, TagType.OverflowBegin)
                    self.tagger.overflows += 1
                inside = (ts >= b) & (ts <= e)
                if t_max is not None and e <= t_max:
                    rec.add(e, TagType.OverflowEnd)
                    rec.missed_counts(e, ch[inside])
                    self.open_end = None
                else:
                    self.open_end = e
                    if inside.any():
                        rec.missed_counts(int(ts[inside][-1]), ch[inside])
            return ts[~cut_all], ch[~cut_all]
        cut = np.zeros(ts.size, bool)
        for b, e in intervals:
            inside = (ts >= b) & (ts <= e)
            rec.add(b, TagType.OverflowBegin)
            rec.add(e, TagType.OverflowEnd)
            rec.missed_counts(e, ch[inside])
            self.tagger.overflows += 1
            cut |= inside
        return ts[~cut], ch[~cut]

    def _dead_time(self, ts: np.ndarray, ch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.dead:
            return ts, ch
        keep = np.ones(ts.size, bool)
        for c, dt in self.dead.items():
            idx = np.flatnonzero(ch == c)
            if not idx.size:
                continue
            t = ts[idx]
            prev = self.last_kept.get(c)
            gaps = np.diff(t, prepend=np.int64(prev if prev is not None else t[0] - dt))
            if np.all(gaps >= dt):  # the usual case: nothing within the dead time
                self.last_kept[c] = int(t[-1])
                continue
            last = prev
            for j, tj in enumerate(t.tolist()):  # a dropped tag does not restart the dead time
                if last is not None and tj - last < dt:
                    keep[idx[j]] = False
                else:
                    last = tj
            if last is not None:
                self.last_kept[c] = last
        return ts[keep], ch[keep]


class EmulatedStream:
    """``TimeTagStream(tagger, n_max_events, channels)``: runs while the feed has blocks; each
    ``getData`` returns what was pulled since the previous one, at most ``n_max_events`` records (the rest
    discarded, as the SDK's host buffer does when getData is called too rarely)."""

    def __init__(self, tagger: EmulatedTagger, n_max_events: int, channels: Iterable[int]) -> None:
        self.tagger = tagger
        self.channels = [int(c) for c in channels]
        self.n_max_events = int(n_max_events)
        self._blocks: Iterator[TagBlock] | None = None
        self._proc: _Processor | None = None
        self._pending: list[StreamBuffer] = []
        self._done = False
        self._stopped = False

    def startFor(self, capture_duration: int, clear: bool = True) -> None:  # noqa: N802
        sdk = self.tagger.sdk
        blocks = sdk.take_light(int(capture_duration) * 1e-12)
        self._proc = _Processor(self.tagger, self.channels, sdk.light, sdk.overflow_intervals_ps)
        self._blocks = iter(blocks)
        self._done = self._stopped = False
        self._pending = []

    def _pull(self) -> None:
        assert self._blocks is not None and self._proc is not None
        try:
            blk = next(self._blocks)
        except StopIteration:
            self._done = True
            self._pending.append(self._proc.finish())
            return
        self._pending.append(self._proc.block(blk))

    def isRunning(self) -> bool:  # noqa: N802
        if self._blocks is None or self._stopped or self._done:
            return False
        if not self._pending:
            self._pull()
        return not self._done

    def getData(self) -> StreamBuffer:  # noqa: N802
        if self._blocks is not None and not self._pending and not self._done and not self._stopped:
            self._pull()
        parts, self._pending = self._pending, []
        parts = [p for p in parts if p.size]
        if not parts:
            return _EMPTY
        if len(parts) == 1:
            return self._capped(parts[0])
        return self._capped(StreamBuffer(*(np.concatenate([getattr(p, a) for p in parts])
                                           for a in ("_ts", "_ch", "_types", "_missed"))))

    def _capped(self, buf: StreamBuffer) -> StreamBuffer:
        """The host buffer holds ``n_max_events`` records between two ``getData`` calls; what came after is
        discarded, and the buffer's ``size`` then equals ``n_max_events`` (SDK, ``TimeTagStreamBuffer.size``:
        "If the size equals the maximum size of the buffer set in TimeTagStream via n_max_events, events
        have likely been discarded")."""
        n = self.n_max_events
        if buf.size <= n:
            return buf
        return StreamBuffer(buf._ts[:n], buf._ch[:n], buf._types[:n], buf._missed[:n])

    def stop(self) -> None:
        self._stopped = True
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()


class _Measurement:
    def __init__(self, run: Callable[[float], Any]) -> None:
        self._run, self._data = run, None

    def startFor(self, capture_duration: int, clear: bool = True) -> None:  # noqa: N802
        self._data = self._run(int(capture_duration) * 1e-12)

    def waitUntilFinished(self, timeout: int = -1) -> bool:  # noqa: N802
        return True

    def getData(self) -> Any:  # noqa: N802
        return self._data

    def stop(self) -> None:
        return None


class EmulatedTimeTaggerSDK:
    """The SDK module's surface the driver uses (module docstring). ``feed``: callable(duration_s) → the
    simulated tagger's blocks for one acquisition, for any stream not :meth:`prepare` d; ``light``: what that tagger
    already applied; ``overflow_intervals_ps``: [(begin, end)] ps of USB overflows to emulate on every
    stream; ``count_rates(integration_s)`` → {channel: Hz} and ``histogram(start, click, binwidth_ps,
    n_bins, integration_s)`` → counts: the read-outs behind ``Countrate`` / ``Histogram``."""

    TagType = TagType
    CHANNEL_UNUSED = CHANNEL_UNUSED

    def __init__(self, light: LightSettings, feed: Callable[[float], Iterable[TagBlock]] | None = None, *,
                 overflow_intervals_ps: list[tuple[int, int]] | None = None,
                 count_rates: Callable[[float], dict[int, float]] | None = None,
                 histogram: Callable[[int, int, int, int, float], np.ndarray] | None = None) -> None:
        self.light = light
        self.feed = feed
        self._prepared: Iterable[TagBlock] | None = None
        self.overflow_intervals_ps = list(overflow_intervals_ps or [])
        self._count_rates, self._histogram = count_rates, histogram
        self.created: list[EmulatedTagger] = []
        self._lock = threading.Lock()

    def prepare(self, blocks: Iterable[TagBlock]) -> None:
        """The light of the next stream only (an acquisition already started, e.g. one whose clients' logs had to
        be known before the driver's lazy stream starts); later streams take :attr:`feed` again."""
        self._prepared = blocks

    def take_light(self, capture_s: float) -> Iterable[TagBlock]:
        """The blocks the next stream records: the prepared ones once, else the feed's."""
        blocks, self._prepared = self._prepared, None
        if blocks is not None:
            return blocks
        if self.feed is None:
            raise RuntimeError("the emulated Time Tagger has no light: no simulated loop feeds it "
                               "(labqfl.sim_backends.timetagger_sdk, EmulatedTimeTaggerSDK.feed)")
        return self.feed(capture_s)

    def createTimeTagger(self, serial: str = "", resolution: int = 0) -> EmulatedTagger:  # noqa: N802
        with self._lock:
            if any(not t.freed for t in self.created):
                raise RuntimeError("the emulated Time Tagger is already open (freeTimeTagger first)")
            t = EmulatedTagger(self, serial)
            self.created.append(t)
            return t

    def freeTimeTagger(self, tagger: EmulatedTagger) -> bool:  # noqa: N802
        tagger.freed = True
        return True

    def TimeTagStream(self, tagger: EmulatedTagger, n_max_events: int, channels: Iterable[int]) -> EmulatedStream:  # noqa: N802
        return EmulatedStream(tagger, n_max_events, channels)

    def Countrate(self, tagger: EmulatedTagger, channels: Iterable[int]) -> _Measurement:  # noqa: N802
        chans = [int(c) for c in channels]
        if self._count_rates is None:
            raise RuntimeError("the emulated Time Tagger has no count-rate read-out here (over node processes its "
                               "tags come per acquisition from the optics node)")
        rates = self._count_rates

        def run(t: float) -> np.ndarray:
            got = rates(t)
            return np.array([float(got.get(c, 0.0)) for c in chans])

        return _Measurement(run)

    def Histogram(self, tagger: EmulatedTagger, click_channel: int, start_channel: int, binwidth: int,  # noqa: N802
                  n_bins: int) -> _Measurement:
        if self._histogram is None:
            raise RuntimeError("the emulated Time Tagger has no histogram read-out here (over node processes its "
                               "tags come per acquisition from the optics node)")
        hist = self._histogram
        return _Measurement(lambda t: np.asarray(hist(int(start_channel), int(click_channel), int(binwidth),
                                                      int(n_bins), t)))
