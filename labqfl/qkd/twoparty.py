"""Post-processing of one pair as a two-party protocol: each client end holds only its own data.

:class:`PairEndI` (client Ci) drives the protocol over a request/response
:class:`~labqfl.qkd.messaging.Channel`; :class:`PairEndJ` (client Cj) is the
:class:`~labqfl.qkd.messaging.Responder` on the other side. Each end is built from its own
client's :class:`~labqfl.contracts.types.ModulationLog`, its own authentication-key supply and the
public setup of both clients; neither ever reads the other's log, bits or state. The same code
runs in process (:class:`~labqfl.qkd.messaging.LocalChannel`, what
:class:`~labqfl.qkd.pipeline.Distiller` uses) and between processes
(:class:`~labqfl.net.transport.NodeChannel` to a :class:`~labqfl.net.transport.NodeServer` that
serves ``PairEndJ``).

Messages (docs/protocol.md §7 lists them with their fields), Ci → Cj, each answered by Cj:

per chunk of announced slots ``[lo, hi)`` (skipped for a chunk without announcements):

1. ``ann/confirm`` — SHA-256 digest, count and slot range of the detector's announcements as Ci
   received them, and the number of the pair's measured slots; Cj compares with what it
   received → ``ann/ok``. This is only a fast early refusal: that the untrusted detector told
   both clients the same is guaranteed by the transcript tags (local entries, below);
2. ``sift/flags`` — Ci's public flag per announced slot (signal intensity ∧ basis X), packed; Cj
   answers with its own flags; both take the key slots as the slots flagged by both
   (:func:`~labqfl.qkd.sifting.key_flags`) and each keeps its own raw key bits;
3. ``test/bases`` — Ci's (intensity, basis) in the test slots (every announced slot that is not a
   key slot), one nibble 2·k + basis per slot (:func:`pack_test_bases`); Cj answers with its own;
4. ``test/bits`` — Ci's bits in the test slots with equal bases (the only ones whose bits the
   error counts need); Cj answers with its own. Both then tally the same
   :class:`~labqfl.contracts.types.PairCounts` (:func:`~labqfl.qkd.sifting.reveal_counts`).

per block (slots ``[start, end)``):

5. ``block/open`` — block ID, slot range, measured slots, announcements and sifted bits of the
   block at Ci; Cj compares with its own → ``block/ok``;
6. ``ec/start`` — engine and QBER estimate. Reconciliation is Bob-driven (Cj corrects towards
   Ci, :mod:`labqfl.qkd.cascade`, :mod:`labqfl.qkd.ldpc`): Cj runs Bob and *answers* with Bob's
   next request (``cascade/*``, ``ldpc/*``), Ci sends Alice's answer as its next request, until
   Cj answers ``ec/done`` with the errors it corrected and its count of the disclosed bits;
7. ``verify/request`` — the 2-universal verification tag of Ci's key and its seed → ``verify/result``;
   with Cascade, after a failed attempt Ci may send ``ec/more`` {attempt} (Cj's Bob continues
   reconciliation as after ``ec/start``, until ``ec/done``) and a further ``verify/request`` with a
   fresh seed and Δ_i tag bits, which passes only if every tag so far matches
   (:meth:`PairEndI._verify`, :func:`tag_plan`, docs/protocol.md §5 "Verification attempts");
8. ``pa/seed`` — Ci's secure key length ℓ and the Toeplitz seed. Cj has computed ℓ itself from
   its own authenticated copy of the data (:func:`~labqfl.qkd.estimation.secure_key_length`); a
   different ℓ refuses the block at both ends → ``pa/done``;
9. ``block/confirm`` — Ci's one-time-padded Wegman–Carter tag of the block's transcript; Cj checks
   it and answers ``block/confirmed`` with its own tag (or ``block/refused``);
10. ``block/accept`` — Ci's decision after checking Cj's tag → ``block/accepted``. Only then does
    either end hand out the key.

``block/drop`` ends a block that holds too few sifted bits to be worth distilling (no key, no
pad spent). Any refusal is answered ``block/refused`` {reason}; the protocol then still runs to
the tag exchange, so both ends spend the same pads and a tampered message is reported as such.

Authentication (:class:`TranscriptEnd`): every message of 1–8, both ways, is absorbed into the
end's :class:`~labqfl.qkd.authentication.TranscriptAuthenticator` (Wegman–Carter polynomial hash
over GF(2^64), key from the pair's ``auth`` pool); the tags of 9 cover the whole block, so one
flipped bit anywhere makes the block refused at both ends (delayed authentication: Fung, Ma &
Chau, PRA 81, 012318 (2010); Kiktenko et al., arXiv:1903.10237). Each end also absorbs the
detector's announcements as it received them (:func:`announcement_entry`) as *local* entries,
never sent, after the block's last message: the tags then match only if the detector told both
clients the same — information-theoretically, at no traffic cost, with the entries counted in the
transcript length of the forgery bound. The messages of 9 and 10 carry
the tags and are not absorbed. ``block/accept`` is not tagged: a forged acceptance has the same
effect as a dropped last message, which no protocol can exclude (the two-generals problem); the
ends' key stores are matched by block ID.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import (
    DEFAULT_ENGINE,
    Announcements,
    ModulationLog,
    PairCounts,
    split_pair,
)
from labqfl.errors import AuthenticationError, LabqflError, QKDInputError
from labqfl.log import get_logger
from labqfl.qkd.authentication import DEFAULT_AUTH_LANES, AuthKeySupply, TranscriptAuthenticator
from labqfl.qkd.estimation import KeyLengthReport, SecurityParameters, secure_key_length
from labqfl.qkd.first_qber import (
    CASCADE_FIRST_QBER_SIGMAS,
    CASCADE_QBER_DEFAULT,
    FIRST_QBER_SIGMAS,
    LDPC_QBER_DEFAULT,
    key_qber_from_tests,
)
from labqfl.qkd.messaging import (
    Channel,
    FieldValue,
    Message,
    MessageError,
    MessageSchema,
    _encoded_size,
    field_problem,
)
from labqfl.qkd.sifting import (
    ClientSetup,
    announcement_digest,
    client_i_key,
    client_j_key,
    compress,
    key_flags,
    pack_flags,
    reveal_counts,
    with_key_errors,
)
from labqfl.qkd.spool import TranscriptSpool
from labqfl.qkd.toeplitz import toeplitz_hash, toeplitz_seed
from labqfl.qkd.transcript_entries import announcement_entry
from labqfl.qkd.verification import hash_tag, verification_tag_plan

log = get_logger(__name__)

__all__ = ["ProtocolSettings", "TranscriptEnd", "PairEndI", "PairEndJ", "BlockOutcome", "ChunkResult",
           "UNABSORBED_KINDS", "REFUSED", "STOPPED_BY_USER",
           "CI_MESSAGES", "CJ_MESSAGES", "ORIGIN_FIELDS", "announcement_entry", "announcement_problem"]

#: Cj's answer to any message of a block it has refused (fields: ``reason``).
REFUSED = "block/refused"
#: The reason of a block Ci abandoned because its owner asked it to stop (:meth:`PairEndI.run_block`).
STOPPED_BY_USER = "stopped by user"
#: An end's own claim of what its key rests on (its client's randomness source, its view of the physical layer),
#: optional fields of ``block/open`` (Ci) and ``block/ok`` (Cj): absorbed into the block's transcript like every
#: field of 1-8, so the two tags match only if each end got the other's claim as it was sent. A network node
#: sends its own (:attr:`_PairEnd.origin`) and records the weaker of the two (review s35 leak F7); the in-process
#: pipeline, which sees both clients' logs, sends none.
ORIGIN_FIELDS = ("randomness", "physical_layer")
#: Messages that carry or follow the transcript tags and are therefore not absorbed into them.
UNABSORBED_KINDS = frozenset({"block/confirm", "block/confirmed", "block/accept", "block/accepted", "block/drop",
                              "block/dropped", REFUSED})


def _schema(required: str = "", optional: str = "") -> MessageSchema:
    """A :class:`MessageSchema` from ``"name:type name:type"`` lists."""
    def spec(text: str) -> dict[str, str]:
        return dict(item.split(":") for item in text.split())
    return MessageSchema(spec(required), spec(optional))


#: Every message Ci sends (Cj checks each one against it before any handler reads it, in
#: :meth:`PairEndJ.handle`): the kinds of docs/protocol.md §2.1, and Alice's answers in reconciliation
#: (:class:`~labqfl.qkd.cascade.CascadeAlice`, :class:`~labqfl.qkd.ldpc.LdpcAlice`). A message of another
#: kind, with a field not listed, without a required one or with one of another type refuses the block
#: (review s32, finite-key F1: a field no handler reads rode along into the transcript).
CI_MESSAGES: dict[str, MessageSchema] = {
    "ann/confirm": _schema("lo:int hi:int n:int n_slots:int digest:bytes"),
    "sift/flags": _schema("lo:int flags:bytes"),
    "test/bases": _schema("lo:int kb:bytes"),
    "test/bits": _schema("lo:int bits:bytes"),
    "block/open": _schema("block:str start:int end:int n_slots:int n_ann:int n:int", "randomness:str physical_layer:str"),
    # qber_low: the first LDPC block's low end of its QBER estimate (PairEndI.qber_low); absent otherwise
    "ec/start": _schema("engine:str qber:float n:int", "qber_low:float"),
    "cascade/ok": _schema(optional="disclosed:int"),
    "cascade/block-parities": _schema(),
    "cascade/parities": _schema(),
    "ldpc/ok": _schema(optional="disclosed:int"),
    "ldpc/syndromes": _schema("m:int"),
    "ldpc/filler": _schema(),
    "verify/request": _schema("t:int seed:bytes"),
    "ec/more": _schema("attempt:int"),
    "pa/seed": _schema("out_len:int seed:bytes"),
    "block/confirm": _schema("tag:bytes"),
    "block/accept": _schema("ok:int reason:str"),
    "block/drop": _schema(),
}
#: Every message Cj sends (Ci checks each one, :meth:`PairEndI._request`): its answers, and Bob's
#: requests in reconciliation (:class:`~labqfl.qkd.cascade.CascadeBob`, :class:`~labqfl.qkd.ldpc.LdpcBob`).
CJ_MESSAGES: dict[str, MessageSchema] = {
    "ann/ok": _schema(),
    "sift/flags": _schema("flags:bytes"),
    "test/bases": _schema("kb:bytes"),
    "test/bits": _schema("bits:bytes"),
    "block/ok": _schema(optional="randomness:str physical_layer:str"),
    "cascade/init": _schema("n:int frames:array seeds:array schedule:array"),
    "cascade/round": _schema("open:array query:array"),
    "cascade/done": _schema(),
    # construction: sent only for a code construction other than 0 (labqfl.qkd.ldpc.build_code); Alice refuses
    # an unknown one (LdpcAlice.handle)
    "ldpc/init": _schema("N:int code_n:int rate:float code_seed:int z:int d:int max_reveal:int", "construction:int"),
    "ldpc/syndromes": _schema("frames:array"),
    "ldpc/reveal": _schema("frames:array start:int count:int"),
    "ldpc/done": _schema("ok:array"),
    "ec/done": _schema("errors:int leaked:int success:int"),
    "verify/result": _schema("ok:int"),
    "pa/done": _schema("ok:int out_len:int"),
    "block/confirmed": _schema("tag:bytes"),
    "block/accepted": _schema("ok:int", "reason:str"),
    "block/dropped": _schema(),
    REFUSED: _schema("reason:str"),
}

@dataclass(frozen=True)
class ProtocolSettings:
    """What both ends of a pair agree on before any block (from ``DistillSettings``)."""

    engine: str = DEFAULT_ENGINE
    params: SecurityParameters = field(default_factory=SecurityParameters)
    auth_lanes: int = DEFAULT_AUTH_LANES
    qber_floor: float = 0.005
    #: the first block's QBER with fewer than ``MIN_TEST_CLICKS`` matched test clicks; None: the
    #: engine's (:data:`~labqfl.qkd.first_qber.CASCADE_QBER_DEFAULT` 1 %, ``LDPC_QBER_DEFAULT`` 2 %)
    qber_default: float | None = None


def announcement_problem(ann: Announcements, lo: int, hi: int, after: int, schedule: PairSchedule, pair: str) -> str:
    """Why an end refuses the untrusted detector's announcements for the pair's slots ``[lo, hi)``
    ('' if it does not): each announced slot must be one of the pair's own slots (the schedule's
    frames of ``pair``), inside ``[lo, hi)``, announced once (strictly increasing; ``[lo, hi)`` must
    not reach back before ``after``, the end of what the end already sifted) with an outcome in
    {1, 2, 3}. The transcript tags cannot catch a detector that tells both clients the same
    falsehood: a slot announced k times would give its raw key bit k times and be counted as k
    independent sifted bits by the key-length bound, and another pair's slot would reuse a
    client's choice in two pairs' keys."""
    s, o = ann.slots, ann.outcomes
    if ann.pair != pair:
        return f"announcements for pair {ann.pair} handed to pair {pair}"
    if not after <= lo <= hi:
        return f"slot range [{lo}, {hi}) reaches back before slot {after}, already sifted"
    if s.size == 0:
        return ""
    if s.size > 1 and not bool(np.all(s[1:] > s[:-1])):
        return "announced slots are not strictly increasing (a slot announced twice, or out of order)"
    if s[0] < lo or s[-1] >= hi:
        return f"announced slots {int(s[0])}..{int(s[-1])} lie outside the chunk's range [{lo}, {hi})"
    if bool(np.any((o < 1) | (o > 3))):
        return "announced outcomes outside {1, 2, 3} (D0, D1, both)"
    if bool(np.any(schedule.pair_index(s) != schedule.names.index(pair))):
        return "announced slots of another pair's frames"
    return ""


def _kind(payload: bytes) -> str:
    """Kind of an encoded message (``encode_message`` layout: magic, u16 length, kind)."""
    if len(payload) < 6:
        return ""
    n = int.from_bytes(payload[4:6], "little")
    return bytes(payload[6:6 + n]).decode("utf-8", "replace")


class TranscriptEnd:
    """One end's channel authenticator: absorbs every message it sends (``tag``) or receives
    (``verify``) with its true direction into its own :class:`TranscriptAuthenticator`.

    ``side``: 0 for Ci, 1 for Cj. Until :meth:`start` the messages are held back (the hash key is
    drawn from the pair's ``auth`` pool at the first absorption, which must not happen before
    the block is known to be new and the pool to be filled); :meth:`reset` discards the
    transcript of a block that ends without a tag exchange.
    """

    def __init__(self, auth: TranscriptAuthenticator, side: int) -> None:
        if side not in (0, 1):
            raise QKDInputError(f"transcript side must be 0 (Ci) or 1 (Cj), got {side!r}")
        self.auth, self.side = auth, side
        # held back until absorbed, compactly (labqfl.qkd.spool: same bytes back, in order)
        self._held = TranscriptSpool()
        self._local = TranscriptSpool()
        self._started = False

    def local(self, payload: bytes) -> None:
        """A never-sent entry of the block's transcript (the detector's announcements as this end
        received them, :func:`announcement_entry`). Both ends absorb their local entries, in the
        order received, after the block's last absorbed message and before the tags, so the tags
        match only if the detector told both clients the same (information-theoretically, like
        every message). Once the pair's hash key is drawn (from its first block on) they are
        hashed as they arrive, into the transcript's trailing part
        (:meth:`TranscriptAuthenticator.absorb_trailing`: the same digest, nothing held);
        before, they are held compactly like the messages."""
        if self.auth.key_bits_used > 0:
            self._trail_held()
            self.auth.absorb_trailing(payload)
        else:
            self._local.append(2, payload)

    def _trail_held(self) -> None:
        """The local entries held before the hash key was drawn go first into the trailing part."""
        if len(self._local):
            for _, p in self._local.drain():
                self.auth.absorb_trailing(p)

    def held_bytes(self) -> int:
        """Memory the held-back entries take now (compressed; beyond a bound they are spooled to
        a temporary file, :class:`~labqfl.qkd.spool.TranscriptSpool`)."""
        return self._held.held_bytes + self._local.held_bytes

    def tag(self, payload: bytes) -> bytes:
        self._absorb(self.side, payload)
        return b""

    def verify(self, payload: bytes, tag: bytes) -> None:
        if tag:
            raise AuthenticationError("unexpected per-message tag on a transcript-authenticated pair channel")
        self._absorb(1 - self.side, payload)

    def _absorb(self, direction: int, payload: bytes) -> None:
        if _kind(payload) in UNABSORBED_KINDS:
            return
        if self._started or self.auth.key_bits_used > 0:
            self.auth.absorb(direction, payload)
        else:
            self._held.append(direction, payload)

    def start(self) -> None:
        """From here on absorb directly (the held messages first, in order)."""
        if not self._started:
            self._started = True
            for d, p in self._held.drain():
                self.auth.absorb(d, p)

    def reset(self) -> None:
        """Forget the current transcript (no pad is spent)."""
        self._held.clear()
        self._local.clear()
        if self.auth.messages:
            self.auth.close()
        self._started = False

    def close(self) -> None:
        """End of the block's messages: absorb the local entries, freeze the transcript for the
        tag exchange."""
        self.start()
        if self.auth.key_bits_used > 0:
            self._trail_held()
        else:  # an empty transcript so far: nothing drew the key (absorb draws it)
            for _, p in self._local.drain():
                self.auth.absorb(2, p)
        self.auth.close()
        self._started = False


@dataclass(frozen=True)
class ChunkResult:
    """What one end learned from one chunk (public statistics only)."""

    n_key: int
    counts: PairCounts


@dataclass
class BlockOutcome:
    """One end's view of one block once the protocol ended. ``final`` (the key, uint8 0/1) is set
    only when ``accepted``; ``repr`` shows no key material."""

    block_id: str
    accepted: bool = False
    reason: str = ""
    n: int = 0
    qber_estimate: float = 0.0
    qber_low: float | None = None
    errors: int = 0
    leak: int = 0
    ec_success: bool = False
    verified: bool = False
    tlen: int = 0
    #: verification attempts made (docs/protocol.md §5): 1 when the first passed, more when reconciliation
    #: continued after a failure (``ec/more``); the bits each further attempt disclosed are in ``leak``
    attempts: int = 0
    ell: int = 0
    report: KeyLengthReport | None = None
    final: np.ndarray | None = field(default=None, repr=False)
    times: dict[str, float] = field(default_factory=dict)
    #: the other end's :data:`ORIGIN_FIELDS` as its ``block/open``/``block/ok`` carried them (authenticated with the
    #: block's transcript); empty when it sent none
    peer_origin: dict[str, str] = field(default_factory=dict)

    @property
    def qber(self) -> float:
        return self.errors / self.n if self.n else 0.0


def _origin(msg: Message) -> dict[str, str]:
    """The :data:`ORIGIN_FIELDS` a ``block/open``/``block/ok`` carries (its schema made them strings)."""
    return {k: str(msg.fields[k]) for k in ORIGIN_FIELDS if k in msg.fields}


class _Refused(LabqflError):
    """This end refuses the current block (the message is the reason)."""


class _Stopped(_Refused):
    """Ci abandons the current block: its owner asked it to stop (a refusal like any other, so the
    block still ends with the tag exchange and both ends spend the same pads)."""

    def __init__(self) -> None:
        super().__init__(STOPPED_BY_USER)


def _check_stop(stop: Callable[[], bool] | None) -> None:
    if stop is not None and stop():
        raise _Stopped()


def _alice(engine: str, bits: np.ndarray) -> Any:
    if engine == "cascade":
        from labqfl.qkd.cascade import CascadeAlice

        return CascadeAlice(bits)
    if engine == "ldpc":
        from labqfl.qkd.ldpc import LdpcAlice

        return LdpcAlice(bits)
    raise QKDInputError(f"unknown error-correction engine {engine!r}; expected 'cascade' or 'ldpc'")


def tag_plan(engine: str, eps_cor: float, n: int) -> tuple[int, ...]:
    """Tag bits of each verification attempt of an n-bit block (docs/protocol.md §5): Cascade's
    :func:`~labqfl.qkd.verification.verification_tag_plan` (reconciliation continues after a failed
    attempt, ``ec/more``); one attempt for LDPC, or where the block is shorter than the plan's tags."""
    plan = verification_tag_plan(eps_cor)
    if engine != "cascade" or n < sum(plan):
        return (min(plan[0], n),)
    return plan


