"""A client of the network as its own process: ``labqfl node client --name Ci``.

What it holds, and nobody else: its randomness (a CSPRNG keyed with 256 OS-random bits per
acquisition, or the seeded generator when the station says ``randomness = "seeded"``), its
private choice log (0600, ``<data>/nodes/<Ci>/choices/``), its key store
(``<data>/keystore/<Ci>.sqlite``, the layout ``labqfl keys --data-dir`` reads), its certificate. Its choices leave it only as the protocol requires:
the answers on its modulator link to the optical layer (what it applied in the slots asked), and
the sifting and test-round reveals of :mod:`labqfl.qkd.twoparty`.

Per acquisition (``ctl/arm {acq, epoch, optics, peers}`` from the operator):

* it arms its generator and opens its **modulator link** to the optics node (service
  ``optics/modulator``): ``mod/ready`` / ``mod/applied {codes}``, each answered by the optics'
  next ``mod/query`` (the asked slots as a bitmap or as gaps; answered by ``labqfl.nodes.optics.answer_codes``;
  or ``mod/end``);
* when its station section names a ``pattern_generator`` (a real instrument, or the emulated Pulse
  Streamer the simulated optics node serves on a loopback address), it opens it once through its
  driver (operating point applied) and streams its own choice log to it for the acquisition
  (:meth:`labqfl.modulation.ClientStreams.start_for`, the same streams as the in-process
  :class:`~labqfl.app.acquire.Acquisition`), started once its modulator link is open and finished
  when the optics ends the link (``mod/end``); its pair ends then read a played-only log
  (:class:`~labqfl.modulation.PlayedChoiceLog`): slots are sifted only once their frames have a
  verdict, and the slots of frames either client of a pair did not play are dropped at both ends
  (``frames/lost`` below). With emulated generators the optics never asks its modulator link: the
  simulated loop plays what the generator played;
* it receives the detector's announcements (service ``ann``: ``ann/chunks``, one per tag block for
  all its pairs, split into one chunk per pair by :func:`split_chunks`; ``ann/end``), each chunk
  continuing the last and ending within the acquisition's slots (:class:`_Announced`); a session
  that ends before ``ann/end`` fails every pair it fed at once, naming the detector;
* for every pair (Ci, Cj) where it is **Ci** it drives :class:`~labqfl.qkd.twoparty.PairEndI`
  over a session to Cj's node (``qkd/pair``, every message absorbed into the block transcript)
  and a second, untagged session for the node-level bookkeeping (``qkd/pairctl``); it sifts the
  detector's chunks in batches, as the in-process Distiller does (:class:`_SiftBatch`), and Cj
  hands its copy to its end as the same one chunk;
* for every pair where it is **Cj** it serves :class:`~labqfl.qkd.twoparty.PairEndJ` on those
  two services.

Node-level messages (``qkd/pairctl``, Ci → Cj; untagged, none carries key bits: forging one can refuse
or withhold a block, never change a key — docs/nodes.md, "Messages", says exactly what one can still do):

* ``pending/list`` → ``pending/ids {ids}``, then ``pending/resolve {held}`` → ``pending/resolved``:
  at the start of a session, key blocks Cj accepted but whose storage at Ci it never heard of
  are stored at Cj if Ci holds them, else discarded;
* ``block/prepare {block, start, end, need, refs, key}`` → ``block/prepared``: before a block spends
  anything, Cj checks the block ID is new, takes exactly the authentication bits Ci reserved (``refs``
  into the pair's ``auth`` pool, :meth:`~labqfl.keystore.KeyStore.take_exact`, recorded under Ci's
  reservation key ID ``key``) and only then claims the block's slots in its store (the raw data of
  these slots is never distilled again: a block killed half-way is discarded, never half-used). Ci
  takes its reservation once Cj answered ``block/prepared``; a Cj that does not hold a block the refs
  name refuses first, naming it (``missing``), so neither end spends a bit and Ci retires that block
  at its end (a pre-shared secret only Ci imported: never used); a refusal names the bits Cj spent
  (``spent``), and Ci discards those of its own reservation only, releasing the rest;
* ``auth/void {key, refs}`` → ``auth/voided {taken, spent, bits}``: at the start of a session, for a
  reservation Ci made for a block that never started (Ci stopped in between), Cj says whether it took
  it (its record under ``key``). Taken: voided at Ci, spent at both ends, never used. Never taken: Cj
  voids the key ID (a late ``block/prepare`` under it is refused) and Ci releases the reservation,
  discarding only its parts Cj names ``spent``. Cj discards nothing;
* ``block/skip {end}`` → ``block/skipped``: Ci dropped a block with too few sifted bits;
* ``frames/lost {lo, hi, frames}`` → ``frames/lost {frames}`` (only when a client of the pair streams
  to a pattern generator): before Ci sifts the detector's chunk ``[lo, hi)``, each end says which
  frames there it did not play (after waiting for its generator's verdicts); both drop the
  announced slots of the union, so each end's announcements stay the same (frame indices only, no
  choice: forging them can only drop slots or make the ends' announcements differ, which the
  tagged protocol refuses);
* ``block/commit {block, held}`` → ``block/committed``: Ci has stored the accepted block (IDs it holds);
  Cj moves it from its pending file into its store. A block is thus stored at both ends or at
  neither (up to a crash inside the commit, resolved by ``pending/*`` at the end of Ci's run of the
  pair or at the next session). A block Cj holds neither pending nor stored is refused
  (``out_of_step``): Ci retires its copy (never used) and the pair stops.

Each end checks what it receives on ``qkd/pairctl`` against its schema before reading a field (Cj:
:data:`PAIRCTL_MESSAGES`, refused; Ci: :data:`PAIRCTL_REPLIES` per request, one :class:`MessageError` on which Ci
acts in no part, through the call's failure path), and so does each end of ``ann`` (:data:`ANN_MESSAGES`,
:data:`labqfl.nodes.detector.ANN_REPLIES`).
"""

from __future__ import annotations

import hashlib
import json
import queue
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import Announcements
from labqfl.durable import leftover_temporaries, replace_durably
from labqfl.errors import AuthenticationError, ConfigError, LabqflError
from labqfl.keystore import KeyStore
from labqfl.keystore.material import normalize_refs
from labqfl.log import get_logger
from labqfl.modulation import (
    ClientStreams,
    PlayedChoiceLog,
    acquisition_slots,
    drop_frames,
    unplayed_frames,
)
from labqfl.net import ServedSession
from labqfl.nodes.common import (
    Node,
    NodeError,
    RecordedChannel,
    exit_hook,
    ok,
    open_session,
    refuse,
    simulated_light,
)
from labqfl.nodes.optics import answer_codes
from labqfl.nodes.preshared import unique_keys
from labqfl.nodes.wire import decode_gaps, gap_fields
from labqfl.provenance import (
    PHYSICAL_LAYERS,
    RANDOMNESS_SOURCES,
    Provenance,
    client_randomness,
    station_physical_layer,
    weakest_randomness,
)
from labqfl.qkd.authentication import transcript_word_cap
from labqfl.qkd.estimation import epsilon_total
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.messaging import Channel, Message, MessageError, MessageSchema, field_problem
from labqfl.qkd.pipeline import (
    _BLOCK_NAMESPACE,
    _MIN_BLOCK_BITS,
    AUTH_REFILL_SUFFIX,
    PRESHARED_PREFIX,
    STAGES,
    BlockResult,
    DistillSettings,
    PairResult,
    _auth_bits_per_block,
    block_slots_for,
)
from labqfl.qkd.sifting import ClientSetup
from labqfl.qkd.twoparty import (
    CI_MESSAGES,
    ORIGIN_FIELDS,
    BlockOutcome,
    PairEndI,
    PairEndJ,
    ProtocolSettings,
)

log = get_logger(__name__)

#: With the lab's light (a real tagger, no optics node), how long a client waits at most for the detector's end of
#: an acquisition, beyond ten times its duration [s]; then it stops its stream and disarms all the same.
ENDLESS_WAIT_S = 600.0

__all__ = ["ClientNode", "block_cuts", "block_id_for", "split_chunks", "warm_answers", "warm_cascade", "warm_distillation"]

#: Key-ID prefix of the authentication bits Ci reserves for one block until Cj has taken the same bits
#: (``block/prepare``); a reservation left by a Ci that stopped in between is voided at both ends at
#: the pair's next session (``auth/void``).
AUTH_KEY_PREFIX = "blockauth-"
#: In a block's abort reason: the pair's ends share no authentication key for it (the job names the pair).
AUTH_STARVED = "no authentication key shared with"

#: How long Cj waits for the detector's copy of announcements Ci already refers to [s].
FEED_TIMEOUT_S = 120.0
#: How far past the acquisition's slots (``ctl/arm``'s duration) the detector may announce (fraction): a tagger's
#: stream may end a little after the duration; no further, so no announcement makes a client cut and walk more
#: blocks than the acquisition holds (:meth:`_Acq.slot_bound`).
ANN_SLOT_MARGIN = 0.05
#: An open-ended acquisition (no duration): the detector may announce up to this factor × the time since ``ctl/arm``
#: plus :data:`ANN_OPEN_SLACK_S`, at the laser's repetition rate.
ANN_OPEN_FACTOR = 2.0
ANN_OPEN_SLACK_S = 10.0


def block_cuts(schedule: PairSchedule, pair: str, block_slots: int, lo: int, hi: int) -> list[int]:
    """Acquisition slots strictly inside ``(lo, hi)`` where one of ``pair``'s blocks ends (block k
    holds the pair's slots [k·N, (k+1)·N), N = ``block_slots``): both ends cut the detector's
    chunks there, so each end's pieces are the same."""
    out: list[int] = []
    m = schedule.slots_of_pair(pair, lo) // block_slots + 1
    while True:
        e = schedule.slot_end(pair, m * block_slots)
        if e >= hi:
            return out
        if e > lo:
            out.append(e)
        m += 1


def block_id_for(acq: str, pair: str, start: int, end: int) -> str:
    """Block ID of ``pair``'s block over acquisition slots [start, end) (as the Distiller derives it)."""
    return str(uuid.uuid5(_BLOCK_NAMESPACE, f"{acq}/{pair}/slots/{start}-{end}"))


def _piece(ann: Announcements, lo: int, hi: int) -> Announcements:
    a, b = np.searchsorted(ann.slots, [lo, hi])
    return ann if (a, b) == (0, ann.slots.size) else Announcements(ann.pair, ann.slots[a:b], ann.outcomes[a:b])


def _joined_announcements(pair: str, parts: list[Announcements]) -> Announcements:
    """Consecutive pieces of one pair's announcements as one (slot order kept)."""
    if len(parts) == 1:
        return parts[0]
    return Announcements(pair, np.concatenate([a.slots for a in parts]).astype(np.int64, copy=False),
                         np.concatenate([a.outcomes for a in parts]).astype(np.uint8, copy=False))


class _Supply:
    """One end's authentication key for the current block: exactly the bits allocated for it in
    the pair's ``auth`` pool (Ci: ``take``; Cj: ``take_exact`` of Ci's refs), drawn in order."""

    def __init__(self) -> None:
        self._bits = np.zeros(0, np.uint8)

    def load(self, bits: np.ndarray) -> None:
        self._bits = np.asarray(bits, dtype=np.uint8).copy()

    def take(self, nbits: int) -> np.ndarray:
        if nbits > self._bits.size:
            raise AuthenticationError(f"authentication key for this block exhausted ({self._bits.size} bits left, "
                                      f"{nbits} needed)")
        out, self._bits = self._bits[:nbits], self._bits[nbits:]
        return out


@dataclass
class _Chunk:
    pair: str
    lo: int
    hi: int
    dropped: int
    ann: Announcements


def _int_field(msg: Message, name: str) -> int:
    """Field ``name`` of ``msg`` as an integer; :class:`MessageError` naming the field if it is none."""
    v = msg.get(name)
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise MessageError(f"{msg.kind}: field {name!r} is {str(v)[:40]!r} (expected an integer)")
    return int(v)


def _array_field(msg: Message, name: str, dtype: Any) -> np.ndarray:
    """Field ``name`` of ``msg`` as a numeric array; :class:`MessageError` naming the field if it is none."""
    v = msg.get(name)
    try:
        if isinstance(v, str | bytes):
            raise TypeError(type(v).__name__)
        if isinstance(v, np.ndarray) and not np.can_cast(v.dtype, dtype, "safe"):  # no silent truncation or wrap
            raise MessageError(f"{msg.kind}: field {name!r} is a 1-D array of {v.dtype} (expected an array of "
                               f"{np.dtype(dtype)} or a narrower integer type)")
        return np.asarray(v, dtype)
    except (TypeError, ValueError, OverflowError):
        raise MessageError(f"{msg.kind}: field {name!r} is {str(v)[:40]!r} (expected an array of integers)") from None


