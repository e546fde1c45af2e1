"""Client-side mask keys for the Flower engine: one node, its own key store or an ECDH seed.

On Flower every client runs in its own process (a Ray worker in simulation, a SuperNode's
ClientApp process in deployment), so the single-process :class:`~labqfl.fl.keysource.KeySource`
objects do not apply. Each node derives the words of its pairs itself:

- ``qkd``: the node opens *only its own* key store (``KeyStore.for_node(name, data_dir)``). For
  pair "Ci-Cj" the master Ci reserves the bits (the same bits the in-process engine's ``take``
  would pick) and sends the refs (never the bits) through the server; the slave Cj reserves
  exactly those. Each end reads its copy only inside the call that masks (or reveals), and
  consumes it at the end of the round (:class:`NodeKeyStore`). Bits → words by
  :func:`~labqfl.fl.masks.words_from_bits` (MSB first), exactly as in the in-process engine.
- ``csprng``: per round each node draws an ephemeral X25519 key pair (OS randomness) and sends
  the public key through the server; both ends of a pair compute the shared secret, expand it
  with HKDF-SHA256 (RFC 5869; info binds run, round and pair) into a 256-bit AES key and read
  AES-256-CTR keystream as big-endian q-bit words (the same bits → words convention as
  ``words_from_bits``). This is the key agreement that ``docs/secure_aggregation.md`` §4 says a
  deployed csprng run needs; masks are computationally secure only. The server relays the
  public keys; an active server could substitute them (a man in the middle). Where the nodes have
  signing keys (a deployment) each node signs its key, run and round with its node certificate and
  every partner requires that signature before deriving anything
  (:meth:`labqfl.fl.flower.identity.ReplyVerifier.verify_pk`, ``tests/fl/flower/test_pk_signed.py``);
  a simulation without node certificates relays them unsigned and, like Flower's SecAgg+ without
  its PKI, assumes an honest-but-curious server there.

**Authenticated refs** (``qkd``): the slave cannot tell the master's refs from the server's, so
every pair and round the master also reserves :data:`REFS_TAG_BITS` bits (a separate reservation)
and tags a canonical statement of the refs it holds (:func:`refs_statement`: domain, run, round,
pair, the slave's fresh 128-bit nonce, mask / tag / pad / void refs) with a Wegman–Carter tag
(:class:`~labqfl.qkd.authentication.WegmanCarterAuthenticator`, 2 lanes; Wegman & Carter, JCSS 22,
265 (1981)); the slave reserves the same tag bits and checks the tag over the refs it received
and its own nonce before it touches anything else of the pair (:meth:`NodeKeyStore.tag_refs`,
:meth:`NodeKeyStore.refs_tag_matches`). A forged or altered statement passes with probability
≤ (L/2^64)^2 per verification, L its length in 64-bit words (:func:`refs_forgery_probability`); a
replay carries another nonce; every tag key is read once and consumed. The bound needs the
slave's copy of the tag key to be unknown to the server: bits of a pair key its master revealed
(a dropout) while the slave never reserved them break that. Where the nodes have signing keys (a
deployment) the master also signs the same statement with its node certificate key and the slave
requires it (:meth:`labqfl.fl.flower.identity.ReplyVerifier.verify_refs`), which closes that; in a
simulation without node keys it remains, the residual of ``docs/secure_aggregation.md`` §9
(``tests/fl/flower/test_refs_auth.py``, strict xfail; signed: ``test_refs_signed.py``).

Key words are never logged or printed. ``stochastic_rng`` reproduces the in-process engine's
stochastic-rounding stream for one client, so both engines quantise identically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from labqfl.errors import KeyStarvationError
from labqfl.fl.keysource import KEY_PURPOSE
from labqfl.fl.masks import words_from_bits
from labqfl.fl.quantize import uint_dtype
from labqfl.keystore.material import merge_refs
from labqfl.log import get_logger
from labqfl.qkd.authentication import BitPool, WegmanCarterAuthenticator, forgery_probability

log = get_logger(__name__)

#: ``info["use"]`` of a mask (or share-pad) reservation in a node's key store
USE = "fl-mask"
_ZERO_NONCE = bytes(16)  # each AES key (fresh per pair and round) encrypts exactly one stream
#: Wegman–Carter lanes of a refs tag (forgery ≤ (L/2^64)^2 per verification)
REFS_TAG_LANES = 2
#: key bits of one refs tag: 64·lanes hash-key bits + 64·lanes pad bits = 256 per pair and round
REFS_TAG_BITS = 2 * 64 * REFS_TAG_LANES
#: first field of every refs statement (versioned: a change of encoding changes it)
REFS_DOMAIN = b"labqfl-fl-refs/1"
#: bytes of the slave's fresh nonce per pair and round
REFS_NONCE_BYTES = 16


def stochastic_rng(seed: int, round_index: int, position: int, n_params: int) -> np.random.Generator:
    """The generator the in-process engine uses for the client at ``position`` (0-based, loop
    order of the round's clients): ``default_rng([seed, 9000, r])`` advanced past the
    ``position·n_params`` uniforms drawn for the clients before it (PCG64 draws one 64-bit
    output per double, so ``advance`` skips them exactly)."""
    bg = np.random.PCG64(np.random.SeedSequence([seed, 9000, round_index]))
    bg.advance(position * n_params)
    return np.random.Generator(bg)


# ----------------------------------------------------------------------------------- csprng
def new_ecdh_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair: (private key raw 32 bytes, public key raw 32 bytes)."""
    sk = X25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    priv = sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return priv, pub


def ecdh_words(private_key: bytes, peer_public_key: bytes, pair: str, n_words: int, q: int, *,
               round_index: int, run_tag: str) -> np.ndarray:
    """n_words q-bit mask words (``uint{q}``, shape (n_words,)) shared by the two ends of ``pair``.

    X25519(private, peer) → HKDF-SHA256(info = "labqfl-fl-mask|run|round|pair") → AES-256-CTR
    keystream of q·n_words bits, read big-endian (word t = stream bits [t·q, (t+1)·q), MSB first,
    as :func:`~labqfl.fl.masks.words_from_bits`).
    """
    dt = uint_dtype(q)
    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(peer_public_key))
    info = f"labqfl-fl-mask|{run_tag}|{int(round_index)}|{pair}".encode()
    aes_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    nbytes = n_words * q // 8
    enc = Cipher(algorithms.AES(aes_key), modes.CTR(_ZERO_NONCE)).encryptor()
    out = np.empty(nbytes + 15, dtype=np.uint8)
    n = enc.update_into(bytes(nbytes), out.data)
    enc.finalize()
    return out[:n].view(dt.newbyteorder(">")).astype(dt)


