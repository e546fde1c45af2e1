"""Where the pairwise mask keys come from: the QKD key store (``qkd``) or a CSPRNG (``csprng``).

A :class:`KeySource` hands out, for a pair "Ci-Cj" and a round, bits that *both* ends hold.
Every run records which source it used (``RoundResult.key_source``):

- ``qkd`` (:class:`KeyStoreKeySource`): bits consumed from the pair's pool in the per-node SQLite
  key stores, with the ETSI KME's protocol (another process — ``labqfl keys serve`` — may serve the
  same stores): ``reserve`` on the master's store (the pair's first client), ``reserve_exact`` of
  the same refs on the slave's, then ``take_exact`` under that key ID at both; the two copies are
  compared (a mismatch aborts the round without printing them). Bits the slave's store holds
  reserved for another process's key are skipped (kept reserved at the master until the draw is
  done, then released: never read, never reused). Consumed bits are marked used by the store and
  never handed out again. One-time-pad
  masks are as secure as these keys: information-theoretically only for keys from a hardware
  physical layer with QRNG clients (their block provenance, :mod:`labqfl.provenance`;
  ``blocks_used`` names the blocks drawn from).
- ``csprng`` (:class:`CsprngKeySource`): a stand-in for runs larger than the key supply (the
  paper's 200-client simulation used pseudo-random masks). Per round a fresh 256-bit seed from
  the OS (``secrets``) keys AES-256 in counter mode (a standard cryptographic PRG); each pair's
  words are the next, never reused, segment of that keystream (in a deployed protocol each pair
  would agree on its own seed, e.g. by key agreement; the Flower engine does). Masks are then
  only *computationally* secure, not information-theoretically.

Key starvation (qkd): before a round draws anything, :meth:`KeyStoreKeySource.ensure_available`
checks every pair of the mask graph; with ``starvation="wait"`` it polls the stores, reporting
progress through a callback, until all pairs have enough or ``wait_timeout_s`` passes; with
``"fail"`` it raises :class:`~labqfl.errors.KeyStarvationError` at once. The error names the pair,
the bits needed and the bits available.

Key bits are never logged, printed or pickled: sources log only pair names and bit counts.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from labqfl.errors import (
    InsufficientKeyError,
    KeyStarvationError,
    KeyStoreBusyError,
    KeyStoreError,
    SecureAggregationError,
)
from labqfl.fl.masks import split_pair, words_from_bits
from labqfl.fl.quantize import uint_dtype
from labqfl.log import get_logger

log = get_logger(__name__)

KEY_PURPOSE = "fl"
#: ``info["use"]`` of the in-process source's reservations (not the Flower engine's ``fl-mask``,
#: whose stranded-reservation cleanup must leave a live in-process draw alone)
LOCAL_USE = "fl-mask-local"
#: reservations tried per draw when the slave's store holds the master's next bits for another key
RESERVE_ATTEMPTS = 8
_ZERO_NONCE = bytes(16)  # each AES key (fresh OS seed) encrypts exactly one stream


@runtime_checkable
class KeySource(Protocol):
    """Pairwise shared key bits for masks.

    ``name`` is ``"qkd"`` or ``"csprng"``. ``shared_keys(pair, nbits, round_index=r)`` returns
    ``nbits`` bits (uint8 0/1, shape (nbits,)) that both ends of ``pair`` hold; no bit is ever
    returned twice.
    """

    name: str

    def shared_keys(self, pair: str, nbits: int, *, round_index: int) -> np.ndarray: ...


def key_words(source: KeySource, pair: str, n_words: int, q: int, *, round_index: int) -> np.ndarray:
    """n_words mask words of q bits for ``pair`` (``uint{q}``), from q·n_words fresh key bits.

    Uses the source's ``shared_words`` fast path when it has one (same bits → same words as
    :func:`~labqfl.fl.masks.words_from_bits`), else packs ``shared_keys``.
    """
    dt = uint_dtype(q)
    fast = getattr(source, "shared_words", None)
    if fast is not None:
        w = fast(pair, n_words, q, round_index=round_index)
    else:
        bits = source.shared_keys(pair, q * n_words, round_index=round_index)
        try:
            w = words_from_bits(bits, q)
        finally:
            bits[:] = 0  # only the words leave: the bit copy of the key is wiped
    if w.dtype != dt or w.shape != (n_words,):
        raise SecureAggregationError(f"key source {source.name!r} returned wrong words for pair {pair!r}")
    return w


class _Accounting:
    """Bits handed out per pair (no key material, only counts)."""

    def __init__(self) -> None:
        self.bits_used: dict[str, int] = {}

    def _count(self, pair: str, nbits: int) -> None:
        self.bits_used[pair] = self.bits_used.get(pair, 0) + int(nbits)


class CsprngKeySource(_Accounting):
    """Stand-in pairwise keys: an AES-256-CTR keystream under a fresh OS seed per round (not QKD).

    Computationally secure only. Every call reads the next segment of the round's stream, and a
    new round (or a stream past 2^40 bytes) starts a new stream under a new seed: no keystream
    byte is ever handed out twice. (One cipher context per round instead of one per pair: the
    200-client benchmark draws 1,600 pair keys per round.)
    """

    name = "csprng"
    _REKEY_BYTES = 1 << 40

    def __init__(self) -> None:
        super().__init__()
        self._zeros = b""
        self._enc: Any = None
        self._enc_round: int | None = None
        self._enc_bytes = 0

    def _stream(self, nbytes: int, round_index: int | None = None) -> np.ndarray:
        """The next ``nbytes`` of the round's AES-256-CTR keystream (uint8 array); a new round
        re-keys with a fresh 256-bit OS seed."""
        if self._enc is None or round_index is None or round_index != self._enc_round or \
                self._enc_bytes + nbytes > self._REKEY_BYTES:
            self._enc = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(_ZERO_NONCE)).encryptor()
            self._enc_round = round_index
            self._enc_bytes = 0
        if len(self._zeros) < nbytes:
            self._zeros = bytes(nbytes)
        out = np.empty(nbytes + 15, dtype=np.uint8)  # update_into wants room for one more block
        n = self._enc.update_into(memoryview(self._zeros)[:nbytes], out.data)
        self._enc_bytes += nbytes
        if n != nbytes:  # pragma: no cover - CTR is a stream mode: output = input length
            raise SecureAggregationError("AES-CTR keystream returned a short block")
        return out[:n]

    def shared_keys(self, pair: str, nbits: int, *, round_index: int) -> np.ndarray:
        split_pair(pair)
        if nbits < 0:
            raise ValueError(f"nbits must be >= 0, got {nbits}")
        raw = self._stream((nbits + 7) // 8, round_index)
        self._count(pair, nbits)
        return np.unpackbits(raw)[:nbits]

    def shared_words(self, pair: str, n_words: int, q: int, *, round_index: int) -> np.ndarray:
        """Fast path: n_words uniform q-bit words from q·n_words fresh stream bits.

        The stream is read as native-endian words (no byte swap): every stream is fresh and used
        by this call only, so no other party needs to reproduce the bits → words convention.
        """
        split_pair(pair)
        dt = uint_dtype(q)
        raw = self._stream(n_words * q // 8, round_index)
        self._count(pair, n_words * q)
        return raw.view(dt)

    def shared_pad_words(self, pair: str, n_words: int, w: int, *, round_index: int) -> np.ndarray:
        """Fast path for self-mask share pads: n_words uniform w-bit words (uint64), w ≤ 64, each
        the low w bits of the next 4 (w ≤ 32) or 8 stream bytes; w·n_words key bits counted."""
        split_pair(pair)
        if not 1 <= w <= 64:
            raise ValueError(f"pad word size must lie in [1, 64], got {w}")
        dt = np.dtype(np.uint32) if w <= 32 else np.dtype(np.uint64)
        raw = self._stream(n_words * dt.itemsize, round_index).view(dt)
        self._count(pair, n_words * w)
        return np.bitwise_and(raw, dt.type((1 << w) - 1)).astype(np.uint64)

    def __reduce__(self) -> Any:  # pragma: no cover - holds no key, but keep it unpicklable anyway
        raise TypeError("key sources are not picklable")


@dataclass(frozen=True)
class StarvationProgress:
    """Progress of a round waiting for key: which pair, bits needed and available, time waited."""

    pair: str
    needed_bits: int
    available_bits: int
    waited_s: float
    timeout_s: float


class KeyStoreKeySource(_Accounting):
    """Keys from the per-node QKD key stores (``labqfl.keystore``), consumed once, ever.

    ``stores`` maps node (client) name → that node's ``KeyStore``. For pair "Ci-Cj", Ci's store
    is the master (``reserve``), Cj's the slave (``reserve_exact`` with the master's refs); both
    then consume the key by ID (``take_exact``). ``reserve_attempts``: how many times a draw moves
    past bits the slave's store holds reserved for another process's key before it gives up.
    """

    name = "qkd"

    def __init__(
        self,
        stores: Mapping[str, Any],
        *,
        starvation: Literal["wait", "fail"] = "wait",
        wait_timeout_s: float = 60.0,
        poll_interval_s: float = 0.5,
        progress: Callable[[StarvationProgress], None] | None = None,
        purpose: str = KEY_PURPOSE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        reserve_attempts: int = RESERVE_ATTEMPTS,
    ) -> None:
        super().__init__()
        if reserve_attempts < 1:
            raise ValueError(f"reserve_attempts must be >= 1, got {reserve_attempts}")
        self.reserve_attempts = int(reserve_attempts)
        if starvation not in ("wait", "fail"):
            raise ValueError(f"starvation must be 'wait' or 'fail', got {starvation!r}")
        if wait_timeout_s < 0 or poll_interval_s <= 0:
            raise ValueError("wait_timeout_s must be >= 0 and poll_interval_s > 0")
        self.stores = dict(stores)
        self.starvation = starvation
        self.wait_timeout_s = float(wait_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.progress = progress
        self.purpose = purpose
        self._sleep = sleep
        self._clock = clock
        #: per pair, the key-store block IDs the handed-out bits came from (for their provenance)
        self.blocks_used: dict[str, set[str]] = {}
        self.void_stranded()

    #: a draw's reservations older than this are a killed process's, not a concurrent run's [s]
    STRANDED_AFTER_S = 60.0

    def void_stranded(self) -> int:
        """Void (spent, never handed out: :meth:`KeyStore.void`) the reservations of draws that a killed
        process left between its reservations and its takes — at either end, older than
        :data:`STRANDED_AFTER_S` (another run on the same stores may be drawing now). Never released:
        the master end may have been taken already. Returns how many."""
        from datetime import UTC, datetime, timedelta

        cutoff = (datetime.now(UTC) - timedelta(seconds=self.STRANDED_AFTER_S)).isoformat(timespec="microseconds")
        n = 0
        for node, store in self.stores.items():
            for d in store.pending_reservations(self.purpose):
                if d["info"].get("use") == LOCAL_USE and str(d["created"]) < cutoff:
                    store.void(d["key_id"], f"FL key draw left half-done by a stopped process (node {node})")
                    n += 1
        return n

    def _ends(self, pair: str) -> tuple[Any, Any]:
        a, b = split_pair(pair)
        missing = [n for n in (a, b) if n not in self.stores]
        if missing:
            raise SecureAggregationError(
                f"no key store for node(s) {missing} of pair {pair!r}; stores: {sorted(self.stores)}")
        return self.stores[a], self.stores[b]

    def available_bits(self, pair: str) -> int:
        """Unconsumed bits of ``pair`` for this purpose held by *both* ends (min of the two)."""
        master, slave = self._ends(pair)
        return min(int(master.available_bits(pair, self.purpose)), int(slave.available_bits(pair, self.purpose)))

    def ensure_available(self, needs: Mapping[str, int]) -> None:
        """Block until every pair has its needed bits ('wait'), or raise at once ('fail').

        Raises :class:`KeyStarvationError` naming the pair, bits needed and available.
        """
        t0 = self._clock()
        while True:
            short = []
            for pair, need in needs.items():
                have = self.available_bits(pair)
                if have < need:
                    short.append((pair, int(need), have))
            if not short:
                return
            waited = self._clock() - t0
            pair, need, have = short[0]
            if self.progress is not None:
                for p, n, h in short:
                    self.progress(StarvationProgress(p, n, h, waited, self.wait_timeout_s))
            if self.starvation == "fail" or waited >= self.wait_timeout_s:
                how = "" if self.starvation == "fail" else f" after waiting {waited:.1f} s"
                others = f" (and {len(short) - 1} more pair(s) short)" if len(short) > 1 else ""
                raise KeyStarvationError(
                    f"key starvation{how}: pair {pair} needs {need} key bits for this round, "
                    f"{have} available (purpose {self.purpose!r}){others}",
                    pair=pair, needed_bits=need, available_bits=have)
            log.info("waiting for key: pair %s needs %d bits, %d available", pair, need, have)
            self._sleep(min(self.poll_interval_s, self.wait_timeout_s - waited))

    def _reserve_at_both(self, pair: str, nbits: int, round_index: int) -> tuple[str, list[Any]]:
        """Reserve ``nbits`` at the master's store and the same bits at the slave's under one fresh
        key ID; no bit is read.  Returns ``(key_id, refs)``.

        When the slave's store refuses because those bits are reserved there for another key
        (another process serving the same stores, e.g. the ETSI KME, drew them with the slave as
        its master), the master's reservation is kept while the following bits are tried, at most
        :attr:`reserve_attempts` times, and all skipped reservations are released at the master at
        the end (never read: the bits stay free for later draws).  Any other refusal releases the
        master's reservation and raises: nothing is ever spent at one end only."""
        master, slave = self._ends(pair)
        mname, sname = split_pair(pair)
        info = {"use": LOCAL_USE, "round": int(round_index)}
        skipped: list[str] = []
        last: KeyStoreError | None = None
        try:
            for _ in range(self.reserve_attempts):
                kid = f"fl-local-{uuid.uuid4()}"
                try:
                    refs = master.reserve(pair, nbits, self.purpose, kid, info=info)
                except InsufficientKeyError as exc:
                    if not skipped:
                        raise
                    raise KeyStoreError(
                        f"pair {pair}: the key store of {sname} ({slave.path}) holds the bits the master's store "
                        f"{mname} has next reserved for another key — another process (an ETSI KME serving these "
                        f"stores, or another run) holds them — and the bits after them are too few ({exc}); "
                        "nothing was consumed at either end") from None
                try:
                    slave.reserve_exact(pair, refs, self.purpose, kid, info=info)
                    return kid, refs
                except KeyStoreError as exc:
                    held_elsewhere = not isinstance(exc, KeyStoreBusyError) and "reserved for another key" in str(exc)
                    if held_elsewhere:
                        skipped.append(kid)
                        last = exc
                        log.info("pair %s: key store %s holds the next %d bits reserved for another key (another "
                                 "process); trying the following bits", pair, sname, nbits)
                        continue
                    self._release(master, kid)
                    if isinstance(exc, KeyStoreBusyError):
                        raise
                    raise KeyStoreError(
                        f"pair {pair}: the slave's key store {sname} refused the bits the master's store {mname} "
                        f"holds next ({exc}); nothing was consumed at either end") from None
            raise KeyStoreError(
                f"pair {pair}: the key store of {sname} ({slave.path}) refused the bits the master's store "
                f"{mname} holds next {self.reserve_attempts} times: they are reserved there for another key, i.e. "
                "another process (an ETSI KME serving these stores, or another run) holds them; nothing was "
                f"consumed at either end; retry later ({last})")
        finally:
            for k in skipped:
                self._release(master, k)

    @staticmethod
    def _release(store: Any, key_id: str) -> bool:
        """Release a reservation nobody read; False (logged) when the store refused."""
        try:
            store.release(key_id)
            return True
        except KeyStoreError as exc:
            log.warning("could not release key reservation %s in key store %s (%s); its bits stay reserved and "
                        "unused", key_id, getattr(store, "path", "?"), exc)
            return False

    def shared_keys(self, pair: str, nbits: int, *, round_index: int) -> np.ndarray:
        if nbits < 0:
            raise ValueError(f"nbits must be >= 0, got {nbits}")
        self.ensure_available({pair: nbits})
        master, slave = self._ends(pair)
        kid, refs = self._reserve_at_both(pair, nbits, round_index)
        try:
            a, _ = take_master_keys(master, pair, nbits, round_index=round_index, purpose=self.purpose,
                                    key_id=kid, refs=refs)
        except BaseException:
            # take_exact is one transaction: refused, nothing was read at the master — free both ends again
            # (if the master's reservation is gone after all, its bits may be spent: spend the slave's too)
            if self._release(master, kid):
                self._release(slave, kid)
            else:
                self._void(slave, kid, pair)
            raise
        try:
            b = take_slave_keys(slave, pair, refs, round_index=round_index, purpose=self.purpose, key_id=kid)
        except BaseException:
            a[:] = 0  # the master's copy is spent with the round: wiped, as on a mismatch
            self._void(slave, kid, pair)  # spent at the master: spent at the slave too, never handed out
            raise
        same = a.shape == b.shape == (nbits,) and np.array_equal(a, b)
        b[:] = 0
        if not same:
            a[:] = 0
            raise SecureAggregationError(
                f"key mismatch for pair {pair} in round {round_index}: master and slave stores "
                f"returned different bits for the same refs; round aborted (the bits are spent)")
        self._count(pair, nbits)
        self.blocks_used.setdefault(pair, set()).update(str(r[0]) for r in refs)
        log.debug("round %d: took %d key bits for pair %s", round_index, nbits, pair)
        return a

    @staticmethod
    def _void(store: Any, key_id: str, pair: str) -> None:
        """Spend the slave's reservation of bits the master consumed (never handed out)."""
        try:
            store.void(key_id, f"pair {pair}: the master's end of this FL mask key was spent, this end failed")
        except KeyStoreError as exc:
            log.warning("could not void key reservation %s in key store %s (%s)", key_id,
                        getattr(store, "path", "?"), exc)

    def __reduce__(self) -> Any:  # pragma: no cover
        raise TypeError("key sources are not picklable")