#: Every message the detector sends a client on ``ann`` and its fields (:mod:`labqfl.nodes.detector`): :class:`_Announced`
#: refuses another kind, an unknown, missing or mistyped field before reading any. The announced slots travel as
#: the gap fields of prefix ``slot_`` (:func:`labqfl.nodes.wire.gap_fields`).
ANN_MESSAGES: dict[str, MessageSchema] = {
    "ann/chunks": MessageSchema({"lo": "int", "hi": "int", "pairs": "str", "dropped": "array", "offsets": "array",
                                 "outcomes": "array", **gap_fields("slot_")}),
    "ann/end": MessageSchema({"final": "int"}),
}


def split_chunks(msg: Message) -> list[_Chunk]:
    """The per-pair chunks of one ``ann/chunks`` message (:mod:`labqfl.nodes.detector`), in its
    order: pair ``k`` gets ``slots``/``outcomes`` ``[offsets[k], offsets[k+1])`` and ``dropped[k]``,
    the chunk a per-pair ``ann/chunk`` carried before; ``slots`` are the ``slot_*`` gaps from ``lo``
    (:func:`labqfl.nodes.wire.decode_gaps`; a plain int64 ``slots`` field is read as it is, though the ``ann``
    service refuses it: :data:`ANN_MESSAGES`). Checked
    whole before anything is used: a message whose gaps, offsets, counts or pair names do not add up
    raises :class:`MessageError`."""
    lo, hi = _int_field(msg, "lo"), _int_field(msg, "hi")
    pairs = str(msg.get("pairs")).split(",")
    outcomes, dropped, offsets = (_array_field(msg, f, t) for f, t in
                                  (("outcomes", np.uint8), ("dropped", np.int64), ("offsets", np.int64)))
    n = len(pairs)
    if not 0 <= lo <= hi:
        raise MessageError(f"ann/chunks: slot range [{lo}, {hi}) is not a range of acquisition slots "
                           "(expected 0 <= lo <= hi)")
    slots = decode_gaps(msg, base=lo, prefix="slot_", plain="slots")
    if "" in pairs or len(set(pairs)) != n:
        raise MessageError(f"ann/chunks: pair names {msg.get('pairs')!r} are empty or repeated "
                           "(expected distinct names, comma-separated)")
    if slots.ndim != 1 or outcomes.shape != slots.shape:
        raise MessageError(f"ann/chunks: {slots.size} announced slots but {outcomes.size} outcomes "
                           "(expected one outcome per slot)")
    if dropped.shape != (n,) or (dropped < 0).any():
        raise MessageError(f"ann/chunks: dropped counts {dropped.tolist()} for {n} pairs "
                           f"(expected {n} counts >= 0)")
    if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != slots.size or (np.diff(offsets) < 0).any():
        raise MessageError(f"ann/chunks: offsets {offsets.tolist()} do not split the {slots.size} announced slots "
                           f"among {n} pairs (expected {n + 1} non-decreasing offsets from 0 to {slots.size})")
    return [_Chunk(p, lo, hi, int(dropped[k]),
                   Announcements(p, slots[offsets[k]:offsets[k + 1]], outcomes[offsets[k]:offsets[k + 1]]))
            for k, p in enumerate(pairs)]


def warm_distillation(engine: str, cascade: bool = True) -> None:
    """Load the kernels a block's distillation runs, on tiny public filler (no key, no secret), so the
    first block does not load (or, without Numba's cache, compile) them mid-protocol, on the critical
    path of the run's last blocks: both paths of :func:`labqfl.qkd.toeplitz.toeplitz_hash` (the
    ternary-FFT one for outputs of at least 1/8 of the input, the Karatsuba tiles for shorter ones;
    which one a block takes depends on its key length), the verification tag
    (:func:`labqfl.qkd.verification.hash_tag`), the transcript's polynomial hash and, for
    ``engine`` "cascade" unless ``cascade`` is False, both ends of Cascade (:func:`warm_cascade`: a
    2 000-bit run in process, the same kernels as a block's interleaved 2^20-bit frames). Measured in a
    process whose Numba is already initialised (another kernel loaded first): 0.05–0.08 CPU s of Cascade
    and 4 ms of the tag saved from the first block (docs/nodes.md). A few tens of ms at start-up once
    the cache holds them."""
    from labqfl.qkd.authentication import poly_hash
    from labqfl.qkd.toeplitz import toeplitz_hash
    from labqfl.qkd.verification import hash_tag

    rng = np.random.default_rng(0)  # public filler, no key
    for n, m in ((64, 16), (1024, 8)):
        toeplitz_hash(rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n + m - 1, dtype=np.uint8), m)
    hash_tag(rng.integers(0, 2, 256, dtype=np.uint8), rng.integers(0, 2, 256 + 49, dtype=np.uint8), 50)
    poly_hash(b"warm-up", 1)
    if engine == "cascade" and cascade:
        warm_cascade()


def warm_cascade() -> None:
    """Both ends of the pair protocol's Cascade on 2 000 bits of public filler (:func:`warm_distillation`)."""
    from labqfl.qkd.cascade import PIPELINE_FRAME_BITS, CascadeAlice, CascadeBob
    from labqfl.qkd.messaging import LocalChannel

    rng = np.random.default_rng(1)  # public filler, no key
    a = rng.integers(0, 2, 2000, dtype=np.uint8)
    b = a ^ (rng.random(2000) < 0.02).astype(np.uint8)
    CascadeBob(b, 0.02, frame_bits=PIPELINE_FRAME_BITS, seed=0).run(LocalChannel(CascadeAlice(a), None))


#: Fields of a pending block record (ClientNode.write_pending) and their JSON types.
_PENDING_FIELDS: dict[str, type | tuple[type, ...]] = {"pair": str, "block_id": str, "nbits": int, "refill": int,
                                                       "bits_hex": str, "meta": dict}


def _read_pending_record(f: Path) -> dict[str, Any]:
    """A ``pending/*.json`` record, or a LabqflError naming the file and what is wrong (never its content: it
    holds key bits). A corrupt file was refused with the bare JSONDecodeError text (no file name) and a record
    without ``pair`` raised a KeyError the pairctl handler did not catch (review s36 input F12)."""
    try:
        rec = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        why = f"not valid JSON ({exc.__class__.__name__} at {getattr(exc, 'pos', '?')})"
    else:
        bad = ([] if isinstance(rec, dict) else ["(not an object)"]) or [
            k for k, t in _PENDING_FIELDS.items() if not isinstance(rec.get(k), t) or isinstance(rec.get(k), bool)]
        if not bad:
            return dict(rec)
        why = f"missing or mistyped {', '.join(bad)}"
    raise LabqflError(f"pending block record {f}: {why}; expected a JSON object with "
                      f"{', '.join(_PENDING_FIELDS)} as write_pending writes it (the file was edited or the disk "
                      "corrupted it; it holds key bits: move it aside, shred it once the pair is resolved)")


def warm_answers(probs: tuple[float, ...], basis_x_prob: float) -> None:
    """Load the kernels of :meth:`CsprngChoiceLog.codes` and :meth:`~CsprngChoiceLog.codes_of_bitmap` for this
    client's number of choice categories (a throwaway log with its own fresh key, asked about a few slots),
    and those that finish the ≈ 3 % of slots whose coarse byte does not decide (asked directly: a few random
    slots may hold none), so that the modulator link's first question and the pair ends' first look-up do
    not load them mid-acquisition."""
    from labqfl.nodes.wire import slot_bits
    from labqfl.sim_backends.qrng import CsprngChoiceLog

    log_ = CsprngChoiceLog(client="warm-up", intensity_probs=probs, basis_x_prob=basis_x_prob)
    log_.codes(np.arange(0, 64, 3, dtype=np.int64))
    runs = np.array([[3, 70]], np.int64)
    log_.codes_of_bitmap(runs.reshape(-1), slot_bits(np.array([3, 69], np.int64), runs), 2)
    log_._refine(np.zeros(1, np.uint8), np.zeros(1, np.int64), np.array([5], np.int64), np.zeros(1, np.uint8))


class _SiftBatch:
    """Ci's chunks of one pair from the detector, held until they are sifted as one chunk: as the
    in-process :class:`~labqfl.qkd.pipeline.Distiller` batches its pushes
    (``DistillSettings.sift_batch_clicks``/``sift_batch_slots``, here per pair: the pair's
    announced clicks, the acquisition slots spanned), so a batch costs one sifting exchange (4 round
    trips) instead of one per tag block. A batch is also sifted as soon as it reaches the pair's
    current block end (the block closes as early as before) and at the end of the acquisition. The
    key bits, counts and block ends are those of sifting every chunk on its own (both ends' bits
    depend only on the slots, and the block ends cut the batch as they cut a chunk); Cj hands its
    pieces over as the same one chunk (:meth:`_Feed.until`)."""

    def __init__(self, pair: str, clicks: int, slots: int) -> None:
        self.pair, self.clicks, self.slots = pair, int(clicks), int(slots)
        self.chunks: list[_Chunk] = []
        self.n = 0

    def follows(self, c: _Chunk) -> bool:
        """Whether ``c`` continues the batch (empty, or ``c`` starts where the batch ends)."""
        return not self.chunks or c.lo == self.chunks[-1].hi

    def add(self, c: _Chunk) -> None:
        self.chunks.append(c)
        self.n += int(c.ann.slots.size)

    def full(self, block_end: int) -> bool:
        if not self.chunks:
            return False
        hi = self.chunks[-1].hi
        return self.n >= self.clicks or hi - self.chunks[0].lo >= self.slots or hi >= block_end

    def take(self) -> _Chunk:
        cs, self.chunks, self.n = self.chunks, [], 0
        if len(cs) == 1:
            return cs[0]
        return _Chunk(self.pair, cs[0].lo, cs[-1].hi, sum(c.dropped for c in cs),
                      _joined_announcements(self.pair, [c.ann for c in cs]))


class _Feed:
    """Cj's copy of the detector's announcements for one pair, cut at the block ends, handed to
    :class:`PairEndJ` only when Ci's protocol reaches them (the detector runs ahead of the pair)."""

    def __init__(self, end_getter: Any, schedule: PairSchedule, pair: str, block_slots: int) -> None:
        self.end_getter = end_getter
        self.schedule, self.pair, self.n = schedule, pair, block_slots
        self.pieces: deque[tuple[int, int, Announcements]] = deque()
        self.unplayed: set[int] = set()  # frames dropped at both ends (``frames/lost``)
        self.frame_slots = 1
        self.arrived_hi = 0
        self.ended = False
        self.lost = ""  # why the detector's announcements stopped before their end ("" if they did not)
        self.cond = threading.Condition()

    def add(self, c: _Chunk) -> None:
        with self.cond:
            cuts = [c.lo, *block_cuts(self.schedule, self.pair, self.n, c.lo, c.hi), c.hi]
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                if b > a:
                    self.pieces.append((a, b, _piece(c.ann, a, b)))
            self.arrived_hi = max(self.arrived_hi, c.hi)
            self.cond.notify_all()

    def end(self, lost: str = "") -> None:
        """No more announcements: the acquisition's end, or ``lost`` (why they stopped before it)."""
        with self.cond:
            self.ended = True
            self.lost = self.lost or lost
            self.cond.notify_all()

    def _wait(self, pred: Any, what: str) -> None:
        if not self.cond.wait_for(lambda: pred() or self.ended, FEED_TIMEOUT_S):
            raise NodeError(f"pair {self.pair}: the detector's announcements {what} did not arrive within "
                            f"{FEED_TIMEOUT_S:.0f} s")
        if self.lost and not pred():
            raise NodeError(f"pair {self.pair}: {self.lost}")

    def _give(self, end: PairEndJ, upto: Any) -> None:
        while self.pieces and upto(self.pieces[0]):
            a, b, ann = self.pieces.popleft()
            ann = drop_frames(ann, sorted(self.unplayed), self.frame_slots) if self.unplayed else ann
            end.receive(ann, a, b, self.schedule.slots_of_pair(self.pair, b) - self.schedule.slots_of_pair(self.pair, a))

    def until(self, end: PairEndJ, lo: int, hi: int) -> None:
        """Ci's ``ann/confirm`` refers to slots ``[lo, hi)``: hand over the pieces before ``lo``, then
        the pieces that tile ``[lo, hi)`` as one (Ci sifts a batch of the detector's chunks as one
        chunk, :class:`_SiftBatch`; the ends' transcript entries then match). Pieces that do not
        tile it (a detector that cut the two copies differently) are handed over one by one, as they
        came, and the block is refused (no announcements at ``lo``, or other digests)."""
        with self.cond:
            self._wait(lambda: self.arrived_hi >= hi, f"up to slot {hi}")
            self._give(end, lambda p: p[1] <= lo)
            take = []
            for p in self.pieces:
                if p[0] < lo or p[1] > hi:
                    break
                take.append(p)
            if not take or take[0][0] != lo or take[-1][1] != hi \
                    or any(a[1] != b[0] for a, b in zip(take[:-1], take[1:], strict=True)):
                self._give(end, lambda p: p[0] <= lo)
                return
            for _ in take:
                self.pieces.popleft()
            ann = _joined_announcements(self.pair, [a for _, _, a in take])
            self.pieces.appendleft((lo, hi, ann))
            self._give(end, lambda p: p[0] <= lo)

    def until_hi(self, end: PairEndJ, hi: int) -> None:
        with self.cond:
            self._wait(lambda: self.arrived_hi >= hi, f"up to slot {hi}")
            self._give(end, lambda p: p[1] <= hi)

    def drop(self, frames: set[int], frame_slots: int) -> None:
        """Drop the announced slots of these frames from the pieces still to be handed over."""
        with self.cond:
            self.unplayed |= frames
            self.frame_slots = int(frame_slots)

    def discard(self, hi: int) -> None:
        with self.cond:
            while self.pieces and self.pieces[0][1] <= hi:
                self.pieces.popleft()


