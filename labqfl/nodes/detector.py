"""The untrusted measurement node: ``labqfl node detector``.

It owns the time tagger and the slotting. Its tags are the optical-layer node's simulated loop's (session
``optics/tags``: one :class:`~labqfl.instruments.base.TagBlock` per ``tags/next``), taken as they come with the
simulated tagger, or recorded through the real Swabian driver on its emulated SDK
(``simulation.emulate_time_tagger``, :mod:`labqfl.sim_backends.timetagger_sdk`: event divider, delays, dead
time and lost data as the instrument applies them; the overflows and missed events of each acquisition in
``ctl/ran``); it knows nothing of any client's choices. Per tag block it slots the tags
(:class:`~labqfl.qkd.slotting.Slotter`), splits the clicks by the pair scheduled in each slot
(:func:`~labqfl.qkd.slotting.announcements_by_pair`) and announces them to **both** clients of
every pair, each over its own session to that client (service ``ann`` on the client):

* ``ann/chunks {lo, hi, pairs, dropped, offsets, slot_gaps, slot_big_at, slot_big, outcomes}`` — one
  message per client and at least :data:`ANN_BATCH_S` of station time (the tag blocks slotted since the
  last one), for all of that client's pairs (:func:`chunks_message`): ``pairs`` the pair names
  (comma-separated), and per pair ``k`` its clicked slots in ``[lo, hi)`` (the slots final after the
  last of those tag blocks) ``slots[offsets[k]:offsets[k+1]]`` (``slots``: the ``slot_*`` fields,
  gaps from ``lo``, decoded by :func:`labqfl.nodes.wire.decode_gaps`) and which detector clicked there
  (``outcomes``, the same cut: 1 D0, 2 D1, 3 both); ``dropped[k]``: the pair's slots slotting had
  to drop there (lost tagger data). The client splits it into one chunk per pair
  (:func:`labqfl.nodes.client.split_chunks`), the chunks one ``ann/chunk`` per pair and client
  carried until 2026-12-04 (one request/reply round trip per pair instead of per client);
* ``ann/end {final}`` — the acquisition's last slot (exclusive).

Each client checks these against their schemas before reading a field
(:data:`labqfl.nodes.client.ANN_MESSAGES`: an unknown, missing or mistyped field ends the session with one
error naming this node and the field), and this node checks each reply likewise (:data:`ANN_REPLIES`:
``ann/ok``, no field).

These sessions are protected by TLS only: the detector is untrusted anyway. What each client
received is absorbed into its pair transcripts as a local entry (:mod:`labqfl.qkd.twoparty`),
so a detector that tells the two clients different things gets the block refused.

Control: ``ctl/run {acq, duration, block_duration, optics, clients}`` runs one acquisition
(``optics``: address of the optics node, ``clients``: JSON ``{name: address}``) and answers
``ctl/ran`` with its public statistics: slots, tags, clicks, blocks, dropped slots, tags per channel (and per
channel and :data:`COUNT_BIN_S` of acquisition time, ``channel_counts_series``: the run's count-rate series),
``slotting`` (JSON: the slotter's counters by cause, :class:`~labqfl.qkd.slotting.SlottingStats`, as the
in-process path reports them) and, with the real driver, the tagger's overflows and missed events.

**Its instruments.** The detection node owns the station's master clock, laser, detectors D0/D1, time
tagger and power meter (:data:`~labqfl.nodes.common.DETECTION_ROLES`: in a Sagnac loop the source and
the detectors sit at the untrusted node, docs/lab_setup.md). Those with a real driver it opens through
:func:`labqfl.station.open_driver` when it starts (operating point written, outputs off), arms for each
``ctl/run`` (laser on, detectors armed: the in-process ``Acquisition``'s rule) and puts in their safe
state after it, on SIGTERM/SIGINT and at exit (:class:`~labqfl.nodes.common.NodeInstruments`). The light is
the optics node's simulation, built from the same station file, unless the tagger is a real one on real
hardware: then the light is the lab's, there is no optics node, and the node records through the driver with
its master clocks held until the tagger records (:func:`~labqfl.station.hold_master_clocks`).
With ``simulation.emulate_detectors`` the detectors' WebSQ controllers are emulated in this process
(:func:`~labqfl.station.emulated_detectors`) and the Eos driver is pointed at them; every ``ctl/run`` arms them
to the station file's bias, the operating point at which the optics node's loop simulates its detectors. Their
count streams (``SingleQuantumEos.count_rate_hz``) report what the nanowires see: during a ``ctl/run`` the
clicks of the tag blocks this node slots (every block is fed to the controllers,
:meth:`~labqfl.sim_backends.websq.EmulatedDetectors.feed`: recent click rate × measurement period), otherwise
dark counts at the controller's bias (0 on a disabled channel), :class:`~labqfl.sim_backends.websq.BlockCounts`.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import Announcements, duration_problem
from labqfl.errors import AcquisitionRefused
from labqfl.instruments.base import TagBlock
from labqfl.log import get_logger
from labqfl.nodes.common import (
    END_CHECK_REFUSED,
    Node,
    NodeError,
    RecordedChannel,
    check_node_station,
    ok,
    open_session,
    refuse,
    simulated_light,
)
from labqfl.nodes.optics import block_of
from labqfl.nodes.wire import encode_gaps
from labqfl.qkd.messaging import Message, MessageError, MessageSchema, field_problem
from labqfl.qkd.slotting import (
    PairSlotter,
    SlotEvents,
    Slotter,
    SlottingParams,
    announcements_by_pair,
    make_slotter,
)
from labqfl.station import (
    clicked_until_end,
    emulated_detectors,
    hold_master_clocks,
    refuse_faulty_acquisition,
)

log = get_logger(__name__)

#: Tag blocks the detector asks the optics for ahead of the one it slots (:meth:`DetectorNode._optics_blocks`).
TAGS_AHEAD = 1
#: Station time the detector's announcements cover at least, per ``ann/chunks`` [s]: the clicks of several
#: tag blocks go to each client in one message (a client sifts batches of about this span anyway,
#: ``DistillSettings.sift_batch_slots``); the last one covers what is left.
ANN_BATCH_S = 0.5
#: Acquisition time per bin of ``ctl/ran``'s ``channel_counts_series`` (tags per channel per bin, by the tags'
#: timestamps) [s]: ``labqfl run``'s count-rate series over nodes (review s36 F2: it had one point per run).
COUNT_BIN_S = 1.0


def _by_channel(per_bin: dict[int, dict[int, int]]) -> dict[int, list[int]]:
    """{channel: tags per bin 0, 1, …, last bin} from :func:`count_bins`'s {bin: {channel: tags}}."""
    n = max(per_bin, default=-1) + 1
    chans = sorted({ch for d in per_bin.values() for ch in d})
    return {ch: [per_bin.get(k, {}).get(ch, 0) for k in range(n)] for ch in chans}


