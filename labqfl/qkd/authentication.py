"""Wegman–Carter authentication of the classical post-processing messages.

Tag of a message ``M`` (bytes): ``τ = h_k(M) ⊕ r`` where ``h_k`` is the polynomial hash over
GF(2^64) (modulus x^64 + x^4 + x^3 + x + 1) with a session key ``k`` and ``r`` a fresh one-time
pad. Both ``k`` and every ``r`` are taken from the pair's key pool (:class:`AuthKeySupply`), so
the cost is 64·lanes bits per session plus 64·lanes bits per message, counted in
:attr:`WegmanCarterAuthenticator.key_bits_used`.

Security (Wegman & Carter, JCSS 22, 265 (1981); Stinson, "Universal hashing and authentication
codes", Des. Codes Cryptogr. 4, 369 (1994)): the message is cut into 64-bit words
``m_1 … m_ℓ`` (zero-padded) followed by its byte length ``m_{ℓ+1}``;
``h_k(M) = Σ_i m_i·k^{ℓ+2−i}`` (Horner). For ``M ≠ M'`` the difference is a non-zero polynomial
of degree ≤ ℓ+1 without constant term, so ``Pr_k[h_k(M) ⊕ h_k(M') = c] ≤ (ℓ+1)/2^64``
(ε-almost-XOR-universal); with the one-time pad an outsider who saw any number of tagged
messages forges or alters one with probability ≤ ε per lane (``lanes`` independent keys:
ε^lanes). The pad is consumed in lockstep at both ends, so a replayed or reordered message is
checked against the wrong pad and rejected.

Forgery probability, counted per attempt (:func:`forgery_probability`): each tag *verification*
is one chance for an adversary; for transcripts of at most ``L`` 64-bit words (including the
length word) it succeeds with probability ≤ ``(L/2^64)^lanes`` (root count of the non-zero
difference polynomial of degree ≤ ``L``; the one-time pad makes the tags independent of ``k``).
The hash key ``k`` is reused across blocks while every pad is fresh, so ``q`` verification
attempts succeed with probability ≤ ``q·(L/2^64)^lanes`` by the union bound (Wegman & Carter
1981 §3; D. J. Bernstein, "Stronger security bounds for Wegman–Carter–Shoup authenticators",
EUROCRYPT 2005, LNCS 3494, for the polynomial hash: differential probability ``L/2^b`` per
attempt). The pipeline adds this to each block's ε (docs/protocol.md §5); the composable form
of authentication with key recycling is Portmann, IEEE Trans. Inf. Theory 60, 4383 (2014).
"""

from __future__ import annotations

import hmac
import uuid
from collections import deque
from typing import Protocol

import numba
import numpy as np

from labqfl.errors import AuthenticationError, InsufficientKeyError, LabqflError, QKDInputError

__all__ = [
    "AuthKeySupply",
    "BitPool",
    "WegmanCarterAuthenticator",
    "TranscriptAuthenticator",
    "TranscriptPair",
    "confirm_transcripts",
    "transcript_forgery_probability",
    "forgery_probability",
    "transcript_word_cap",
    "DEFAULT_AUTH_LANES",
    "gf64_mul",
    "poly_hash",
    "poly_hash_reference",
    "keystore_auth_supplies",
]

_POLY_LOW = np.uint64(0x1B)  # x^4 + x^3 + x + 1


class AuthKeySupply(Protocol):
    """Source of shared secret key bits for authentication (the pair's pool at one end)."""

    def take(self, nbits: int) -> np.ndarray:
        """Consume and return ``nbits`` key bits (uint8 0/1); raise if not enough are left."""
        ...


class BitPool:
    """In-memory consume-once pool of key bits implementing :class:`AuthKeySupply`."""

    def __init__(self, bits: np.ndarray | None = None) -> None:
        self._bits = np.zeros(0, np.uint8) if bits is None else np.array(bits, dtype=np.uint8)
        self._pos = 0

    @property
    def available(self) -> int:
        return int(self._bits.size - self._pos)

    def add(self, bits: np.ndarray) -> None:
        self._bits = np.concatenate([self._bits[self._pos:], np.asarray(bits, dtype=np.uint8)])
        self._pos = 0

    def take(self, nbits: int) -> np.ndarray:
        if nbits > self.available:
            raise InsufficientKeyError(f"authentication pool holds {self.available} bits; {nbits} needed")
        out = self._bits[self._pos:self._pos + nbits].copy()
        self._bits[self._pos:self._pos + nbits] = 0
        self._pos += nbits
        return out

    def __repr__(self) -> str:
        return f"BitPool(available={self.available})"