class _OutOfStep(NodeError):
    """Cj holds a committed block neither pending nor stored: Ci retired its copy (:meth:`_IPair._commit`)."""


def _block_parts(block_id: str, final: np.ndarray, refill: int,
                 meta: dict[str, Any]) -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    """An accepted block as the blocks a store holds (:meth:`~labqfl.keystore.KeyStore.add_blocks`): its first
    ``refill`` bits the ``auth`` refill ``<id>-auth``, the rest (if any) the key ``<id>``."""
    parts: list[tuple[str, np.ndarray, str, dict[str, Any] | None]] = []
    if refill:
        parts.append((block_id + AUTH_REFILL_SUFFIX, final[:refill], "auth",
                      {**meta, "kind": "auth-refill", "key_block": block_id}))
    if final.size > refill:
        parts.append((block_id, final[refill:], "general", meta))
    return parts


def node_origin(cfg: Any, name: str, log: Any) -> dict[str, str]:
    """Client ``name``'s own claim for its blocks (:data:`~labqfl.qkd.twoparty.ORIGIN_FIELDS`): the randomness of
    its generator ``log`` in this acquisition and the physical layer its station file ``cfg`` describes. Sent to
    the partner in the block's tagged transcript; never this node's guess of the partner's (review s35 leak F7)."""
    return {"randomness": client_randomness(cfg, name, log), "physical_layer": station_physical_layer(cfg)}


class _JPair:
    """Cj's state of one pair in one acquisition: the current :class:`PairEndJ` (one per session
    from Ci), the announcement feed, the authentication supply."""

    def __init__(self, node: ClientNode, acq: _Acq, pair: str, ci: str) -> None:
        self.node, self.acq, self.pair, self.ci = node, acq, pair, ci
        self.feed = _Feed(None, node.schedule, pair, node.block_slots[pair])
        self.supply = _Supply()
        self.end: PairEndJ | None = None
        self.block: dict[str, Any] = {}

    def new_end(self) -> PairEndJ:
        n = self.node
        ci, cj = self.pair.split("-")
        end = PairEndJ(self.pair, self.acq.log, ClientSetup.from_config(n.cfg.client(ci)),
                       ClientSetup.from_config(n.cfg.client(cj)), n.proto, self.supply,
                       np.random.default_rng(secrets.randbits(128)), schedule=n.schedule)
        end.auth.max_words = transcript_word_cap(n.block_slots[self.pair])  # fixed before any data (review s32)
        end.origin = node_origin(n.cfg, n.name, self.acq.log)  # this end's claim, in block/ok (review s35 leak F7)
        end.on_outcome = self._outcome
        self.end = end
        return end

    def _outcome(self, o: BlockOutcome) -> None:
        if not (o.accepted and o.final is not None and self.end is not None):
            return
        eps_auth = self.end.auth.forgery_bound(2)  # two checks, each of a transcript within the cap
        refill = min(int(self.block.get("need", 0)), int(o.final.size))
        self.node.write_pending(self.pair, o.block_id, o.final, refill,
                                self.node.block_meta(self.pair, self.acq, o, eps_auth, self.block))


class _JServed:
    """Cj's responder on ``qkd/pair``: feeds the announcements Ci's next message refers to, then
    lets :class:`PairEndJ` answer."""

    def __init__(self, jp: _JPair, end: PairEndJ) -> None:
        self.jp, self.end = jp, end

    def handle(self, req: Message) -> Message:
        k = req.kind
        if field_problem(req, CI_MESSAGES, "Ci"):
            pass  # malformed: no feeding on its word; the end refuses it (PairEndJ.handle)
        elif k == "ann/confirm":
            self.jp.feed.until(self.end, int(req.get("lo")), int(req.get("hi")))
        elif k == "block/open":
            self.jp.feed.until_hi(self.end, int(req.get("end")))
        rep = self.end.handle(req)
        exit_hook(k)
        return rep


def _auth_refs(req: Message) -> list[tuple[str, int, int]]:
    """The ``refs`` of a ``block/prepare``/``auth/void``: key references ``[[block_id, start, length], ...]``."""
    raw = req.get("refs")
    try:
        return normalize_refs(json.loads(str(raw)))
    except (ValueError, TypeError) as e:
        raise MessageError(f"refs {str(raw)[:80]!r} are not key references ({e}); expected a non-empty JSON list "
                           "[[block_id, start, length], ...]") from None


#: Every message Ci sends on ``qkd/pairctl`` and its fields: :meth:`_JCtl.handle` refuses another kind, an
#: unknown, missing or mistyped field before reading any (as the pair protocol's messages,
#: :data:`labqfl.qkd.twoparty.CI_MESSAGES`; finite-key review s32 F1).
PAIRCTL_MESSAGES: dict[str, MessageSchema] = {
    "pending/list": MessageSchema(),
    "pending/resolve": MessageSchema({"held": "str"}),
    "block/prepare": MessageSchema({"block": "str", "start": "int", "end": "int", "need": "int", "refs": "str",
                                    "key": "str"}),
    "auth/void": MessageSchema({"key": "str", "refs": "str"}),
    "frames/lost": MessageSchema({"lo": "int", "hi": "int", "frames": "str"}),
    "block/skip": MessageSchema({"end": "int"}),
    "block/commit": MessageSchema({"block": "str", "held": "str"}),
}

#: Cj's refusal on ``qkd/pairctl`` (:func:`labqfl.nodes.common.refuse`, or :meth:`_JCtl.handle`'s own).
_CTL_REFUSED = MessageSchema({"reason": "str"})
#: Per request kind Ci sends on ``qkd/pairctl``, the replies Cj may give and their fields: Ci checks each reply
#: (:meth:`_IPair._ctl_request`) before reading any field, so an unexpected kind or an unknown, missing or mistyped
#: field is one :class:`MessageError` naming Cj, the kind and the field, and Ci acts on no part of it.
PAIRCTL_REPLIES: dict[str, dict[str, MessageSchema]] = {
    "pending/list": {"pending/ids": MessageSchema({"ids": "str"}), "node/refused": _CTL_REFUSED},
    "pending/resolve": {"pending/resolved": MessageSchema(), "node/refused": _CTL_REFUSED},
    "block/prepare": {"block/prepared": MessageSchema(),
                      "node/refused": MessageSchema({"reason": "str"}, {"missing": "str", "spent": "str"})},
    "auth/void": {"auth/voided": MessageSchema({"taken": "int", "spent": "str", "bits": "int"}),
                  "node/refused": _CTL_REFUSED},
    "frames/lost": {"frames/lost": MessageSchema({"frames": "str"}), "node/refused": _CTL_REFUSED},
    "block/skip": {"block/skipped": MessageSchema(), "node/refused": _CTL_REFUSED},
    "block/commit": {"block/committed": MessageSchema(),
                     "node/refused": MessageSchema({"reason": "str"}, {"out_of_step": "str"})},
}


def _json_list(msg: Message, name: str, item: type | tuple[type, ...], what: str) -> list[Any]:
    """Field ``name`` of ``msg`` (a str, checked by its schema) as a JSON list of ``item`` (bool is no int);
    :class:`MessageError` naming the kind and the field if it is none."""
    raw = str(msg.get(name))
    try:
        v = json.loads(raw)
    except ValueError:
        v = None
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, item) for x in v):
        raise MessageError(f"{msg.kind}: field {name!r} is {raw[:80]!r} (expected a JSON list of {what})")
    return v


def _json_refs(msg: Message, name: str) -> list[list[Any]]:
    """Field ``name`` of ``msg`` as key references ``[[block_id, start, length], ...]`` (may be empty)."""
    v = _json_list(msg, name, list, "key references [block_id, start, length]")
    try:
        return [list(r) for r in normalize_refs(v)] if v else []
    except ValueError as e:
        raise MessageError(f"{msg.kind}: field {name!r}: {e} (expected key references "
                           "[[block_id, start, length], ...])") from None