def _bob(engine: str, bits: np.ndarray, qber: float, attempts: int = 1, qber_low: float | None = None) -> Any:
    from labqfl.qkd.reconciliation import validate_reconciliation_input

    bits, _, q = validate_reconciliation_input(bits, bits, qber)
    if engine == "cascade":
        from labqfl.qkd.cascade import (
            PIPELINE_FRAME_BITS,
            CascadeBob,
            CascadeSchedule,
            split_frames,
            verified_halves,
        )

        # interleaved frames; the schedule for few round trips (CascadeSchedule.for_link), with fewer
        # confirmations where further verification attempts may follow (verified_halves)
        shortest = int(split_frames(int(bits.size), PIPELINE_FRAME_BITS).min())
        confirm, extra = verified_halves(q, shortest, attempts)
        return CascadeBob(bits, q, frame_bits=PIPELINE_FRAME_BITS,
                          schedule=CascadeSchedule.for_link(q, shortest, confirm, extra))
    if engine == "ldpc":
        from labqfl.qkd.ldpc import LdpcBob, plan_ldpc

        return LdpcBob(bits, q, plan=plan_ldpc(q, qber_low=qber_low))
    raise QKDInputError(f"unknown error-correction engine {engine!r}; expected 'cascade' or 'ldpc'")