def count_bins(block: TagBlock, bins: dict[int, dict[int, int]]) -> None:
    """Add ``block``'s tags per channel (:meth:`TagBlock.channel_counts`, the one definition) to ``bins``
    ({bin: {channel: tags}}, bin ``k`` the timestamps in [k, k + 1)·:data:`COUNT_BIN_S`); the timestamps are
    non-decreasing, so the block is cut at the bin edges it spans (usually none: a block is ~50 ms)."""
    if not len(block):
        return
    width = int(round(COUNT_BIN_S * 1e12))
    first, last = int(block.timestamps[0]) // width, int(block.timestamps[-1]) // width
    edges = np.searchsorted(block.timestamps, np.arange(first + 1, last + 1, dtype=np.int64) * width).tolist()
    for k, (a, b) in enumerate(zip([0, *edges], [*edges, len(block)], strict=True)):
        if b > a:
            TagBlock(block.timestamps[a:b], block.channels[a:b]).channel_counts(bins.setdefault(first + k, {}))

__all__ = ["ANN_REPLIES", "DetectorNode", "announce_to", "chunks_message"]

#: The replies a client gives on ``ann`` (:class:`labqfl.nodes.client._Announced`): the detector checks each one
#: (:func:`announce_to`) and reads no field of one that does not match.
ANN_REPLIES: dict[str, MessageSchema] = {"ann/ok": MessageSchema(), "node/refused": MessageSchema({"reason": "str"})}


def announce_to(ch: Any, msg: Message, client: str) -> None:
    """``msg`` (``ann/chunks`` or ``ann/end``) to ``client``; its reply must be ``ann/ok`` as :data:`ANN_REPLIES`
    has it: another kind, or an unknown field, raises :class:`MessageError` naming the client and the field; a
    refusal raises :class:`NodeError` with its reason."""
    rep = ch.request(msg)
    if why := field_problem(rep, ANN_REPLIES, f"client {client} (ann reply to {msg.kind!r})"):
        raise MessageError(why)
    if rep.kind != "ann/ok":
        raise NodeError(f"client {client} refused {msg.kind}: {rep.get('reason')}")


