"""A client's modulation path: its random choices → frames → its pattern generator, continuously.

The client's choice log (:class:`~labqfl.sim_backends.qrng.CsprngChoiceLog` or the seeded
:class:`~labqfl.sim_backends.qrng.ClientQRNGLog`; anything with ``fill_codes(s0, out)`` writing the
drive codes ``k·4 + a`` of slots ``s0 …``) is cut into frames of ``F`` slots: frame ``f`` holds the
choices of slots ``f·F … f·F + F − 1`` (:class:`FrameSource`). :class:`ModulationStreamer` plays
them on a :class:`~labqfl.instruments.interfaces.PatternGenerator`:

* a **producer** thread draws frames in index order into a bounded queue (``queue_frames``; it
  blocks when the queue is full, so the client never runs further ahead than that);
* a **feeder** thread uploads ``frames_per_upload`` frames whenever the generator has a free buffer
  (double buffering: one upload plays while the next waits), each upload carrying its frame
  indices;
* when the producer's frame for index ``f`` is not in the queue at the moment its upload must go
  (within ``max_wait_s``), the feeder uploads a **dark** frame for ``f`` instead (no marker,
  modulators dark) and the producer's frame ``f`` is discarded when it arrives: a late frame is
  lost, never played later; ``dark_frames_between = n`` schedules ``n`` dark frames after every
  fresh one (a duty cycle for generators whose link cannot carry fresh frames at the slot rate);
* the generator's verdicts (:meth:`PatternGenerator.poll_played`) fill the client's
  :class:`~labqfl.instruments.interfaces.PlayedFrames` record: a frame is *played* only if it was
  fresh and the generator played it; dark frames, frames lost to a generator underflow and frames
  cut off by a stop are *lost*. An underflow stops the stream (the generator never resumes off its
  time grid): the frames not yet played are recorded lost and :attr:`ModulationStreamer.error`
  names the cause.

The detection node sees no marker for a lost frame, so its slotting drops that frame's slots
(docs/postprocessing.md, missing markers); the client's side keeps only the slots of played frames
(:meth:`PlayedFrames.slot_mask`, :class:`PlayedChoiceLog`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from labqfl.contracts.types import Announcements, ModulationRecord, drive_codes
from labqfl.instruments.interfaces import ModulationFrame, PatternGenerator, PlayedFrames
from labqfl.log import get_logger

log = get_logger(__name__)


class ChoiceSource(Protocol):
    """What the streamer needs from a client's choice log."""

    client: str

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        """Drive codes ``k·4 + a`` (uint8) of slots ``s0 … s0 + len(out) − 1``."""
        ...


class FrameSource:
    """Frames of a client's choices: frame ``f`` = slots ``f·frame_slots … (f+1)·frame_slots − 1``."""

    def __init__(self, log: ChoiceSource, frame_slots: int) -> None:
        if int(frame_slots) < 1:
            raise ValueError(f"frame_slots must be >= 1, got {frame_slots!r}")
        self.log = log
        self.frame_slots = int(frame_slots)

    def frame(self, index: int) -> ModulationFrame:
        codes = np.empty(self.frame_slots, dtype=np.uint8)
        self.log.fill_codes(int(index) * self.frame_slots, codes)
        return ModulationFrame(int(index), codes & np.uint8(3), codes >> np.uint8(2))