def _bits_field(bits: np.ndarray) -> bytes:
    return np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="little").tobytes()


def _unbits(raw: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(raw, bytes) or len(raw) != (n + 7) // 8:
        raise _Refused(f"{what}: expected {n} packed bits, got {len(raw) if isinstance(raw, bytes) else type(raw).__name__}")
    return np.unpackbits(np.frombuffer(raw, np.uint8), count=n, bitorder="little")


def _packed(bits: np.ndarray) -> tuple[np.ndarray, int]:
    """A chunk's sifted key bits (uint8 0/1) held packed, 8 per byte, until its block closes."""
    return np.packbits(bits, bitorder="little"), int(bits.size)


def _joined(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """The block's key bits (uint8 0/1) from its packed chunks, in order."""
    out = np.empty(sum(n for _, n in parts), dtype=np.uint8)
    at = 0
    for packed, n in parts:
        out[at:at + n] = np.unpackbits(packed, count=n, bitorder="little")
        at += n
    return out


def pack_test_bases(k: np.ndarray, basis: np.ndarray) -> bytes:
    """The ``kb`` field of ``test/bases``: per test slot the nibble 2·k + basis (intensity index k <
    8, basis 0 X / 1 Y), two per byte, the first slot in the low nibble, a last odd one padded with
    0. A quarter of the bytes of one uint8 array each, which the transcript hashes and the first
    block's spool compresses (docs/protocol.md)."""
    c = np.asarray(k, np.uint8) * np.uint8(2) + np.asarray(basis, np.uint8)
    if c.size % 2:
        c = np.append(c, np.uint8(0))
    return (c[0::2] | (c[1::2] << np.uint8(4))).tobytes()


def unpack_test_bases(raw: Any, n: int, n_levels: int, what: str = "test/bases") -> tuple[np.ndarray, np.ndarray]:
    """(k, basis) of ``n`` test slots from a ``kb`` field (:func:`pack_test_bases`), checked: the
    length, every k below ``n_levels``, and the padding nibble 0; anything else is refused."""
    if not isinstance(raw, bytes) or len(raw) != (n + 1) // 2:
        got = len(raw) if isinstance(raw, bytes) else type(raw).__name__
        raise _Refused(f"{what}: expected {n} (intensity, basis) nibbles in {(n + 1) // 2} bytes, got {got}")
    a = np.frombuffer(raw, np.uint8)
    c = np.empty(2 * a.size, np.uint8)
    c[0::2] = a & np.uint8(15)
    c[1::2] = a >> np.uint8(4)
    if c.size > n and c[n] != 0:
        raise _Refused(f"{what}: the padding nibble after {n} test slots is not 0")
    c = c[:n]
    if c.size and int(c.max()) >> 1 >= n_levels:
        raise _Refused(f"{what}: an intensity index is not in 0..{n_levels - 1}")
    return c >> np.uint8(1), c & np.uint8(1)


class _PairEnd:
    """What both ends share in code (never in state): sifting of one chunk from one's own record
    plus the partner's public flags and reveals, and the secure key length."""

    side = 0

    def __init__(self, pair: str, log: ModulationLog, setup_i: ClientSetup, setup_j: ClientSetup,
                 settings: ProtocolSettings, supply: AuthKeySupply, *, schedule: PairSchedule) -> None:
        ci, cj = split_pair(pair)
        if pair not in schedule.names:
            raise QKDInputError(f"pair {pair} is not in the station's schedule ({', '.join(schedule.names)})")
        me = (ci, cj)[self.side]
        if log.client != me:
            raise QKDInputError(f"pair {pair}: the {'Ci' if self.side == 0 else 'Cj'} end needs {me}'s modulation log, "
                                f"got {log.client}'s")
        if (setup_i.name, setup_j.name) != (ci, cj):
            raise QKDInputError(f"pair {pair}: client setups of {setup_i.name}/{setup_j.name} do not match")
        self.pair, self.log = pair, log
        self.setup_i, self.setup_j = setup_i, setup_j
        self.settings = settings
        self.auth = TranscriptAuthenticator(supply, settings.auth_lanes)
        self.tx = TranscriptEnd(self.auth, self.side)
        self.schedule = schedule
        #: end (exclusive) of the slots whose announcements this end has taken: a chunk may not reach back
        self.announced_hi = 0
        #: this end's claim (:data:`ORIGIN_FIELDS` → value) sent with every block; empty: none sent
        self.origin: dict[str, str] = {}

    def _check_announced(self, ann: Announcements, lo: int, hi: int) -> str:
        """:func:`announcement_problem` for this end; a chunk it takes moves :attr:`announced_hi` on."""
        why = announcement_problem(ann, int(lo), int(hi), self.announced_hi, self.schedule, self.pair)
        if not why:
            self.announced_hi = int(hi)
        return why and f"the detector's announcements for slots [{lo}, {hi}) refused: {why}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pair={self.pair!r})"

    def _counts(self, n_slots: int, clicks: np.ndarray, errors_x2: np.ndarray, doubles: np.ndarray) -> PairCounts:
        si, sj = self.setup_i, self.setup_j
        return PairCounts(self.pair, int(n_slots), si.intensities, sj.intensities, si.intensity_probs,
                          sj.intensity_probs, si.basis_x_prob, sj.basis_x_prob, clicks, errors_x2, doubles)

    def _empty_counts(self, n_slots: int) -> PairCounts:
        shape = (len(self.setup_i.intensities), len(self.setup_j.intensities), 2, 2)
        z = np.zeros(shape, np.int64)
        return self._counts(n_slots, z, z.copy(), z.copy())

    def key_length(self, counts: PairCounts, n: int, errors: int, leak: int) -> KeyLengthReport:
        """Secure key length of the block from this end's own authenticated data."""
        qber = errors / n if n else 0.0
        return secure_key_length(with_key_errors(counts, errors), n, qber, leak, self.settings.params)


# ------------------------------------------------------------------------------------------ Ci
class _IBlock:
    def __init__(self) -> None:
        self.bits: list[tuple[np.ndarray, int]] = []  # packed sifted key bits per chunk
        self.n_bits = 0
        self.n_ann = 0
        self.counts: PairCounts | None = None
        self.refused = ""
        self.exchanged = False


class PairEndI(_PairEnd):
    """Client Ci's end: holds Ci's modulation log and authentication key; drives the protocol.

    The raw key bits of the current block never leave this object (only the verification tag and
    the reconciliation answers, counted as leakage, are functions of them).
    """

    side = 0

    def __init__(self, pair: str, log: ModulationLog, setup_i: ClientSetup, setup_j: ClientSetup,
                 settings: ProtocolSettings, supply: AuthKeySupply, *, schedule: PairSchedule) -> None:
        super().__init__(pair, log, setup_i, setup_j, settings, supply, schedule=schedule)
        self._blk = _IBlock()
        #: the corrected QBER of the last block (public: Cj announced its error count)
        self.last_qber: float | None = None

    @property
    def n_bits(self) -> int:
        """Sifted bits of the current block."""
        return self._blk.n_bits

    @property
    def counts(self) -> PairCounts | None:
        return self._blk.counts

    @property
    def refused(self) -> str:
        """Reason the current block was refused during sifting ('' if not)."""
        return self._blk.refused

    @property
    def exchanged(self) -> bool:
        """Whether any message of the current block was exchanged."""
        return self._blk.exchanged

    def held_bytes(self) -> int:
        """Bytes held in memory for the current block until it closes: its packed key bits and
        the held-back transcript entries (:meth:`TranscriptEnd.held_bytes`)."""
        return sum(p.nbytes for p, _ in self._blk.bits) + self.tx.held_bytes()

    def _request(self, ch: Channel, msg: Message) -> Message:
        """Send ``msg`` to Cj; its answer, checked against :data:`CJ_MESSAGES` (any other refuses the block)."""
        rep = ch.request(msg)
        if why := field_problem(rep, CJ_MESSAGES, "Cj"):
            raise _Refused(why)
        return rep

    def _ask(self, ch: Channel, msg: Message, expect: str) -> Message:
        rep = self._request(ch, msg)
        if rep.kind == REFUSED:
            raise _Refused(str(rep.fields.get("reason", "refused by Cj")))
        if rep.kind != expect:
            raise _Refused(f"Cj answered {rep.kind!r} to {msg.kind!r}; expected {expect!r}")
        return rep

    def _add_counts(self, c: PairCounts) -> None:
        b = self._blk
        b.counts = c if b.counts is None else b.counts + c

    # -- sifting -------------------------------------------------------------------------------
    def sift_chunk(self, ch: Channel, ann: Announcements, lo: int, hi: int, n_slots: int) -> ChunkResult:
        """Sift the announced slots of ``[lo, hi)`` (``ann``: the detector's announcements as Ci
        received them; ``n_slots``: the pair's measured slots there) with Cj over ``ch``."""
        b = self._blk
        if (why := self._check_announced(ann, lo, hi)) and not b.refused:
            b.refused = why
            log.warning("pair %s: %s", self.pair, why)
        n = 0 if why else int(ann.slots.size)
        entry = announcement_entry(ann, lo, hi, n_slots) if n else b""
        if n:
            self.tx.local(entry)
        if n == 0 or b.refused:
            c = self._empty_counts(n_slots)
            self._add_counts(c)
            return ChunkResult(0, c)
        b.exchanged = True
        b.n_ann += n
        rec = self.log.choices(ann.slots)
        try:
            self._ask(ch, Message("ann/confirm", {"lo": int(lo), "hi": int(hi), "n": n, "n_slots": int(n_slots),
                                                  "digest": announcement_digest(ann.pair, entry)}), "ann/ok")
            mine = key_flags(rec)
            rep = self._ask(ch, Message("sift/flags", {"lo": int(lo), "flags": pack_flags(mine)}), "sift/flags")
            key = mine & _unbits(rep.get("flags"), n, "sift/flags").astype(bool)
            test = ~key
            k_i, a_i = compress(rec.intensity_idx, test), compress(rec.phase_idx, test)
            b_i = (a_i & 1).astype(np.uint8)
            rep = self._ask(ch, Message("test/bases", {"lo": int(lo), "kb": pack_test_bases(k_i, b_i)}), "test/bases")
            k_j, b_j = unpack_test_bases(rep.get("kb"), int(np.count_nonzero(test)), len(self.setup_j.intensities))
            same = b_i == b_j
            bit_i = (compress(a_i, same) >> 1).astype(np.uint8)
            rep = self._ask(ch, Message("test/bits", {"lo": int(lo), "bits": _bits_field(bit_i)}), "test/bits")
            bit_j = _unbits(rep.get("bits"), int(np.count_nonzero(same)), "test/bits")
        except _Refused as e:
            b.refused = str(e)
            c = self._empty_counts(n_slots)
            self._add_counts(c)
            return ChunkResult(0, c)
        bits = client_i_key(rec, key)
        b.bits.append(_packed(bits))
        b.n_bits += int(bits.size)
        c = self._counts(n_slots, *reveal_counts(ann.outcomes, key, (k_i, b_i, bit_i), (k_j, b_j, bit_j), same,
                                                 len(self.setup_i.intensities), len(self.setup_j.intensities)))
        self._add_counts(c)
        return ChunkResult(int(bits.size), c)

    def qber_estimate(self) -> float:
        """QBER assumed for reconciliation: the last block's, else the key cell's QBER predicted
        from the block's own test rounds (:func:`key_qber_from_tests`; LDPC +1σ, Cascade −1σ), else
        the default (fewer than :data:`~labqfl.qkd.first_qber.MIN_TEST_CLICKS` matched test clicks;
        LDPC 2 %, Cascade 1 %); clipped to [floor, 0.25].

        It only sets the reconciliation schedule (Cascade's block sizes, LDPC's code rate), never the
        key length, which takes the errors error correction found and every disclosed bit
        (:meth:`key_length`), nor ε_cor (:func:`tag_plan`: from ε_cor and n). Ci computes it alone from
        the block's public test-round counts (already disclosed); Cj receives it in ``ec/start``."""
        s = self.settings
        counts = self._blk.counts
        cascade = s.engine == "cascade"
        if self.last_qber is not None:
            q: float | None = self.last_qber
        elif counts is not None:
            q = key_qber_from_tests(counts, CASCADE_FIRST_QBER_SIGMAS if cascade else FIRST_QBER_SIGMAS)
        else:
            q = None
        if q is None:
            q = s.qber_default if s.qber_default is not None else (
                CASCADE_QBER_DEFAULT if cascade else LDPC_QBER_DEFAULT)
        return float(min(max(q, s.qber_floor), 0.25))

    def qber_low(self, q: float) -> float | None:
        """The low end of the QBER range the first LDPC block plans for (:func:`~labqfl.qkd.ldpc.plan_ldpc`'s
        ``qber_low``): the key cell's QBER predicted from the block's test rounds *minus* one standard deviation,
        between half the floor and ``q`` (:meth:`qber_estimate`, plus one).  The mother code stays the one for
        ``q``; the filler count and the first attempt follow the low end, so an estimate that came out high (few
        test clicks: on the default station's 3 s blocks 1.4–2.5× the key's QBER, session 43) costs reveals instead
        of a syndrome sized for it.  None for Cascade, a block after the first (the previous block's measured
        QBER) or too few test clicks."""
        s = self.settings
        counts = self._blk.counts
        if s.engine != "ldpc" or self.last_qber is not None or counts is None:
            return None
        low = key_qber_from_tests(counts, -FIRST_QBER_SIGMAS)
        return None if low is None else float(min(max(low, s.qber_floor / 2), q))

    def drop_block(self, ch: Channel) -> None:
        """End the current block unused (too few sifted bits): both ends forget it. Cj is told also when
        no message of the block was exchanged but its slots were counted (chunks without any click):
        Cj counted them too, from its own announcements, and would carry them into its next block
        ("Ci counts … Cj counts …", lab review s33 M4: four dark key blocks refused the next one)."""
        b = self._blk
        self._blk = _IBlock()
        self.tx.reset()
        if b.exchanged or b.counts is not None:
            ch.request(Message("block/drop", {}))

    # -- one block -----------------------------------------------------------------------------
    def run_block(self, ch: Channel, block_id: str, start: int, end: int,
                  stop: Callable[[], bool] | None = None) -> BlockOutcome:
        """Distil the current block with Cj; returns Ci's outcome (``final`` only if accepted).

        ``stop()`` true, asked before the block is opened, between the stages (error correction,
        verification, key length and privacy amplification) and between the round trips of error
        correction (its first run and any continuation, ``ec/more``), abandons the block: Ci refuses
        it with reason :data:`STOPPED_BY_USER` and, as for any refusal, the tag exchange still runs,
        so both ends spend the same pads and neither accepts the block. Once privacy amplification is done the block runs to its end."""
        b = self._blk
        qest = self.qber_estimate()
        qlow = self.qber_low(qest)
        self._blk = _IBlock()
        counts = b.counts if b.counts is not None else self._empty_counts(0)
        bits = _joined(b.bits)
        n = int(bits.size)
        out = BlockOutcome(block_id, n=n, qber_estimate=qest, qber_low=qlow)
        out.times = {"reconciliation": 0.0, "verification": 0.0, "estimation": 0.0, "amplification": 0.0}
        self.tx.start()
        final: np.ndarray | None = None
        try:
            if b.refused:
                raise _Refused(b.refused)
            _check_stop(stop)
            rep = self._ask(ch, Message("block/open", {"block": block_id, "start": int(start), "end": int(end),
                                                       "n_slots": int(counts.n_slots), "n_ann": b.n_ann, "n": n,
                                                       **self.origin}), "block/ok")
            out.peer_origin = _origin(rep)
            final = self._distil(ch, bits, counts, out, stop)
        except _Refused as e:
            out.reason = out.reason or str(e)
        except (LabqflError, ValueError) as e:  # a malformed request from Bob, a broken channel
            out.reason = out.reason or f"protocol error: {e}"
        # the tag exchange: both ends check the whole block's transcript
        t = time.perf_counter()
        try:
            self._confirm(ch, out)
        except _Refused as e:  # Cj refused the tags (or the block): its reason, then Ci's own if any
            out.reason = str(e) + (f" (before that, Ci refused: {out.reason})" if out.reason not in ("", str(e)) else "")
            final = None
        except (LabqflError, ValueError) as e:
            out.reason = f"tag exchange failed: {e}" + (f" (before that: {out.reason})" if out.reason else "")
            final = None
            self.tx.reset()
        out.times["verification"] += time.perf_counter() - t
        if final is not None and not out.reason:
            out.accepted, out.final = True, final
        return out

    def _distil(self, ch: Channel, bits: np.ndarray, counts: PairCounts, out: BlockOutcome,
                stop: Callable[[], bool] | None = None) -> np.ndarray | None:
        s = self.settings
        n = out.n
        # 1. error correction: Cj (Bob) drives Cascade/LDPC, Ci (Alice) answers
        t = time.perf_counter()
        alice = _alice(s.engine, bits)
        leak = 0
        start: dict[str, FieldValue] = {"engine": s.engine, "qber": out.qber_estimate, "n": n}
        if out.qber_low is not None:
            start["qber_low"] = out.qber_low
        rep = self._request(ch, Message("ec/start", start))
        while rep.kind not in ("ec/done", REFUSED):
            if stop is not None and stop():  # Bob's request stays unanswered; the tag exchange ends his thread
                out.times["reconciliation"] = time.perf_counter() - t
                raise _Stopped()
            ans = alice.handle(rep)
            leak += ans.leaked_bits
            rep = self._request(ch, ans)
        out.times["reconciliation"] = time.perf_counter() - t
        if rep.kind == REFUSED:
            raise _Refused(str(rep.fields.get("reason", "refused by Cj")))
        out.errors, out.leak = int(rep.get("errors")), leak
        out.ec_success = bool(rep.get("success"))
        if not 0 <= out.errors <= n:
            raise _Refused(f"Cj reports {out.errors} corrected errors in a block of {n} bits")
        self.last_qber = out.qber
        if int(rep.get("leaked")) != leak:
            raise _Refused(f"disclosed-bit counts differ: Ci sent {leak}, Cj received {int(rep.get('leaked'))}")
        if not out.ec_success:
            raise _Refused("error correction failed (decoder did not converge)")
        _check_stop(stop)
        # 2. verification: Ci sends seed + tag, Cj compares; reconciliation continues after a failure
        t = time.perf_counter()
        leak += self._verify(ch, alice, bits, out, stop)
        del alice  # Alice's pass tables are not needed past verification (privacy amplification next)
        out.leak = leak
        out.times["verification"] = time.perf_counter() - t
        _check_stop(stop)
        # 3. secure key length, computed here and (independently) at Cj
        ell = 0
        reason = ""
        if not out.verified:
            reason = "verification failed: keys differ after error correction; block discarded"
        else:
            t = time.perf_counter()
            out.report = rep_ = self.key_length(counts, n, out.errors, leak)
            out.times["estimation"] = time.perf_counter() - t
            ell = 0 if rep_.abort else int(rep_.key_length_bits)
            if ell <= 0:
                reason = (rep_.abort_reason if rep_.abort else "") or "secure key length is zero for this block (finite-key bound)"
        out.ell = max(ell, 0)
        # 4. privacy amplification (Ci draws the seed); Cj compares the length with its own
        t = time.perf_counter()
        pseed = toeplitz_seed(n, out.ell) if out.ell > 0 else np.zeros(0, np.uint8)
        final = toeplitz_hash(bits, pseed, out.ell) if out.ell > 0 else None
        rep = self._ask(ch, Message("pa/seed", {"out_len": out.ell, "seed": _bits_field(pseed)}), "pa/done")
        out.times["amplification"] = time.perf_counter() - t
        if not rep.get("ok"):
            raise _Refused(f"secure key lengths differ: Ci computed {out.ell} bits, Cj {int(rep.get('out_len'))}; "
                           f"block refused at both ends")
        if reason:
            raise _Refused(reason)
        return final

    def _verify(self, ch: Channel, alice: Any, bits: np.ndarray, out: BlockOutcome,
                stop: Callable[[], bool] | None) -> int:
        """Verification attempts (:func:`tag_plan`, docs/protocol.md §5): attempt 0 is Ci's
        ``t_0``-bit tag under a fresh seed; after a failure Ci asks Cj to continue reconciliation
        (``ec/more``: Bob's :meth:`~labqfl.qkd.cascade.CascadeBob.more`, answered by the same Alice),
        then sends ``Δ_i`` fresh tag bits, and Cj passes the block only if every tag so far matches
        its corrected key.  Sets ``out.verified``, ``out.tlen`` (t_0), ``out.attempts``; returns the
        bits disclosed after the first failure (the continuations' parities and each Δ_i), which
        count in the leak."""
        n = out.n
        plan = tag_plan(self.settings.engine, self.settings.params.eps_cor, n)
        out.tlen = plan[0]
        extra = 0
        for attempt, tlen in enumerate(plan):
            if attempt:
                _check_stop(stop)
                extra += tlen + self._more(ch, alice, attempt, out, stop)
            vseed = toeplitz_seed(n, tlen)
            rep = self._ask(ch, Message("verify/request", {"t": tlen, "seed": _bits_field(vseed)},
                                        disclosed=hash_tag(bits, vseed, tlen)), "verify/result")
            out.attempts = attempt + 1
            out.verified = bool(rep.get("ok"))
            if out.verified:
                break
        return extra

    def _more(self, ch: Channel, alice: Any, attempt: int, out: BlockOutcome,
              stop: Callable[[], bool] | None = None) -> int:
        """``ec/more``: Cj's Bob continues reconciliation, Ci's Alice answers; returns its leak.
        ``stop()`` is asked between its round trips, as in the first run (:meth:`_distil`)."""
        leak = rounds = 0
        rep = self._request(ch, Message("ec/more", {"attempt": attempt}))
        while rep.kind not in ("ec/done", REFUSED):
            _check_stop(stop)  # Bob's request stays unanswered; the tag exchange ends his thread
            # Cap: an honest Bob asks a round only while a block is open or a search goes on, so each
            # round discloses at least one parity; n of them would reveal the whole n-bit key, so a Cj
            # asking for more round trips than the block has bits is misbehaving (no key would be left).
            rounds += 1
            if rounds > out.n:
                raise _Refused(f"ec/more (attempt {attempt}): Cj asked for more than {out.n} round trips in one "
                               f"continued reconciliation of a {out.n}-bit block; at most {out.n} expected")
            ans = alice.handle(rep)
            leak += ans.leaked_bits
            rep = self._request(ch, ans)
        if rep.kind == REFUSED:
            raise _Refused(str(rep.fields.get("reason", "refused by Cj")))
        out.errors = int(rep.get("errors"))
        if not 0 <= out.errors <= out.n:
            raise _Refused(f"Cj reports {out.errors} corrected errors in a block of {out.n} bits")
        if int(rep.get("leaked")) != leak:
            raise _Refused(f"disclosed-bit counts differ: Ci sent {leak}, Cj received {int(rep.get('leaked'))} "
                           f"(reconciliation continued, attempt {attempt})")
        return leak

    def _confirm(self, ch: Channel, out: BlockOutcome) -> None:
        self.tx.close()
        rep = ch.request(Message("block/confirm", {"tag": self.auth.final_tag()}))
        if rep.kind == REFUSED:  # Cj found Ci's tag wrong (or refused before): no tag back
            raise _Refused(str(rep.fields.get("reason", "refused by Cj")))
        if rep.kind != "block/confirmed":
            raise _Refused(f"Cj answered {rep.kind!r} to block/confirm")
        # Cj spent two pads (its check and its tag): a malformed answer still spends Ci's check pad
        why = field_problem(rep, CJ_MESSAGES, "Cj")
        try:
            self.auth.check_final(b"" if why else rep.get("tag"))
        except AuthenticationError as e:
            out.reason = (why or str(e)) + (f" (before that, Ci refused: {out.reason})" if out.reason else "")
        ok = not out.reason
        rep = ch.request(Message("block/accept", {"ok": int(ok), "reason": out.reason}))
        if ok and (why := field_problem(rep, CJ_MESSAGES, "Cj")):
            raise _Refused(why)
        if ok and not (rep.kind == "block/accepted" and rep.get("ok")):
            raise _Refused(str(rep.fields.get("reason", "")) or "Cj did not accept the block")


# ------------------------------------------------------------------------------------------ Cj
class _BobRelay(Channel):
    """Bob's channel inside Cj: each request of Bob's becomes Cj's answer to Ci, and Ci's next
    request is Alice's reply (the outer channel is Ci-driven, reconciliation is Bob-driven)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.to_ci: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.from_ci: queue.Queue[Message | None] = queue.Queue()

    def _exchange(self, msg: Message) -> Message:
        self.stats.count(msg, _encoded_size(msg), -1)
        self.to_ci.put(("msg", msg))
        reply = self.from_ci.get()
        if reply is None:
            raise MessageError("reconciliation abandoned by this end")
        self.stats.count(reply, _encoded_size(reply), -1)
        return reply


class _JBlock:
    def __init__(self) -> None:
        self.bits: list[tuple[np.ndarray, int]] = []  # packed sifted key bits per chunk
        self.n_bits = 0
        self.n_ann = 0
        self.n_slots = 0
        self.counts: PairCounts | None = None
        self.refused = ""
        self.block_id = ""
        self.opened = False
        self.peer_origin: dict[str, str] = {}  # Ci's claim, from its block/open
        self.key: np.ndarray | None = None  # the block's sifted key once opened
        self.relay: _BobRelay | None = None
        self.thread: threading.Thread | None = None
        self.bob: Any = None  # Bob of this block's reconciliation (ec/more continues it)
        self.asked = ""  # the kind of Bob's last request to Ci (Ci's next message answers it)
        self.tags: list[tuple[np.ndarray, np.ndarray]] = []  # (seed, Ci's tag) of each verification attempt
        self.leak_before = 0  # bits disclosed before the current reconciliation run
        self.mores = 0  # reconciliations continued after a failed verification (ec/more)
        self.corrected: np.ndarray | None = None
        self.errors = 0
        self.leak = 0
        self.ec_done = False
        self.verified = False
        self.ell: int | None = None
        self.amplified = False  # pa/seed answered
        self.report: KeyLengthReport | None = None
        self.final: np.ndarray | None = None
        self.confirmed = False
        # the chunk being sifted: (lo, hi) → announcements, measured slots; then Ci's flags etc.
        self.pending: dict[int, tuple[Announcements, int, int, bytes]] = {}  # lo: (ann, hi, n_slots, digest)
        self.cur: dict[str, Any] = {}


class PairEndJ(_PairEnd):
    """Client Cj's end: a :class:`~labqfl.qkd.messaging.Responder` holding only Cj's modulation
    log, its authentication key supply and its squashing randomness. ``receive`` takes the
    detector's announcements as Cj received them; ``outcomes`` collects the finished blocks."""

    side = 1

    def __init__(self, pair: str, log: ModulationLog, setup_i: ClientSetup, setup_j: ClientSetup,
                 settings: ProtocolSettings, supply: AuthKeySupply, rng: np.random.Generator, *,
                 schedule: PairSchedule) -> None:
        super().__init__(pair, log, setup_i, setup_j, settings, supply, schedule=schedule)
        self.rng = rng
        self._blk = _JBlock()
        self._lock = threading.Lock()
        #: finished blocks (accepted or refused), oldest first; the owner pops them
        self.outcomes: list[BlockOutcome] = []
        #: called with each finished outcome (e.g. to store an accepted key)
        self.on_outcome: Callable[[BlockOutcome], None] | None = None

    def held_bytes(self) -> int:
        """Bytes held in memory for the current block until it closes: its packed key bits, the
        held-back transcript entries and announcements not yet confirmed by Ci."""
        with self._lock:
            b = self._blk
            n = sum(p.nbytes for p, _ in b.bits) + self.tx.held_bytes()
            return n + sum(a.slots.nbytes + a.outcomes.nbytes for a, _, _, _ in b.pending.values())

    # -- data from the detector ----------------------------------------------------------------
    def receive(self, ann: Announcements, lo: int, hi: int, n_slots: int) -> None:
        """The detector's announcements for the pair's slots ``[lo, hi)`` and the number of the
        pair's measured slots there, as delivered to Cj."""
        with self._lock:
            b = self._blk
            if why := self._check_announced(ann, lo, hi):
                if not b.refused:
                    b.refused = why
                    log.warning("pair %s: %s", self.pair, why)
                return
            if ann.slots.size == 0:
                b.n_slots += int(n_slots)
                c = self._empty_counts(n_slots)
                b.counts = c if b.counts is None else b.counts + c
            else:
                entry = announcement_entry(ann, lo, hi, n_slots)
                self.tx.local(entry)
                b.pending[int(lo)] = (ann, int(hi), int(n_slots), announcement_digest(ann.pair, entry))

    # -- protocol ------------------------------------------------------------------------------
    def handle(self, request: Message) -> Message:
        with self._lock:
            b = self._blk
            kind = request.kind
            why = field_problem(request, CI_MESSAGES, "Ci")
            try:
                if kind in ("block/confirm", "block/accept", "block/drop"):
                    return self._closing(b, request, why)
                if b.refused:
                    return Message(REFUSED, {"reason": b.refused})
                if why:
                    raise _Refused(why)
                if out_of_turn := self._out_of_turn(b, kind):
                    raise _Refused(out_of_turn)
                if b.relay is not None and not b.ec_done:
                    return self._ec_step(b, request)
                handler = _J_HANDLERS.get(kind)
                if handler is None:
                    raise _Refused(f"unexpected message {kind!r}")
                return handler(self, b, request)
            except (_Refused, LabqflError, ValueError) as e:
                self._stop_bob(b)
                b.refused = str(e) if isinstance(e, _Refused) else f"protocol error at {kind!r}: {e}"
                return Message(REFUSED, {"reason": b.refused})

    def _out_of_turn(self, b: _JBlock, kind: str) -> str:
        """Why Ci's message of ``kind`` is not one the block's state expects ('' if it is): one
        reason naming the message, the block and the state (review s39 ec F7: an ``ec/start`` after
        error correction had finished started Bob again on the same block). The tag-exchange
        messages are handled before (:meth:`_closing`); each handler still checks its own fields."""
        expected: tuple[str, ...]
        if not b.opened:
            state, expected = "sifting", _J_SIFTING
        elif b.relay is None:
            state, expected = "block open, error correction not started", ("ec/start",)
        elif not b.ec_done:
            if b.asked not in _ALICE_ANSWERS:  # not reached: _next_bob refuses such a request before sending it
                return _no_answer_known(b.asked)
            state = f"error correction running, Bob asked {b.asked!r}"
            expected = _ALICE_ANSWERS[b.asked]
        elif b.amplified:
            state, expected = "privacy amplification done", ()
        else:
            plan = len(tag_plan(self.settings.engine, self.settings.params.eps_cor,
                                b.key.size if b.key is not None else 0))
            tried = len(b.tags)
            if b.verified:
                state, expected = f"verification attempt {tried} passed", ("pa/seed",)
            elif tried >= plan:
                state = "verification failed " + (f"at all {plan} attempts" if plan > 1 else "at its only attempt")
                expected = ("pa/seed",)
            elif tried == b.mores:
                state = "error correction done" + (f" (continued {b.mores} times)" if b.mores else "")
                expected = ("verify/request",)
            else:
                state, expected = f"verification attempt {tried} of {plan} failed", ("ec/more",)
        if kind in expected:
            return ""
        block = f"block {b.block_id!r}" if b.opened else "no block open"
        want = " or ".join(repr(k) for k in expected) or "only block/confirm"
        return f"{kind!r} out of turn ({block}, state: {state}); Cj expected {want}"

    def _closing(self, b: _JBlock, req: Message, why: str) -> Message:
        """``block/confirm``, ``block/accept`` or ``block/drop``; one that does not match its schema
        (``why``) still ends the block as the well-formed one would, refused: a confirm spends this
        end's check pad (as at Ci, whose tag pad is spent), an accept declines, a drop drops."""
        if why:
            b.refused = b.refused or why
            log.warning("pair %s: %s", self.pair, why)
            if req.kind == "block/confirm":
                req = Message(req.kind, {"tag": b""})
            elif req.kind == "block/accept":
                req = Message(req.kind, {"ok": 0, "reason": why})
        return getattr(self, "_on_" + req.kind.split("/")[1])(b, req)

    def on_session_end(self, error: BaseException | None) -> None:
        """The channel to Ci ended (network deployment): a block in progress is refused."""
        with self._lock:
            b = self._blk
            if error is not None and (b.opened or b.pending or b.bits):
                self._stop_bob(b)
                self._finish(b, f"session with Ci lost mid-block: {error}", accepted=False)
                self.tx.reset()

    def _ann_confirm(self, b: _JBlock, req: Message) -> Message:
        lo = int(req.get("lo"))
        got = b.pending.get(lo)
        if got is None:
            raise _Refused(f"ann/confirm: Cj received no announcements for slots from {lo}")
        ann, hi, n_slots, digest = got
        if (int(req.get("hi")), int(req.get("n")), int(req.get("n_slots"))) != (hi, int(ann.slots.size), n_slots) \
                or req.get("digest") != digest:
            raise _Refused(f"the detector's announcements for slots [{lo}, {hi}) differ between the two clients "
                           f"(announcement digests or counts do not match); block refused")
        b.cur = {"lo": lo, "ann": ann, "n_slots": n_slots, "rec": self.log.choices(ann.slots), "step": "ann"}
        del b.pending[lo]
        return Message("ann/ok", {})

    def _cur(self, b: _JBlock, req: Message, step: str) -> dict[str, Any]:
        if not b.cur or int(req.get("lo")) != b.cur["lo"] or b.cur.get("step") != step:
            raise _Refused(f"{req.kind}: out of order")
        return b.cur

    def _sift_flags(self, b: _JBlock, req: Message) -> Message:
        cur = self._cur(b, req, "ann")
        rec, ann = cur["rec"], cur["ann"]
        mine = key_flags(rec)
        key = mine & _unbits(req.get("flags"), int(ann.slots.size), "sift/flags").astype(bool)
        cur.update(step="flags", key=key)
        return Message("sift/flags", {"flags": pack_flags(mine)})

    def _test_bases(self, b: _JBlock, req: Message) -> Message:
        cur = self._cur(b, req, "flags")
        rec, key = cur["rec"], cur["key"]
        test = ~key
        nt = int(np.count_nonzero(test))
        k_i, b_i = unpack_test_bases(req.get("kb"), nt, len(self.setup_i.intensities))
        k_j, a_j = compress(rec.intensity_idx, test), compress(rec.phase_idx, test)
        b_j = (a_j & 1).astype(np.uint8)
        cur.update(step="bases", theirs=(k_i, b_i), mine=(k_j, b_j), a_test=a_j)
        return Message("test/bases", {"kb": pack_test_bases(k_j, b_j)})

    def _test_bits(self, b: _JBlock, req: Message) -> Message:
        cur = self._cur(b, req, "bases")
        rec, key, ann = cur["rec"], cur["key"], cur["ann"]
        (k_i, b_i), (k_j, b_j) = cur["theirs"], cur["mine"]
        same = b_i == b_j
        bit_i = _unbits(req.get("bits"), int(np.count_nonzero(same)), "test/bits")
        bit_j = (compress(cur["a_test"], same) >> 1).astype(np.uint8)
        bits = client_j_key(rec, ann.outcomes, key, self.rng)
        b.bits.append(_packed(bits))
        b.n_bits += int(bits.size)
        b.n_ann += int(ann.slots.size)
        b.n_slots += cur["n_slots"]
        c = self._counts(cur["n_slots"], *reveal_counts(ann.outcomes, key, (k_i, b_i, bit_i), (k_j, b_j, bit_j), same,
                                                        len(self.setup_i.intensities), len(self.setup_j.intensities)))
        b.counts = c if b.counts is None else b.counts + c
        b.cur = {}
        return Message("test/bits", {"bits": _bits_field(bit_j)})

    def _block_open(self, b: _JBlock, req: Message) -> Message:
        self.tx.start()
        if b.opened:
            raise _Refused("block/open: a block is already open")
        b.block_id = str(req.get("block"))
        b.opened = True
        b.peer_origin = _origin(req)
        if b.pending or b.cur:
            raise _Refused("block/open: announcements of this block were never confirmed by Ci")
        mine = (b.n_slots, b.n_ann, b.n_bits)
        theirs = (int(req.get("n_slots")), int(req.get("n_ann")), int(req.get("n")))
        if mine != theirs:
            raise _Refused(f"block/open: Ci counts (measured slots, announcements, sifted bits) = {theirs}, "
                           f"Cj {mine}; block refused")
        b.key = _joined(b.bits)
        b.bits = []
        return Message("block/ok", dict(self.origin))

    def _ec_start(self, b: _JBlock, req: Message) -> Message:
        if not b.opened or b.key is None:
            raise _Refused("ec/start before block/open")
        if str(req.get("engine")) != self.settings.engine or int(req.get("n")) != b.key.size:
            raise _Refused(f"ec/start: Ci asks for {req.get('engine')!r} on {int(req.get('n'))} bits, "
                           f"Cj expects {self.settings.engine!r} on {b.key.size}")
        n = int(b.key.size)
        q = float(req.get("qber"))
        low = float(req.get("qber_low")) if "qber_low" in req.fields else None
        if low is not None and not (self.settings.engine == "ldpc" and 0.0 <= low <= q):
            raise _Refused(f"ec/start: qber_low={low} must lie in [0, qber={q}] and come only with engine 'ldpc'")
        b.bob = bob = _bob(self.settings.engine, b.key, q,
                           len(tag_plan(self.settings.engine, self.settings.params.eps_cor, n)), low)
        return self._start_bob(b, bob.run)

    def _ec_more(self, b: _JBlock, req: Message) -> Message:
        """Ci's ``ec/more`` after a failed verification: Bob continues (:meth:`CascadeBob.more`)."""
        from labqfl.qkd.cascade import RETRY_CONFIRM

        attempt = int(req.get("attempt"))
        plan = tag_plan(self.settings.engine, self.settings.params.eps_cor, b.key.size if b.key is not None else 0)
        # one ec/more per failed verification: a second one for the same attempt (before the next
        # verify/request) would run Bob again and count Δ_i twice, so it is refused here
        if b.corrected is None or b.bob is None or b.verified or not b.tags or attempt != len(b.tags) \
                or attempt >= len(plan) or b.mores != attempt - 1:
            raise _Refused(f"ec/more (attempt {attempt}) out of order: {len(b.tags)} verification attempts made, "
                           f"{b.mores} continued reconciliations, verified {b.verified}, at most {len(plan)} "
                           f"attempts; expected ec/more only after a failed verify/request")
        b.leak_before = b.leak + plan[attempt]  # the Δ_i tag bits that the next verify/request discloses
        b.ec_done = False
        b.mores += 1
        bob = b.bob
        return self._start_bob(b, lambda relay: bob.more(relay, RETRY_CONFIRM))

    def _start_bob(self, b: _JBlock, run_bob: Callable[[Channel], Any]) -> Message:
        relay = _BobRelay()
        b.relay = relay

        def run() -> None:
            try:
                relay.to_ci.put(("done", run_bob(relay)))
            except BaseException as e:  # handed to the responder thread, which refuses the block
                relay.to_ci.put(("error", e))

        b.thread = threading.Thread(target=run, name=f"bob-{self.pair}", daemon=True)
        b.thread.start()
        return self._next_bob(b)

    def _ec_step(self, b: _JBlock, req: Message) -> Message:
        assert b.relay is not None
        b.relay.from_ci.put(req)
        return self._next_bob(b)

    def _next_bob(self, b: _JBlock) -> Message:
        assert b.relay is not None and b.key is not None
        what, v = b.relay.to_ci.get()
        if what == "msg":
            if v.kind not in _ALICE_ANSWERS:  # a new request kind of Bob's with no entry: an internal error
                why = _no_answer_known(v.kind) + "; block refused before the request was sent"
                log.error("pair %s: %s", self.pair, why)
                raise _Refused(why)
            b.asked = v.kind
            return v
        b.thread = None
        b.ec_done = True
        if what == "error":
            raise _Refused(f"reconciliation failed at Cj: {v}")
        b.corrected = np.asarray(v.corrected, dtype=np.uint8)
        b.errors = int(np.count_nonzero(b.corrected != b.key))
        b.leak = b.leak_before + int(v.leaked_bits)
        success = bool(getattr(v, "success", True))
        if not success:
            b.refused = "error correction failed (decoder did not converge)"
        return Message("ec/done", {"errors": b.errors, "leaked": int(v.leaked_bits), "success": int(success)})

    def _verify_request(self, b: _JBlock, req: Message) -> Message:
        if b.corrected is None:
            raise _Refused("verify/request before error correction")
        n = int(b.corrected.size)
        t = int(req.get("t"))
        plan = tag_plan(self.settings.engine, self.settings.params.eps_cor, n)
        attempt = len(b.tags)
        if b.verified or attempt >= len(plan) or b.mores != attempt or not b.ec_done:
            raise _Refused(f"verify/request out of order: verification attempt {attempt + 1} (at most {len(plan)}) "
                           f"after {b.mores} continued reconciliations, verified {b.verified}")
        if t != plan[attempt]:
            raise _Refused(f"verify/request: tag of {t} bits, expected {plan[attempt]} (verification attempt {attempt + 1})")
        seed = _unbits(req.get("seed"), n + t - 1, "verify/request seed")
        b.tags.append((seed, np.asarray(req.disclosed, dtype=np.uint8)))
        # every tag so far must match the key as corrected now (docs/protocol.md §5)
        b.verified = all(np.array_equal(hash_tag(b.corrected, sd, int(tg.size)), tg) for sd, tg in b.tags)
        if b.verified or len(b.tags) >= len(plan):
            b.bob = None  # no continuation can follow: Bob's state is freed before privacy amplification
        # this end's own secure key length, from its own copy of the (authenticated) data
        if b.verified:
            assert b.counts is not None
            b.report = self.key_length(b.counts, n, b.errors, b.leak)
            b.ell = 0 if b.report.abort else max(int(b.report.key_length_bits), 0)
        else:
            b.ell = 0
        return Message("verify/result", {"ok": int(b.verified)})

    def _pa_seed(self, b: _JBlock, req: Message) -> Message:
        if b.ell is None or b.corrected is None:
            raise _Refused("pa/seed before verification")
        m = int(req.get("out_len"))
        if m != b.ell:
            b.refused = (f"secure key lengths differ: Ci computed {m} bits, Cj {b.ell}; block refused at both ends")
            return Message("pa/done", {"ok": 0, "out_len": b.ell})
        if m > 0:
            n = int(b.corrected.size)
            seed = _unbits(req.get("seed"), n + m - 1, "pa/seed")
            b.final = toeplitz_hash(b.corrected, seed, m)
        b.amplified = True
        return Message("pa/done", {"ok": 1, "out_len": m})

    def _on_confirm(self, b: _JBlock, req: Message) -> Message:
        self._stop_bob(b)
        self.tx.close()
        try:
            self.auth.check_final(req.get("tag"))
        except AuthenticationError as e:
            # the transcript mismatch explains everything else; an earlier refusal says where
            reason = str(e) + (f" (before that, Cj refused: {b.refused})" if b.refused else "")
            self._finish(b, reason, accepted=False)
            return Message(REFUSED, {"reason": reason})
        b.confirmed = True
        return Message("block/confirmed", {"tag": self.auth.final_tag()})

    def _on_accept(self, b: _JBlock, req: Message) -> Message:
        if not b.confirmed:
            reason = b.refused or "block/accept before the tag exchange"
            self._finish(b, reason, accepted=False)
            return Message("block/accepted", {"ok": 0, "reason": reason})
        if not req.get("ok"):
            reason = str(req.fields.get("reason", "")) or "refused by Ci"
            self._finish(b, b.refused or reason, accepted=False)
            return Message("block/accepted", {"ok": 0, "reason": reason})
        if b.refused or (b.ell or 0) <= 0 or b.final is None:
            reason = b.refused or "no key in this block"
            self._finish(b, reason, accepted=False)
            return Message("block/accepted", {"ok": 0, "reason": reason})
        self._finish(b, "", accepted=True)
        return Message("block/accepted", {"ok": 1})

    def _on_drop(self, b: _JBlock, req: Message) -> Message:
        self._stop_bob(b)
        self._blk = _JBlock()
        self.tx.reset()
        return Message("block/dropped", {})

    def _stop_bob(self, b: _JBlock) -> None:
        if b.thread is not None and b.relay is not None:
            b.relay.from_ci.put(None)
            b.thread.join()
            b.thread = None

    def _finish(self, b: _JBlock, reason: str, accepted: bool) -> None:
        n = int(b.key.size) if b.key is not None else b.n_bits
        out = BlockOutcome(b.block_id, accepted=accepted, reason=reason, n=n, errors=b.errors, leak=b.leak,
                           ec_success=b.ec_done and not reason.startswith("error correction failed"),
                           verified=b.verified, attempts=len(b.tags), ell=b.ell or 0, report=b.report,
                           final=b.final if accepted else None, peer_origin=b.peer_origin)
        self._blk = _JBlock()
        self.outcomes.append(out)
        if self.on_outcome is not None:
            self.on_outcome(out)


#: what Cj accepts from Ci before a block is opened (each handler checks the chunk's order itself)
_J_SIFTING: tuple[str, ...] = ("ann/confirm", "sift/flags", "test/bases", "test/bits", "block/open")
#: Alice's answer(s) to each of Bob's requests (:class:`~labqfl.qkd.cascade.CascadeAlice`,
#: :class:`~labqfl.qkd.ldpc.LdpcAlice`): while reconciliation runs Cj forwards only these to Bob. A copy of
#: what the engines send, tied to them and to CJ_MESSAGES / CI_MESSAGES by tests/qkd/pipeline/
#: test_alice_answers_table.py; a request of Bob's with no entry refuses the block as an internal error
#: naming it (:meth:`PairEndJ._next_bob`), before it is sent (review s40 protorev F1)
_ALICE_ANSWERS: dict[str, tuple[str, ...]] = {
    "cascade/init": ("cascade/ok",),
    "cascade/round": ("cascade/block-parities", "cascade/parities"),
    "cascade/done": ("cascade/ok",),
    "ldpc/init": ("ldpc/ok",),
    "ldpc/syndromes": ("ldpc/syndromes",),
    "ldpc/reveal": ("ldpc/filler",),
    "ldpc/done": ("ldpc/ok",),
}


def _no_answer_known(request: str) -> str:
    return (f"internal error: Bob's request {request!r} has no known answer of Alice's "
            f"(labqfl.qkd.twoparty._ALICE_ANSWERS, the answers Cj accepts from Ci while reconciliation runs, lacks it)")


_J_HANDLERS: dict[str, Callable[[PairEndJ, _JBlock, Message], Message]] = {
    "ann/confirm": PairEndJ._ann_confirm,
    "sift/flags": PairEndJ._sift_flags,
    "test/bases": PairEndJ._test_bases,
    "test/bits": PairEndJ._test_bits,
    "block/open": PairEndJ._block_open,
    "ec/start": PairEndJ._ec_start,
    "verify/request": PairEndJ._verify_request,
    "ec/more": PairEndJ._ec_more,
    "pa/seed": PairEndJ._pa_seed,
}