# --------------------------------------------------------------------------------- GF(2^64)


def gf64_mul(a: int, b: int) -> int:
    """Reference product in GF(2^64) = GF(2)[x]/(x^64 + x^4 + x^3 + x + 1) (pure Python)."""
    r = 0
    for i in range(64):
        if (b >> i) & 1:
            r ^= a
        carry = a >> 63
        a = (a << 1) & 0xFFFFFFFFFFFFFFFF
        if carry:
            a ^= 0x1B
    return r


def _mul_table(k: int) -> np.ndarray:
    """Shoup table T[j, v] = (v·x^{4j})·k for 16 nibble positions j and nibbles v."""
    T = np.zeros((16, 16), dtype=np.uint64)
    for j in range(16):
        for v in range(16):
            T[j, v] = gf64_mul(v << (4 * j), k)
    return T


@numba.njit(cache=True, nogil=True)
def _horner_from(acc, words, T):  # type: ignore[no-untyped-def]
    """Horner evaluation over GF(2^64) continued from ``acc``: acc ← (acc ⊕ w)·k per word, with the
    multiplication by the hash key k done by the nibble table ``T`` (:func:`_mul_table`)."""
    for w in words:
        a = acc ^ w
        r = np.uint64(0)
        for j in range(16):
            r ^= T[j, (a >> np.uint64(4 * j)) & np.uint64(15)]
        acc = r
    return acc


def _key_of(T: np.ndarray) -> int:
    """The hash key k of a :func:`_mul_table` (its entry 1·x^0·k)."""
    return int(T[0, 1])


def _gf64_pow(k: int, m: int) -> int:
    """k^m in GF(2^64) (square and multiply with :func:`gf64_mul`)."""
    r, b = 1, k
    while m:
        if m & 1:
            r = gf64_mul(r, b)
        b = gf64_mul(b, b)
        m >>= 1
    return r


def _words(payload: bytes) -> np.ndarray:
    n = len(payload)
    pad = (-n) % 8
    w = np.frombuffer(payload + b"\0" * pad, dtype="<u8").astype(np.uint64)
    return np.concatenate([w, np.array([n], dtype=np.uint64)])


def poly_hash(payload: bytes, key: int, table: np.ndarray | None = None) -> int:
    """``h_k(M)`` of the module docstring (fast: Shoup nibble tables + Numba Horner loop)."""
    T = _mul_table(key) if table is None else table
    return int(_horner_from(np.uint64(0), _words(payload), T))


def poly_hash_reference(payload: bytes, key: int) -> int:
    """Slow pure-Python ``h_k(M)`` (bit-by-bit GF(2^64) products)."""
    acc = 0
    for w in _words(payload).tolist():
        acc = gf64_mul(acc ^ int(w), key)
    return acc


def forgery_probability(words: int, lanes: int = 1) -> float:
    """Probability that one forged or altered message of at most ``words`` 64-bit words (the
    length word included) passes one tag verification: ``(words/2^64)^lanes`` (module docstring).

    ``words``: the longer of the tagged and the verified word sequence (≥ 1); ``lanes``: 1..4.
    """
    if isinstance(words, bool) or int(words) < 1:
        raise QKDInputError(f"authentication: the number of hashed words must be >= 1, got {words!r}")
    if not 1 <= lanes <= 4:
        raise QKDInputError(f"authentication: lanes must be 1..4, got {lanes}")
    return float((int(words) / 2.0**64) ** lanes)


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


