"""Client-side mask keys for the Flower engine: one node, its own key store or an ECDH seed.

On Flower every client runs in its own process (a Ray worker in simulation, a SuperNode's
ClientApp process in deployment), so the single-process :class:`~labqfl.fl.keysource.KeySource`
objects do not apply. Each node derives the words of its pairs itself:

- ``qkd``: the node opens *only its own* key store (``KeyStore.for_node(name, data_dir)``). For
  pair "Ci-Cj" the master Ci calls :func:`~labqfl.fl.keysource.take_master_keys` and sends the
  refs (never the bits) through the server; the slave Cj calls
  :func:`~labqfl.fl.keysource.take_slave_keys` with them. Bits → words by
  :func:`~labqfl.fl.masks.words_from_bits` (MSB first), exactly as in the in-process engine.
- ``csprng``: per round each node draws an ephemeral X25519 key pair (OS randomness) and sends
  the public key through the server; both ends of a pair compute the shared secret, expand it
  with HKDF-SHA256 (RFC 5869; info binds run, round and pair) into a 256-bit AES key and read
  AES-256-CTR keystream as big-endian q-bit words (the same bits → words convention as
  ``words_from_bits``). This is the key agreement that ``docs/secure_aggregation.md`` §4 says a
  deployed csprng run needs; masks are computationally secure only. The server relays the
  public keys: like Flower's SecAgg+, the scheme assumes an honest-but-curious server (an
  active server could substitute public keys; QKD refs have no such weakness since the bits
  never travel).

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
from labqfl.fl.keysource import KEY_PURPOSE, take_master_keys, take_slave_keys
from labqfl.fl.masks import words_from_bits
from labqfl.fl.quantize import uint_dtype

_ZERO_NONCE = bytes(16)  # each AES key (fresh per pair and round) encrypts exactly one stream


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


# -------------------------------------------------------------------------------------- qkd
class NodeKeyStore:
    """One node's own key store (``labqfl.keystore.KeyStore``) used for its mask pairs.

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

    def master_words(self, pair: str, n_words: int, q: int, *, round_index: int) -> tuple[np.ndarray, list[Any]]:
        """Consume q·n_words bits as the pair's master: (words uint{q}, refs to send)."""
        nbits = q * n_words
        self._wait(pair, nbits)
        bits, refs = take_master_keys(self.store, pair, nbits, round_index=round_index, purpose=self.purpose)
        try:
            return words_from_bits(bits, q), [list(r) for r in refs]
        finally:
            bits[:] = 0

    def slave_words(self, pair: str, refs: Any, n_words: int, q: int, *, round_index: int) -> np.ndarray:
        """Consume exactly the master's refs as the pair's slave: words uint{q}."""
        bits = take_slave_keys(self.store, pair, refs, round_index=round_index, purpose=self.purpose)
        try:
            if bits.shape != (q * n_words,):
                raise KeyStarvationError(
                    f"node {self.name}: refs for pair {pair} name {bits.size} bits, {q * n_words} expected",
                    pair=pair, needed_bits=q * n_words, available_bits=int(bits.size))
            return words_from_bits(bits, q)
        finally:
            bits[:] = 0