def ecdh_pad_words(private_key: bytes, peer_public_key: bytes, pair: str, n_words: int, w: int, part: int, *,
                   round_index: int, run_tag: str) -> np.ndarray:
    """Self-mask share pads for ``pair`` (csprng only): n_words words of w bits (uint64).

    ``part`` 0 pads the shares its master sends to its slave, 1 the reverse. Same X25519 + HKDF
    derivation as :func:`ecdh_words` with info "labqfl-fl-sharepad|run|round|pair|part"; the
    AES-256-CTR keystream's first w·n_words bits are read MSB first
    (:func:`~labqfl.fl.selfmask.pad_words_from_bits`). Computationally secure only, like every
    csprng mask.
    """
    from labqfl.fl.selfmask import pad_words_from_bits

    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(peer_public_key))
    info = f"labqfl-fl-sharepad|{run_tag}|{int(round_index)}|{pair}|{int(part)}".encode()
    aes_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    nbytes = (n_words * w + 7) // 8
    enc = Cipher(algorithms.AES(aes_key), modes.CTR(_ZERO_NONCE)).encryptor()
    out = np.empty(nbytes + 15, dtype=np.uint8)
    k = enc.update_into(bytes(nbytes), out.data)
    enc.finalize()
    return pad_words_from_bits(np.unpackbits(out[:k])[:n_words * w], w)


# ------------------------------------------------------------------------- authenticated refs
def _field(b: bytes) -> bytes:
    return len(b).to_bytes(8, "big") + b


def _refs_bytes(refs: Any) -> bytes:
    """Length-prefixed encoding of a refs list ``[[block_id, offset, length], ...]`` in its own
    order (the order sets which bits make which word): count, then per ref the block ID
    (length-prefixed UTF-8), offset and length (u64 big-endian). Refuses malformed refs."""
    out = [len(refs).to_bytes(8, "big")]
    for r in refs:
        if not isinstance(r, list | tuple) or len(r) != 3 or not isinstance(r[0], str) or \
                not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**64 for x in r[1:]):
            raise ValueError(f"malformed key reference {r!r}")
        out += [_field(r[0].encode()), int(r[1]).to_bytes(8, "big"), int(r[2]).to_bytes(8, "big")]
    return b"".join(out)