class WegmanCarterAuthenticator:
    """One end's authenticator (plugs into :mod:`labqfl.qkd.messaging` channels).

    Both ends are built over supplies holding the *same* key bits in the same order; each
    :meth:`tag` and each :meth:`verify` consumes the next pad. ``lanes`` independent 64-bit
    hashes per tag (tag length 8·lanes bytes).
    """

    def __init__(self, supply: AuthKeySupply, lanes: int = 1) -> None:
        if not 1 <= lanes <= 4:
            raise QKDInputError(f"authentication: lanes must be 1..4, got {lanes}")
        self.supply = supply
        self.lanes = lanes
        self.key_bits_used = 0
        self.tags_made = 0
        self.tags_verified = 0
        self._tables: list[np.ndarray] | None = None

    def _take(self, nbits: int) -> np.ndarray:
        bits = self.supply.take(nbits)
        if not isinstance(bits, np.ndarray) or bits.size != nbits:
            raise AuthenticationError("authentication key supply returned the wrong number of bits")
        self.key_bits_used += nbits
        return bits

    def _session(self) -> list[np.ndarray]:
        if self._tables is None:
            keys = self._take(64 * self.lanes).reshape(self.lanes, 64)
            self._tables = [_mul_table(_bits_to_int(k)) for k in keys]
        return self._tables

    def _expected(self, payload: bytes) -> bytes:
        tables = self._session()
        words = _words(payload)
        pads = self._take(64 * self.lanes).reshape(self.lanes, 64)
        out = b""
        for T, pad in zip(tables, pads, strict=True):
            out += (int(_horner_from(np.uint64(0), words, T)) ^ _bits_to_int(pad)).to_bytes(8, "little")
        return out

    def tag(self, payload: bytes) -> bytes:
        """Tag an outgoing message (consumes one pad)."""
        self.tags_made += 1
        return self._expected(bytes(payload))

    def verify(self, payload: bytes, tag: bytes) -> None:
        """Check an incoming message's tag (consumes one pad); raise :class:`AuthenticationError`."""
        expected = self._expected(bytes(payload))
        if not hmac.compare_digest(expected, bytes(tag)):
            raise AuthenticationError("message authentication failed: tag mismatch (tampered, injected or replayed message)")
        self.tags_verified += 1

    def __repr__(self) -> str:
        return f"WegmanCarterAuthenticator(lanes={self.lanes}, key_bits_used={self.key_bits_used})"