def take_master_keys(store: Any, pair: str, nbits: int, *, round_index: int,
                     purpose: str = KEY_PURPOSE, key_id: str | None = None,
                     refs: Any = None) -> tuple[np.ndarray, list[Any]]:
    """Master end (the pair's first client) of a distributed round: consume ``nbits`` from its
    own key store. Returns ``(bits, refs)``; send ``refs`` (not the bits) to the partner, who calls
    :func:`take_slave_keys`. With ``key_id`` and ``refs``, consume instead exactly the bits this
    store reserved for ``key_id`` (``reserve``). The store's in-memory copy is wiped."""
    info = {"use": "fl-mask", "round": int(round_index)}
    if key_id is not None and refs is not None:
        km = store.take_exact(pair, refs, purpose=purpose, key_id=key_id, info=info)
        if km.nbits != nbits:
            km.wipe()
            raise SecureAggregationError(f"pair {pair}: reservation {key_id} holds {km.nbits} bits, not {nbits}")
    else:
        km = store.take(pair, nbits, purpose=purpose, info=info)
    try:
        return np.array(km.bits, dtype=np.uint8), list(km.refs)
    finally:
        km.wipe()


def take_slave_keys(store: Any, pair: str, refs: Any, *, round_index: int,
                    purpose: str = KEY_PURPOSE, key_id: str | None = None) -> np.ndarray:
    """Slave end (the pair's second client): consume exactly the bits the master named (reserved
    here for ``key_id``, if given)."""
    km = store.take_exact(pair, refs, purpose=purpose, key_id=key_id,
                          info={"use": "fl-mask", "round": int(round_index)})
    try:
        return np.array(km.bits, dtype=np.uint8)
    finally:
        km.wipe()


def make_key_source(
    kind: str,
    *,
    keystore_dir: Path | None = None,
    nodes: list[str] | None = None,
    starvation: Literal["wait", "fail"] = "wait",
    wait_timeout_s: float = 60.0,
    poll_interval_s: float = 0.5,
    progress: Callable[[StarvationProgress], None] | None = None,
) -> KeySource:
    """Build a key source by name: ``"csprng"`` or ``"qkd"`` (needs ``keystore_dir`` and ``nodes``)."""
    if kind == "csprng":
        return CsprngKeySource()
    if kind == "qkd":
        if keystore_dir is None or not nodes:
            raise SecureAggregationError("key source 'qkd' needs keystore_dir and the list of nodes")
        # local import: the key store is optional for csprng runs
        from labqfl.keystore import open_node_stores

        stores = open_node_stores(nodes, Path(keystore_dir))
        return KeyStoreKeySource(stores, starvation=starvation, wait_timeout_s=wait_timeout_s,
                                 poll_interval_s=poll_interval_s, progress=progress)
    raise SecureAggregationError(f"unknown key source {kind!r}; expected 'qkd' or 'csprng'")