class ModulationStreamer:
    """Stream a client's frames to its pattern generator (module docstring).

    ``n_frames``: frames to play from ``first_frame`` (rounded up to whole uploads with dark frames;
    ``None``: until :meth:`stop`). ``max_wait_s``: how long the feeder waits for a frame that is not
    ready yet before it plays a dark frame in its place (0: never waits). ``poll_interval_s``: how
    often the feeder asks the generator for a free buffer and for verdicts.
    """

    def __init__(self, generator: PatternGenerator, source: FrameSource, *, first_frame: int = 0,
                 n_frames: int | None = None, queue_frames: int = 16, dark_frames_between: int = 0,
                 max_wait_s: float = 0.0, poll_interval_s: float = 0.001) -> None:
        if source.frame_slots != generator.frame_slots:
            raise ValueError(f"the frame source cuts {source.frame_slots}-slot frames but the generator plays "
                             f"{generator.frame_slots}-slot frames; expected equal frame_slots")
        if n_frames is not None and n_frames < 1:
            raise ValueError(f"n_frames must be >= 1 or None, got {n_frames!r}")
        if queue_frames < generator.frames_per_upload or dark_frames_between < 0 or max_wait_s < 0 or poll_interval_s <= 0:
            raise ValueError("queue_frames >= frames_per_upload, dark_frames_between >= 0, max_wait_s >= 0 and poll_interval_s > 0 "
                             f"expected; got {queue_frames}, {dark_frames_between}, {max_wait_s}, {poll_interval_s}")
        self.generator = generator
        self.source = source
        self.first_frame = int(first_frame)
        per = generator.frames_per_upload
        self.end_frame: int | None = None
        if n_frames is not None:
            self.end_frame = self.first_frame + -(-int(n_frames) // per) * per
        self.requested_end = None if n_frames is None else self.first_frame + int(n_frames)
        self.dark_frames_between = int(dark_frames_between)
        self.max_wait_s = float(max_wait_s)
        self.poll_interval_s = float(poll_interval_s)
        self.record = PlayedFrames(source.frame_slots)
        self.error: str | None = None
        self.uploads = 0
        self.late_frames = 0
        self._queue: queue.Queue[ModulationFrame] = queue.Queue(maxsize=int(queue_frames))
        self._dark: set[int] = set()
        self._next = self.first_frame
        self._produced = self.first_frame
        self._stop = threading.Event()
        self._done = threading.Event()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._on_upload: Callable[[int], None] | None = None

    # -- schedule -----------------------------------------------------------------------------------
    def scheduled_dark(self, index: int) -> bool:
        """True for frames the duty cycle leaves dark, or past the requested end (upload padding)."""
        if self.requested_end is not None and index >= self.requested_end:
            return True
        return self.dark_frames_between > 0 and (index - self.first_frame) % (self.dark_frames_between + 1) != 0

    def _fresh_after(self, f: int) -> int | None:
        """The first fresh (not scheduled dark) frame index >= f, or None past the end."""
        while self.end_frame is None or f < self.end_frame:
            if not self.scheduled_dark(f):
                return f
            f += 1
        return None

    # -- threads --------------------------------------------------------------------------------------
    def _produce_until(self, limit: int | None) -> None:
        """Draw fresh frames in index order into the queue, up to (excluding) ``limit`` (None: the end)."""
        while not self._stop.is_set():
            f = self._fresh_after(self._produced)
            if f is None or (limit is not None and f >= limit):
                return
            frame = self.source.frame(f)
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.05)
                    break
                except queue.Full:
                    continue
            self._produced = f + 1

    def _produce(self) -> None:
        try:
            self._produce_until(None)
        except Exception as exc:  # the client's randomness failed: nothing more can be played
            self.error = f"frame source failed: {type(exc).__name__}: {exc}"
            log.error("client %s: %s", self.source.log.client, self.error)

    def _take(self, index: int) -> ModulationFrame | None:
        """The producer's frame ``index`` if it is (or becomes, within max_wait_s) ready; stale frames of
        indices already decided are discarded."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            try:
                head = self._queue.queue[0] if self._queue.queue else None
            except IndexError:
                head = None
            if head is not None and head.index < index:  # decided already (played dark): discard
                self._queue.get_nowait()
                continue
            if head is not None and head.index == index:
                return self._queue.get_nowait()
            if head is not None:  # the producer is ahead of this index (cannot happen in order), keep it
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._stop.wait(min(remaining, self.poll_interval_s))

    def _next_upload(self) -> tuple[list[ModulationFrame], bool]:
        per = self.generator.frames_per_upload
        frames: list[ModulationFrame] = []
        for f in range(self._next, self._next + per):
            fr = None if self.scheduled_dark(f) else self._take(f)
            if fr is None:
                if not self.scheduled_dark(f):
                    self.late_frames += 1
                    log.warning("client %s: frame %d not ready in time: played dark, recorded lost",
                                self.source.log.client, f)
                self._dark.add(f)
                fr = ModulationFrame.dark_frame(f, self.source.frame_slots)
            frames.append(fr)
        last = self.end_frame is not None and self._next + per >= self.end_frame
        return frames, last

    def _absorb(self, verdicts: list[tuple[int, bool]]) -> None:
        with self._cond:
            for i, played in verdicts:
                self.record.mark(i, played and i not in self._dark)
            self._cond.notify_all()

    def _feed(self) -> None:
        g = self.generator
        try:
            while not self._stop.is_set():
                self._absorb(g.poll_played())
                failed = getattr(g, "failed", None)
                if failed:
                    self.error = failed
                    self._finish_lost()
                    return
                if self.error is not None:  # the producer failed
                    self._absorb(g.stop())
                    self._finish_lost()
                    return
                if self.end_frame is not None and self._next >= self.end_frame:
                    if len(self.record) >= self.end_frame - self.first_frame:
                        return
                    self._stop.wait(self.poll_interval_s)
                    continue
                if g.ready_for_upload():
                    frames, last = self._next_upload()
                    g.upload(frames, last=last)
                    self._next += len(frames)
                    with self._cond:
                        self.uploads += 1
                        self._cond.notify_all()
                    continue
                self._stop.wait(self.poll_interval_s)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("client %s: modulation stream failed: %s", self.source.log.client, self.error)
            try:
                self._absorb(g.stop())
            finally:
                self._finish_lost()
        finally:
            self._done.set()
            with self._cond:
                self._cond.notify_all()

    def _finish_lost(self) -> None:
        """After a failure: every frame up to the end that has no verdict yet is lost."""
        end = self.end_frame if self.end_frame is not None else self._next
        with self._cond:
            for f in range(self.first_frame, max(end, self._next)):
                if f not in self.record:
                    self.record.mark(f, False)
            self._cond.notify_all()

    # -- control ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Arm the generator and start the producer and feeder threads."""
        if self._threads:
            raise RuntimeError("this streamer was started already; make a new one for a new stream")
        self._produce_until(self.first_frame + self.generator.frames_per_upload)  # the first upload is ready
        self.generator.start(self.first_frame)
        self._threads = [threading.Thread(target=self._produce, name=f"modulation-produce-{self.source.log.client}",
                                          daemon=True),
                         threading.Thread(target=self._feed, name=f"modulation-feed-{self.source.log.client}",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def wait_uploads(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` uploads went out (or the stream ended); True if they did."""
        with self._cond:
            return self._cond.wait_for(lambda: self.uploads >= n or self._done.is_set(), timeout) and self.uploads >= n

    def wait_recorded(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` frames have a verdict (or the stream ended)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.record) >= n or self._done.is_set(), timeout) and \
                len(self.record) >= n

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the stream to end (all frames recorded, or a failure); True if it ended."""
        return self._done.wait(timeout)

    def request_stop(self) -> None:
        """Tell the stream's threads to end (without waiting: :meth:`stop` joins them)."""
        self._stop.set()

    def stop(self) -> PlayedFrames:
        """Stop playback now; frames not played are recorded lost. Returns the played-frames record."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self._absorb(self.generator.stop())
        return self.record

    @property
    def done(self) -> bool:
        return self._done.is_set()


class PlayedChoiceLog:
    """A client's :class:`~labqfl.contracts.types.ModulationLog` restricted to what was played: choices for
    slots of played frames; asking for a slot of a lost (or unrecorded) frame raises ``ValueError``
    (filter with ``record.slot_mask`` first). Other attributes (``randomness``, ``generator`` …) are the
    wrapped log's."""

    def __init__(self, log: Any, record: PlayedFrames) -> None:
        self.log = log
        self.record = record
        self.client = log.client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("log", "record"):
            raise AttributeError(name)
        return getattr(self.log, name)

    def __repr__(self) -> str:
        return f"PlayedChoiceLog({self.log!r}, {len(self.record.played)} played / {len(self.record.lost)} lost frames)"

    @classmethod
    def from_table(cls, log: Any, table: np.ndarray, frame_slots: int) -> PlayedChoiceLog:
        """Rebuild from :func:`played_table` rows (frame index, 1 played / 0 lost)."""
        return cls(log, record_from_table(table, frame_slots))

    def _played(self, slots: np.ndarray) -> np.ndarray:
        s = np.asarray(slots, dtype=np.int64)
        ok = self.record.slot_mask(s)
        if not ok.all():
            raise ValueError(f"client {self.client}: {int((~ok).sum())} of {s.size} slots lie in frames that were not "
                             "played (lost or not recorded); expected slots of played frames only (record.slot_mask)")
        return s

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        rec: ModulationRecord = self.log.choices(self._played(slots))
        return rec

    def codes(self, slots: np.ndarray) -> np.ndarray:
        """:meth:`choices` as drive codes k·4 + a (:func:`labqfl.contracts.types.drive_codes`), same check."""
        return drive_codes(self.log, self._played(slots))


def acquisition_slots(duration_s: float | None, rep_rate_hz: float) -> int | None:
    """Slots of an acquisition of ``duration_s`` seconds at ``rep_rate_hz`` (at least 1; ``None``: open-ended)."""
    return None if duration_s is None else max(1, int(round(duration_s * rep_rate_hz)))


def unplayed_frames(record: PlayedFrames, lo: int, hi: int) -> list[int]:
    """Frames overlapping slots ``[lo, hi)`` that ``record`` does not say were played (lost, or no verdict)."""
    f = record.frame_slots
    return [k for k in range(lo // f, -(-hi // f)) if record.status(k) is not True]


def drop_frames(ann: Announcements, frames: list[int], frame_slots: int) -> Announcements:
    """``ann`` without its slots in the given frames (frames of ``frame_slots`` slots)."""
    if not frames or ann.slots.size == 0:
        return ann
    keep = ~np.isin(ann.slots // int(frame_slots), np.asarray(frames, dtype=np.int64))
    return ann if keep.all() else Announcements(ann.pair, ann.slots[keep], ann.outcomes[keep])


def played_table(record: PlayedFrames) -> np.ndarray:
    """A played-frames record as an (n, 2) int64 table: frame index, 1 (played) or 0 (lost), by index;
    what a recording keeps per client (public: it says which frames were played, nothing of the choices)."""
    idx, ok = record.as_arrays()
    return np.column_stack([idx, ok.astype(np.int64)]).astype(np.int64).reshape(-1, 2)


def record_from_table(table: np.ndarray, frame_slots: int) -> PlayedFrames:
    """Inverse of :func:`played_table`."""
    t = np.asarray(table, dtype=np.int64).reshape(-1, 2)
    rec = PlayedFrames(frame_slots)
    for f, ok in t.tolist():
        rec.mark(int(f), bool(ok))
    return rec


class ClientStreams:
    """Every client's :class:`ModulationStreamer` for one acquisition of ``n_slots`` slots from slot 0
    (``None``: open-ended, until :meth:`finish`).

    ``generators`` and ``logs``: by client name (the client's pattern generator and its own choice log of
    this acquisition). Each client plays ``ceil(n_slots / F)`` frames from frame 0; a frame not ready
    within ``max_wait_s`` is played dark and recorded lost. :attr:`played` is each client's
    :class:`PlayedFrames` record as it fills (verdicts arrive as the generator plays); :meth:`finish`
    waits for the generators' verdicts, stops the streams and returns each client's record;
    :meth:`played_logs` restricts each log to its played frames (what the client's post-processing reads).
    """

    def __init__(self, generators: dict[str, PatternGenerator], logs: dict[str, Any], n_slots: int | None, *,
                 max_wait_s: float = 1.0, poll_interval_s: float = 0.01) -> None:
        if n_slots is not None and int(n_slots) < 1:
            raise ValueError(f"n_slots must be >= 1 or None (open-ended), got {n_slots!r}")
        missing = sorted(set(generators) - set(logs))
        if missing:
            raise ValueError(f"no choice log for client(s) {missing}; every client with a pattern generator needs its own")
        self.n_slots = None if n_slots is None else int(n_slots)
        self.streamers: dict[str, ModulationStreamer] = {}
        for c, g in generators.items():
            f = g.frame_slots
            n_frames = None if self.n_slots is None else -(-self.n_slots // f)
            # the generator's duty cycle (station: pattern_generator.options.dark_frames_between): its link
            # carries only that share of fresh frames; the dark ones are recorded lost, never key slots
            self.streamers[c] = ModulationStreamer(g, FrameSource(logs[c], f), n_frames=n_frames,
                                                   dark_frames_between=int(getattr(g, "dark_frames_between", 0)),
                                                   max_wait_s=max_wait_s, poll_interval_s=poll_interval_s)
        self.records: dict[str, PlayedFrames] = {}

    @property
    def played(self) -> dict[str, PlayedFrames]:
        """Each client's played-frames record, live: the same objects :meth:`finish` returns."""
        return {c: st.record for c, st in self.streamers.items()}

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has stopped every stream."""
        return len(self.records) == len(self.streamers)

    def start(self) -> None:
        """Start every client's stream (all of them stopped again if one fails to start)."""
        started: list[ModulationStreamer] = []
        try:
            for st in self.streamers.values():
                st.start()
                started.append(st)
        except BaseException:
            for st in started:
                st.stop()
            raise

    @classmethod
    def start_for(cls, generators: dict[str, PatternGenerator], logs: dict[str, Any], duration_s: float | None,
                  rep_rate_hz: float, *, max_wait_s: float = 1.0) -> ClientStreams | None:
        """Start every client's stream for an acquisition of ``duration_s`` seconds at ``rep_rate_hz`` slots/s
        just begun (``None``: open-ended); None when no client has a generator. The one start of the clients'
        streams: the application layer's :class:`~labqfl.app.acquire.Acquisition` (through
        :func:`labqfl.app.station.start_client_streams`) and a client node (:mod:`labqfl.nodes.client`)."""
        if not generators:
            return None
        streams = cls(generators, logs, acquisition_slots(duration_s, rep_rate_hz), max_wait_s=max_wait_s)
        streams.start()
        return streams

    def finish(self, timeout_s: float = 30.0) -> dict[str, PlayedFrames]:
        """Wait (at most ``timeout_s`` for all of them together; an open-ended stream: not at all) for the
        streams to end, stop them; every client's record. A second call returns the same records. The
        first call logs each client's frames played and lost.

        The streams wait against one deadline and are told to stop all at once before each is joined, so
        the exit after a SIGTERM takes ``timeout_s`` (plus the threads' prompt exit), not ``timeout_s`` per
        client one after another (review s33 L5: 20 s for 4 clients); every stream's threads have ended
        (or were given :meth:`ModulationStreamer.stop`'s join) before its record is returned."""
        first = not self.finished
        deadline = time.monotonic() + max(float(timeout_s), 0.0)
        pending = {c: st for c, st in self.streamers.items() if c not in self.records}
        for c, st in pending.items():
            if st.end_frame is not None and not st.join(max(deadline - time.monotonic(), 0.0)):
                log.warning("client %s: its stream did not end within %g s; stopped, unplayed frames lost", c, timeout_s)
        for st in pending.values():
            st.request_stop()  # every stream's threads wind down at once
        for c, st in pending.items():
            self.records[c] = st.stop()
        if first:
            for c, m in self.summary().items():
                log.info("client %s: %d of %d frames played, %d lost (%d late, %d dark by the duty cycle)%s", c,
                         m["played"], m["frames"], m["lost"], m["late"], m.get("dark", 0),
                         f"; {m['error']}" if m["error"] else "")
        return dict(self.records)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per client, over the acquisition's frames (not the dark padding of the last upload): frames,
        played, lost (late, underflow, cut off, or dark by the duty cycle), late (played dark), the stream's error and, with a duty cycle
        (``dark_frames_between`` > 0), dark: frames it left dark (no key slots, by design; counted in lost)."""
        out: dict[str, dict[str, Any]] = {}
        for c, st in self.streamers.items():
            end = st.requested_end if st.requested_end is not None else st.first_frame + len(st.record)
            played = sum(1 for f in st.record.played if f < end)
            out[c] = {"frames": end - st.first_frame, "played": played, "lost": end - st.first_frame - played,
                      "late": st.late_frames, "error": st.error}
            if st.dark_frames_between:  # only with a duty cycle, so the summary's keys stay as they were
                out[c]["dark"] = sum(1 for f in range(st.first_frame, end) if st.scheduled_dark(f))
        return out

    def played_logs(self, logs: dict[str, Any]) -> dict[str, Any]:
        """Each log restricted to its client's played frames (clients without a stream: unchanged); the
        records are live (:attr:`played`), so before :meth:`finish` a frame without a verdict yet is refused."""
        played = self.played
        return {c: PlayedChoiceLog(lg, played[c]) if c in played else lg for c, lg in logs.items()}