class TranscriptAuthenticator:
    """Wegman–Carter authentication of a whole conversation with one tag per direction.

    Each end absorbs every message it sends or receives, framed as ``direction byte, u64
    length, payload`` zero-padded to 8 bytes (an injective encoding), into a running
    polynomial hash (same hash and key as :class:`WegmanCarterAuthenticator`; the final word is
    the total length). At the end of a protocol run :func:`confirm_transcripts` exchanges two
    one-time-padded tags: the block's key is used only if both ends saw the same transcript, so
    an altered or injected message makes the block fail instead of being accepted (delayed
    authentication: Fung, Ma & Chau, PRA 81, 012318 (2010); Kiktenko et al., arXiv:1903.10237).
    Cost per block: 2 × 64·lanes bits of pad (+ 64·lanes once for the hash key).
    """

    def __init__(self, supply: AuthKeySupply, lanes: int = 1, max_words: int | None = None) -> None:
        if max_words is not None and (isinstance(max_words, bool) or int(max_words) < 1):
            raise QKDInputError(f"authentication: max_words must be None or an integer >= 1, got {max_words!r}")
        self._wc = WegmanCarterAuthenticator(supply, lanes)
        #: the length cap L_cap (64-bit words, length word included) of every transcript, fixed before the
        #: first message from public settings (:func:`transcript_word_cap`); None: no cap (the forgery bound then
        #: uses the lengths the transcripts turned out to have, which an active adversary chooses)
        self.max_words = None if max_words is None else int(max_words)
        #: the last closed transcript was longer than :attr:`max_words`: its partner's tag is refused
        self.over_cap = False
        self._acc = np.zeros(lanes, dtype=np.uint64)
        self._nbytes = 0
        self._messages = 0
        # the trailing local entries (absorb_trailing), hashed on their own from a zero accumulator
        self._tacc = np.zeros(lanes, dtype=np.uint64)
        self._tbytes = 0
        self._final: list[int] | None = None
        #: 64-bit words of the last closed transcript, its length word included
        self.final_words = 0
        #: final tags of the partner checked so far (each one forgery attempt)
        self.checks = 0

    @property
    def key_bits_used(self) -> int:
        return self._wc.key_bits_used

    @property
    def messages(self) -> int:
        return self._messages

    @property
    def lanes(self) -> int:
        return self._wc.lanes

    def __repr__(self) -> str:  # the running digest is key-dependent: sizes only
        return (f"TranscriptAuthenticator(lanes={self.lanes}, key_bits_used={self.key_bits_used}, "
                f"messages={self._messages}, checks={self.checks})")

    def absorb(self, direction: int, payload: bytes) -> None:
        """Add one message (``direction`` 0: sent by Ci, 1: sent by Cj) to the transcript, or
        (``direction`` 2) a *local entry*: data each end received from a third party (the
        detector's announcements) and absorbs without sending it, so the final tags match only
        if both ends received the same. Local entries count in the transcript's length like
        messages (:attr:`final_words`, hence in the forgery bound)."""
        if direction not in (0, 1, 2):
            raise QKDInputError(f"transcript direction must be 0 (Ci), 1 (Cj) or 2 (local entry), got {direction!r}")
        self._nbytes += self._horner(self._acc, direction, payload)
        self._messages += 1

    def absorb_trailing(self, payload: bytes) -> None:
        """Add a local entry (direction 2) that belongs *after* every message of this transcript,
        while messages are still being absorbed (the two may interleave in time): the digest at
        :meth:`close` is exactly the one of absorbing every message and then these entries, each
        in its own order, with :meth:`absorb`.

        The Horner hash is linear in its starting value: with the messages' accumulator ``a``
        and the trailing entries' words ``t_1 … t_m`` hashed on their own from zero into ``b``,
        Horner(a; t_1 … t_m) = a·k^m ⊕ b, so :meth:`close` multiplies ``a`` by k^m once and adds
        ``b``. A pair end can so hash the detector's announcements as they arrive instead of
        holding them until the block's last message (docs/protocol.md §2.1). The hash key must
        already be drawn (:attr:`key_bits_used` > 0): this method never draws it."""
        if self._wc.key_bits_used == 0:
            raise QKDInputError("transcript: trailing entries need the hash key already drawn")
        self._tbytes += self._horner(self._tacc, 2, payload)
        self._messages += 1

    def _horner(self, acc: np.ndarray, direction: int, payload: bytes) -> int:
        """Absorb one framed entry into ``acc`` (one value per lane); its framed length in bytes."""
        n = len(payload)
        frame = bytearray(9 + n + (-(9 + n)) % 8)
        frame[0] = direction
        frame[1:9] = n.to_bytes(8, "little")
        frame[9:9 + n] = payload
        words = np.frombuffer(frame, dtype="<u8")
        for lane, T in enumerate(self._wc._session()):
            acc[lane] = _horner_from(acc[lane], words, T)
        return len(frame)

    def _digest(self) -> list[int]:
        end = np.array([self._nbytes + self._tbytes], dtype=np.uint64)
        m = self._tbytes // 8
        out = []
        for lane, T in enumerate(self._wc._session()):
            acc = int(self._acc[lane])
            if m:
                acc = gf64_mul(acc, _gf64_pow(_key_of(T), m)) ^ int(self._tacc[lane])
            out.append(int(_horner_from(np.uint64(acc), end, T)))
        return out

    def close(self) -> None:
        """End of a protocol run: freeze the transcript digest and start a new transcript."""
        self._final = self._digest()
        self.final_words = (self._nbytes + self._tbytes) // 8 + 1
        self.over_cap = self.max_words is not None and self.final_words > self.max_words
        self._acc[:] = 0
        self._tacc[:] = 0
        self._nbytes = 0
        self._tbytes = 0
        self._messages = 0

    def _padded(self) -> bytes:
        if self._final is None:
            raise AuthenticationError("transcript not closed; call close() first")
        pads = self._wc._take(64 * self._wc.lanes).reshape(self._wc.lanes, 64)
        return b"".join((h ^ _bits_to_int(p)).to_bytes(8, "little") for h, p in zip(self._final, pads, strict=True))

    def final_tag(self) -> bytes:
        """One-time-padded tag of the closed transcript (consumes one pad)."""
        return self._padded()

    def check_final(self, tag: bytes) -> None:
        """Verify the partner's final tag against this end's closed transcript (consumes one pad)."""
        self.checks += 1
        ok = hmac.compare_digest(self._padded(), bytes(tag))  # the pad is spent either way, as at the partner
        if self.over_cap:
            raise AuthenticationError(
                f"transcript authentication refused: this end's transcript of the block is {self.final_words} words "
                f"long, above its cap of {self.max_words} fixed before the block (messages inflated in transit?); "
                "the block is discarded")
        if not ok:
            raise AuthenticationError("transcript authentication failed: the two ends saw different messages "
                                      "(tampered or injected); the block is discarded")

    def forgery_bound(self, attempts: int) -> float:
        """``attempts`` × :func:`forgery_probability` of a transcript of :attr:`max_words` words — an a-priori
        bound: an end accepts only a transcript within the cap, and an accepted forgery pairs two such
        transcripts. Without a cap, of this end's own last transcript (what it turned out to be)."""
        if attempts <= 0:
            return 0.0
        words = self.max_words if self.max_words is not None else max(self.final_words, 1)
        return attempts * forgery_probability(words, self.lanes)


