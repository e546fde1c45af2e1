"""Load a pair's real pre-shared authentication secret into both nodes' key stores.

QKD needs a short secret shared in advance to authenticate the first block's classical messages
(Wegman–Carter); afterwards each block refills the pool from its own final key (docs/postprocessing.md
§6). :func:`load_preshared_auth` writes such a secret, delivered out of band, into both nodes'
stores as one block of pool ``auth`` — the same layout as the distiller's simulated bootstrap
(block ID ``preshared-<uuid4>``, ``meta.kind = "preshared-auth"``) but ``meta.simulated = False``
— so ``labqfl distill --no-auth-bootstrap`` can run on it. CLI: ``labqfl keys preshare``.

Bit convention: each byte of the secret is 8 key bits, most significant bit first
(``np.unpackbits``, as the pipeline's own pre-shared bits and the store's packed material), so
the store holds the secret byte for byte.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.errors import KeyStoreError
from labqfl.keystore.store import KeyStore

#: Largest secret accepted [bytes] (8 Mbit; the distiller's own bootstrap is 64 kbit).
PRESHARED_MAX_BYTES = 1 << 20
#: Block-metadata kind of a pre-shared authentication block (the pipeline's bootstrap uses it too).
PRESHARED_KIND = "preshared-auth"


def min_preshared_bits(auth_lanes: int | None = None) -> int:
    """Least secret [bits] that pays for a distiller's first block with ``auth_lanes`` 64-bit lanes:
    hash key plus two one-time pads (``labqfl.qkd.pipeline._auth_bits_per_block``)."""
    from labqfl.qkd.authentication import DEFAULT_AUTH_LANES
    from labqfl.qkd.pipeline import _auth_bits_per_block

    return _auth_bits_per_block(DEFAULT_AUTH_LANES if auth_lanes is None else auth_lanes, first=True)


def read_secret_file(path: Path, *, min_bits: int | None = None, max_bytes: int = PRESHARED_MAX_BYTES) -> np.ndarray:
    """The secret in ``path`` as key bits (uint8 0/1, shape (8·bytes,), MSB first per byte).

    Raises :class:`KeyStoreError` naming the file for a missing/unreadable/empty file, one shorter
    than ``min_bits`` (default: :func:`min_preshared_bits`) or longer than ``max_bytes``, or one
    whose bytes are all equal (a zero-filled or placeholder file, not a secret).
    """
    need = min_preshared_bits() if min_bits is None else int(min_bits)
    path = Path(path)
    if not path.exists():
        raise KeyStoreError(f"secret file {path} does not exist")
    if not path.is_file():
        raise KeyStoreError(f"secret file {path} is not a regular file")
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise KeyStoreError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    if not data:
        raise KeyStoreError(f"secret file {path} is empty; expected at least {-(-need // 8)} bytes ({need} bits)")
    if len(data) > max_bytes:
        raise KeyStoreError(f"secret file {path} is larger than {max_bytes} bytes; a pre-shared authentication "
                            f"secret needs {-(-need // 8)} bytes at least (the distiller's own bootstrap uses 8192)")
    if len(data) * 8 < need:
        raise KeyStoreError(f"secret file {path} holds {len(data)} bytes ({len(data) * 8} bits); at least "
                            f"{-(-need // 8)} bytes ({need} bits) are needed to authenticate the first block")
    if data.count(data[0]) == len(data):
        raise KeyStoreError(f"secret file {path} holds {len(data)} copies of byte {data[0]:#04x}; that is not a "
                            "random secret")
    return np.unpackbits(np.frombuffer(data, np.uint8))


def shred_secret_file(path: Path) -> str | None:
    """Overwrite the secret file with zeros, flush it to disk and delete it, so the same secret
    cannot be loaded a second time by mistake (two blocks with the same bits would reuse one-time
    pads). Returns None on success, else a one-line reason (the load itself stands).

    labqfl keeps no fingerprint of the secret to detect a reload: a hash of key material stored next
    to it would reduce the information-theoretic secrecy of the pads to computational secrecy.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
    except OSError as exc:
        return f"could not overwrite and delete secret file {path} ({exc.strerror or exc}); destroy it by hand"
    return None