class _JCtl:
    """Cj's responder on ``qkd/pairctl`` (module docstring)."""

    def __init__(self, jp: _JPair) -> None:
        self.jp = jp

    def handle(self, req: Message) -> Message:
        jp, node, k = self.jp, self.jp.node, req.kind
        if why := field_problem(req, PAIRCTL_MESSAGES, f"{jp.ci} on qkd/pairctl"):
            return refuse(why)  # nothing read, claimed or spent here
        try:
            if k == "pending/list":
                return ok("pending/ids", ids=json.dumps(node.pending_ids(jp.pair)))
            if k == "pending/resolve":
                node.resolve_pending(jp.pair, json.loads(str(req.get("held"))))
                return ok("pending/resolved")
            if k == "block/prepare":
                return self._prepare(req)
            if k == "auth/void":
                return self._void(req)
            if k == "frames/lost":
                lo, hi = int(req.get("lo")), int(req.get("hi"))
                mine = jp.acq.unplayed(lo, hi)
                jp.feed.drop({int(f) for f in json.loads(str(req.get("frames")))} | set(mine), node.frame_slots)
                return ok("frames/lost", frames=json.dumps(mine))
            if k == "block/skip":
                jp.feed.discard(int(req.get("end")))
                if jp.end is not None:
                    jp.end.handle(Message("block/drop", {}))
                return ok("block/skipped")
            if k == "block/commit":
                block = str(req.get("block"))
                if not node.resolve_pending(jp.pair, json.loads(str(req.get("held"))), only=block) \
                        and not any(node.store.has_block(b) for b in (block, block + AUTH_REFILL_SUFFIX)):
                    return Message("node/refused", {
                        "reason": f"block/commit: pair {jp.pair}: block {block} is neither pending at {node.name} nor "
                                  f"in its key store {node.store.path} (expected a block {node.name} accepted)",
                        "out_of_step": block})
                exit_hook("block/commit")
                return ok("block/committed")
        except (LabqflError, ValueError, TypeError, OSError) as e:
            return refuse(f"{k}: {e}")
        return refuse(f"unexpected {k!r} on qkd/pairctl")

    def _prepare(self, req: Message) -> Message:
        """``block/prepare``: the block ID must be new, the refs Ci's reservation ``key`` of blocks held here;
        then the bits are taken (recorded under Ci's key ID) and only then are the slots claimed, so a
        refusal claims nothing and spends nothing here, or names every bit it spent (``spent``)."""
        jp, node, st = self.jp, self.jp.node, self.jp.node.store
        block, start, end = str(req.get("block")), int(req.get("start")), int(req.get("end"))
        key = str(req.get("key"))
        if not key.startswith(AUTH_KEY_PREFIX):
            raise NodeError(f"pair {jp.pair}: reservation key ID {key!r} is not a block authentication key "
                            f"(expected {AUTH_KEY_PREFIX}<uuid>)")
        for bid in (block, block + AUTH_REFILL_SUFFIX):
            if st.has_block(bid):
                raise NodeError(f"block {bid} is already in {node.name}'s key store")
        refs = _auth_refs(req)
        # authentication bits of a block this store does not hold: refused before anything is
        # claimed or spent here, naming the blocks, so that Ci spends nothing either (it reserved them)
        missing = sorted({r[0] for r in refs if not st.has_block(r[0])})
        if missing:
            return Message("node/refused", {"reason": f"block/prepare: pair {jp.pair}: authentication block(s) "
                                            f"{', '.join(missing)} not in {node.name}'s key store {st.path}",
                                            "missing": json.dumps(missing)})
        st.check_slots_free(jp.pair, jp.acq.acq, start, end)
        try:
            km = st.take_exact(jp.pair, refs, "auth", key_id=key, info={"block": block, "ci": jp.ci})
        except LabqflError as e:  # some of them spent here already: Ci may discard those at its end
            return Message("node/refused", {"reason": f"block/prepare: {e}",
                                            "spent": json.dumps(st.spent_refs(jp.pair, refs))})
        try:
            st.claim_slots(jp.pair, jp.acq.acq, start, end, block)
        except LabqflError as e:  # the bits are spent here now: Ci spends them too (never used)
            return Message("node/refused", {"reason": f"block/prepare: {e}", "spent": json.dumps(km.refs)})
        jp.supply.load(np.asarray(km.bits, dtype=np.uint8))
        jp.block = {"block": block, "start": start, "end": end, "need": int(req.get("need"))}
        exit_hook("block/prepare")
        return ok("block/prepared")

    def _void(self, req: Message) -> Message:
        """``auth/void {key, refs}``: Ci's reservation ``key`` for a block that never started. Took it here
        (``block/prepare``, recorded under that key ID with the same refs): ``taken`` (Ci voids it: spent at
        both ends). Never took it: the key ID is voided here (a late ``block/prepare`` with it is refused), and
        ``spent`` names the refs this store can never hand out (Ci discards those parts, releases the rest).
        Nothing is discarded here: a forged ``auth/void`` spends no bit of this store."""
        jp, node, st = self.jp, self.jp.node, self.jp.node.store
        key, refs = str(req.get("key")), _auth_refs(req)
        if not key.startswith(AUTH_KEY_PREFIX):
            raise NodeError(f"pair {jp.pair}: key ID {key!r} is not a block authentication reservation "
                            f"(expected {AUTH_KEY_PREFIX}<uuid>)")
        st.forbid_key_id(jp.pair, key, "auth", f"block authentication key {jp.ci} reserved and voided before "
                                              f"{node.name} took it")
        d = st.delivery(key)
        assert d is not None
        same = d["pair"] == jp.pair and d["purpose"] == "auth"
        if same and d["kind"] == "void-unheld":
            return ok("auth/voided", taken=0, spent=json.dumps(st.spent_refs(jp.pair, refs)), bits=0)
        if same and d["kind"] == "take_exact" and d["state"] == "delivered" and [list(r) for r in d["refs"]] == \
                [list(r) for r in refs]:
            return ok("auth/voided", taken=1, spent="[]", bits=int(d["nbits"]))
        raise NodeError(f"pair {jp.pair}: key ID {key} in {node.name}'s key store is a {d['kind']} ({d['state']}) of "
                        f"pair {d['pair']}, purpose {d['purpose']}, over other bits (expected {jp.ci}'s block "
                        f"authentication reservation with these refs, taken by block/prepare or never seen)")