class DetectorNode(Node):
    """``labqfl node detector`` (module docstring)."""

    role = "detector"

    def __init__(self, name: str = "detector", *, optics: str = "", optics_name: str = "optics",
                 clients: dict[str, str] | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        check_node_station(self.cfg, str(self.station_path or "the embedded station"))
        #: the light is the optics node's simulated loop; False: a real tagger on real hardware, the lab's light
        self.light_simulated = simulated_light(self.cfg)
        self.optics, self.optics_name = optics, optics_name
        self.clients = dict(clients or {})
        self.schedule = PairSchedule.from_config(self.cfg)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.cfg.client_names)), thread_name_prefix="announce")
        #: the sessions of the acquisitions running now (the optics' tags, the clients' announcements): a stopping
        #: node aborts them (:meth:`shutdown`), so no acquisition outlives its SIGTERM waiting on a peer
        self._sessions: set[RecordedChannel] = set()
        self._sessions_lock = threading.Lock()
        #: the emulated WebSQ controllers (``simulation.emulate_detectors``), fed every tag block slotted here
        self.detector_emulators: Any = None
        if self.cfg.simulation.emulate_detectors:
            # the detectors' emulated WebSQ controllers live in this process, the one that opens the detectors,
            # for its whole life (a controller on the bench); no light here: the loop is the optics node's
            self.detector_emulators = emulated_detectors(self.cfg)
            self.instruments.cfg = self.detector_emulators.station_config(self.cfg)
            for emu in self.detector_emulators.emulators:
                log.info("detector: emulated SNSPD controller (WebSQ) of %s: control port %d, counts port %d",
                         ", ".join(r for r, (e, _) in self.detector_emulators.by_role.items() if e is emu),
                         emu.control_port, emu.counts_port)

    def ctl_run(self, req: Message) -> Message:
        acq = str(req.get("acq"))
        duration = float(req.get("duration"))
        bd = float(req.fields.get("block_duration", 0.0))
        if (problem := duration_problem(duration)) is not None:
            raise NodeError(f"ctl/run: duration {problem}")
        optics = str(req.fields.get("optics", "")) or self.optics
        clients = {**self.clients, **json.loads(str(req.fields.get("clients", "{}")))}
        missing = [c for c in self.cfg.client_names if c not in clients]
        if (self.light_simulated and not optics) or missing:
            raise NodeError(f"addresses missing: optics={optics or '?'}, clients {missing}")
        self.instruments.arm()  # laser on, detectors armed (nothing with simulated ones)
        emus = self.detector_emulators
        try:
            with emus.acquisition() if emus is not None else contextlib.nullcontext():  # their counts: the blocks
                return self._run(acq, duration, bd, optics, clients)
        except AcquisitionRefused as e:  # marked: the operator asks the clients what they stored from it
            log.warning("node %s: ctl/run failed: %s", self.name, e)
            return refuse(f"ctl/run: {e}", **{END_CHECK_REFUSED: acq})
        finally:
            self.instruments.disarm()  # the safe state after the acquisition, as in process

    def shutdown(self) -> None:
        """SIGTERM/SIGINT (or ``ctl/stop``): the acquisitions running now end at once. Their sessions are aborted,
        so a ``tags/next`` the optics does not answer, or an announcement a stopping client does not take, fails
        now instead of holding this process until its peer ends (its instruments are already in their safe
        state: :meth:`Node.serve`). A detector holds no key material: nothing is left half-stored."""
        with self._sessions_lock:
            live = list(self._sessions)
        for ch in live:
            ch.abort()

    def _session(self, address: str, peer: str, service: str, fields: dict[str, Any]) -> RecordedChannel:
        """A session of a running acquisition, aborted if this node is stopping (:meth:`shutdown`)."""
        if self.stopping.is_set():
            raise NodeError(f"node {self.name} is stopping: the acquisition ends")
        ch = open_session(address, self.creds, peer, service, fields=fields)
        with self._sessions_lock:
            self._sessions.add(ch)
        if self.stopping.is_set():  # the stop came while the session opened: shutdown() may not have seen it
            self._end_session(ch)
            raise NodeError(f"node {self.name} is stopping: the acquisition ends")
        return ch

    def _end_session(self, ch: RecordedChannel) -> None:
        with self._sessions_lock:
            self._sessions.discard(ch)
        if self.stopping.is_set():
            ch.abort()
        else:
            ch.close()

    def _run(self, acq: str, duration: float, bd: float, optics: str, clients: dict[str, str]) -> Message:
        t0 = time.perf_counter()
        slotter = make_slotter(SlottingParams.from_config(self.cfg), self.schedule)
        chans: dict[str, RecordedChannel] = {}
        try:
            for c in self.cfg.client_names:
                chans[c] = self._session(clients[c], c, "ann", {"acq": acq})
        except BaseException:
            for ch in chans.values():
                self._end_session(ch)
            raise
        end: dict[str, int] = {}
        light = self._optics_blocks(optics, acq, duration, bd, end) if self.light_simulated else None
        tagger: Any = self.instruments.instruments.get("time_tagger")  # a real driver (on its emulated SDK or not)
        blocks: Iterator[TagBlock]
        if light is None:  # the lab's light: slot 0 is the master clock's first pulse, which the tagger records
            restart = hold_master_clocks(self.instruments.instruments.values())
            blocks = tagger.stream(duration, bd or None, **({"on_recording": restart} if restart is not None else {}))
        elif tagger is not None:
            tagger.sdk.prepare(light)  # what the emulated instrument records next
            blocks = tagger.stream(duration, bd or None)
        else:
            blocks = light
        n_tags = n_clicks = n_blocks = 0
        per_channel: dict[int, int] = {}  # tags per tagger channel (public: the count rates)
        clicked: set[str] = set()  # detectors that clicked until the latest block's end: the end check skips them
        per_bin: dict[int, dict[int, int]] = {}  # the same per COUNT_BIN_S of acquisition time (count-rate series)
        prev = 0
        held: list[SlotEvents] = []  # slotted clicks of [prev, final) not yet announced
        batch_slots = max(1, int(round(ANN_BATCH_S * self.cfg.laser.rep_rate_hz)))
        feed = self.detector_emulators.feed if self.detector_emulators is not None else None
        try:
            for block in blocks:
                if self.stopping.is_set():  # a real tagger's stream: stop at the next block
                    raise NodeError(f"node {self.name} is stopping: acquisition {acq} ends before its end")
                if feed is not None:  # what the emulated controllers' nanowires see
                    feed(block)
                n_tags += int(block.timestamps.size)
                clicked = clicked_until_end(block, self.cfg.time_tagger.detector_channels)
                for tch, n in block.channel_counts().items():
                    per_channel[tch] = per_channel.get(tch, 0) + n
                count_bins(block, per_bin)
                n_blocks += 1
                events = slotter.push(block)
                n_clicks += int(events.slots.size)
                held.append(events)
                final = slotter.final_slots
                if final - prev >= batch_slots:  # one ann/chunks per client for several tag blocks
                    self._announce(chans, slotter, SlotEvents.joined(held), prev, final)
                    held, prev = [], final
            total = end.get("n_slots", max(1, int(round(duration * self.cfg.laser.rep_rate_hz))))
            events = slotter.finish()
            final = max(total, slotter.last_emitted + 1)
            n_clicks += int(events.slots.size)
            # the laser still on, the detectors still armed and not latched, before the clients hear the end
            refuse_faulty_acquisition(self.instruments.acquisition_faults(clicked), f"acquisition {acq}",
                                      "the clients keep the key blocks they already stored from it; its "
                                      "remaining slots are not announced and their sifted bits are dropped")
            self._announce(chans, slotter, SlotEvents.joined([*held, events]), prev, final)
            for c, ch in chans.items():
                announce_to(ch, Message("ann/end", {"final": final}), c)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()
            if light is not None:
                light.close()
            for ch in chans.values():
                self._end_session(ch)
        wall = time.perf_counter() - t0
        lost = {} if tagger is None else {"tagger_overflows": int(tagger.last_stream_overflows),
                                          "tagger_missed_events": int(tagger.last_stream_missed_events)}
        log.info("detector: acquisition %s: %d tag blocks, %d tags, %d clicks, %d slots (%d dropped) in %.2f s%s", acq,
                 n_blocks, n_tags, n_clicks, final, slotter.dropped.count(0, final), wall,
                 "" if tagger is None else f"; tagger ({type(tagger).__name__}): {lost}")
        return ok("ctl/ran", slots=int(final), tags=n_tags, clicks=n_clicks, blocks=n_blocks, wall_s=wall,
                  dropped=int(slotter.dropped.count(0, final)), channel_counts=json.dumps(per_channel),
                  channel_counts_series=json.dumps({"bin_s": COUNT_BIN_S, "counts": _by_channel(per_bin)}),
                  slotting=json.dumps(vars(slotter.stats)), **lost)

    def _optics_blocks(self, optics: str, acq: str, duration: float, bd: float,
                       end: dict[str, int]) -> Generator[TagBlock, None, None]:
        """The optics node's simulated tagger's blocks of acquisition ``acq`` (session ``optics/tags``, opened at
        the first block asked for); ``end["n_slots"]``: the acquisition's slots, once the optics said
        ``tags/end``.

        The next block is asked for while this one is slotted and announced (:data:`TAGS_AHEAD` blocks ahead,
        by a thread of its own): the optics simulates block b + 1 while this node and the clients work on
        block b, instead of each waiting for the other. The blocks come in the order the optics sent them.
        If the consumer stops early, the session is aborted (a request in flight ends at once)."""
        tags = self._session(optics, self.optics_name, "optics/tags",
                             {"acq": acq, "duration": duration, "block_duration": bd})
        got: queue.Queue[TagBlock | BaseException | None] = queue.Queue()
        room = threading.Semaphore(TAGS_AHEAD)
        stop = threading.Event()

        def fetch() -> None:
            try:
                while True:
                    room.acquire()
                    if stop.is_set():
                        return
                    rep = tags.request(Message("tags/next", {}))
                    if rep.kind == "tags/end":
                        end["n_slots"] = int(rep.get("n_slots"))
                        got.put(None)
                        return
                    if rep.kind != "tags/block":
                        raise NodeError(f"optics answered {rep.kind!r} to tags/next")
                    got.put(block_of(rep))
            except BaseException as e:  # handed to the consumer, which raises it
                got.put(e)

        ahead = threading.Thread(target=fetch, name=f"tags-{acq}", daemon=True)
        ahead.start()
        finished = False
        try:
            while True:
                item = got.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                room.release()
                yield item
        finally:
            stop.set()
            room.release()  # a fetcher waiting for room sees the stop
            if not finished and ahead.is_alive():
                tags.abort()  # a request in flight ends now
            ahead.join()
            self._end_session(tags)

    def _announce(self, chans: dict[str, RecordedChannel], slotter: Slotter | PairSlotter, events: Any, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        parts: dict[str, list[tuple[str, int, Announcements]]] = {c: [] for c in chans}
        for name, ann in announcements_by_pair(events, self.schedule).items():
            dropped = int(slotter.dropped_slots_of_pair(self.schedule, name, lo, hi))
            a, b = self.schedule.pairs[self.schedule.names.index(name)]
            for c in (a, b):  # each client of the pair receives its own copy
                parts[c].append((name, dropped, ann))
        out = {c: chunks_message(lo, hi, p) for c, p in parts.items() if p}

        def send(c: str) -> None:  # one message per client and announcement; the clients in parallel
            announce_to(chans[c], out[c], c)

        for f in [self._pool.submit(send, c) for c in out]:
            f.result()


def chunks_message(lo: int, hi: int, parts: list[tuple[str, int, Announcements]]) -> Message:
    """``ann/chunks`` (module docstring): one client's announcements of slots ``[lo, hi)`` for each of
    its pairs, ``parts`` = (pair, dropped slots, announcements) in the order the client splits them
    back (:func:`labqfl.nodes.client.split_chunks`). The pairs' slots, one after the other, travel as
    gaps from ``lo`` (``slot_gaps``, ``slot_big_at``, ``slot_big``: :func:`labqfl.nodes.wire.encode_gaps`;
    they ascend within a pair, a few slots apart, so about one byte a slot instead of eight, and each
    pair's first slot is an escape)."""
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([p[2].slots.size for p in parts], out=offsets[1:])
    slots = np.concatenate([np.asarray(p[2].slots, np.int64) for p in parts]) if parts else np.zeros(0, np.int64)
    return Message("ann/chunks", {
        "lo": int(lo), "hi": int(hi), "pairs": ",".join(p[0] for p in parts),
        "dropped": np.asarray([p[1] for p in parts], np.int64), "offsets": offsets,
        **encode_gaps(slots, base=int(lo), prefix="slot_"),
        "outcomes": np.concatenate([np.asarray(p[2].outcomes, np.uint8) for p in parts]) if parts
        else np.zeros(0, np.uint8)})


def main(name: str, station: str | Path | None, data: str | Path, listen: str, certs: str | Path,
         optics: str = "", clients: dict[str, str] | None = None, as_json: bool = False) -> None:
    DetectorNode(name, station=station, data_dir=data, listen=listen, certs=certs, optics=optics,
                 clients=clients).serve(as_json)