class TranscriptPair:
    """Both ends of an in-process channel (plugs into ``LocalChannel``/``reconcile_*`` as the
    single ``authenticator``): messages alternate requester → responder → requester …;
    every message is absorbed by both ends with its true direction, tags are empty."""

    def __init__(self, auth_i: TranscriptAuthenticator, auth_j: TranscriptAuthenticator, requester: str = "j") -> None:
        if requester not in ("i", "j"):
            raise QKDInputError(f"requester must be 'i' or 'j', got {requester!r}")
        self.auth_i, self.auth_j = auth_i, auth_j
        self._dir = 1 if requester == "j" else 0
        self._pending: bytes | None = None

    def tag(self, payload: bytes) -> bytes:
        self._pending = bytes(payload)
        (self.auth_j if self._dir else self.auth_i).absorb(self._dir, self._pending)
        return b""

    def verify(self, payload: bytes, tag: bytes) -> None:
        (self.auth_i if self._dir else self.auth_j).absorb(self._dir, bytes(payload))
        self._dir ^= 1


def confirm_transcripts(auth_i: TranscriptAuthenticator, auth_j: TranscriptAuthenticator) -> float:
    """Close both transcripts and exchange the final tags (Ci → Cj, then Cj → Ci); raise
    :class:`AuthenticationError` on a mismatch. Pads are used in the same order at both ends.

    Returns the forgery probability of this exchange, counted per verification attempt: two
    checks, each ≤ :func:`forgery_probability` of the longer of the two transcripts. (A mismatch
    raises after the first check; its attempt was made all the same — callers that need the
    figure then read :func:`transcript_forgery_probability` before discarding the block.)"""
    auth_i.close()
    auth_j.close()
    auth_j.check_final(auth_i.final_tag())
    auth_i.check_final(auth_j.final_tag())
    return transcript_forgery_probability(auth_i, auth_j, 2)


def transcript_forgery_probability(auth_i: TranscriptAuthenticator, auth_j: TranscriptAuthenticator,
                                   attempts: int) -> float:
    """``attempts`` × :func:`forgery_probability` of the two ends' transcript cap (the larger, if they differ;
    :meth:`TranscriptAuthenticator.forgery_bound`), or without caps of the longer closed transcript."""
    if attempts <= 0:
        return 0.0
    if auth_i.max_words is not None and auth_j.max_words is not None:
        return max(auth_i.forgery_bound(attempts), auth_j.forgery_bound(attempts))
    words = max(auth_i.final_words, auth_j.final_words, 1)
    return attempts * forgery_probability(words, auth_i.lanes)


#: 64-bit lanes of the pipeline's transcript tags (DistillSettings, ProtocolSettings, pre-shared secrets): two, a
#: 128-bit tag, so that the forgery bound with the length cap fixed in advance (:func:`transcript_word_cap`) is
#: negligible even for 10^9-slot blocks: 2·(4·10^9/2^64)^2 ≈ 10^-19 per block, where one lane gives ≈ 4·10^-10,
#: four times the default ε_sec (review s32). Cost: 128 bits more per block (192 more on a session's first).
DEFAULT_AUTH_LANES = 2

#: Transcript words allowed per slot of a block (:func:`transcript_word_cap`): every honest transcript
#: measured takes ≈ 0.013 (≈ 1 word per announced click; 5·10^6-slot blocks of the tests' small station,
#: 66 634 words with Cascade, 62 452 with LDPC), and no message carries more than a few bytes per slot.
TRANSCRIPT_WORDS_PER_SLOT = 4
#: ... plus this many words for the per-block messages whatever the block's length
TRANSCRIPT_BASE_WORDS = 1 << 20