class _IPair:
    """Ci's driver of one pair in one acquisition (runs in its own thread)."""

    def __init__(self, node: ClientNode, acq: _Acq, pair: str, cj: str) -> None:
        self.node, self.acq, self.pair, self.cj = node, acq, pair, cj
        ci = node.name
        self.supply = _Supply()
        self.end = PairEndI(pair, acq.log, ClientSetup.from_config(node.cfg.client(ci)),
                            ClientSetup.from_config(node.cfg.client(cj)), node.proto, self.supply,
                            schedule=node.schedule)
        # the transcript length cap of every block of the pair, fixed with its size before any data: Cj sets the
        # same from the same settings, each end refuses a longer transcript, eps_auth is the cap's (review s32)
        self.end.auth.max_words = transcript_word_cap(node.block_slots[pair])
        self.end.origin = node_origin(node.cfg, ci, acq.log)  # this end's claim, in block/open (review s35 leak F7)
        #: the detector's chunks, then the acquisition's final slot (-1: this node stops; None: see ``lost``)
        self.inbox: queue.Queue[_Chunk | int | None] = queue.Queue()
        #: why the detector's announcements for this pair are lost ("" while they are not; :meth:`lose`)
        self.lost = ""
        self.result = PairResult(pair)
        self.result.block_slots = node.block_slots[pair]
        s = node.settings
        self.batch = _SiftBatch(pair, s.sift_batch_clicks, s.sift_batch_slots)
        self.block_index = 0
        self.block_start = 0
        self.failed = ""
        self.accepted_ids: list[str] = []
        self.ch: Channel | None = None
        self.ctl: RecordedChannel | None = None
        self.thread = threading.Thread(target=self._run, name=f"pair-{pair}", daemon=True)

    # -- sessions --------------------------------------------------------------------------
    def _open(self) -> None:
        addr = self.acq.peers.get(self.cj)
        if not addr:
            raise NodeError(f"no address for peer {self.cj}")
        fields = {"pair": self.pair, "acq": self.acq.acq}
        self.ctl = open_session(addr, self.node.creds, self.cj, "qkd/pairctl", fields=fields)
        self._resolve_pending()
        self._void_stale_auth()
        self.ch = open_session(addr, self.node.creds, self.cj, "qkd/pair", fields=fields, authenticator=self.end.tx)

    def _ctl_request(self, msg: Message, expect: str | None) -> Message:
        """``msg`` to Cj on ``qkd/pairctl``, its reply checked against :data:`PAIRCTL_REPLIES` before any field
        is read (:class:`MessageError` naming Cj, the reply's kind and the field). ``expect``: the reply kind
        wanted, a refusal then raises :class:`NodeError` with its reason; None: the caller reads a refusal."""
        assert self.ctl is not None
        rep = self.ctl.request(msg)
        if why := field_problem(rep, PAIRCTL_REPLIES[msg.kind], f"{self.cj} (qkd/pairctl reply to {msg.kind!r})"):
            raise MessageError(why)
        if expect is not None and rep.kind != expect:
            raise NodeError(str(rep.get("reason")))
        return rep

    def _resolve_pending(self, if_any: bool = False) -> tuple[int, int]:
        """``pending/list``, then ``pending/resolve`` with the IDs this end holds (module docstring; only if Cj
        named any, with ``if_any``): Cj stores the pending blocks held here and destroys the others. Returns
        (pending at Cj, held here).

        ``held`` names every part of a pending block this end stored, its key ``<id>`` and its authentication
        refill ``<id>-auth`` (:meth:`ClientNode.store_block`), as ``block/commit`` does: Cj's pending IDs are
        key IDs only, and naming only those left the refill at this end alone, and destroyed at Cj a block whose
        final key all went to the refill (review s35 chaos F1)."""
        ids = _json_list(self._ctl_request(Message("pending/list", {}), "pending/ids"), "ids", str, "block IDs")
        if if_any and not ids:
            return 0, 0
        st = self.node.store
        held = [x for b in ids for x in (b + AUTH_REFILL_SUFFIX, b) if st.has_block(x)]
        self._ctl_request(Message("pending/resolve", {"held": json.dumps(held)}), "pending/resolved")
        return len(ids), len({h.removesuffix(AUTH_REFILL_SUFFIX) for h in held})

    def _void_stale_auth(self) -> None:
        """Authentication bits this end reserved for a block and never finished (a Ci stopped between its
        reservation and its ``take_exact``): Cj says whether it took them (``auth/void``, by the reservation's
        key ID). Taken: voided here, spent at both ends, never used. Never taken: Cj voids the key ID (a late
        ``block/prepare`` with it is refused) and the reservation is released here — neither end read a bit —
        except the parts Cj says it can never hand out (``spent``), discarded here in the same transaction."""
        assert self.ctl is not None
        st = self.node.store
        for r in st.pending_reservations("auth"):
            kid = str(r["key_id"])
            if r["pair"] != self.pair or not kid.startswith(AUTH_KEY_PREFIX) or kid in self.node.auth_inflight:
                continue
            rep = self._ctl_request(Message("auth/void", {"key": kid, "refs": json.dumps([list(x) for x in r["refs"]])}),
                                    "auth/voided")
            taken, spent = int(rep.get("taken")), _json_refs(rep, "spent")
            if taken not in (0, 1):
                raise MessageError(f"auth/voided: field 'taken' is {taken} (expected 1: {self.cj} took reservation "
                                   f"{kid}, or 0: it never did)")
            if taken == 1:
                st.void(kid, f"block authentication key reserved by a Ci that stopped before its block started "
                             f"({self.cj} had taken it); spent at both ends, never used")
                what = "voided at both ends"
            else:
                st.release(kid, spend=spent, reason=f"authentication bits {self.cj} spent already: discarded, never used")
                what = f"released at both ends ({self.cj} never took them)"
            log.warning("node %s: pair %s: %d authentication bits reserved for a block that never started (%s) %s",
                        self.node.name, self.pair, int(r["nbits"]), kid, what)

    def _draw_auth(self, block_id: str, start: int, end: int, need: int) -> None:
        """This block's authentication key at both ends, or at neither: Ci reserves ``need`` bits, Cj takes
        exactly those (``block/prepare``), then Ci takes its reservation. A Cj that refuses spends nothing
        and Ci releases its reservation; blocks Cj does not hold (a pre-shared secret only this end
        imported) are retired here (never used), bits Cj spent already are discarded here. A reply that does not
        match its schema (:data:`PAIRCTL_REPLIES`) is acted on in no part: whether Cj took the bits is unknown, so
        Ci asks at once (``auth/void``, :meth:`_void_stale_auth`; else at the pair's next session). Raises
        :class:`NodeError` or :class:`MessageError` (the block does not start)."""
        assert self.ctl is not None
        node, st = self.node, self.node.store
        kid = f"{AUTH_KEY_PREFIX}{uuid.uuid4()}"
        try:
            refs = st.reserve(self.pair, need, "auth", kid, info={"block": block_id})
        except LabqflError as e:
            raise NodeError(f"{AUTH_STARVED} {self.cj}: {e}") from None
        node.auth_inflight.add(kid)
        try:
            rep = self._ctl_request(Message("block/prepare", {"block": block_id, "start": int(start), "end": int(end),
                                                              "need": need, "refs": json.dumps(refs), "key": kid}), None)
            if rep.kind == "node/refused":
                reason = str(rep.get("reason"))
                missing = _json_list(rep, "missing", str, "block IDs") if "missing" in rep.fields else []
                spent = _json_refs(rep, "spent") if "spent" in rep.fields else []
                # Cj spent nothing but what it names as spent: only those parts of this reservation are
                # discarded here (in the release's transaction), the rest is free again at both ends
                st.release(kid, spend=spent, reason=f"authentication bits {self.cj} spent already: discarded, never used")
                done = self._retire([m for m in missing if m in {r[0] for r in refs}])
                if spent:
                    done = "; ".join(x for x in (done, f"the authentication bits {self.cj} had spent already (of "
                                                       "this block's reservation only) discarded here") if x)
                raise NodeError(reason + (f"; {done}" if done else ""))
            km = st.take_exact(self.pair, refs, "auth", key_id=kid)
        except MessageError:  # nothing of the reply acted on: the reservation is settled as a stale one, now
            node.auth_inflight.discard(kid)
            self._settle_unknown(kid)
            raise
        finally:
            node.auth_inflight.discard(kid)
        self.supply.load(np.asarray(km.bits, dtype=np.uint8))

    def _settle_unknown(self, kid: str) -> None:
        """Reservation ``kid`` after a ``block/prepare`` reply this end could not read: Cj says whether it took
        the bits (``auth/void``): voided here (spent at both ends) or released. If that fails too, the
        reservation stays (no block draws it) until the pair's next session asks again."""
        try:
            self._void_stale_auth()
        except (LabqflError, OSError) as e:
            log.warning("node %s: pair %s: authentication reservation %s stays reserved until the pair's next "
                        "session (auth/void failed: %s)", self.node.name, self.pair, kid, e)

    def _retire(self, missing: list[str]) -> str:
        """Authentication blocks Cj does not hold (``missing``, among those this block's reservation drew
        from), spent here so that no later block draws them: pre-shared or refill blocks only (another
        block is left alone). Returns what was done ("" if nothing)."""
        st, done = self.node.store, []
        sizes = {str(b["block_id"]): int(b["nbits"]) for b in st.blocks(self.pair)}
        for bid in missing:
            if bid in sizes and (bid.startswith(PRESHARED_PREFIX) or bid.endswith(AUTH_REFILL_SUFFIX)):
                n = st.discard_exact(self.pair, [(bid, 0, sizes[bid])],
                                     f"authentication block held at {self.node.name} only ({self.cj} does not hold "
                                     "it): retired, never used")
                done.append(f"block {bid}, held at {self.node.name} only, retired there ({n} bits, never used)")
        for d in done:
            log.warning("node %s: pair %s: %s", self.node.name, self.pair, d)
        return "; ".join(done)

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        opened = False
        while True:
            item = self.inbox.get()
            if self.lost:  # the detector's announcement session broke: no more announcements, the pair ends now
                self.failed = self.failed or self.lost
                log.warning("node %s: pair %s: %s", self.node.name, self.pair, self.lost)
                break
            if not opened and not self.failed:  # at the first announcement: every client is armed by then
                opened = True
                try:
                    self._open()
                except (LabqflError, OSError) as e:
                    self.failed = f"cannot open the sessions to {self.cj}: {e}"
            if self.failed or self.node.stopping.is_set():
                if isinstance(item, int):
                    break
                continue
            try:
                if isinstance(item, int):
                    if self.batch.chunks:
                        self._chunk(self.batch.take())
                    self._final(item)
                elif item is not None:
                    self._add(item)
            except (LabqflError, OSError, ValueError) as e:  # ValueError: e.g. a log refusing a slot it did not play
                self.failed = self.lost or f"pair {self.pair}: {e}"  # a lost detector is the cause, named as such
                log.warning("node %s: %s", self.node.name, self.failed)
            if isinstance(item, int):
                break
        if self.ctl is not None:  # the pair's sessions were open (else there is nothing new to resolve)
            self._resolve_pending_at_end()
        for c in (self.ch, self.ctl):
            if c is not None:
                try:
                    c.close()
                except (LabqflError, OSError):
                    pass

    def lose(self, reason: str) -> None:
        """The detector's announcements for this pair are lost (its ``ann`` session ended before ``ann/end``):
        the pair fails with ``reason`` as soon as its thread finishes the item in hand."""
        self.lost = reason
        self.inbox.put(None)

    def _resolve_pending_at_end(self) -> None:
        """At the end of the pair's run (the acquisition's end, a failure, this node's stop), the blocks Cj
        accepted whose commit it never heard of (a cut connection, a ``block/accept`` delivered twice) are
        resolved as at a session's start (``pending/*``: stored at Cj if held here, else destroyed there), over a
        fresh ``qkd/pairctl`` session if this one broke, rather than kept at Cj until the pair's next session."""
        for attempt in range(2):
            try:
                if attempt:
                    try:
                        self.ctl.close()  # type: ignore[union-attr]
                    except (LabqflError, OSError):
                        pass
                    self.ctl = open_session(self.acq.peers[self.cj], self.node.creds, self.cj, "qkd/pairctl",
                                            fields={"pair": self.pair, "acq": self.acq.acq}, timeout_s=60.0)
                n, held = self._resolve_pending(if_any=True)
                if n:
                    log.info("node %s: pair %s: %d block(s) pending at %s resolved at the end (%d held here)",
                             self.node.name, self.pair, n, self.cj, held)
                return
            except (LabqflError, OSError) as e:
                err = e
        log.warning("node %s: pair %s: blocks %s may hold pending could not be resolved at the end (%s): they stay "
                    "there until the pair's next session", self.node.name, self.pair, self.cj, err)

    def _block_end(self) -> int:
        return self.node.schedule.slot_end(self.pair, (self.block_index + 1) * self.node.block_slots[self.pair])

    def _played_only(self, c: _Chunk) -> _Chunk:
        """``c`` without the announced slots of frames either client did not play (``frames/lost``, module
        docstring); the same chunk when neither client of the pair streams to a pattern generator."""
        node = self.node
        if not node.streams_in(self.pair):
            return c
        assert self.ctl is not None
        mine = self.acq.unplayed(c.lo, c.hi)
        rep = self._ctl_request(Message("frames/lost", {"lo": int(c.lo), "hi": int(c.hi), "frames": json.dumps(mine)}),
                                "frames/lost")
        frames = sorted(set(mine) | set(_json_list(rep, "frames", int, "frame indices")))
        if not frames:
            return c
        f_slots, sch = node.frame_slots, node.schedule
        dropped = c.dropped
        if not node.slotting_drops_unplayed(self.pair):  # otherwise slotting dropped (and counted) them already
            for f in frames:
                x, y = max(c.lo, f * f_slots), min(c.hi, (f + 1) * f_slots)
                if y > x:
                    dropped += sch.slots_of_pair(self.pair, y) - sch.slots_of_pair(self.pair, x)
        return _Chunk(c.pair, c.lo, c.hi, dropped, drop_frames(c.ann, frames, f_slots))

    def _add(self, c: _Chunk) -> None:
        """One chunk from the detector: into the sifting batch (:class:`_SiftBatch`), sifted when full."""
        c = self._played_only(c)
        b = self.batch
        if not b.follows(c):  # not contiguous (never from one detector): sift what is held first
            self._chunk(b.take())
        b.add(c)
        if b.full(self._block_end()):
            self._chunk(b.take())

    def _chunk(self, c: _Chunk) -> None:
        lo = c.lo
        while True:
            end = self._block_end()
            hi = min(c.hi, end)
            if hi > lo:
                self._sift(_piece(c.ann, lo, hi), lo, hi, c.dropped if hi == c.hi else 0)
                lo = hi
            if hi < end:
                break
            if self.end.n_bits >= _MIN_BLOCK_BITS or self.end.refused:
                self._block(end)
            else:
                self._drop(end)
            if self.node.stopping.is_set():  # SIGTERM: the block in hand is done; no new one from this chunk
                return

    def _final(self, final: int) -> None:
        s = self.node.settings
        thr = (s.pair_min_final_block_bits or {}).get(self.pair, s.min_final_block_bits)
        if self.end.n_bits >= thr or self.end.refused:
            self._block(final)
        elif self.end.n_bits or self.end.exchanged:
            self._drop(final)

    def _sift(self, ann: Announcements, lo: int, hi: int, dropped: int) -> None:
        assert self.ch is not None
        sch = self.node.schedule
        n_slots = sch.slots_of_pair(self.pair, hi) - sch.slots_of_pair(self.pair, lo)
        r = self.result
        r.dropped_slots += dropped
        t = time.perf_counter()
        res = self.end.sift_chunk(self.ch, ann, lo, hi, n_slots)
        r.times_s["sifting"] += time.perf_counter() - t
        r.n_slots += n_slots
        r.sifted_bits += res.n_key
        for basis, bb in (("X", 0), ("Y", 1)):  # X_test/Y_test as in process (docs/postprocessing.md)
            clicks, errs_x2 = res.counts.matched_test_counts(bases=(bb,))
            r.test_clicks[basis] = r.test_clicks.get(basis, 0) + clicks
            r.test_errors_x2[basis] = r.test_errors_x2.get(basis, 0) + errs_x2

    def _drop(self, end: int) -> None:
        assert self.ch is not None and self.ctl is not None
        self.result.dropped_bits += self.end.n_bits
        self.end.drop_block(self.ch)
        self._ctl_request(Message("block/skip", {"end": int(end)}), "block/skipped")
        self.block_index += 1
        self.block_start = end

    def _block(self, end: int) -> None:
        """One block (as :meth:`labqfl.qkd.pipeline.Distiller._process_block`, between nodes)."""
        assert self.ch is not None and self.ctl is not None
        node, s, st = self.node, self.node.settings, self.node.store
        counts = self.end.counts
        n_slots = int(counts.n_slots) if counts is not None else 0
        start = self.block_start
        self.block_index += 1
        self.block_start = end
        block_id = block_id_for(self.acq.acq, self.pair, start, end)
        times = dict.fromkeys(STAGES, 0.0)
        need = _auth_bits_per_block(s.auth_lanes, first=self.end.auth.key_bits_used == 0)
        try:
            for bid in (block_id, block_id + AUTH_REFILL_SUFFIX):
                if st.has_block(bid):
                    raise NodeError(f"block {bid} is already in {node.name}'s key store")
            st.check_slots_free(self.pair, self.acq.acq, start, end)
            st.claim_slots(self.pair, self.acq.acq, start, end, block_id)
            self._draw_auth(block_id, start, end, need)
        except LabqflError as e:  # nothing of the block was disclosed: forget it at both ends
            self.end.drop_block(self.ch)
            self._ctl_request(Message("block/skip", {"end": int(end)}), "block/skipped")
            self._record(block_id, start, end, n_slots, None, times, f"block not started: {e}", 0, 0)
            return
        used_before = self.end.auth.key_bits_used
        oi = self.end.run_block(self.ch, block_id, start, end)
        for k, v in oi.times.items():
            times[k] += v
        auth_bits = self.end.auth.key_bits_used - used_before
        eps_auth = self.end.auth.forgery_bound(2)
        if not (oi.accepted and oi.final is not None):
            self._record(block_id, start, end, n_slots, oi, times, oi.reason or "Cj did not accept the block",
                         auth_bits, eps_auth)
            return
        t = time.perf_counter()
        final = oi.final
        refill = min(need, int(final.size))
        meta = node.block_meta(self.pair, self.acq, oi, eps_auth, {"start": start, "end": end, "n_slots": n_slots})
        try:
            held = node.store_block(self.pair, block_id, final, refill, meta)
        except LabqflError as e:  # nothing of it stored here (one transaction): Cj's pending copy is destroyed
            self._record(block_id, start, end, n_slots, oi, times, f"not stored at {node.name}: {e}", auth_bits,
                         eps_auth)
            raise
        exit_hook("block/stored")
        try:
            self._commit(block_id, held)
        except _OutOfStep as e:  # retired here: no key of the block at either end; the pair stops
            self._record(block_id, start, end, n_slots, oi, times, str(e), auth_bits, eps_auth)
            raise
        except (NodeError, MessageError, OSError) as e:  # stored here, Cj's copy still pending (review s35 chaos F6)
            why = (f"stored at {node.name}, pending at {self.cj} ({e}): {self.cj} stores it at the end "
                   f"of this run or at the pair's next session; until then its {final.size} bits are at {node.name} "
                   "only")
            self._record(block_id, start, end, n_slots, oi, times, why, auth_bits, eps_auth, final=int(final.size),
                         provenance=meta.get("provenance"))
            raise NodeError(f"block {block_id} {why}") from None  # the pair names itself (_run)
        times["delivery"] = time.perf_counter() - t
        self.accepted_ids.append(block_id)
        self._record(block_id, start, end, n_slots, oi, times, "", auth_bits, eps_auth, final=int(final.size),
                     delivered=int(final.size) - refill, provenance=meta.get("provenance"))

    def _commit(self, block_id: str, held: list[str]) -> None:
        """``block/commit``: Cj moves its pending copy into its store. A Cj that holds the block neither pending
        nor stored (``out_of_step``) leaves it at this end only: retired here (never used), and the pair stops
        with one error, out of step. Another refusal, or a reply that does not match its schema
        (:data:`PAIRCTL_REPLIES`: nothing of it is acted on, nothing retired), leaves Cj's copy pending (resolved at
        the end of the run: stored there, as this end holds it)."""
        assert self.ctl is not None
        rep = self._ctl_request(Message("block/commit", {"block": block_id, "held": json.dumps(held)}), None)
        if rep.kind == "block/committed":
            return
        reason = str(rep.get("reason"))
        if rep.fields.get("out_of_step") == block_id:
            st = self.node.store
            sizes = {str(b["block_id"]): int(b["nbits"]) for b in st.blocks(self.pair)}
            n = sum(st.discard_exact(self.pair, [(b, 0, sizes[b])], f"block {self.cj} does not hold (it refused "
                                     "block/commit): retired at this end, never used") for b in held if b in sizes)
            raise _OutOfStep(f"pair {self.pair} out of step: {reason}; the block's {n} bits stored at "
                             f"{self.node.name} retired there, never used")
        raise NodeError(reason)

    def _record(self, block_id: str, start: int, end: int, n_slots: int, oi: BlockOutcome | None,
                times: dict[str, float], reason: str, auth_bits: int, eps_auth: float, final: int = 0,
                delivered: int = 0, provenance: Mapping[str, Any] | None = None) -> None:
        """Add the block to the pair's result and log its line; ``provenance``: the stored block's (its meta's),
        named in that line (physical layer, randomness: what its key rests on; never a key bit)."""
        s = self.node.settings
        n = oi.n if oi is not None else self.end.n_bits
        qber = oi.qber if oi is not None else 0.0
        leak = oi.leak if oi is not None else 0
        h = binary_entropy(qber)
        br = BlockResult(pair=self.pair, block_id=block_id, n_slots=n_slots, sifted_bits=n, qber_key=qber,
                         qber_estimate=oi.qber_estimate if oi is not None else 0.0, leaked_ec_bits=leak,
                         verification_bits=oi.tlen if oi is not None else 0,
                         efficiency_f=leak / (n * h) if h > 0 and n else float("nan"),
                         verified=bool(oi.verified) if oi is not None else False, keys_identical=not reason,
                         final_key_bits=final, auth_key_bits=auth_bits, delivered_bits=delivered,
                         abort=bool(reason), abort_reason=reason,
                         report=oi.report.as_dict() if oi is not None and oi.report is not None else None,
                         times_s=times, slot_start=start, slot_end=end, auth_checks=2 if oi is not None else 0,
                         eps_auth=eps_auth, eps_total=epsilon_total(s.params, eps_auth))
        r = self.result
        r.add_block(br)
        r.processed_bits += n
        r.leaked_ec_bits += leak
        r.verification_bits += br.verification_bits
        r.final_key_bits += final
        r.auth_key_bits += auth_bits
        r.delivered_bits += delivered
        r.key_errors += int(round(qber * n))
        for k, v in times.items():
            r.times_s[k] += v
        stored = (f" stored (provenance: physical layer {provenance.get('physical_layer')}, randomness "
                  f"{provenance.get('randomness')})") if provenance else ""
        log.info("node %s: block %s of %s: slots [%d, %d), %d sifted bits, final %d bits%s%s", self.node.name,
                 block_id[:8], self.pair, start, end, n, final, stored, f" (abort: {reason})" if reason else "")


