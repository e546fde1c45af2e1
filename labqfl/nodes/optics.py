"""The simulated optical layer as its own node: ``labqfl node optics``.

It stands in for the laser, the fibres and the loop, the clients' modulators and the detectors,
and delivers time tags to the detection node's (simulated) time tagger — nothing else
(docs/decisions/0004-optical-layer-process.md). It runs the Monte-Carlo of
:class:`~labqfl.sim_backends.testbed.SagnacTestbed` with ``modulation_on_demand``: per window of
slots it draws the candidate photon slots (thinning at p_max: a function of the channel seeds and
the link budget, never of a choice), asks each client, over the **modulator link the client
opened** (service ``optics/modulator``), what it applied in those slots only, and finishes the
clicks, detectors and tagger with the testbed's own kernels. Its cost grows with detections.

Services:

* ``optics/modulator`` (peers: the station's clients; opened by the client, hello
  ``{acq}``): the client sends ``mod/ready`` and then ``mod/applied {codes}`` (uint8, k·4 + a per
  asked slot); every answer is the next ``mod/query {runs, bits, n}`` (the asked slots of a window,
  ascending: the Monte-Carlo's candidate bitmap over the runs of the client's frames, one bit per slot;
  or, for slots asked one by one, ``{gaps, big_at, big}``, mostly a byte per slot:
  :func:`query_slots` reads both, the codecs of :mod:`labqfl.nodes.wire`), or ``mod/end``.
* ``optics/tags`` (peer: the detection node; hello ``{acq, duration, block_duration}``): waits
  for every client's modulator link of ``acq``, then ``tags/next`` → ``tags/block {ts_gaps, ts_big_at,
  ts_big, ch}`` (the int64 ps timestamps as gaps, the channels as uint8 when they fit, else int16:
  :func:`block_fields` / :func:`block_of`) per simulated block, ``tags/end {n_slots}`` after the last.

**Emulated pattern generators** (``simulation.emulate_pattern_generators``, clients with a
``pattern_generator`` role on a loopback address): the emulated Pulse Streamers are served by this
process (the testbed starts them, :attr:`~labqfl.sim_backends.testbed.SagnacTestbed.hardware`); each
such client node streams its own frames to its generator through the real driver, and the loop plays
the generators in virtual time and reads only what they played, so the optics never asks those
clients' modulator links anything (the link then only tells the client that the acquisition ended:
``mod/end``). The generators' clocks are aligned when the first modulator link of an acquisition
arrives, before any client of it starts its stream.

The optics learns a client's choices in the candidate slots (about the fraction p_max of the
slots its pair holds), as the light passing through its modulator would; it keeps none of them,
announces nothing and holds no key.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from labqfl.contracts.types import ModulationLog, ModulationRecord, drive_codes, duration_problem
from labqfl.errors import LabqflError
from labqfl.instruments.base import TagBlock
from labqfl.log import get_logger
from labqfl.net import ServedSession
from labqfl.nodes.common import Node, NodeError, ok
from labqfl.nodes.wire import (
    decode_channels,
    decode_gaps,
    decode_slot_bits,
    encode_channels,
    encode_gaps,
    slot_bits_fields,
    slot_bits_of,
)
from labqfl.qkd.messaging import Message, MessageError

log = get_logger(__name__)

__all__ = ["OpticsNode", "ModulatorLink"]

#: How long the optics waits for a client's answer or for every client's link [s].
LINK_TIMEOUT_S = 120.0


def encode_query_slots(slots: np.ndarray) -> dict[str, Any]:
    """The fields of a ``mod/query`` for ``slots`` (int64): their gaps (s_{−1} = 0) as ``gaps``,
    ``big_at``, ``big`` (:func:`labqfl.nodes.wire.encode_gaps`). A client's candidate slots ascend
    with gaps of a few slots inside its frames, so a query is about one byte per slot instead of
    eight (what the optics encrypts and sends, and the client receives, per window); any int64
    array round-trips exactly (:func:`query_slots`)."""
    return encode_gaps(slots)


def query_slots(msg: Message) -> np.ndarray:
    """The asked slots (int64) of a ``mod/query``: as a bitmap over runs (``bits``, the Monte-Carlo's
    questions: :func:`labqfl.nodes.wire.decode_slot_bits`), as gaps (the inverse of
    :func:`encode_query_slots`), or a ``slots`` field (int64) read as it is."""
    if "bits" in msg.fields:
        return decode_slot_bits(msg)
    return decode_gaps(msg, plain="slots")


def answer_codes(log_: ModulationLog, msg: Message) -> np.ndarray:
    """A client's answer to a ``mod/query``: the drive codes k·4 + a of the asked slots, ascending. A
    bitmap question goes to the log class's own ``codes_of_bitmap`` where it has one (the generators of
    :mod:`labqfl.sim_backends.qrng`: the runs' dense pattern, gathered at the set bits, without decoding the
    slots), checked first (:func:`labqfl.nodes.wire.slot_bits_of`); otherwise the slots are decoded
    (:func:`query_slots`) and asked of the log (:func:`~labqfl.contracts.types.drive_codes`). As there, the
    method is looked up on the class: a wrapper that forwards unknown attributes
    (:class:`labqfl.modulation.PlayedChoiceLog`) keeps its own checks."""
    own = getattr(type(log_), "codes_of_bitmap", None)
    if own is not None and "bits" in msg.fields:
        return cast(np.ndarray, own(log_, *slot_bits_of(msg)))
    return drive_codes(log_, query_slots(msg))


def block_fields(b: TagBlock) -> dict[str, Any]:
    """The fields of a ``tags/block`` for ``b``: its timestamps (ps) as gaps from 0 (``ts_gaps``,
    ``ts_big_at``, ``ts_big``: :func:`labqfl.nodes.wire.encode_gaps`; they ascend within a block,
    about 435 ns apart at 2.3 M tags/s, so four bytes a tag instead of eight; any int64 comes back
    exactly) and its channels as ``ch`` (uint8 when they fit, else int16). The inverse is
    :func:`block_of`."""
    return {**encode_gaps(b.timestamps, prefix="ts_"), "ch": encode_channels(b.channels)}


def block_of(msg: Message) -> TagBlock:
    """The :class:`TagBlock` of a ``tags/block`` (:func:`block_fields`; a ``ts`` field, int64, is read
    as it is); timestamps and channels of different counts raise :class:`MessageError`."""
    ts = decode_gaps(msg, prefix="ts_", plain="ts")
    ch = decode_channels(msg, "ch")
    if ts.shape != ch.shape:
        raise MessageError(f"tags/block: {ts.size} timestamps but {ch.size} channels in field 'ch' "
                           "(expected one channel per timestamp)")
    return TagBlock(ts, ch)


class ModulatorLink:
    """The optics' end of one client's modulator link for one acquisition.

    The client drives the session (it opened it); each of its requests is answered with the
    optics' next question. :meth:`ask` (called by the Monte-Carlo) puts a question and returns
    the wait for the client's answer (:meth:`choices`: both at once): the only way a choice
    reaches the optics. ``levels``: the client's number of intensity levels in the station file; an
    answer naming a level it does not have is refused (the Monte-Carlo's table holds no such row).
    """

    def __init__(self, client: str, levels: int) -> None:
        self.client = client
        self.levels = int(levels)
        self._questions: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._answers: queue.Queue[np.ndarray | BaseException] = queue.Queue()
        self.asked_slots = 0

    # served side (the client's session thread)
    def handle(self, req: Message) -> Message:
        if req.kind == "mod/applied":
            self._answers.put(np.asarray(req.get("codes"), dtype=np.uint8))
        elif req.kind != "mod/ready":
            raise MessageError(f"modulator link of {self.client}: unexpected {req.kind!r}")
        q = self._questions.get()
        if q is None:
            return ok("mod/end")
        return ok("mod/query", **q)

    def on_close(self, error: BaseException | None) -> None:
        # a Monte-Carlo waiting for this client's answer stops at once (after mod/end nobody waits)
        self.abort(f"lost: {error}" if error is not None else "closed by the client")

    def abort(self, why: str) -> None:
        """Whoever waits for this client's answer gets a :class:`NodeError` now, and the client's session,
        if it waits for a question, ``mod/end``."""
        self._answers.put(NodeError(f"modulator link of client {self.client} {why}"))
        self._questions.put(None)

    # the Monte-Carlo's side
    def ask(self, slots: np.ndarray) -> Callable[[], np.ndarray]:
        """Put the question "what did you apply in ``slots``?" and return the wait for its answer,
        the drive codes k·4 + a, so that the Monte-Carlo asks every client of a window before it
        waits for any (the clients answer in parallel; :meth:`SagnacTestbed._ask_candidates`)."""
        s = np.ascontiguousarray(slots, dtype=np.int64)
        self._questions.put(encode_query_slots(s))
        return lambda: self._answer(int(s.size))

    def ask_bits(self, runs: np.ndarray, words: np.ndarray, n: int) -> Callable[[], np.ndarray]:
        """:meth:`ask` for ``n`` slots given as a bitmap over ``runs`` (the slots of this client's frames in a
        window, :func:`labqfl.nodes.wire.slot_bits_fields`): what the Monte-Carlo's first pass drew, sent
        without a copy or an encoding per slot."""
        self._questions.put(slot_bits_fields(runs, words, n))
        return lambda: self._answer(int(n))

    def _answer(self, n: int) -> np.ndarray:
        try:
            got = self._answers.get(timeout=LINK_TIMEOUT_S)
        except queue.Empty:
            raise NodeError(f"client {self.client} did not answer its modulator link within {LINK_TIMEOUT_S:.0f} s") from None
        if isinstance(got, BaseException):
            raise got
        if got.shape != (n,):
            raise NodeError(f"client {self.client} answered {got.size} codes for {n} slots (expected one per slot)")
        if got.size and int(got.max()) >> 2 >= self.levels:
            raise NodeError(f"client {self.client} answered intensity level {int(got.max()) >> 2} (code "
                            f"{int(got.max())}); expected codes k·4 + a with k below its {self.levels} levels")
        self.asked_slots += n
        return got

    def codes(self, slots: np.ndarray) -> np.ndarray:
        """Ask and wait for the answer (:meth:`ask`)."""
        return self.ask(slots)()

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        """:meth:`codes`, split into intensity and phase indices."""
        s = np.ascontiguousarray(slots, dtype=np.int64)
        got = self.codes(s)
        return ModulationRecord(client=self.client, slots=s, intensity_idx=got >> 2, phase_idx=got & 3)

    def end(self) -> None:
        self._questions.put(None)


class _Acquisition:
    def __init__(self, acq: str, clients: list[str], levels: dict[str, int]) -> None:
        self.acq = acq
        self.links: dict[str, ModulatorLink] = {}
        self.clients = clients
        self.levels = levels
        self.cond = threading.Condition()

    def attach(self, client: str) -> ModulatorLink:
        with self.cond:
            if client in self.links:
                raise NodeError(f"client {client} already has a modulator link for acquisition {self.acq}")
            link = self.links[client] = ModulatorLink(client, self.levels[client])
            self.cond.notify_all()
            return link

    def wait_all(self) -> dict[str, ModulatorLink]:
        with self.cond:
            if not self.cond.wait_for(lambda: all(c in self.links for c in self.clients), LINK_TIMEOUT_S):
                missing = [c for c in self.clients if c not in self.links]
                raise NodeError(f"acquisition {self.acq}: no modulator link from {missing} within {LINK_TIMEOUT_S:.0f} s")
            return dict(self.links)


class _TagStream:
    """The detector's ``optics/tags`` session: one simulated block per ``tags/next``."""

    def __init__(self, node: OpticsNode, acq: _Acquisition, duration: float, block_duration: float | None) -> None:
        self.node, self.acq = node, acq
        self.links = acq.wait_all()
        tb = node.testbed
        self.n_slots = max(1, int(round(duration * tb.live.rep_rate_hz)))
        # clients with emulated pattern generators: the loop plays what those played (never asks their links)
        self.blocks: Iterator[TagBlock] = tb.stream_with(dict(self.links), duration, block_duration,
                                                         hardware=tb.hardware is not None)
        self.done = False

    def handle(self, req: Message) -> Message:
        if req.kind != "tags/next":
            raise MessageError(f"optics/tags: unexpected {req.kind!r}")
        if self.done:
            return ok("tags/end", n_slots=self.n_slots)
        if self.node.stopping.is_set():  # SIGTERM: no further block (shutdown() ends the clients' links)
            self.finish()
            raise NodeError(f"optics node {self.node.name} is stopping: acquisition {self.acq.acq} ends")
        try:
            b = next(self.blocks)
        except StopIteration:
            self.finish()
            return ok("tags/end", n_slots=self.n_slots,
                      asked=json.dumps({c: link.asked_slots for c, link in self.links.items()}))
        return ok("tags/block", **block_fields(b))

    def finish(self) -> None:
        if not self.done:
            self.done = True
            for link in self.links.values():
                link.end()
            self.node.forget(self.acq.acq)

    def on_close(self, error: BaseException | None) -> None:
        self.finish()


class OpticsNode(Node):
    """``labqfl node optics``: the simulated optical layer (module docstring)."""

    role = "optics"

    def __init__(self, name: str = "optics", *, detector: str = "detector", threads: int | None = None,
                 **kw: Any) -> None:
        super().__init__(name, **kw)
        from labqfl.sim_backends.testbed import SagnacTestbed

        self.testbed = SagnacTestbed(self.cfg, threads=threads)
        self.testbed.modulation_on_demand = True
        self._acqs: dict[str, _Acquisition] = {}
        self._lock = threading.Lock()
        clients = set(self.cfg.client_names)
        self.server.route("optics/modulator", self._modulator, allowed_peers=clients)
        self.server.route("optics/tags", self._tags, allowed_peers={detector})

    def _acq(self, acq: str) -> _Acquisition:
        if not acq:
            raise NodeError("no acquisition ID in the session hello")
        with self._lock:
            a = self._acqs.get(acq)
            if a is None:
                a = self._acqs[acq] = _Acquisition(acq, self.cfg.client_names,
                                                      {c.name: len(c.intensity_probs) for c in self.cfg.clients})
                if self.testbed.hardware is not None:  # one virtual clock before any client of acq streams to them
                    self.testbed.hardware.align()
            return a

    def shutdown(self) -> None:
        """SIGTERM/SIGINT: a simulation waiting for a client's answer stops at once (it would wait
        :data:`LINK_TIMEOUT_S` for a client that is stopping too, and hold this process that long)."""
        with self._lock:
            acqs = list(self._acqs.values())
        for a in acqs:
            with a.cond:
                links = list(a.links.values())
            for link in links:
                link.abort("ended: the optics node is stopping")

    def forget(self, acq: str) -> None:
        with self._lock:
            self._acqs.pop(acq, None)

    def _modulator(self, peer: str, hello: Message) -> ServedSession:
        link = self._acq(str(hello.fields.get("acq", ""))).attach(peer)
        return ServedSession(link, on_close=link.on_close)

    def _tags(self, peer: str, hello: Message) -> ServedSession:
        dur = float(hello.get("duration"))
        bd = float(hello.fields.get("block_duration", 0.0)) or None
        if (problem := duration_problem(dur)) is not None:
            raise NodeError(f"duration {problem}")
        try:
            stream = _TagStream(self, self._acq(str(hello.fields.get("acq", ""))), dur, bd)
        except LabqflError:
            raise
        except ValueError as e:
            raise NodeError(str(e)) from None
        return ServedSession(stream, on_close=stream.on_close)


def main(name: str, station: str | Path | None, data: str | Path, listen: str, certs: str | Path,
         detector: str = "detector", threads: int | None = None, as_json: bool = False) -> None:
    OpticsNode(name, station=station, data_dir=data, listen=listen, certs=certs, detector=detector,
               threads=threads).serve(as_json)