def transcript_word_cap(block_slots: int) -> int:
    """The length cap L_cap (64-bit words) of the transcript of a block of ``block_slots`` of the pair's slots,
    fixed before the acquisition from public settings: 4·block_slots + 2^20.

    The forgery bound of the polynomial hash, (L/2^64)^lanes per verification (Wegman & Carter 1981; Bernstein,
    EUROCRYPT 2005), holds for transcripts of at most L words; the lengths an adversary can make the ends see are
    its choice (a message may carry fields no handler reads, up to the transport's limit), so the bound is a
    security parameter only with a cap fixed in advance and enforced — an end refuses a transcript above it
    (:meth:`TranscriptAuthenticator.check_final`). Review s32: ε_auth was computed from the lengths seen, and
    between nodes from one end's own length. With the default two lanes (:data:`DEFAULT_AUTH_LANES`) the bound
    stays negligible: ≈ 5·10^-20 per verification for the 10^9 pair slots of a default 60 s run's block."""
    if isinstance(block_slots, bool) or int(block_slots) < 1:
        raise QKDInputError(f"authentication: block_slots must be an integer >= 1, got {block_slots!r}")
    return TRANSCRIPT_WORDS_PER_SLOT * int(block_slots) + TRANSCRIPT_BASE_WORDS


class _KeyStorePair:
    """Two ends drawing the same bits from Ci's and Cj's key stores (pool ``auth``/``general``).

    Both ends' bits are taken in one step, as the ETSI KME takes a key
    (:meth:`labqfl.keystore.etsi.KeyDeliveryService._take_at_both`): Ci reserves the bits ``take``
    would pick, Cj reserves exactly those, then both consume them — so no bit is spent at one end only.
    When Cj's store refuses because some of them are spent there for good (exported, consumed, absent),
    Ci discards them too and the draw moves on (at most :data:`DRAW_ATTEMPTS` tries): an export of the
    pair's ``auth`` bits from one end used to make every later block abort at that end's partner,
    128 bits spent at Ci each time. Whichever end needs bits first triggers the draw; the other end's
    share waits in a queue (in a network deployment the refs travel with the tagged message).
    """

    #: tries of one draw when Cj's store holds some of Ci's next bits spent
    DRAW_ATTEMPTS = 4

    def __init__(self, store_i: object, store_j: object, pair: str) -> None:
        self.store_i, self.store_j, self.pair = store_i, store_j, pair
        self.queue: dict[str, deque] = {"i": deque(), "j": deque()}

    def take(self, side: str, nbits: int) -> np.ndarray:
        q = self.queue[side]
        if q:
            n, val = q.popleft()
            if n != nbits:
                raise AuthenticationError(f"authentication key draws out of step ({n} vs {nbits} bits)")
            return val
        bits_i, bits_j = self._draw_both(nbits)
        other = "j" if side == "i" else "i"
        self.queue[other].append((nbits, bits_j if other == "j" else bits_i))
        return bits_i if side == "i" else bits_j

    def _draw_both(self, nbits: int) -> tuple[np.ndarray, np.ndarray]:
        si, sj, pair = self.store_i, self.store_j, self.pair
        for attempt in range(self.DRAW_ATTEMPTS):
            kid = f"auth-{uuid.uuid4()}"
            refs = si.reserve(pair, nbits, "auth", kid)  # type: ignore[attr-defined]
            try:
                sj.reserve_exact(pair, refs, "auth", kid)  # type: ignore[attr-defined]
            except LabqflError:
                si.release(kid)  # type: ignore[attr-defined]
                spent = sj.spent_refs(pair, refs)  # type: ignore[attr-defined]
                if not spent or attempt == self.DRAW_ATTEMPTS - 1:
                    raise
                si.discard_exact(pair, spent, "authentication bits spent at the partner's store already")  # type: ignore[attr-defined]
                continue
            km_i = si.take_exact(pair, refs, "auth", key_id=kid)  # type: ignore[attr-defined]
            km_j = sj.take_exact(pair, refs, "auth", key_id=kid)  # type: ignore[attr-defined]
            return np.asarray(km_i.bits, dtype=np.uint8), np.asarray(km_j.bits, dtype=np.uint8)
        raise AssertionError("unreachable")


class _Side:
    def __init__(self, pair: _KeyStorePair, side: str) -> None:
        self._pair, self._side = pair, side

    def take(self, nbits: int) -> np.ndarray:
        return self._pair.take(self._side, nbits)


def keystore_auth_supplies(store_i: object, store_j: object, pair: str) -> tuple[AuthKeySupply, AuthKeySupply]:
    """(Ci's, Cj's) :class:`AuthKeySupply` backed by the two nodes' key stores (see :class:`_KeyStorePair`)."""
    kp = _KeyStorePair(store_i, store_j, pair)
    return _Side(kp, "i"), _Side(kp, "j")