class _Acq:
    """One acquisition at this client: its generator/log, its modulator link, its pairs."""

    def __init__(self, acq: str, log_: Any, peers: dict[str, str], run_id: str = "",
                 streams: ClientStreams | None = None) -> None:
        self.acq, self.raw_log, self.peers = acq, log_, peers
        #: this client's stream to its pattern generator (None: it has none); its pair ends then read
        #: the played-only log
        self.streams = streams
        self.log: Any = log_ if streams is None else PlayedChoiceLog(log_, streams.played[log_.client])
        self.run_id = run_id  # the operator's run folder, stamped on every stored block (``labqfl run --nodes``)
        self.i_pairs: dict[str, _IPair] = {}
        self.j_pairs: dict[str, _JPair] = {}
        self.link_error = ""
        #: what this client's instruments read at the acquisition's end, if not armed (:meth:`ClientNode._end_check`)
        self.instrument_faults: list[str] = []
        self.link_thread: threading.Thread | None = None
        self.answered_slots = 0
        #: the detector announced the acquisition's end (``ann/end``), or its announcement session ended
        self.ended = threading.Event()
        self.ann_done = False  # ``ann/end`` arrived
        self.ann_opened = False  # the detector opened its announcement session (one per acquisition)
        #: the acquisition's slots from ``ctl/arm``'s duration (None: open-ended), the laser's repetition rate,
        #: and when it was armed: the bound on the slots the detector may announce (:meth:`slot_bound`)
        self.n_slots: int | None = None
        self.rep_rate_hz = 0.0
        self.armed_at = time.monotonic()

    def slot_bound(self) -> tuple[int, str]:
        """The last slot (exclusive) the detector may announce now, and what bounds it: the acquisition's slots
        (``ctl/arm``'s duration) plus :data:`ANN_SLOT_MARGIN` (a tagger's stream may run a little past the
        duration); open-ended, :data:`ANN_OPEN_FACTOR` × the time since ``ctl/arm`` plus :data:`ANN_OPEN_SLACK_S`,
        at the repetition rate (the light cannot run ahead of the clock)."""
        if self.n_slots is not None:
            n = self.n_slots
            return int(n * (1 + ANN_SLOT_MARGIN)) + 1, f"the acquisition's {n} slots (+{ANN_SLOT_MARGIN:.0%})"
        t = time.monotonic() - self.armed_at
        return (int((ANN_OPEN_FACTOR * t + ANN_OPEN_SLACK_S) * self.rep_rate_hz) + 1,
                f"{ANN_OPEN_FACTOR:g} x {t:.1f} s since ctl/arm + {ANN_OPEN_SLACK_S:g} s at {self.rep_rate_hz:g} Hz "
                "(open-ended acquisition)")

    def unplayed(self, lo: int, hi: int) -> list[int]:
        """Frames overlapping slots ``[lo, hi)`` this client did not play ([] without a stream); waits (at
        most :data:`FEED_TIMEOUT_S`) until its generator has given their verdicts or the stream ended."""
        if self.streams is None:
            return []
        st = self.streams.streamers[self.log.client]
        f_slots = st.record.frame_slots
        if not st.wait_recorded(-(-hi // f_slots) - st.first_frame, timeout=FEED_TIMEOUT_S):
            log.warning("client %s: no verdict from its pattern generator for slots up to %d: their frames count as lost",
                        self.log.client, hi)
        return unplayed_frames(st.record, lo, hi)

    def finish_stream(self, timeout_s: float = 30.0) -> None:
        """Let this client's stream play out (at most ``timeout_s``) and stop it (nothing without one)."""
        if self.streams is not None:
            self.streams.finish(timeout_s=timeout_s)


class _Announced:
    """The ``ann`` service: the detector's announcements as this client receives them. The detector is
    untrusted: a chunk must continue the previous one (its ``lo`` where the last ``hi`` was, from 0) and end
    within :meth:`_Acq.slot_bound`, and ``ann/end``'s final slot too, so that no message makes this client cut
    and walk more blocks than the acquisition holds; else the session ends with one error naming the
    detector, and every pair it fed fails with it (:meth:`ClientNode._ann_closed`)."""

    def __init__(self, node: ClientNode, acq: _Acq, detector: str = "detector") -> None:
        self.node, self.acq, self.detector = node, acq, detector
        self.next_lo = 0

    def _check_range(self, lo: int, hi: int, what: str) -> None:
        bound = getattr(self.acq, "slot_bound", None)
        if lo != self.next_lo:
            raise MessageError(f"{what} from detector {self.detector}: slots from {lo}, but its announcements so far end "
                               f"at slot {self.next_lo} (expected each chunk to continue the last)")
        if bound is not None and hi > (b := bound())[0]:
            raise MessageError(f"{what} from detector {self.detector}: slots up to {hi}, beyond slot {b[0]} "
                               f"(expected at most {b[1]})")

    def handle(self, req: Message) -> Message:
        if why := field_problem(req, ANN_MESSAGES, f"detector {self.detector} on ann"):
            raise MessageError(why)  # nothing read or handed on: the session ends, failing the pairs it fed
        if req.kind == "ann/chunks":
            chunks = split_chunks(req)
            acq = self.acq
            unknown = [c.pair for c in chunks if c.pair not in acq.i_pairs and c.pair not in acq.j_pairs]
            if unknown:
                raise MessageError(f"ann/chunks: client {self.node.name} is not in pair(s) {', '.join(unknown)} "
                                   f"(its pairs: {', '.join(sorted([*acq.i_pairs, *acq.j_pairs]))})")
            if chunks:
                self._check_range(chunks[0].lo, chunks[0].hi, "ann/chunks")
                self.next_lo = chunks[0].hi
            for c in chunks:
                if c.pair in acq.i_pairs:
                    acq.i_pairs[c.pair].inbox.put(c)
                else:
                    acq.j_pairs[c.pair].feed.add(c)
            return ok("ann/ok")
        if req.kind == "ann/end":
            final = _int_field(req, "final")
            self._check_range(self.next_lo, final, "ann/end")
            if final < self.next_lo:
                raise MessageError(f"ann/end from detector {self.detector}: final slot {final} before slot "
                                   f"{self.next_lo}, where its announcements end (expected final >= {self.next_lo})")
            self.acq.ann_done = True
            for ip in self.acq.i_pairs.values():
                ip.inbox.put(final)
            for jp in self.acq.j_pairs.values():
                jp.feed.end()
            self.acq.ended.set()
            return ok("ann/ok")
        raise MessageError(f"ann: unexpected {req.kind!r}")


def _check_secret_claims(f: Path, simulated: Any, randomness: Any) -> None:
    """Refuse (one line) a pre-shared secret file whose provenance fields are malformed or contradict each
    other: ``simulated`` true or false; ``randomness`` (absent: no claim) one of
    :data:`~labqfl.provenance.RANDOMNESS_SOURCES`; a secret from ``seeded`` randomness (derived from a seed, not
    secret) is never imported as a real out-of-band secret (``"simulated": false``)."""
    from labqfl.provenance import RANDOMNESS_SOURCES

    if not isinstance(simulated, bool):
        raise NodeError(f"{f}: 'simulated' must be true or false, got {simulated!r}")
    if randomness is not None and randomness not in RANDOMNESS_SOURCES:
        raise NodeError(f"{f}: 'randomness' must be one of {', '.join(RANDOMNESS_SOURCES)}, got {randomness!r}")
    if randomness == "seeded" and not simulated:
        raise NodeError(f"{f}: the secret claims seeded randomness (derived from a seed, not secret) and "
                        "\"simulated\": false; a seeded secret is imported only as a simulated one (\"simulated\": "
                        "true), or issue a fresh one (labqfl node preshare)")


class ClientNode(Node):
    """``labqfl node client`` (module docstring)."""

    role = "client"

    def __init__(self, name: str, *, optics: str = "", optics_name: str = "optics", detector: str = "detector",
                 peers: dict[str, str] | None = None, settings: DistillSettings | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        if name not in self.cfg.client_names:
            raise NodeError(f"node name {name!r} is not a client of station {self.cfg.name} "
                            f"(clients: {self.cfg.client_names})")
        self.cc = self.cfg.client(name)
        self.optics, self.optics_name, self.peers = optics, optics_name, dict(peers or {})
        self.settings = settings or DistillSettings()
        s = self.settings
        self.proto = ProtocolSettings(engine=s.engine,  # the station's δ too (docs/protocol.md (P10))
                                      params=s.params.with_intensity_rel_uncertainty(self.cfg.intensity_rel_uncertainty()),
                                      auth_lanes=s.auth_lanes,
                                      qber_floor=s.qber_floor, qber_default=s.qber_default)
        self.schedule = PairSchedule.from_config(self.cfg)
        self.block_slots: dict[str, int] = {}
        self.i_of: dict[str, str] = {}  # pair -> partner, where this node is Ci
        self.j_of: dict[str, str] = {}  # pair -> partner, where this node is Cj
        for pname, (a, b) in zip(self.schedule.names, self.schedule.pairs, strict=True):
            if name in (a, b):  # as the Distiller fixes them (per pair when the block-size rule says so)
                bs = (s.pair_block_slots or {}).get(pname, s.block_slots)
                self.block_slots[pname] = int(bs) if bs else block_slots_for(self.cfg, (a, b), s.block_bits)
                (self.i_of if a == name else self.j_of)[pname] = b if a == name else a
        self.store = KeyStore.for_node(name, self.data)  # <data>/keystore/<Ci>.sqlite, as `labqfl keys` expects
        self.pending = self.private / "pending"
        self.pending.mkdir(mode=0o700, exist_ok=True)
        self._pending_lock = threading.Lock()
        self._shred_pending_temporaries()
        #: key IDs of block authentication reservations in flight (``_IPair._draw_auth``)
        self.auth_inflight: set[str] = set()
        self._import_preshared()
        self._warn_without_auth_key()
        self.acqs: dict[str, _Acq] = {}
        self._lock = threading.Lock()
        self.frame_slots = int(self.cfg.time_tagger.frame_slots)
        #: this client's pattern generator (opened at the first ``ctl/arm``; None: it has none, or not yet)
        self.generator: Any = None
        warm_distillation(s.engine)  # before it serves: no first block loads the kernels mid-protocol
        me = self.cfg.client(self.name)
        warm_answers(tuple(me.intensity_probs), me.basis_x_prob)
        self.server.route("ann", self._ann, allowed_peers={detector})
        partners = set(self.j_of.values())
        self.server.route("qkd/pair", self._pair, allowed_peers=partners)
        self.server.route("qkd/pairctl", self._pairctl, allowed_peers=partners)

    # -- the pattern generator -------------------------------------------------------------------
    def streams_in(self, pair: str) -> bool:
        """Whether a client of ``pair`` streams to a pattern generator (both ends decide alike)."""
        return any(self.cfg.client(c).pattern_generator is not None for c in pair.split("-"))

    def slotting_drops_unplayed(self, pair: str) -> bool:
        """Whether the detector's slotting already drops the frames a client of ``pair`` did not play: the
        markers it slots on come from the generators (a real tagger, or the simulated one fed by emulated
        generators), on one input for all clients or on an input of each of the pair's clients."""
        tt, sim = self.cfg.time_tagger, self.cfg.simulation
        from_generators = not tt.simulated or sim.emulate_pattern_generators
        marked = tt.marker_channel is not None or set(pair.split("-")) <= set(tt.marker_channels)
        return from_generators and marked

    def _open_generator(self) -> Any:
        """This client's pattern generator through its driver, with the station file's operating point
        (slot period, frame length, reference clock); None when the station names none."""
        ic = self.cc.pattern_generator
        if ic is None:
            return None
        if self.generator is None:
            from labqfl.station import open_driver

            base = Path(self.station_path).parent if self.station_path else None
            try:
                gen: Any = open_driver(f"{self.name}.pattern_generator", ic, base)
            except ConfigError as e:
                raise NodeError(str(e)) from None
            try:
                gen.apply_operating_point(self.cfg)  # type: ignore[attr-defined]
            except BaseException:
                gen.close()
                raise
            self.generator = gen
            log.info("node %s: pattern generator %s at %s open", self.name, ic.driver, ic.resource)
        return self.generator

    def _generator_safe(self) -> None:
        """Every stream stopped, the generator in its safe state (outputs dark) and closed."""
        for a in list(self.acqs.values()):
            try:
                a.finish_stream(timeout_s=0.0)
            except Exception as e:  # the safe state comes first
                log.error("node %s: stopping the stream of %s failed: %s", self.name, a.acq, e)
        gen, self.generator = self.generator, None
        if gen is not None:
            try:
                gen.safe_state()
            finally:
                gen.close()
            log.info("node %s: pattern generator in its safe state and closed", self.name)

    # -- the key store and the pending blocks --------------------------------------------------
    def _import_preshared(self) -> None:
        """Load pre-shared authentication secrets delivered out of band into ``<data>/nodes/<Ci>/preshared/``
        (what ``labqfl keys preshare`` does by hand), then delete the files."""
        d = self.private / "preshared"
        if not d.is_dir():
            return
        from labqfl.keystore.preshare import (
            find_earlier_load,
            min_preshared_bits,
            secret_marks,
            shred_secret_file,
        )

        for f in sorted(d.glob("*.json")):
            try:
                rec = json.loads(f.read_text(), object_pairs_hook=unique_keys)
                bid, pair, raw = str(rec["block_id"]), str(rec["pair"]), bytes.fromhex(rec["bits_hex"])
                simulated, randomness = rec.get("simulated", True), rec.get("randomness")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise NodeError(f"{f}: not a pre-shared secret file ({type(exc).__name__}: {exc}); expected JSON "
                                '{"pair", "block_id", "bits_hex"[, "simulated", "randomness"]}') from None
            if not bid.startswith(PRESHARED_PREFIX):
                raise NodeError(f"{f}: pre-shared block IDs start with {PRESHARED_PREFIX!r}")
            _check_secret_claims(f, simulated, randomness)
            if 8 * len(raw) < (need := min_preshared_bits()):  # as `labqfl keys preshare` (review s32, second look:
                # a 248-bit secret got no fingerprint and loaded twice)
                raise NodeError(f"{f}: the secret holds {8 * len(raw)} bits; at least {need} are needed to "
                                "authenticate a first block (and to be recognised if it is delivered again)")
            if not self.store.has_block(bid):
                bits = np.unpackbits(np.frombuffer(raw, np.uint8))
                meta: dict[str, Any] = {"kind": "preshared-auth", "simulated": simulated, "nbits": int(bits.size)}
                if randomness is not None:  # where its bits came from, as the file says (checked above)
                    meta["randomness"] = randomness
                # one secret, one block: loaded again under another block ID (a file copied for a second pair)
                # its one-time pads would authenticate two blocks (review s32; `labqfl keys preshare` refuses alike)
                # (or any 47-byte run of it: labqfl.keystore.preshare.secret_windows; review s32 second look F3)
                if (earlier := find_earlier_load([self.store], bits)) is not None:
                    bits[:] = 0
                    raise NodeError(f"{f}: this secret was already loaded as block {earlier['block_id']} of pair "
                                    f"{earlier['pair']} on node {self.name}; a pre-shared secret may be used once, "
                                    "and no part of it again (issue a fresh one per pair)")
                meta.update(secret_marks(bits))
                # simulated unless the file says otherwise: the launcher's own secrets are generated on
                # one machine (simulated out-of-band delivery); an operator's real one says "simulated": false
                self.store.add_block(pair, bits, block_id=bid, purpose="auth", meta=meta)
                bits[:] = 0
            # overwritten and fsynced before the unlink, as `labqfl keys preshare` does: a secret recovered
            # from freed disk blocks would be loaded, and its one-time pads used, twice
            if (problem := shred_secret_file(f)) is not None:
                log.warning("%s: %s", self.name, problem)

    def _warn_without_auth_key(self) -> None:
        """Say at start which of this node's pairs cannot authenticate a first block (no pre-shared secret
        in the store's ``auth`` pool): every block of theirs would abort, and the run still exit 0."""
        from labqfl.keystore.preshare import min_preshared_bits

        need = min_preshared_bits(self.settings.auth_lanes)
        for pair in sorted({*self.i_of, *self.j_of}):
            have = self.store.available_bits(pair, "auth")
            if have < need:
                log.warning("%s: pair %s has %d authentication key bits in its store, %d needed for a first block: "
                            "its blocks abort until the pair's pre-shared secret is delivered "
                            "(<data>/nodes/%s/preshared/%s.json, docs/nodes.md)", self.name, pair, have, need,
                            self.name, pair)

    def _partner_origin(self, pair: str, got: dict[str, str]) -> dict[str, str]:
        """The partner's claim as it came (authenticated with the block), a missing or unknown value read as the
        weakest (seeded, simulated): a claim no end made is never credited. Both ends map alike."""
        out = {"randomness": got.get("randomness", ""), "physical_layer": got.get("physical_layer", "")}
        if out["randomness"] not in RANDOMNESS_SOURCES or out["physical_layer"] not in PHYSICAL_LAYERS:
            log.warning("%s: pair %s: the partner's block claimed randomness %r, physical layer %r (expected one of "
                        "%s and of %s): recorded as seeded, simulated", self.name, pair, got.get("randomness"),
                        got.get("physical_layer"), RANDOMNESS_SOURCES, PHYSICAL_LAYERS)
            out = {"randomness": "seeded", "physical_layer": "simulated"}
        return out

    def block_provenance(self, pair: str, acq: _Acq, o: BlockOutcome, *, eps_sec: float, eps_cor: float,
                         eps_auth: float, eps_total: float) -> tuple[Provenance, dict[str, Any]]:
        """The block's provenance, the weakest of the two ends' own claims (this end's, and the partner's from
        ``o.peer_origin``), and the claims by client: both ends of a block compute the same (review s35 leak F7:
        each used to take the partner's randomness from its own copy of the station file)."""
        partner = next(c for c in pair.split("-") if c != self.name)
        mine, theirs = node_origin(self.cfg, self.name, acq.log), self._partner_origin(pair, o.peer_origin)
        layers = {mine["physical_layer"], theirs["physical_layer"]}
        prov = Provenance(physical_layer="simulated" if "simulated" in layers else "hardware",
                          randomness=weakest_randomness(mine["randomness"], theirs["randomness"]), eps_sec=eps_sec,
                          eps_cor=eps_cor, eps_auth=eps_auth, eps_total=eps_total)
        return prov, {c: {k: claim[k] for k in sorted(ORIGIN_FIELDS)}
                      for c, claim in sorted(((self.name, mine), (partner, theirs)))}

    def block_meta(self, pair: str, acq: _Acq, o: BlockOutcome, eps_auth: float, extra: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        eps_t = epsilon_total(s.params, eps_auth)
        prov, origins = self.block_provenance(pair, acq, o, eps_sec=s.params.eps_sec, eps_cor=s.params.eps_cor,
                                              eps_auth=eps_auth, eps_total=eps_t)
        return {"engine": s.engine, "sifted_bits": o.n, "qber": o.qber, "leaked_ec_bits": o.leak,
                "final_key_bits": int(o.final.size) if o.final is not None else 0, "eps_sec": s.params.eps_sec,
                "eps_cor": s.params.eps_cor, "eps_auth": eps_auth, "eps_total": eps_t, "acquisition": acq.acq,
                "slots": [int(extra.get("start", 0)), int(extra.get("end", 0))], "node": self.name,
                "run_id": acq.run_id, "provenance": prov.as_dict(), "origins": origins}

    def store_block(self, pair: str, block_id: str, final: np.ndarray, refill: int, meta: dict[str, Any]) -> list[str]:
        """Store an accepted block: its first ``refill`` bits refill the ``auth`` pool, the rest is key; both
        parts in one transaction (all or nothing: review s35 chaos F5). Returns the IDs stored."""
        return self.store.add_blocks(pair, _block_parts(block_id, final, refill, meta),
                                     run_id=str(meta.get("run_id", "")))

    def _shred_pending_temporaries(self) -> None:
        """A node killed while writing a pending block left its temporary file (key bits, 0600): overwrite each
        with zeros and delete it at start, before any block is written (:func:`labqfl.durable.leftover_temporaries`,
        and ``<hash>.tmp`` of labqfl before session 40). The block it was writing was never accepted by this node
        (the rename never happened), so nothing is lost; a file that cannot be destroyed stops the start."""
        from labqfl.keystore.preshare import shred_secret_file

        for tmp in sorted(set(leftover_temporaries(self.pending)) | set(self.pending.glob("*.tmp"))):
            if (problem := shred_secret_file(tmp)) is not None:
                raise OSError(problem)
            log.warning("client %s: destroyed a pending block's temporary file a crash left (%s)", self.name, tmp.name)

    def _pending_path(self, block_id: str) -> Path:
        return self.pending / f"{hashlib.sha256(block_id.encode()).hexdigest()[:32]}.json"

    def write_pending(self, pair: str, block_id: str, final: np.ndarray, refill: int, meta: dict[str, Any]) -> None:
        """Cj's accepted block until Ci confirms it stored it (0600, atomic; the file and then the pending folder
        fsynced, :func:`labqfl.durable.replace_durably`: before, the rename was not synced, so a crash right after
        Cj accepted could lose the only copy Cj kept of a block Ci went on to store)."""
        body = json.dumps({"pair": pair, "block_id": block_id, "nbits": int(final.size), "refill": int(refill),
                           "bits_hex": np.packbits(final).tobytes().hex(), "meta": meta})
        replace_durably(self._pending_path(block_id), body, mode=0o600, secret=True)

    def pending_ids(self, pair: str) -> list[str]:
        with self._pending_lock:
            return [rec["block_id"] for _, rec in self._pending_records(pair)]

    def _pending_records(self, pair: str, only: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
        files = [self._pending_path(only)] if only is not None else sorted(self.pending.glob("*.json"))
        out = []
        for f in files:
            if not f.is_file():
                continue
            rec = _read_pending_record(f)
            if rec["pair"] == pair and (only is None or rec["block_id"] == only):
                out.append((f, rec))
        return out

    def resolve_pending(self, pair: str, held: list[str], only: str | None = None) -> int:
        """Store the pending blocks of ``pair`` whose IDs (key or auth refill) Ci holds; destroy the others
        (every resolved file overwritten, flushed to disk and deleted). Returns the number of pending blocks
        resolved."""
        with self._pending_lock:
            return self._resolve_pending(pair, [str(h) for h in held], only)

    def _resolve_pending(self, pair: str, held: list[str], only: str | None) -> int:
        from labqfl.keystore.preshare import shred_secret_file

        records = self._pending_records(pair, only)
        for f, rec in records:
            bid = rec["block_id"]
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(rec["bits_hex"]), np.uint8), count=int(rec["nbits"]))
            refill, meta = int(rec["refill"]), rec["meta"]
            parts = [p for p in _block_parts(bid, bits, refill, meta) if p[0] in held and not self.store.has_block(p[0])]
            if parts:  # the parts Ci holds, in one transaction (review s35 chaos F5)
                self.store.add_blocks(pair, parts, run_id=str(meta.get("run_id", "")))
                prov = meta.get("provenance") or {}
                log.info("node %s: block %s of %s: %d bits stored (provenance: physical layer %s, randomness %s)",
                         self.name, bid[:8], pair, sum(int(p[1].size) for p in parts), prov.get("physical_layer"),
                         prov.get("randomness"))
            bits[:] = 0
            # overwritten and fsynced before the unlink (as pre-shared secrets are): key bits neither end will
            # use (or a copy of those now in the store) are not left on freed disk blocks
            if (problem := shred_secret_file(f)) is not None:
                log.error("%s: pending block %s: %s", self.name, bid, problem)
        return len(records)

    # -- sessions ------------------------------------------------------------------------------
    def _acq(self, hello: Message) -> _Acq:
        acq = str(hello.fields.get("acq", ""))
        with self._lock:
            a = self.acqs.get(acq)
        if a is None:
            raise NodeError(f"client {self.name} is not armed for acquisition {acq!r}")
        return a

    def _ann(self, peer: str, hello: Message) -> ServedSession:
        a = self._acq(hello)
        with self._lock:
            if a.ann_opened:
                raise NodeError(f"detector {peer} already opened the announcement session of acquisition {a.acq} "
                                "(expected one per acquisition)")
            a.ann_opened = True
        return ServedSession(_Announced(self, a, peer), on_close=lambda error: self._ann_closed(a, peer, error))

    def _ann_closed(self, a: _Acq, peer: str, error: BaseException | None) -> None:
        """The detector's ``ann`` session ended. Before ``ann/end`` (a refused message, a reset connection, a
        detector that stopped), every pair it fed fails now, naming the detector and the cause: Ci's pair
        threads stop (:meth:`_IPair.lose`), Cj's feeds end (Ci's next request that needs more is refused)."""
        if not a.ann_done:
            why = str(error) if error is not None else "session closed before ann/end"
            reason = f"announcements from detector node {peer!r} lost: {why}"
            log.warning("node %s: acquisition %s: %s", self.name, a.acq, reason)
            for ip in a.i_pairs.values():
                ip.lose(reason)
            for jp in a.j_pairs.values():
                jp.feed.end(reason)
        a.ended.set()

    def _jpair(self, peer: str, hello: Message) -> _JPair:
        a = self._acq(hello)
        pair = str(hello.fields.get("pair", ""))
        jp = a.j_pairs.get(pair)
        if jp is None or jp.ci != peer:
            raise NodeError(f"node {peer} is not Ci of a pair of {self.name} named {pair!r}")
        return jp

    def _pair(self, peer: str, hello: Message) -> ServedSession:
        jp = self._jpair(peer, hello)
        end = jp.new_end()
        return ServedSession(_JServed(jp, end), end.tx, on_close=end.on_session_end)

    def _pairctl(self, peer: str, hello: Message) -> ServedSession:
        return ServedSession(_JCtl(self._jpair(peer, hello)))

    # -- control -------------------------------------------------------------------------------
    def ctl_arm(self, req: Message) -> Message:
        """Arm for acquisition ``acq``: a fresh generator, the modulator link, the pair drivers."""
        from labqfl.sim_backends.qrng import CsprngChoiceLog, new_client_log, save_private_log

        acq = str(req.get("acq"))
        if not acq or acq in self.acqs:
            raise NodeError(f"acquisition ID {acq!r} is empty or was armed before (never reuse one)")
        optics = str(req.fields.get("optics", "")) or self.optics
        peers = {**self.peers, **json.loads(str(req.fields.get("peers", "{}")))}
        log_ = new_client_log(self.cc, int(req.fields.get("epoch", 0)))
        if isinstance(log_, CsprngChoiceLog):
            save_private_log(log_, self.data, acq)
        streams = None
        gen = self._open_generator()
        if gen is not None:
            for prev in list(self.acqs.values()):  # an earlier acquisition's stream ends before this one's starts
                prev.finish_stream(timeout_s=5.0)
            duration = float(req.fields.get("duration", 0.0)) or None  # None: open-ended, until mod/end
            streams = ClientStreams({self.name: gen}, {self.name: log_},
                                    acquisition_slots(duration, self.cfg.laser.rep_rate_hz))
        a = _Acq(acq, log_, peers, str(req.fields.get("run_id", "")), streams)
        a.n_slots = acquisition_slots(float(req.fields.get("duration", 0.0)) or None, self.cfg.laser.rep_rate_hz)
        a.rep_rate_hz = float(self.cfg.laser.rep_rate_hz)
        for pair, ci in self.j_of.items():
            a.j_pairs[pair] = _JPair(self, a, pair, ci)
        for pair, cj in self.i_of.items():
            a.i_pairs[pair] = _IPair(self, a, pair, cj)
        with self._lock:
            self.acqs[acq] = a
        # a simulated light: the modulator link to the optics node; the lab's light (a real tagger): none, the
        # generator's frames are all the light learns of this client
        link = open_session(optics, self.creds, self.optics_name, "optics/modulator", fields={"acq": acq}) \
            if simulated_light(self.cfg) else None
        self.instruments.arm()  # its modulators on before its generator plays; disarmed when the link ends
        if a.streams is not None:  # after the link opened: the optics has its emulated generators' clocks aligned
            try:
                a.streams.start()
            except BaseException:
                if link is not None:
                    link.close()
                self.instruments.disarm()
                raise
        if link is not None:
            a.link_thread = threading.Thread(target=self._modulator, args=(a, link), name="modulator", daemon=True)
        else:
            bound = ENDLESS_WAIT_S + 10.0 * float(req.fields.get("duration", 0.0))
            a.link_thread = threading.Thread(target=self._until_ended, args=(a, bound), name="acquisition", daemon=True)
        a.link_thread.start()
        for ip in a.i_pairs.values():
            ip.thread.start()
        return ok("ctl/armed", randomness=str(getattr(log_, "randomness", "")))

    def _modulator(self, a: _Acq, link: RecordedChannel) -> None:
        """Answer the optics' questions: what this client applied in the slots asked (k·4 + a), from its
        own log (a simulated loop beside a real generator cannot see the light; with emulated generators
        the optics asks nothing). At ``mod/end`` this client's stream plays out and stops."""
        try:
            rep = link.request(Message("mod/ready", {}))
            while rep.kind == "mod/query":
                codes = answer_codes(a.raw_log, rep)
                a.answered_slots += int(codes.size)
                rep = link.request(Message("mod/applied", {"codes": codes}))
            link.close()
        except (LabqflError, OSError) as e:
            a.link_error = str(e)
            log.warning("node %s: modulator link ended: %s", self.name, e)
        finally:
            try:
                a.finish_stream()  # the last upload has played out: every frame has its verdict
            except Exception as e:
                a.link_error = a.link_error or f"stopping the stream failed: {e}"
                log.error("node %s: stopping the stream failed: %s", self.name, e)
            self._end_check(a)
            self.instruments.disarm()  # its modulators' safe state after the acquisition, as in process

    def _until_ended(self, a: _Acq, bound_s: float) -> None:
        """The lab's light (no optics node): the acquisition ends when the detector announces its end (or its
        announcement session ends, or ``bound_s`` passed without either: a detector that never came); then this
        client's stream plays out and stops, and its modulators go to their safe state."""
        if not a.ended.wait(bound_s):
            a.link_error = f"no end of acquisition from the detector within {bound_s:.0f} s"
            log.error("node %s: acquisition %s: %s", self.name, a.acq, a.link_error)
        try:
            a.finish_stream()
        except Exception as e:
            a.link_error = f"stopping the stream failed: {e}"
            log.error("node %s: stopping the stream failed: %s", self.name, e)
        finally:
            self._end_check(a)
            self.instruments.disarm()

    def _end_check(self, a: _Acq) -> None:
        """At the acquisition's end, before the disarm: this client's instruments read back as armed
        (:meth:`~labqfl.nodes.common.NodeInstruments.acquisition_faults`: modulators on, shutters open, and any
        arming of another acquisition that failed meanwhile), as the detection node reads its own. A fault goes
        into ``ctl/results`` (``instrument_faults``), and the operator refuses the acquisition
        (:func:`labqfl.nodes.launch.refuse_client_faults`; review s37 lab3 L7: they were logged and dropped)."""
        try:
            faults = self.instruments.acquisition_faults()
        except Exception as e:  # a read-back that fails is a fault too
            faults = [f"the end-of-acquisition read-back failed: {type(e).__name__}: {e}"]
        if faults:
            a.instrument_faults = list(faults)
            log.error("node %s: acquisition %s: at its end this client's instruments no longer read as armed: %s",
                      self.name, a.acq, "; ".join(faults))

    def ctl_wait(self, req: Message) -> Message:
        """Wait until this client's pairs (as Ci) of acquisition ``acq`` are distilled; their results. With
        ``stored_blocks`` true also what this client holds from it (:meth:`stored_from`): the operator names them
        when the detection node refused the acquisition (review s37 lab3 L9 over nodes)."""
        acq = str(req.get("acq"))
        duration = float(req.fields.get("duration", 0.0)) or 1.0
        timeout = float(req.fields.get("timeout", 600.0))
        a = self.acqs.get(acq)
        if a is None:
            raise NodeError(f"unknown acquisition {acq!r}")
        t_end = time.monotonic() + timeout
        for ip in a.i_pairs.values():
            ip.thread.join(max(t_end - time.monotonic(), 0.0))
        if a.link_thread is not None:  # its end check ran (instrument_faults) before the disarm
            a.link_thread.join(max(t_end - time.monotonic(), 0.0))
        out = {}
        for name, ip in a.i_pairs.items():
            d = ip.result.as_dict(duration)
            d.update(done=not ip.thread.is_alive(), failed=ip.failed, accepted_blocks=list(ip.accepted_ids),
                     round_trips=ip.ch.stats.round_trips if ip.ch is not None else 0)
            out[name] = d
        modulation = a.streams.summary() if a.streams is not None else {}
        extra = {"stored_blocks": json.dumps(self.stored_from(a))} if req.fields.get("stored_blocks") else {}
        return ok("ctl/results", results=json.dumps(out), answered_slots=a.answered_slots, link_error=a.link_error,
                  modulation=json.dumps(modulation), instrument_faults=json.dumps(a.instrument_faults), **extra)

    def stored_from(self, a: _Acq) -> dict[str, dict[str, list[str]]]:
        """Per pair of this client, the key blocks of acquisition ``a`` in this client's own store (``stored``:
        block IDs, a block's auth refill named by its block, in the order stored) and those it holds only as a
        pending file (``pending``: Cj's copy of a block Ci stored, until Ci's commit). Block IDs only, never a bit;
        read from this node's own store and pending files (review s37 lab3 L9: the detection node reads no
        client's store)."""
        out: dict[str, dict[str, list[str]]] = {}
        for pair in sorted({*a.i_pairs, *a.j_pairs}):
            stored: list[str] = []
            for b in self.store.blocks(pair):
                meta = b["meta"] if isinstance(b["meta"], dict) else {}
                bid = str(meta.get("key_block") or b["block_id"])
                if meta.get("acquisition") == a.acq and bid not in stored:
                    stored.append(bid)
            with self._pending_lock:
                pending = [str(rec["block_id"]) for _, rec in self._pending_records(pair)
                           if isinstance(rec.get("meta"), dict) and rec["meta"].get("acquisition") == a.acq]
            out[pair] = {"stored": stored, "pending": pending}
        return out

    def shutdown(self) -> None:
        """SIGTERM/SIGINT: the pattern generator stops at once (frames not played are lost) and goes to
        its safe state; the pair drivers finish the block in progress (stored at both ends or at
        neither) and take no new one; then the key store is closed."""
        try:
            self._generator_safe()
        except Exception as e:  # keep shutting down: the key store still closes cleanly
            log.error("node %s: pattern generator safe state failed: %s", self.name, e)
        for a in list(self.acqs.values()):
            for ip in a.i_pairs.values():
                ip.inbox.put(-1)
            for ip in a.i_pairs.values():
                if ip.thread.is_alive():
                    ip.thread.join(30.0)
        self.store.close()


def main(name: str, station: str | Path | None, data: str | Path, listen: str, certs: str | Path, *,
         optics: str = "", peers: dict[str, str] | None = None, settings: DistillSettings | None = None, as_json: bool = False) -> None:
    ClientNode(name, station=station, data_dir=data, listen=listen, certs=certs, optics=optics, peers=peers,
               settings=settings).serve(as_json)