def refs_statement(run_tag: str, round_index: int, pair: str, nonce: bytes, *, refs: Any, tag_refs: Any,
                   pad_refs: Any, void_refs: Any) -> bytes:
    """The canonical statement a master tags and its slave checks for one pair and round: the
    domain :data:`REFS_DOMAIN`, run tag, round, pair and the slave's nonce (each length-prefixed),
    then the mask refs, the tag key's refs, the self-mask pad refs and the void refs (each
    :func:`_refs_bytes`; ``[]`` where there are none). Injective: every field is length-prefixed,
    so two different statements never encode alike."""
    if not isinstance(round_index, int) or isinstance(round_index, bool) or round_index < 0:
        raise ValueError(f"round must be a non-negative integer, got {round_index!r}")
    return b"".join([_field(REFS_DOMAIN), _field(run_tag.encode()), round_index.to_bytes(8, "big"),
                     _field(pair.encode()), _field(bytes(nonce)), _field(_refs_bytes(refs)),
                     _field(_refs_bytes(tag_refs)), _field(_refs_bytes(pad_refs)), _field(_refs_bytes(void_refs))])


def refs_forgery_probability(statement: bytes) -> float:
    """Chance that a forged or altered refs statement of this length passes one slave check:
    (L/2^64)^2 with L = ⌈len/8⌉ + 1 words (the length word included;
    :func:`~labqfl.qkd.authentication.forgery_probability`, Wegman & Carter 1981)."""
    return forgery_probability(-(-len(statement) // 8) + 1, REFS_TAG_LANES)


#: merged ranges per page of a void announcement (:meth:`NodeKeyStore.spent_refs`): 2 pages ≈ 8 KB of JSON
VOID_PAGE_RANGES = 64


def merge_spent(deliveries: list[list[Any]]) -> list[tuple[str, int, int]]:
    """The refs of ``deliveries`` (each a refs list ``[[block_id, offset, length], ...]``, newest
    delivery first) as disjoint ``(block_id, offset, length)`` ranges: overlapping or adjacent refs of a
    block merged, never a bit that no ref names; ordered by the newest delivery each range holds, then
    by block and offset (:func:`labqfl.keystore.material.merge_refs`)."""
    return merge_refs(deliveries)


# -------------------------------------------------------------------------------------- qkd
class NodeKeyStore:
    """One node's own key store (``labqfl.keystore.KeyStore``) used for its mask pairs.

    Between protocol stages the pair keys stay *in the store*, reserved under a key ID; the
    node keeps only key IDs and refs (:data:`~labqfl.keystore.material.Ref`) in Flower's
    ``Context.state``. Per round and pair:

    * the master :meth:`reserve_master` — the store picks the bits (those ``take`` would pick)
      and reserves them without reading them; the refs go to the slave through the server;
    * before it tags the refs the master marks the mask and pad reservations tagged in the store
      (:meth:`mark_tagged`): never released from then on;
    * at the mask stage both ends read the reserved bits (:meth:`words`; the slave first
      :meth:`reserve_slave` by the master's refs) and use them at once; the bits stay reserved,
      marked masked in the store (a second mask read is refused there);
    * after a dropout a survivor consumes the pair's bits and reveals them (:meth:`take_words`);
    * at the end of the round every reservation is consumed (:meth:`finish`, which overwrites
      the bits in the store) — or, only if the bits were never read at either end, released.

    ``starvation_timeout_s``: how long a master waits for its pair to hold enough key bits
    (polling every ``poll_s``) before raising :class:`KeyStarvationError`; 0 = fail at once.
    """

    def __init__(self, name: str, data_dir: Any, *, starvation_timeout_s: float = 0.0, poll_s: float = 0.5,
                 purpose: str = KEY_PURPOSE) -> None:
        from labqfl.keystore import KeyStore

        self.name = name
        self.store = KeyStore.for_node(name, Path(data_dir))
        self.timeout_s = float(starvation_timeout_s)
        self.poll_s = float(poll_s)
        self.purpose = purpose

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> NodeKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, pair: str, nbits: int) -> None:
        t0 = time.monotonic()
        while True:
            have = int(self.store.available_bits(pair, self.purpose))
            if have >= nbits:
                return
            waited = time.monotonic() - t0
            if waited >= self.timeout_s:
                raise KeyStarvationError(
                    f"key starvation at node {self.name}: pair {pair} needs {nbits} key bits for this round, "
                    f"{have} available (purpose {self.purpose!r})", pair=pair, needed_bits=nbits, available_bits=have)
            time.sleep(min(self.poll_s, self.timeout_s - waited))

    def reserve_master(self, pair: str, nbits: int, key_id: str, *, round_index: int, run_tag: str,
                       wait_bits: int = 0) -> list[list[Any]]:
        """Master end: reserve ``nbits`` of the pair's free bits for ``key_id`` (no bit is read);
        returns the refs ``[[block_id, offset, length], ...]`` to send to the slave. With
        ``wait_bits`` it first waits for that many free bits (the round's whole need of the pair:
        mask, pads and refs tag), not only ``nbits``."""
        self._wait(pair, max(nbits, wait_bits))
        refs = self.store.reserve(pair, nbits, self.purpose, key_id,
                                  info={"use": USE, "run": run_tag, "round": int(round_index), "end": "master"})
        return [list(r) for r in refs]

    def void_stranded(self, run_tag: str, round_index: int) -> int:
        """Void (:meth:`KeyStore.void`) every mask reservation of this store that no live round can
        finish: one of another run, or of an earlier round of this run, that the node's state no
        longer names (the caller finished those first) — left by a node process that was killed
        mid-round (Ctrl-C, a crash, a restarted SuperNode).  Such bits may have been read at either
        end, so they are never released; the master announces them to the slave
        (:meth:`spent_refs`, the slave's :meth:`discard`) so both stores agree again.  A node's
        store serves one FL run at a time.  Returns the number of reservations voided."""
        n = 0
        for d in self.store.pending_reservations(self.purpose):
            info = d["info"]
            if info.get("use") != USE or (info.get("run") == run_tag and int(info.get("round", 0)) >= round_index):
                continue
            self.store.void(d["key_id"], f"voided at node {self.name} by FL run {run_tag}, round {round_index}: left "
                            f"by run {info.get('run', '?')}, round {info.get('round', '?')} ({info.get('end', '?')} "
                            "end), which no live round of this node finishes")
            n += 1
        if n:
            log.warning(
                "node %s: voided %d mask reservation(s) of an earlier FL run or round in its key store (an interrupted "
                "run; if another FL run is using this key store now, it will fail: one FL run per key store at a "
                "time)", self.name, n)
        return n

    def _reserved(self, key_id: str, *, for_mask: bool = False) -> Any:
        """:meth:`KeyStore.read_reserved` (``for_mask``: a mask read, refused on a reservation already read
        for a mask), with one clear error when another FL run's keys stage voided the reservation (two FL
        runs on one node store at a time) or when the reservation already masked an upload."""
        from labqfl.errors import KeyStoreError, SecureAggregationError

        try:
            return self.store.read_reserved(key_id, for_mask=for_mask)
        except KeyStoreError:
            d = self.store.delivery(key_id)
            if for_mask and d is not None and d["state"] == "reserved" and d["kind"] == "reserve-masked":
                raise SecureAggregationError(
                    f"node {self.name}: its key {key_id} for pair {d['pair']} already masked an upload (its key store "
                    "says so); refused: a one-time pad masks one message") from None
            if d is not None and d["state"] == "voided":
                raise SecureAggregationError(
                    f"node {self.name}: its key for pair {d['pair']} was taken away: {d['info'].get('voided', 'voided')}"
                    " — a node's key store serves one FL run at a time; run one after the other") from None
            raise

    def spent_refs(self, pair: str, round_index: int = 0) -> list[list[Any]]:
        """The void announcement of ``pair`` for round ``round_index``: refs of the bits this master spent
        in mask reservations (consumed or voided), announced to the slave at every keys stage. A slave
        that never reserved them (its process died, the round was interrupted before it got the refs, it
        was lost after the refs stage, a server withheld its mask message) still holds them free, and
        :meth:`discard` there brings the two stores back in step; it is idempotent and skips what the
        slave consumed itself.

        Every spent reservation is covered, however many rounds the slave missed (second review s32, F2:
        only the 16 most recent deliveries were, so a slave that missed more than 8 rounds after the refs
        stage kept the oldest bits free for good): their refs merged into disjoint ranges per key block
        (:func:`merge_spent`; the master allocates a pair's FL bits from the lowest free ones, so they
        merge into about one range per block used), newest first, cut into pages of
        :data:`VOID_PAGE_RANGES`. An announcement holds the newest page and, when there are more, one
        older page in turn (page ``1 + round_index mod (pages − 1)``): bounded, and a slave present in
        ``pages − 1`` consecutive rounds has seen every range. The slave acts on it only after the refs
        tag (and, deployed, the master's signature) over the same void refs checked out
        (:func:`refs_statement`): the server's word alone discards nothing."""
        spent = [d["refs"] for d in self.store.finished(pair, limit=None) if d["info"].get("use") == USE
                 and d["info"].get("end") == "master"]
        ranges = merge_spent(spent)
        pages = [ranges[i:i + VOID_PAGE_RANGES] for i in range(0, len(ranges), VOID_PAGE_RANGES)]
        if len(pages) > 2:
            pages = [pages[0], pages[1 + int(round_index) % (len(pages) - 1)]]
        return [list(r) for page in pages for r in page]

    def discard(self, pair: str, refs: Any) -> int:
        """Slave end: discard the bits the master voided (those still free here)."""
        from labqfl.keystore.material import normalize_refs

        return self.store.discard_exact(pair, normalize_refs(refs), f"voided by the master of {pair}")

    def reserve_slave(self, pair: str, refs: Any, nbits: int, key_id: str, *, round_index: int, run_tag: str) -> None:
        """Slave end: reserve exactly the bits the master's refs name, for ``key_id``."""
        from labqfl.keystore.material import normalize_refs, refs_nbits

        norm = normalize_refs(refs)
        if refs_nbits(norm) != nbits:
            raise KeyStarvationError(
                f"node {self.name}: refs for pair {pair} name {refs_nbits(norm)} bits, {nbits} expected",
                pair=pair, needed_bits=nbits, available_bits=refs_nbits(norm))
        self.store.reserve_exact(pair, norm, self.purpose, key_id,
                                 info={"use": USE, "run": run_tag, "round": int(round_index), "end": "slave"})

    def reserved_refs(self, key_id: str) -> list[list[Any]]:
        """The refs of the pending reservation ``key_id`` as this store holds them ([] if none)."""
        res = self.store.reservation(key_id)
        return [] if res is None else [list(r) for r in res[1]]

    def _refs_authenticator(self, key_id: str) -> WegmanCarterAuthenticator:
        """A Wegman–Carter authenticator (:data:`REFS_TAG_LANES` lanes) over the
        :data:`REFS_TAG_BITS` bits reserved for ``key_id``: hash keys first, then the one pad. The
        bits stay reserved (read: they can only be consumed now)."""
        km = self._reserved(key_id)
        try:
            if km.nbits != REFS_TAG_BITS:
                raise KeyStarvationError(
                    f"node {self.name}: refs tag key {km.key_id} of pair {km.pair} has {km.nbits} bits, "
                    f"{REFS_TAG_BITS} expected", pair=km.pair, needed_bits=REFS_TAG_BITS, available_bits=km.nbits)
            return WegmanCarterAuthenticator(BitPool(np.asarray(km.bits, dtype=np.uint8)), lanes=REFS_TAG_LANES)
        finally:
            km.wipe()

    def mark_tagged(self, key_id: str) -> None:
        """Master end: record in the store that the refs of reservation ``key_id`` (a mask or pad key)
        are being authenticated to the slave (:meth:`KeyStore.mark_tagged`), before any tag is
        computed: from then on :meth:`finish` consumes it, never releases it, whatever the node state
        says (review s34 second look, F2: that state is lost when a process dies after its reply)."""
        self.store.mark_tagged(key_id)

    def tag_refs(self, key_id: str, statement: bytes) -> bytes:
        """Master end: the Wegman–Carter tag (16 bytes) of a :func:`refs_statement` under the tag
        key reserved for ``key_id``. Once per reservation: a second tag under the same key would give
        the server two tags under one pad, so a tag key the store says was read already is refused
        (:class:`~labqfl.errors.SecureAggregationError`), besides the caller's node state."""
        from labqfl.errors import SecureAggregationError

        d = self.store.delivery(key_id)
        if d is not None and d["state"] == "reserved" and d["kind"] != "reserve":
            raise SecureAggregationError(f"node {self.name}: refs tag key {key_id} of pair {d['pair']} was used "
                                         "already (its key store says so); refused: one tag per tag key")
        return self._refs_authenticator(key_id).tag(statement)

    def refs_tag_matches(self, key_id: str, statement: bytes, tag: bytes) -> bool:
        """Slave end: whether ``tag`` is the master's tag of ``statement`` under the tag key reserved
        for ``key_id`` (constant-time comparison, ``hmac.compare_digest``)."""
        from labqfl.errors import AuthenticationError

        try:
            self._refs_authenticator(key_id).verify(statement, tag)
        except AuthenticationError:
            return False
        return True

    def words(self, key_id: str, n_words: int, q: int, *, for_mask: bool = True) -> np.ndarray:
        """The q-bit words (``uint{q}``, shape (n_words,)) of the bits reserved for ``key_id``; the
        bits stay reserved in the store (and can no longer be released, only consumed). ``for_mask``
        (the mask stage's read): the store marks the reservation masked in the same transaction and
        refuses a second mask read of it (:meth:`KeyStore.read_reserved`)."""
        km = self._reserved(key_id, for_mask=for_mask)
        try:
            return self._to_words(km, n_words, q)
        finally:
            km.wipe()

    def pad_words(self, key_id: str, n_words: int, w: int, part: int, *, for_mask: bool) -> np.ndarray:
        """Self-mask share pads from the 2·w·n_words bits reserved for ``key_id``: ``part`` 0 is the
        first half (master → slave shares), 1 the second (slave → master); w-bit words, MSB first.
        The bits stay reserved (consumed at the end of the round). ``for_mask``: the mask stage's read
        of this node's own half (a second one refused by the store, as :meth:`words`); False for the
        unmask stage's read of the partner's half."""
        from labqfl.fl.selfmask import pad_words_from_bits

        km = self._reserved(key_id, for_mask=for_mask)
        try:
            if km.nbits != 2 * w * n_words:
                raise KeyStarvationError(
                    f"node {self.name}: pad key {km.key_id} of pair {km.pair} has {km.nbits} bits, "
                    f"{2 * w * n_words} expected", pair=km.pair, needed_bits=2 * w * n_words, available_bits=km.nbits)
            bits = np.array(km.bits, dtype=np.uint8)
            try:
                return pad_words_from_bits(bits[part * w * n_words:(part + 1) * w * n_words], w)
            finally:
                bits[:] = 0
        finally:
            km.wipe()

    def take_words(self, key_id: str, n_words: int, q: int) -> np.ndarray:
        """Consume the bits reserved for ``key_id`` (overwritten in the store) and return their words."""
        km = self._take(key_id)
        try:
            return self._to_words(km, n_words, q)
        finally:
            km.wipe()

    def finish(self, key_id: str, *, release: bool = False) -> str:
        """End the reservation ``key_id``: consume it (bits overwritten, spent unused) or, with
        ``release`` and only if the store says it was never read nor tagged (kind ``reserve``; not
        ``reserve-tagged``, ``-read`` or ``-masked``), return its bits to the pool. Returns
        ``"consumed"``, ``"released"`` or ``"none"`` (no pending reservation: already finished)."""
        res = self.store.reservation(key_id)
        if res is None:
            return "none"
        info = self.store.delivery(key_id) or {}
        if release and info.get("kind") == "reserve":
            self.store.release(key_id)
            return "released"
        self._take(key_id).wipe()
        return "consumed"

    def _take(self, key_id: str) -> Any:
        res = self.store.reservation(key_id)
        if res is None:
            from labqfl.errors import KeyStoreError

            raise KeyStoreError(f"node {self.name}: no pending reservation {key_id} in its key store")
        pair, refs, purpose, _ = res
        return self.store.take_exact(pair, refs, purpose, key_id=key_id)

    def _to_words(self, km: Any, n_words: int, q: int) -> np.ndarray:
        if km.nbits != q * n_words:
            raise KeyStarvationError(
                f"node {self.name}: key {km.key_id} of pair {km.pair} has {km.nbits} bits, {q * n_words} expected",
                pair=km.pair, needed_bits=q * n_words, available_bits=km.nbits)
        bits = np.array(km.bits, dtype=np.uint8)
        try:
            return words_from_bits(bits, q)
        finally:
            bits[:] = 0