def _rollback_key_id(block_id: str) -> str:
    """Key ID under which a half-done load's block is withdrawn from the first store."""
    return f"rollback-{block_id}"


def _check_writable(store: KeyStore) -> None:
    for p in (store.path, store.path.parent):
        if not os.access(p, os.W_OK):
            raise KeyStoreError(f"key store {store.path}: {p} is not writable; nothing was loaded")


def load_preshared_auth(store_i: KeyStore, store_j: KeyStore, pair: str, bits: np.ndarray, *,
                        source: str = "") -> dict[str, Any]:
    """Add the pre-shared secret ``bits`` (uint8 0/1) of ``pair`` to both ends' ``auth`` pools.

    ``store_i``/``store_j``: the stores of the pair's nodes Ci and Cj; ``source``: where the
    secret came from (a file name; stored in the block metadata). Both stores are checked first
    (open and valid, writable); then the block is added to Ci's store and to Cj's. Loading the same
    secret twice cannot be detected here (no fingerprint of key material is kept): the CLI destroys
    the secret file after a successful load (:func:`shred_secret_file`). If the second add fails, the block just added at Ci is withdrawn (consumed
    under key ID ``rollback-<block ID>``, material zeroed, so neither end can use it; the same secret
    may be loaded again) and the error names both stores. Returns a
    summary without key material: pair, nbits, block_id, stores, auth pool bits per node.
    """
    from labqfl.qkd.pipeline import PRESHARED_PREFIX

    a, sep, b = pair.partition("-")
    for st, node in ((store_i, a), (store_j, b)):
        if st.node != node:
            raise KeyStoreError(f"key store {st.path} belongs to node {st.node!r}, not {node!r} of pair {pair}")
    arr = np.asarray(bits)
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size == 0 or arr.max(initial=0) > 1:
        raise KeyStoreError("pre-shared bits must be a non-empty 1-D uint8 array of 0/1")
    for st in (store_i, store_j):
        _check_writable(st)
    block_id = f"{PRESHARED_PREFIX}{uuid.uuid4()}"
    meta = {"kind": PRESHARED_KIND, "simulated": False, "source": source, "nbits": int(arr.size)}
    store_i.add_block(pair, arr, block_id=block_id, purpose="auth", meta=meta)
    try:
        store_j.add_block(pair, arr, block_id=block_id, purpose="auth", meta=meta)
    except BaseException as exc:  # Ctrl-C too: it must not leave the secret at one end only
        why = str(exc) if isinstance(exc, KeyStoreError) else f"{type(exc).__name__}: {exc}"
        try:
            store_i.take_exact(pair, [(block_id, 0, int(arr.size))], "auth", key_id=_rollback_key_id(block_id),
                               info={"reason": "preshare rollback: the partner store refused the block"})
        except Exception as exc2:
            raise KeyStoreError(
                f"pre-shared block {block_id} was added to key store {store_i.path} but adding it to {store_j.path} "
                f"failed ({why}), and withdrawing it from {store_i.path} failed too ({exc2}): the stores disagree; "
                f"do not distill pair {pair} until block {block_id} is removed from {store_i.path}") from exc
        if not isinstance(exc, Exception):
            raise  # interrupted: withdrawn at Ci, reported as the interruption it was
        raise KeyStoreError(
            f"adding the pre-shared block to key store {store_j.path} failed ({why}); the copy already added to "
            f"{store_i.path} was withdrawn (marked consumed, material zeroed; none of it was used), so neither store "
            f"holds it — fix the problem and load the secret again") from exc
    return {"pair": pair, "nbits": int(arr.size), "block_id": block_id, "source": source,
            "stores": {a: str(store_i.path), b: str(store_j.path)},
            "auth_available_bits": {n: int(st.accounting().get(pair, {}).get("available", {}).get("auth", 0))
                                    for n, st in ((a, store_i), (b, store_j))}}
