"""One node's key store: pairwise key pools in an SQLite file, consumed exactly once.

Layout and invariants (docs/keystore.md has the full argument):

* ``blocks``: one row per distilled key block (UUID ``block_id``, the same at both ends of a
  pair), its ``pair`` ("Ci-Cj"), size in bits, run ID, metadata (ε values, …) and the material,
  packed MSB-first.
* ``segments``: a partition of every block's bit range ``[0, nbits)`` into contiguous
  segments, each with a pool (``purpose``) and a state: ``free`` (available), ``reserved``
  (promised to one key ID, e.g. the slave side of an ETSI delivery), ``consumed`` (handed out;
  the material is overwritten with zeros in the same transaction), ``exporting`` (schema 3: taken
  by an export whose file is being written, ``key_id`` = the export ID; not zeroed yet, never
  handed out, not spent either), ``exported`` (moved to an export file, ``key_id`` = the export
  ID; zeroed) or ``absent`` (never held here: parts of a block not imported).
* ``deliveries``: one row per handed-out or reserved key: key ID, pair, purpose, refs.
* ``exports`` / ``imports`` / ``import_tickets`` (schema 2): the exports this store made (bound
  to one target store), the exports it imported, and the one-time import tickets it issued;
  ``meta.store_id`` is the store's random identity (see :mod:`labqfl.keystore.transfer`).  Schema 3
  (review s33 F1): an export has a ``state`` (``exporting`` → ``written`` → ``done``, or
  ``aborted``), the ``file`` it goes to, its temporary ``part`` file and the ``digest`` (SHA-256)
  of its bytes, so that an export interrupted by a crash is finished or undone
  (:func:`labqfl.keystore.transfer.recover_exports`); a ticket is used by one export that was not
  aborted.  An export's temporary file is noted (``meta`` key ``export_part:<path>``,
  :meth:`KeyStore.note_export_part`) before it is created and until the export's record names it,
  so that recovery can remove the empty file a crash in between leaves.

Every operation that hands out bits is one ``BEGIN IMMEDIATE`` transaction that checks the
segments are free, marks them, zeroes the material and commits before any bit leaves this
module; with ``journal_mode=WAL`` and ``synchronous=FULL`` a process killed at any instant leaves
either the whole transaction or none of it.  After each overwriting commit the store attempts a
``wal_checkpoint(TRUNCATE)`` that never waits, reads its result, and retries in the background
while a reader's old snapshot blocks it (see "scrubbing" below, :meth:`KeyStore.scrub_status`);
``secure_delete`` is on, so freed space is zeroed too.

Pools: ``auth`` (classical-channel authentication), ``fl`` (federated-learning masks), ``etsi``
(ETSI GS QKD 014 delivery) and ``general``.  A block's pool is fixed when it is added; a take for
purpose P draws from pool P first, then from ``general`` (block order, lowest offset first).
Pools ``auth``/``fl``/``etsi`` are never drawn by another purpose.

Synchronisation of the two ends of a pair: one node **allocates** (:meth:`KeyStore.take`, which
picks the bits) and sends the ``refs`` to its partner, who consumes exactly those bits with
:meth:`KeyStore.take_exact`.  For a given pair and pool only one node may allocate at a time
(by convention the pair's first node Ci of "Ci-Cj"), or the allocator must reserve the bits at
the partner first (:meth:`KeyStore.reserve_exact`, as the ETSI KME does); two unsynchronised
allocators on both ends could pick the same bits.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.errors import InsufficientKeyError, KeyStoreBusyError, KeyStoreError
from labqfl.keystore.material import KeyMaterial, Ref, normalize_refs, refs_nbits
from labqfl.log import get_logger

log = get_logger(__name__)

#: Pools of key material (see module docstring).
PURPOSES: tuple[str, ...] = ("auth", "fl", "etsi", "general")
GENERAL = "general"

#: SQLite ``application_id`` of a labqfl key store: ASCII "LQKS".
APPLICATION_ID = 0x4C514B53
SCHEMA_VERSION = 3
#: ``meta`` key prefix of an export's temporary file noted before it is created (:meth:`KeyStore.note_export_part`)
EXPORT_PART_KEY = "export_part:"
#: ``meta`` key prefix of the file an import read (value: its export ID), noted in the import's transaction and
#: dropped once the file is destroyed (review s38 F3: a crash in between left key in clear, live in this store)
IMPORT_FILE_KEY = "import_file:"
#: ``meta`` key prefix of the MAC tag of the export file an import read (value: the file's ``hmac_sha256``), so a
#: re-run's "already imported, destroy the file" is taken only for that very file (review s38 K3). The tag is an
#: HMAC under the ticket's secret, erased at import: it tells nothing about the bits.
IMPORT_TAG_KEY = "import_mac:"
FORMAT_NAME = "labqfl-keystore"
DATA_DIR_ENV = "LABQFL_DATA_DIR"

_NODE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  block_id TEXT NOT NULL UNIQUE,
  pair TEXT NOT NULL,
  nbits INTEGER NOT NULL CHECK (nbits > 0),
  run_id TEXT NOT NULL DEFAULT '',
  meta TEXT NOT NULL DEFAULT '{}',
  created TEXT NOT NULL,
  material BLOB NOT NULL
);
CREATE INDEX blocks_pair ON blocks (pair, seq);
CREATE TABLE segments (
  block_seq INTEGER NOT NULL REFERENCES blocks (seq),
  start INTEGER NOT NULL CHECK (start >= 0),
  length INTEGER NOT NULL CHECK (length > 0),
  pair TEXT NOT NULL,
  purpose TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'consumed', 'exported', 'absent')),
  key_id TEXT,
  PRIMARY KEY (block_seq, start)
) WITHOUT ROWID;
CREATE INDEX segments_free ON segments (pair, purpose, block_seq, start) WHERE state = 'free';
CREATE TABLE deliveries (
  key_id TEXT PRIMARY KEY,
  pair TEXT NOT NULL,
  purpose TEXT NOT NULL,
  kind TEXT NOT NULL,
  state TEXT NOT NULL,
  nbits INTEGER NOT NULL,
  refs TEXT NOT NULL,
  info TEXT NOT NULL DEFAULT '{}',
  created TEXT NOT NULL,
  updated TEXT NOT NULL
);
CREATE TABLE imports (export_id TEXT PRIMARY KEY, imported TEXT NOT NULL, nbits INTEGER NOT NULL);
"""

#: Schema migrations: ``_MIGRATIONS[v]`` turns a version-``v`` store into version ``v + 1``.  A new
#: store is created at version 1 (``_SCHEMA``) and migrated in the same transaction, so new and
#: migrated stores have the same layout.  Version 2 (issue 19, item 3): a store identity
#: (``meta.store_id``, a random UUID), the exports this store made (``exports``) and the import
#: tickets it issued (``import_tickets``), and the binding of every import (``imports``).  Version 3
#: (review s33 F1): segment state ``exporting``; an export's ``state``, ``file``, ``part``,
#: ``digest`` and ``updated`` (old exports become ``done``); a ticket is unique among the exports
#: not aborted (the tables are rebuilt: SQLite cannot change a CHECK or drop a UNIQUE in place).
_MIGRATIONS: dict[int, str] = {
    1: """
ALTER TABLE imports ADD COLUMN source_node TEXT NOT NULL DEFAULT '';
ALTER TABLE imports ADD COLUMN source_store TEXT NOT NULL DEFAULT '';
ALTER TABLE imports ADD COLUMN ticket_id TEXT;
CREATE TABLE exports (
  export_id TEXT PRIMARY KEY,
  pair TEXT NOT NULL,
  nbits INTEGER NOT NULL,
  refs TEXT NOT NULL,
  target_node TEXT NOT NULL,
  target_store TEXT NOT NULL,
  ticket_id TEXT NOT NULL UNIQUE,
  created TEXT NOT NULL
);
CREATE TABLE import_tickets (
  ticket_id TEXT PRIMARY KEY,
  secret BLOB,
  created TEXT NOT NULL,
  used TEXT,
  export_id TEXT
);
""",
    2: """
CREATE TABLE segments_v3 (
  block_seq INTEGER NOT NULL REFERENCES blocks (seq),
  start INTEGER NOT NULL CHECK (start >= 0),
  length INTEGER NOT NULL CHECK (length > 0),
  pair TEXT NOT NULL,
  purpose TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'consumed', 'exporting', 'exported', 'absent')),
  key_id TEXT,
  PRIMARY KEY (block_seq, start)
) WITHOUT ROWID;
INSERT INTO segments_v3 (block_seq, start, length, pair, purpose, state, key_id)
  SELECT block_seq, start, length, pair, purpose, state, key_id FROM segments;
DROP TABLE segments;
ALTER TABLE segments_v3 RENAME TO segments;
CREATE INDEX segments_free ON segments (pair, purpose, block_seq, start) WHERE state = 'free';
CREATE TABLE exports_v3 (
  export_id TEXT PRIMARY KEY,
  pair TEXT NOT NULL,
  nbits INTEGER NOT NULL,
  refs TEXT NOT NULL,
  target_node TEXT NOT NULL,
  target_store TEXT NOT NULL,
  ticket_id TEXT NOT NULL,
  created TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('exporting', 'written', 'done', 'aborted')),
  file TEXT NOT NULL DEFAULT '',
  part TEXT NOT NULL DEFAULT '',
  digest TEXT NOT NULL DEFAULT '',
  updated TEXT NOT NULL DEFAULT ''
);
INSERT INTO exports_v3 (export_id, pair, nbits, refs, target_node, target_store, ticket_id, created, state, updated)
  SELECT export_id, pair, nbits, refs, target_node, target_store, ticket_id, created, 'done', created FROM exports;
DROP TABLE exports;
ALTER TABLE exports_v3 RENAME TO exports;
CREATE UNIQUE INDEX exports_ticket ON exports (ticket_id) WHERE state <> 'aborted';
CREATE INDEX exports_pending ON exports (state) WHERE state IN ('exporting', 'written');
""",
}


#: Block-metadata fields not copied to an export file as they are: a pre-shared secret's fingerprints
#: (labqfl.keystore.preshare.secret_fingerprint and secret_windows) beside only part of the block's bits
#: could narrow down the bits that stay here; an export carries those of its own bits only
#: (labqfl.keystore.preshare.exported_marks, review s38 F6).
_UNEXPORTED_META = ("secret_fingerprint", "secret_windows")
#: Block-metadata field an import adds to a block it creates: ``{"export_id", "source_node", "source_store"}``
#: (a pre-shared block so marked was loaded in another store: labqfl.keystore.preshare.find_half_load).
IMPORTED_FIELD = "imported_from"
#: ``meta.kind`` of a pre-shared authentication block (labqfl.keystore.preshare.PRESHARED_KIND)
_PRESHARED_KIND = "preshared-auth"
#: Block-metadata field an export adds to a block (review s38 F1): where the pair's authentication started at
#: the source store, ``[{"simulated": bool, "randomness": str}]`` from the source's pre-shared blocks of the
#: pair (and what the block carried from an earlier import), so that the importing store's statements
#: (labqfl.provenance.summarize_blocks) keep the source's caveat on the authentication secret.
AUTH_ORIGIN_FIELD = "auth_secret_origin"


#: ``meta`` key recording an overwrite whose WAL checkpoint is still pending (:meth:`KeyStore._scrub`)
_SCRUB_MARK = "scrub_pending"


#: ``meta.kind`` of a distilled block's authentication refill row (labqfl.provenance.AUTH_REFILL_KIND); its
#: ``meta.key_block`` names the key block of the same distillation
_AUTH_REFILL_KIND = "auth-refill"


#: The recorded origin of block row ``{r}`` (:func:`block_origin`) as SQLite reads it: ``(seq, pair, acquisition,
#: first slot, end slot)`` for a block whose metadata names an acquisition. A filter only: :func:`block_origin` decides.
#: A block whose metadata SQLite cannot read as JSON gets a row too, with a NULL acquisition: a check of its pair then
#: refuses (:meth:`KeyStore._held_candidates`), as the scan before the index did, instead of leaving it out (review
#: s39 K4).
_ORIGIN_OF = ("SELECT {r}seq, {r}pair, CASE WHEN json_valid({r}meta) THEN json_extract({r}meta, '$.acquisition') END, "
              "CASE WHEN json_valid({r}meta) THEN json_extract({r}meta, '$.slots[0]') END, "
              "CASE WHEN json_valid({r}meta) THEN json_extract({r}meta, '$.slots[1]') END {src}WHERE CASE WHEN "
              "json_valid({r}meta) THEN json_extract({r}meta, '$.acquisition') IS NOT NULL ELSE 1 END")
#: The origins of the blocks held, kept beside them so that the origin checks need not read every block of a
#: long acquisition (review s38 K1: 2 000 blocks of one recording took 17.1 CPU s, quadratic): one row per block
#: (:data:`_ORIGIN_OF`, columns with no type, so values stay as the metadata has them), indexed by pair,
#: acquisition and first slot (the range scan) and by span (the longest, read from the index's end), and kept in
#: step by triggers (an older labqfl's writes too). Not on ``blocks`` itself: SQLite refuses incremental blob
#: I/O on a row of a table with an index on an expression (``cannot open indexed column for writing``). Created
#: and filled by the first write that checks origins (:meth:`KeyStore._origin_schema`), with no schema version;
#: until then a check reads the blocks (:data:`_HELD_SCAN_SQL`). The ledger gets an index by span too.
_ORIGIN_SCHEMA = (
    "CREATE TABLE block_origins (seq INTEGER PRIMARY KEY, pair, acquisition, start, end)",
    "CREATE INDEX block_origins_start ON block_origins (pair, acquisition, start)",
    'CREATE INDEX block_origins_span ON block_origins (pair, acquisition, "end" - start)',
    "CREATE TRIGGER block_origins_add AFTER INSERT ON blocks BEGIN INSERT INTO block_origins "
    + _ORIGIN_OF.format(r="NEW.", src="") + "; END",
    "CREATE TRIGGER block_origins_edit AFTER UPDATE OF pair, meta ON blocks BEGIN DELETE FROM block_origins WHERE "
    "seq = OLD.seq; INSERT INTO block_origins " + _ORIGIN_OF.format(r="NEW.", src="") + "; END",
    "CREATE TRIGGER block_origins_drop AFTER DELETE ON blocks BEGIN DELETE FROM block_origins WHERE seq = OLD.seq; END",
    "INSERT INTO block_origins " + _ORIGIN_OF.format(r="", src="FROM blocks "),
)
#: The triggers of :data:`_ORIGIN_SCHEMA` by name, as sqlite_master keeps their SQL.
_ORIGIN_TRIGGERS = {stmt.split()[2]: stmt for stmt in _ORIGIN_SCHEMA if stmt.startswith("CREATE TRIGGER")}
#: A block of a pair whose metadata is not JSON (parameter: pair), see :data:`_ORIGIN_OF`.
_HELD_UNREADABLE_SQL = ("SELECT b.block_id FROM block_origins o JOIN blocks b ON b.seq = o.seq WHERE o.pair = ? AND "
                        "o.acquisition IS NULL ORDER BY o.seq LIMIT 1")
_LEDGER_SPAN_INDEX = 'CREATE INDEX IF NOT EXISTS distilled_slots_span ON distilled_slots (pair, acquisition, "end" - start)'
#: The longest slot range a block of a pair and acquisition records (parameters: pair, acquisition); None if none.
_HELD_SPAN_SQL = 'SELECT MAX("end" - start) FROM block_origins WHERE pair = ? AND acquisition = ?'
#: The blocks of a pair and acquisition whose recorded slots may overlap ``[start, end)`` (parameters: pair,
#: acquisition, end, start - longest span, start), in the order they were added; :func:`block_origin` decides.
#: A block whose first slot is at most ``start - span`` ends at or before ``start``: the lower bound drops no
#: overlap, and the check reads O(log n) index entries plus the blocks near ``[start, end)``.
_HELD_OVERLAP_SQL = ("SELECT b.block_id, b.meta FROM block_origins o JOIN blocks b ON b.seq = o.seq WHERE o.pair = ? "
                     "AND o.acquisition = ? AND o.start < ? AND o.start > ? AND o.end > ? ORDER BY o.seq")
#: The same without :data:`_ORIGIN_SCHEMA` (parameters: pair, acquisition, end, start): every block of the pair.
_HELD_SCAN_SQL = ("SELECT block_id, meta FROM blocks WHERE pair = ? AND json_extract(meta, '$.acquisition') = ? "
                  "AND json_extract(meta, '$.slots[0]') < ? AND json_extract(meta, '$.slots[1]') > ? ORDER BY seq")
#: The ledger's rows of a pair and acquisition that overlap ``[start, end)`` (parameters: pair, acquisition, end,
#: start - longest span, start), by first slot; the same lower bound.
_LEDGER_SPAN_SQL = 'SELECT MAX("end" - start) FROM distilled_slots WHERE pair = ? AND acquisition = ?'
_LEDGER_OVERLAP_SQL = ("SELECT start, end, block_id FROM distilled_slots WHERE pair = ? AND acquisition = ? AND "
                       "start < ? AND start > ? AND end > ? ORDER BY start")


#: the largest slot number a slot range may end at: SQLite stores 64-bit signed integers (review s39 K3)
SLOT_MAX = 2**63 - 1


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored as SQLite text (no lone surrogate: review s39 K3)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_origin_values(block_id: str, meta: Any) -> None:
    """Refuse, with one line naming the field, a block record whose acquisition or slots SQLite cannot store
    (a lone surrogate; an integer beyond 64 bits), before anything is written (review s39 K3: a bare
    UnicodeEncodeError or OverflowError)."""
    if not isinstance(meta, dict):
        return
    acq, slots = meta.get("acquisition"), meta.get("slots")
    if isinstance(acq, str) and not _utf8(acq):
        raise KeyStoreError(f"block {block_id}: metadata field 'acquisition' {acq!r} is not valid UTF-8 text (a lone "
                            "surrogate); expected an acquisition ID as text; nothing was stored")
    if isinstance(slots, list) and any(isinstance(x, int) and not -2**63 <= x <= SLOT_MAX for x in slots):
        raise KeyStoreError(f"block {block_id}: metadata field 'slots' {slots!r} is out of range; expected the slot "
                            "range [start, end) with 0 <= start < end <= 2^63 - 1; nothing was stored")


def block_origin(block_id: str, meta: Any, *, strict: bool = False) -> tuple[str, int, int, str] | None:
    """The raw data a distilled block came from, as its record names it (review s38 F4):
    ``(acquisition, start, end, key_block)`` from ``meta.acquisition`` and ``meta.slots`` = [start, end), and
    the distillation the block belongs to: the block itself, or for an authentication refill row
    (``meta.kind = "auth-refill"``) its ``meta.key_block``. None for a block that names no acquisition (a
    pre-shared secret, a block distilled without an acquisition ID). A record that names an acquisition but
    no valid slot range is None too, or, when ``strict``, a :class:`KeyStoreError`."""
    acq = meta.get("acquisition") if isinstance(meta, dict) else None
    if acq is None or acq == "":
        return None
    slots = meta.get("slots")
    if not (isinstance(acq, str) and _utf8(acq) and isinstance(slots, list) and len(slots) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in slots)
            and 0 <= slots[0] < slots[1] <= SLOT_MAX):
        if not strict:
            return None
        raise KeyStoreError(f"block {block_id}: its record names acquisition {acq!r} with slots {slots!r}; expected "
                            "an acquisition ID and the slot range [start, end), 0 <= start < end <= 2^63 - 1, it was "
                            "distilled from, the ID in UTF-8 text (an edited or foreign export file?); nothing was "
                            "imported")
    key = meta.get("key_block") if meta.get("kind") == _AUTH_REFILL_KIND else None
    return acq, int(slots[0]), int(slots[1]), str(key or block_id)


def default_data_dir() -> Path:
    """``$LABQFL_DATA_DIR`` if set, else ``platformdirs.user_data_dir("labqfl")``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("labqfl"))


def node_store_path(node: str, data_dir: Path | None = None) -> Path:
    """``<data_dir>/keystore/<node>.sqlite``."""
    check_node_name(node)
    return (data_dir if data_dir is not None else default_data_dir()) / "keystore" / f"{node}.sqlite"


def check_node_name(node: str) -> str:
    if not isinstance(node, str) or not _NODE_RE.match(node):
        raise KeyStoreError(f"node name {node!r} is invalid; expected letters, digits, '_', '.', '-' (e.g. 'C1')")
    return node


def list_node_stores(data_dir: Path | None = None) -> list[str]:
    """Names of the nodes that have a key store under ``data_dir``."""
    d = (data_dir if data_dir is not None else default_data_dir()) / "keystore"
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.sqlite") if _NODE_RE.match(p.stem))


def open_node_stores(nodes: Iterable[str], data_dir: Path | None = None) -> dict[str, KeyStore]:
    """``{node: KeyStore.for_node(node, data_dir)}`` for every node."""
    return {n: KeyStore.for_node(n, data_dir) for n in nodes}


def _delivery_record(path: Path, key_id: str, row: Sequence[Any]) -> dict[str, Any]:
    """:meth:`KeyStore.delivery`'s record from a row (pair, purpose, kind, state, nbits, refs, info, created, updated)
    of the store at ``path``."""
    where = f"delivery {key_id}"
    return {"key_id": key_id, "pair": row[0], "purpose": row[1], "kind": row[2], "state": row[3],
            "nbits": row[4], "refs": [tuple(r) for r in _stored_json(path, row[5], "deliveries", "refs", where)],
            "info": _stored_json(path, row[6], "deliveries", "info", where), "created": row[7], "updated": row[8]}


#: SQLite primary result codes that say the file's content is damaged or not a database at all
#: (SQLITE_CORRUPT 11, SQLITE_NOTADB 26); every other failure to open is about the file system.
_CORRUPTION_CODES = (11, 26)
_NOT_CORRUPT = ("; this says nothing of the store's content (no integrity check failed): fix the file system "
                "(free space, a read-only mount, permissions) and retry. Do not restore a backup of a key store: it "
                "would hand out key already used")


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _CORRUPTION_CODES
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _open_failure(exc: sqlite3.Error) -> str:
    """What an SQLite error while opening a store means (review s33 F4): "corrupt" only for damaged
    content or a file that is no database; a full disk, a read-only file system, a file that cannot
    be opened or an I/O error is named as such, never as corruption (that word invites restoring a
    backup, the one action that reuses key)."""
    if _is_corruption(exc):
        return f"corrupt or not an SQLite database ({exc}); refusing to reset it"
    return f"cannot open or write it: {_fs_cause(exc)} ({exc}){_NOT_CORRUPT}"


def _write_failure(exc: sqlite3.Error) -> str:
    """What an SQLite error inside a write transaction means (review s35 chaos F2: a store that could not be
    written, e.g. an immutable file, let ``sqlite3.OperationalError`` escape as a traceback): the same causes as
    :func:`_open_failure`; the transaction was rolled back."""
    return f"cannot be written: {_fs_cause(exc)} ({exc}); nothing was changed{_NOT_CORRUPT}"


def _fs_cause(exc: sqlite3.Error) -> str:
    """The file-system cause an SQLite error names (full disk, read-only file, cannot open, I/O error)."""
    text = str(exc).lower()
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if "full" in text or name == "SQLITE_FULL":
        why = "the disk is full"
    elif "readonly" in text or "read-only" in text or name.startswith("SQLITE_READONLY"):
        why = "the file or its folder is read-only (a read-only file system or mount, an immutable file?)"
    elif "unable to open" in text or name.startswith("SQLITE_CANTOPEN"):
        why = "it cannot be opened (a read-only file system, missing permissions, or a missing folder?)"
    elif "i/o error" in text or name.startswith("SQLITE_IOERR"):
        why = "a disk I/O error (a full disk, a read-only file system or a failing device?)"
    else:
        why = "the database could not be read or written"
    return why


def _fsync_dir(folder: Path) -> None:
    """fsync a folder (a file created or linked in it survives a power cut); a no-op where the filesystem cannot."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the file itself is synced
    finally:
        os.close(dfd)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


#: delivery info key of a reservation: the pieces reserved from the ``general`` pool (given back to it on release)
_FROM_GENERAL = "from_general"


def _with_general(info: dict[str, Any] | None, general: list[Ref]) -> dict[str, Any] | None:
    if not general:
        return info
    return {**(info or {}), _FROM_GENERAL: [list(r) for r in general]}


def _check_pair(pair: str) -> str:
    # Same rule as labqfl.contracts.types.split_pair (not imported: it would pull numba into every
    # process that only needs keys).
    a, sep, b = pair.partition("-") if isinstance(pair, str) else ("", "", "")
    if not sep or not _NODE_RE.match(a) or not _NODE_RE.match(b) or a == b:
        raise KeyStoreError(f"pair name {pair!r} is not of the form 'Ci-Cj'")
    return pair


def _check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise KeyStoreError(f"unknown key purpose {purpose!r}; expected one of {list(PURPOSES)}")
    return purpose


def _check_bits(bits: np.ndarray) -> np.ndarray:
    arr = np.asarray(bits)
    if arr.ndim != 1 or arr.size == 0:
        raise KeyStoreError(f"key bits must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        raise KeyStoreError(f"key bits must be uint8 0/1, got dtype {arr.dtype}")
    if arr.max(initial=0) > 1:
        raise KeyStoreError("key bits must be 0 or 1 (uint8 0/1, one bit per element)")
    return arr


def _check_object(obj: Any, what: str) -> None:
    """``obj`` (a delivery's ``info``, a block's ``meta``) must be a dict or None: the store reads those columns back
    as JSON objects only (:data:`_STORED_JSON`), so another JSON value was stored and then refused as "edited or
    damaged" by every later read of the record (review s40 keysrev F4). Checked before anything is written."""
    if obj is not None and not isinstance(obj, dict):
        raise KeyStoreError(f"{what} must be a dict (stored as a JSON object) or None, got {type(obj).__name__}; "
                            "nothing was stored")


def _json(obj: Any, what: str) -> str:
    _check_object(obj, what)
    try:
        return json.dumps(obj if obj is not None else {}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise KeyStoreError(f"{what} must be JSON-serialisable (numbers, strings, lists, dicts): {exc}") from None


#: What each column of JSON text holds, for the refusal of one that is not readable (an edited or damaged store):
#: ``(table, column) -> (check, what is expected)``.
_STORED_JSON: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("blocks", "meta"): (lambda v: isinstance(v, dict), "the block's metadata as a JSON object"),
    ("deliveries", "refs"): (lambda v: _is_refs(v), "the key's refs as a JSON list of [block ID, offset, length]"),
    ("deliveries", "info"): (lambda v: isinstance(v, dict), "the key's record as a JSON object"),
    ("exports", "refs"): (lambda v: _is_refs(v), "the export's refs as a JSON list of [block ID, offset, length]"),
    ("retired_blocks", "voided"): (lambda v: isinstance(v, list), "the voided key IDs as a JSON list"),
}


#: A condition on ``blocks.meta`` (``{}``: an SQL condition with ``json_extract(meta, …)``) that also holds for a
#: block whose metadata is not a JSON object SQLite reads, so that a query filtering by it selects that block and
#: :func:`_stored_json` refuses it, instead of SQLite stopping at it ("malformed JSON", inside a write named a
#: file-system failure) or the filter leaving it out (a pre-shared block, a block of the same distillation).
#: (``CASE`` evaluates its branches in order: https://www.sqlite.org/lang_expr.html#the_case_expression.)
_META_OR_UNREADABLE = ("(CASE WHEN NOT json_valid(meta) THEN 1 WHEN json_type(meta) <> 'object' THEN 1 "
                       "ELSE {} END)")


def _is_refs(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in r[1:]) for r in v)


def _stored_json(path: Path, raw: Any, table: str, column: str, row: str) -> Any:
    """The value of column ``table.column`` of ``row`` ("block <ID>", "delivery <key ID>", …) of the store at
    ``path``, parsed; a value that is not JSON, or not the JSON it must be (:data:`_STORED_JSON`), raises one
    :class:`KeyStoreError` naming the store, the row, the column and what was expected, instead of a bare
    ``json.JSONDecodeError`` (review s39 leftover: a hand-edited ``blocks.meta``). The caller changes nothing
    before it parses (a write transaction is rolled back); the value itself is not shown (a hand edit may have
    put anything there)."""
    check, expected = _STORED_JSON[(table, column)]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        why = f"not JSON: {exc.msg} at character {exc.pos} of {len(raw)}"
    except (TypeError, ValueError, RecursionError) as exc:
        why = f"not JSON text ({type(raw).__name__}: {exc.__class__.__name__})"
    else:
        if check(value):
            return value
        why = f"JSON {type(value).__name__}, not of that form"
    raise KeyStoreError(f"key store {path}: {row}: its {table}.{column} is {why}; expected {expected}. The store "
                        "was edited or damaged; nothing was changed: restore that record (a block's metadata is "
                        "the same in the partner node's store) before using it")


@dataclass
class _Seg:
    start: int
    length: int
    state: str
    purpose: str
    key_id: str | None

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class ExportedSegment:
    """Bits moved out of a store by :meth:`KeyStore.export_segments` (for an export file)."""

    pair: str
    block_id: str
    block_nbits: int
    offset: int
    purpose: str
    run_id: str
    meta: dict[str, Any]
    bits: np.ndarray = field(repr=False)

    def __reduce__(self) -> Any:
        raise TypeError("exported key segments cannot be pickled")


@dataclass(frozen=True)
class ImportTicket:
    """Permission, issued by a target store, to import one export file (:meth:`KeyStore.issue_import_ticket`).

    Names the target node and store (``target_store``: its ``meta.store_id``) and carries a
    one-time 256-bit ``secret`` that authenticates the export file made with it (HMAC-SHA-256, see
    :mod:`labqfl.keystore.transfer`).  The secret is shown by no ``repr`` and refuses pickling."""

    ticket_id: str
    target_node: str
    target_store: str
    secret: bytes = field(repr=False)

    def __reduce__(self) -> Any:
        raise TypeError("import tickets cannot be pickled")


@dataclass(frozen=True)
class ExportBinding:
    """Who made an export and the one store that may import it (fields of the export file)."""

    export_id: str
    source_node: str
    source_store: str
    target_node: str
    target_store: str
    ticket_id: str


# ---------------------------------------------------------------------- the idle watch of pending checkpoints
#
# A checkpoint another process could not finish (it ended, or closed, with a reader holding an old snapshot) is
# recorded in the store (``meta`` key :data:`_SCRUB_MARK`). A process that has the store open and is idle (a KME
# between requests, the GUI, a node waiting) made no transaction that would see it, and its connection keeps
# SQLite from checkpointing when the reader's closes, so the overwritten material stayed in the files until that
# process next used the store (review s39 K2, leftover of session 39). One daemon thread per process looks at every
# store open here every :data:`_WATCH_S` seconds (:meth:`KeyStore._watch_tick`: a ``stat`` of the ``-wal`` file,
# and only while it is not empty a read of the mark, never waiting for the store's lock), and starts the store's
# retry (:meth:`KeyStore._retry_loop`) when the mark is there. It holds the stores weakly, and stops when none is
# open (the last :meth:`KeyStore.close` waits for it: a process that closed its stores has no thread of ours left).
# A look and a fork never overlap (:data:`_tick_lock`): a look holds a store's lock (and its ``_scrub_cond`` while
# it starts the retry), and a child forked meanwhile inherited that lock held by a thread it does not have, so its
# first call on the inherited store hung forever (review s40 keysrev F1).

#: seconds between two looks of the idle watch at a store
_WATCH_S = 1.0
_watch_lock = threading.Lock()
_watched: weakref.WeakSet[KeyStore] = weakref.WeakSet()
#: the running watch and its stop event; a watch being stopped is no longer named here (a store opened meanwhile
#: starts a new one, and the close that stops it never waits for a watch that goes on)
_watch_thread: threading.Thread | None = None
_watch_stop = threading.Event()
#: held by the watch around each look (:func:`_watch_once`) and by ``os.fork`` from before the fork until after it
#: (:func:`os.register_at_fork`), so that no fork happens mid-look; a look never waits for a store's lock (nor, with
#: busy timeout 0, for SQLite's), so a fork waits at most one look (~20 us a store)
_tick_lock = threading.Lock()


def _watch(store: KeyStore) -> None:
    """Add ``store`` (its connection just opened) to the idle watch; start the watch if it is not running."""
    global _watch_thread, _watch_stop
    with _watch_lock:
        _watched.add(store)
        if _watch_thread is None:
            _watch_stop = threading.Event()
            _watch_thread = threading.Thread(target=_watch_loop, args=(_watch_stop,), daemon=True,
                                             name="keystore-scrub-watch")
            _watch_thread.start()


def _unwatch(store: KeyStore) -> threading.Thread | None:
    """Drop ``store`` (closed; the caller holds its lock, so that no call reopens it in between: review s40
    keysrev F3) from the idle watch; the last one closed stops the watch and returns it, for the caller to wait for
    with :func:`_join_watch` once it released the store's lock."""
    global _watch_thread
    with _watch_lock:
        _watched.discard(store)
        if _watched or _watch_thread is None:
            return None
        t, _watch_thread = _watch_thread, None
        _watch_stop.set()
    return t


def _join_watch(t: threading.Thread | None) -> None:
    """Wait for a watch :func:`_unwatch` stopped (a look never waits for a lock: at most one look of the stores
    still being collected)."""
    if t is not None and t is not threading.current_thread():
        t.join()


def _watch_loop(stop: threading.Event) -> None:
    global _watch_thread
    while not stop.wait(_WATCH_S):
        with _watch_lock:
            stores = list(_watched)
            if not stores:  # (the stores were collected unclosed)
                if _watch_thread is threading.current_thread():
                    _watch_thread = None
                return
        with _tick_lock:
            _watch_once(stores)
        del stores  # (no strong reference kept between looks: an unclosed store is still collected)


def _watch_once(stores: list[KeyStore]) -> None:
    for st in stores:
        try:
            st._watch_tick()
        except Exception as exc:  # the watch goes on for the others; the store's next transaction tries itself
            log.debug("key store %s: idle checkpoint watch failed: %s", st.path, exc)


# Every other thread is guarded the standard way (pthread_atfork's prepare/parent/child, POSIX.1-2017
# pthread_atfork(3p) RATIONALE; :func:`os.register_at_fork`): a thread of the parent that holds a store's lock (a
# take, a write, a read) or its ``_scrub_cond`` (the checkpoint retry around each attempt's bookkeeping,
# :meth:`KeyStore._note_scrub` while it starts the retry) at the fork left it held in the child, by a thread the child
# does not have, and the child's first call that took it hung forever (review of session 40, after keysrev F1). The
# fork now takes, after ``_tick_lock``, :data:`_stores_lock` and then every live store's lock and ``_scrub_cond``
# (in the order the stores were made), waiting for a thread that holds one to finish its critical section, and
# releases them all on both sides after it. No code of the store holds two stores' locks, or takes
# ``_stores_lock`` while it holds a store's lock; a store's lock is taken before its ``_scrub_cond`` (``close``), never
# after it. The child keeps the stores' key material single-use as before: its first call on an inherited store
# abandons the parent's connection (never used or closed here), opens its own and starts with no retry thread
# (:meth:`KeyStore._connection`), and every handout is a ``BEGIN IMMEDIATE`` transaction on the shared file.

#: every KeyStore object alive in this process (weakly), for the fork guard; guarded by :data:`_stores_lock`
_stores: weakref.WeakSet[KeyStore] = weakref.WeakSet()
_stores_lock = threading.Lock()
_store_seq = iter(range(1, 1 << 62))
#: the locks :func:`_watch_before_fork` took, in the order taken (released in reverse after the fork)
_fork_held: list[Any] = []


def _register_store(store: KeyStore) -> None:
    with _stores_lock:
        store._fork_seq = next(_store_seq)
        _stores.add(store)


def _watch_before_fork() -> None:
    _tick_lock.acquire()  # (the watch finishes its look: no store lock of it is held at the fork)
    _stores_lock.acquire()  # (held across the fork: no store is made, its lock held, between the look and the fork)
    held: list[Any] = []
    try:
        for st in sorted(_stores, key=lambda s: s._fork_seq):
            st._lock.acquire()
            held.append(st._lock)
            cond = st._scrub_cond  # (read under the store's lock: _connection replaces it only under that lock)
            cond.acquire()
            held.append(cond)
    finally:  # (interrupted, the fork still happens: the after hooks release what was taken)
        _fork_held[:] = held


def _release_fork_held(held: list[Any]) -> None:
    for lk in reversed(held):
        lk.release()


def _watch_after_fork_parent() -> None:
    held, _fork_held[:] = list(_fork_held), []
    _release_fork_held(held)
    _stores_lock.release()
    _tick_lock.release()


def _watch_after_fork() -> None:
    """In a forked child: the stores' locks the fork took are released (this thread took them: the others' threads
    are gone, none holds one); no watch thread exists; the inherited stores reopen (and are watched) when used."""
    global _watch_lock, _watch_stop, _watched, _watch_thread, _tick_lock
    held, _fork_held[:] = list(_fork_held), []
    _release_fork_held(held)
    _stores_lock.release()
    _watch_lock, _watch_stop, _watched, _watch_thread = threading.Lock(), threading.Event(), weakref.WeakSet(), None
    _tick_lock = threading.Lock()


os.register_at_fork(before=_watch_before_fork, after_in_parent=_watch_after_fork_parent,
                    after_in_child=_watch_after_fork)


class KeyStore:
    """The key store of one node (see the module docstring for the model).

    ``KeyStore(path)`` opens or creates the SQLite file at ``path`` (permissions 0600, folder
    0700).  A file that is not a labqfl key store, or is corrupt, raises :class:`KeyStoreError`
    naming the file; nothing is ever reset or overwritten silently.  Thread-safe (one connection
    behind a lock) and multi-process safe (SQLite ``BEGIN IMMEDIATE`` write transactions).
    """

    def __init__(self, path: str | Path, *, node: str | None = None, create: bool = True,
                 busy_timeout_s: float = 60.0):
        self.path = Path(path).expanduser()
        self._requested_node = check_node_name(node) if node is not None else None
        self.node: str | None = None
        self.store_id = ""
        self._create = create
        self._busy_ms = int(busy_timeout_s * 1000)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._wrote = False  # whether this object made a write transaction (a pending checkpoint then matters)
        self._writes = self._marked_writes = 0  # write transactions begun; their count when the scrub mark was set
        self._abandoned: list[sqlite3.Connection] = []
        self._blobs_opened = 0  # on the current connection; see _BLOBS_PER_CONNECTION
        self._scrub_init()
        self._fork_seq = 0
        _register_store(self)  # (the fork guard takes its locks from now on)
        with self._lock:
            self._connection()
        self._scrub()  # finish what a process that died with a pending checkpoint left behind

    @classmethod
    def for_node(cls, node: str, data_dir: Path | None = None, *, create: bool = True) -> KeyStore:
        """The store of ``node`` at ``<data_dir>/keystore/<node>.sqlite`` (created if missing, unless
        ``create`` is False: then a missing or empty file is refused)."""
        return cls(node_store_path(node, data_dir), node=node, create=create)

    # ------------------------------------------------------------------ opening / schema

    def _fail(self, what: str) -> KeyStoreError:
        return KeyStoreError(f"key store {self.path}: {what}")

    def _json_col(self, raw: Any, table: str, column: str, row: str) -> Any:
        """:func:`_stored_json` for this store."""
        return _stored_json(self.path, raw, table, column, row)

    def _unreadable_meta(self, conn: sqlite3.Connection, pair: str | None = None) -> str | None:
        """The ID of the first block (of ``pair``, or any) whose metadata SQLite cannot read as JSON, else None: a
        query that filters blocks by ``json_extract`` would stop with SQLite's bare "malformed JSON" there (inside
        a write transaction, named a file-system failure). Queries that filter by it select such a block too
        (:data:`_META_OR_UNREADABLE`) and :meth:`_json_col` refuses it."""
        row = conn.execute("SELECT block_id FROM blocks WHERE NOT json_valid(meta)" + (" AND pair = ?" if pair else "")
                           + " ORDER BY seq LIMIT 1", (pair,) if pair else ()).fetchone()
        return None if row is None else str(row[0])

    #: blobs opened on one connection before it is replaced (between transactions).  CPython's
    #: ``sqlite3.Connection`` keeps a weak reference (≈ 90 B) to every blob it ever opened until it
    #: is closed (3.11: ``blobopen`` appends, nothing prunes), and the store opens one per segment it
    #: reads, zeroes or imports: a store open for hours (the GUI, ``keys serve``, a node) grew by
    #: ≈ 13 MB an hour.  Replacing the connection every 10 000 blobs bounds that at ≈ 1 MB.
    _BLOBS_PER_CONNECTION = 10_000

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            if self._blobs_opened >= self._BLOBS_PER_CONNECTION and not self._conn.in_transaction:
                self._renew_connection()
            return self._conn
        if self._conn is not None:
            # Inherited across fork: never use or close it here (SQLite forbids both).
            self._abandoned.append(self._conn)
            self._conn = None
            self._scrub_init()  # the parent's retry thread does not exist here (its state is the parent's)
        self._conn = self._open()
        self._pid = os.getpid()
        self._retry_stop.clear()  # reopened after close(): retries may run again
        _watch(self)
        return self._conn

    def _renew_connection(self) -> None:
        """Replace the (validated, idle) connection by a fresh one with the same settings, dropping
        the blob references the old one kept (:data:`_BLOBS_PER_CONNECTION`)."""
        assert self._conn is not None
        fresh = self._connect()
        try:
            self._configure(fresh)
        except BaseException:
            fresh.close()
            raise
        old, self._conn = self._conn, fresh
        self._blobs_opened = 0
        old.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(str(self.path), timeout=self._busy_ms / 1000, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._fail(f"cannot open ({exc})") from None

    def _configure(self, conn: sqlite3.Connection) -> None:
        """The per-connection settings (after the file is known to be a labqfl key store)."""
        mode_row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if not mode_row or str(mode_row[0]).lower() != "wal":
            raise self._fail(f"cannot switch to WAL journal mode (got {mode_row})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA foreign_keys = ON")

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_file()
        except OSError as exc:  # mkdir, create, stat, chmod: the filesystem, never the store's content
            raise self._fail(f"cannot open or write it ({exc.strerror or exc}){_NOT_CORRUPT}") from None

    def _open_file(self) -> sqlite3.Connection:
        path = self.path
        if not path.exists():
            if not self._create:
                raise self._fail("no such file")
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._publish_new_store(path)
        elif not path.is_file():
            raise self._fail("not a regular file")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("key store %s had permissions %o; tightening to 0600", path, mode)
            os.chmod(path, 0o600)
        conn = self._connect()
        self._blobs_opened = 0
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                raise self._fail(f"not a labqfl key store (SQLite application_id {app_id:#x}, tables "
                                 f"{sorted(tables)[:5]}); refusing to use or modify it")
            if app_id == 0:  # a new store is only ever published initialised (_publish_new_store)
                raise self._fail(f"empty ({path.stat().st_size} bytes, no tables): not an initialised key store "
                                 "(truncated?); refusing to create one here" + (
                                     "; move it aside (keep it: it is the evidence, and the partner nodes' stores "
                                     "still hold the pairs' blocks) to start a new, empty store" if self._create
                                     else ""))
            self._configure(conn)
            self._check_schema(conn)
        except KeyStoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._fail(_open_failure(exc)) from None
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists() and stat.S_IMODE(side.stat().st_mode) & 0o077:
                os.chmod(side, 0o600)
        return conn

    def _publish_new_store(self, path: Path) -> None:
        """Create the store at ``path`` (absent) initialised, never as an empty file: the schema is written to a
        private temporary file beside it, synced, and hard-linked into place (``link`` fails if ``path`` appeared
        meanwhile: another process's store is then used, ours dropped). So an existing empty file is always a
        truncated store and is refused, never re-initialised: ``keys ticket``, ``distill`` and every other
        creating opener wrote a fresh store, with a new store ID, over a 0-byte file (review s36 input F8)."""
        tmp = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA synchronous = FULL")
                self._init_schema(conn)
            finally:
                conn.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process published its store first: that one is used
            _fsync_dir(path.parent)
        finally:
            for leftover in (tmp, Path(str(tmp) + "-journal")):
                leftover.unlink(missing_ok=True)

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == 0:  # nobody initialised it meanwhile
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise self._fail("has tables but no labqfl application_id; refusing to use it")
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                meta = {"format": FORMAT_NAME, "schema_version": "1", "created": _now(),
                        "node": self._requested_node or ""}
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                self._migrate(conn, 1)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("created key store %s (node %s)", self.path, self._requested_node or "?")

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise self._fail(f"labqfl application_id but no readable meta table ({exc}); corrupt") from None
            raise self._fail(_open_failure(exc)) from None
        if meta.get("format") != FORMAT_NAME:
            raise self._fail(f"meta format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        version = meta.get("schema_version")
        known = [str(v) for v in range(1, SCHEMA_VERSION + 1)]
        if version not in known:
            raise self._fail(f"schema version {version!r}; this labqfl reads versions {', '.join(known)}")
        if version != str(SCHEMA_VERSION):
            self._upgrade(conn)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            # one line: SQLite's rows hold newlines ("*** in database main ***\nPage 33 ...", review s36 input F11)
            found = "; ".join(ln.strip() for r in check[:3] for ln in str(r[0]).splitlines() if ln.strip())
            raise self._fail(f"integrity check failed: {found}")
        stored_node = meta.get("node") or None
        if self._requested_node and stored_node and stored_node != self._requested_node:
            raise self._fail(f"belongs to node {stored_node!r}, not {self._requested_node!r}")
        if self._requested_node and not stored_node:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'node'", (self._requested_node,))
        self.node = self._requested_node or stored_node
        self.store_id = str(meta["store_id"])
        self._check_origin_triggers(conn)

    def _check_origin_triggers(self, conn: sqlite3.Connection) -> None:
        """Rebuild the origin index (:data:`_ORIGIN_SCHEMA`) when a trigger that keeps it in step is missing or not
        this labqfl's (review s39 K4: a migration rebuilding ``blocks`` would drop them silently, and the index
        would then miss the blocks added afterwards; an older labqfl's index left unreadable metadata out)."""
        found = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'blocks'"))
        if all(found.get(n) == sql for n, sql in _ORIGIN_TRIGGERS.items()) or not self._has_table(conn, "block_origins"):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DROP TABLE IF EXISTS block_origins")
            for name in _ORIGIN_TRIGGERS:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            for stmt in _ORIGIN_SCHEMA:
                conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.warning("key store %s: origin index rebuilt (its triggers were %s)", self.path,
                    "missing" if not found else "not this labqfl's")

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Migrate an older store to :data:`SCHEMA_VERSION` in one transaction (all or nothing;
        existing blocks, segments and deliveries are kept as they are)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if version < SCHEMA_VERSION:  # not migrated by another process meanwhile
                self._migrate(conn, version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("key store %s: schema migrated from version %d to %d", self.path, version, SCHEMA_VERSION)

    @staticmethod
    def _migrate(conn: sqlite3.Connection, version: int) -> None:
        """Apply ``_MIGRATIONS[version:]`` inside the caller's write transaction."""
        for v in range(version, SCHEMA_VERSION):
            for stmt in _MIGRATIONS[v].strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            if v == 1:
                conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?)", (str(uuid.uuid4()),))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        """Stop the checkpoint retry, make a last non-blocking checkpoint and close.  If a reader
        still holds an old snapshot, the overwritten material stays in the files until the next
        open of this store, or until SQLite's own checkpoint when the last connection closes; a
        warning says so."""
        self._stop_retry()
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                res = self._checkpoint(self._conn)
                self._note_scrub(res, retry=False)
                if not res["done"] and self._wrote:
                    log.warning("key store %s closed with its WAL checkpoint pending (a reader holds an old "
                                "snapshot); overwritten key material stays in the database files until the store "
                                "is opened again", self.path)
                self._conn.close()
            self._conn = None
            watch = _unwatch(self)  # (under the lock: a call reopening the store now is watched again)
        _join_watch(watch)

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r}, node={self.node!r})"

    def __reduce__(self) -> Any:
        # A store can be re-opened by path in another process; its connection cannot travel.
        return (_reopen, (str(self.path), self.node))

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._begin_immediate()  # returns holding self._lock, inside BEGIN IMMEDIATE
        try:
            self._wrote = True
            self._writes += 1
            try:
                yield conn
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.OperationalError):  # read-only file, full disk, I/O error: one line
                    raise self._fail(_write_failure(exc)) from None
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self._fail(f"commit failed ({exc}); nothing was handed out") from None
        finally:
            self._lock.release()

    #: longest single wait for the write lock inside SQLite, holding the store's thread lock [ms]
    _LOCK_POLL_MS = 20
    #: pause between two such waits without the thread lock, so that this object's readers (and
    #: other threads' writes) are not queued behind a wait for another process's write lock [s]
    _LOCK_YIELD_S = 0.01

    def _begin_immediate(self) -> sqlite3.Connection:
        """``BEGIN IMMEDIATE`` on the store's connection; returns it with ``self._lock`` held (the
        caller releases it).  Another process's write lock is waited for, up to the store's busy
        timeout, in short SQLite waits (:data:`_LOCK_POLL_MS`) with the thread lock released in
        between: Ctrl-C (handled by Python only between them) stops the wait, and reads of this
        object (``status``, ``available_bits``; WAL readers need no write lock) go on meanwhile.
        Still locked at the deadline: :class:`~labqfl.errors.KeyStoreBusyError`."""
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            self._lock.acquire()
            try:
                conn = self._connection()
                wait_ms = max(0, min(self._LOCK_POLL_MS, int((deadline - time.monotonic()) * 1000)))
                conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return conn  # self._lock stays held until _write ends
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise self._fail(f"cannot start a write transaction ({exc})") from None
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            except BaseException:
                self._lock.release()
                raise
            self._lock.release()
            left = deadline - time.monotonic()
            if left <= 0:
                raise KeyStoreBusyError(
                    f"key store {self.path}: locked by another process for {self._busy_ms / 1000:g} s (it holds "
                    "a write transaction); nothing was changed — try again when it is done",
                    path=str(self.path), node=self.node, waited_s=self._busy_ms / 1000)
            time.sleep(min(self._LOCK_YIELD_S, left))

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        mark = None
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
                mark = conn.execute("SELECT value FROM meta WHERE key = ?", (_SCRUB_MARK,)).fetchone()
            finally:
                conn.execute("COMMIT")
        if mark is not None and self._retry_thread is None:  # an overwrite (another process's?) is not
            self._scrub()  # checkpointed yet (review s39 K2): try now, unless this process's retry is at it

    # ------------------------------------------------------------------ scrubbing (WAL checkpoints)
    #
    # Overwriting consumed bits writes the zeroed page to the WAL; the old page stays in the main
    # database file, and older frames holding the material stay in the WAL, until a checkpoint
    # copies the WAL back ("backfill") and truncates it.  A checkpoint cannot backfill frames newer
    # than the snapshot of any open read transaction, nor reset the WAL while one is open
    # (https://www.sqlite.org/wal.html, "Checkpoint starvation"; https://www.sqlite.org/c3ref/
    # wal_checkpoint_v2.html: TRUNCATE with a busy handler that gives up "proceeds ... in the same
    # way as SQLITE_CHECKPOINT_PASSIVE" and returns SQLITE_BUSY).  So after every call that
    # overwrites material the store attempts ``wal_checkpoint(TRUNCATE)`` with the busy timeout
    # set to 0 (never waiting while it holds the store lock) and reads the PRAGMA's result row
    # ``(busy, log, checkpointed)``.  If it did not finish, a daemon thread retries on its own
    # connection (20 ms, doubling to at most 1 s) until it does, and every later write, open and
    # close retries too.  Guarantee: once no reader holds a snapshot older than the overwrite, the
    # zeroed pages are in the main file and the WAL is empty within one retry interval (≤ 1 s)
    # while the store is open, and at the latest at its next open otherwise.  A checkpoint another
    # process left pending is found by the idle watch (_watch_loop) within _WATCH_S and retried
    # the same way: ≤ 2 s after the reader left, with no call on the store.

    _RETRY_FIRST_S = 0.02
    _RETRY_MAX_S = 1.0
    # A checkpoint a process could not finish is also recorded in the store (``meta`` key :data:`_SCRUB_MARK`,
    # review s39 K2): that process's retry thread dies with it, and a reader closing is not the last connection
    # while another process (a KME between requests) has the store open, so SQLite does not checkpoint then. Every
    # later transaction of any process that has the store open (:meth:`_read`, :meth:`_scrub`) sees the mark and
    # checkpoints (retrying in the background while the reader stays); the first that finishes removes the mark. A
    # process that has the store open and makes no transaction finds it too: the idle watch (:meth:`_watch_tick`).
    # The retry removes the mark it read once its checkpoint finished (as :meth:`_scrub` does), and the store counts
    # as pending (:meth:`scrub_status`) until it has.

    def _scrub_init(self) -> None:
        self._scrub_cond = threading.Condition(threading.Lock())
        self._scrub_pending = False
        self._scrub_gen = 0  # bumped by every recorded attempt; a retry applies only its own
        self._scrub_last: dict[str, Any] = {}
        self._retry_stop = threading.Event()
        self._retry_thread: threading.Thread | None = None

    def _checkpoint(self, conn: sqlite3.Connection) -> dict[str, Any]:
        """One non-blocking ``wal_checkpoint(TRUNCATE)`` on ``conn``: ``{"done", "busy",
        "wal_frames", "checkpointed"}``; ``done`` when the WAL was fully copied and truncated."""
        row: tuple[int, int, int] | None = None
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except sqlite3.Error as exc:  # e.g. "database table is locked": treat as busy, retry later
            log.debug("WAL checkpoint of %s failed: %s", self.path, exc)
        busy, frames, done_frames = (1, -1, -1) if row is None else (int(row[0]), int(row[1]), int(row[2]))
        return {"done": busy == 0, "busy": busy, "wal_frames": frames, "checkpointed": done_frames}

    def _note_scrub(self, res: dict[str, Any], *, retry: bool = True) -> None:
        """Record an attempt made by a write, open or close; start the retry thread if it did not
        finish (``retry``) and none is running."""
        with self._scrub_cond:
            self._scrub_gen += 1
            self._apply_scrub(res)
            if not res["done"] and retry and self._retry_thread is None and not self._retry_stop.is_set():
                self._retry_thread = threading.Thread(target=self._retry_loop, daemon=True,
                                                      name=f"keystore-scrub-{self.path.name}")
                self._retry_thread.start()

    def _apply_scrub(self, res: dict[str, Any]) -> None:  # caller holds _scrub_cond
        self._scrub_last = {**res, "at": _now()}
        self._scrub_pending = not res["done"]
        if res["done"]:
            self._scrub_cond.notify_all()

    def _side_connection(self) -> sqlite3.Connection:
        """A connection of the retry's own to the store's file (``mode=rw``: a file removed meanwhile is not
        created again, empty), never waiting for a lock."""
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False)

    def _retry_once(self) -> tuple[dict[str, Any], bool]:
        """One retry on a connection of its own: the checkpoint's result, and whether the store's mark
        (:data:`_SCRUB_MARK`) is gone: the mark read before a checkpoint that finished is removed (never a newer
        one: another process's overwrite after the read sets a new value), and the meta page checkpointed. Never
        waits: a lock held elsewhere leaves both for the next retry."""
        busy = {"done": False, "busy": 1, "wal_frames": -1, "checkpointed": -1}
        try:
            conn = self._side_connection()
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint retry cannot open %s: %s", self.path, exc)
            return busy, False
        try:
            try:
                mark = conn.execute("SELECT value FROM meta WHERE key = ?", (_SCRUB_MARK,)).fetchone()
            except sqlite3.Error as exc:
                log.debug("WAL checkpoint retry cannot read %s: %s", self.path, exc)
                return busy, False
            res = self._checkpoint(conn)
            if not res["done"] or mark is None:
                return res, mark is None
            try:
                conn.execute("PRAGMA busy_timeout = 0")  # (_checkpoint set the store's back)
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("DELETE FROM meta WHERE key = ? AND value = ?", (_SCRUB_MARK, mark[0]))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:  # a write of another connection: the next retry removes it
                log.debug("key store %s: pending-checkpoint mark not removed yet: %s", self.path.name, exc)
                return res, False
            self._checkpoint(conn)  # (the meta page only: no key material)
            return res, True
        finally:
            conn.close()

    def _retry_loop(self) -> None:
        delay = self._RETRY_FIRST_S
        while True:
            stopped = self._retry_stop.wait(delay)
            with self._scrub_cond:
                if stopped or not self._scrub_pending:
                    self._retry_thread = None
                    return
                gen = self._scrub_gen
            res, unmarked = self._retry_once()
            with self._scrub_cond:
                if gen == self._scrub_gen and (unmarked or not res["done"]):  # no write recorded a newer state
                    self._apply_scrub(res)
                    if res["done"]:
                        log.debug("key store %s: deferred WAL checkpoint done", self.path.name)
                        self._retry_thread = None
                        return
            delay = min(2 * delay, self._RETRY_MAX_S)

    def _watch_tick(self) -> None:
        """One look of the idle watch (:func:`_watch_loop`): when the ``-wal`` file is not empty, read whether a
        checkpoint is recorded pending (:data:`_SCRUB_MARK`, another process's) and, if so, start the retry.
        Skipped while a call of this store holds its lock (that call's transaction sees the mark itself, see
        :meth:`_read`), while a retry runs, and once the store is closed."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            conn = self._conn
            if conn is None or self._pid != os.getpid() or conn.in_transaction:
                return
            try:
                if os.stat(str(self.path) + "-wal").st_size == 0:
                    return  # (truncated by the last checkpoint: no overwritten page can be left in the files)
            except FileNotFoundError:
                return
            conn.execute("PRAGMA busy_timeout = 0")  # (never waits holding the store's lock: a close waits for it)
            try:
                mark = conn.execute("SELECT value FROM meta WHERE key = ?", (_SCRUB_MARK,)).fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        finally:
            self._lock.release()
        if mark is None:
            return
        with self._scrub_cond:
            if self._retry_thread is not None or self._retry_stop.is_set():  # (closed meanwhile)
                return
            self._scrub_pending = True
            self._retry_thread = threading.Thread(target=self._retry_loop, daemon=True,
                                                  name=f"keystore-scrub-{self.path.name}")
            self._retry_thread.start()
        log.debug("key store %s: a checkpoint left pending by another process is retried", self.path.name)

    def _stop_retry(self) -> None:
        with self._scrub_cond:
            self._retry_stop.set()
            t = self._retry_thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def _scrub(self) -> bool:
        """Checkpoint and truncate the WAL without waiting (see above); True when done, else the
        retry thread finishes it once the readers holding old snapshots have left."""
        with self._lock:
            conn = self._connection()
            mark = conn.execute("SELECT value FROM meta WHERE key = ?", (_SCRUB_MARK,)).fetchone()
            res = self._checkpoint(conn)
        self._note_scrub(res)
        try:
            if res["done"] and mark is not None:  # every overwrite so far is in the main file: the mark goes
                with self._write() as w:
                    w.execute("DELETE FROM meta WHERE key = ? AND value = ?", (_SCRUB_MARK, mark[0]))
                with self._lock:
                    self._checkpoint(self._connection())  # (the meta page only: no key material)
            elif not res["done"] and self._wrote and (mark is None or self._marked_writes != self._writes):
                with self._write() as w:  # so that any process holding the store finishes it (_read); a new value
                    w.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",  # per write (a remover
                              (_SCRUB_MARK, str(uuid.uuid4())))  # keeps it unless it read this one)
                self._marked_writes = self._writes
        except KeyStoreError as exc:  # (a read-only file, a busy store): the mark waits for the next attempt
            log.debug("key store %s: pending-checkpoint mark not updated: %s", self.path.name, exc)
        if not res["done"]:
            log.debug("key store %s: WAL checkpoint deferred (a reader holds an old snapshot: %d of %d frames "
                      "copied); retrying in the background", self.path.name, res["checkpointed"], res["wal_frames"])
        return bool(res["done"])

    def scrub(self) -> dict[str, Any]:
        """Attempt the checkpoint now (never waits) and return :meth:`scrub_status`."""
        self._scrub()
        return self.scrub_status()

    def scrub_status(self) -> dict[str, Any]:
        """Whether overwritten material may still be in the database files: ``{"pending": bool,
        "wal_bytes": int, "last": {"done", "busy", "wal_frames", "checkpointed", "at"}}``.
        ``pending`` is True from an overwrite whose checkpoint could not finish (a reader holds an
        old snapshot) until one finishes; ``wal_bytes`` is the size of the ``-wal`` file."""
        wal = Path(str(self.path) + "-wal")
        with self._scrub_cond:
            return {"pending": self._scrub_pending, "wal_bytes": wal.stat().st_size if wal.exists() else 0,
                    "last": dict(self._scrub_last)}

    def wait_scrubbed(self, timeout: float) -> bool:
        """Block until no checkpoint is pending (the retry thread finished it) or ``timeout``
        seconds passed; returns whether it is done."""
        with self._scrub_cond:
            return self._scrub_cond.wait_for(lambda: not self._scrub_pending, timeout)

    # ------------------------------------------------------------------ low-level segment ops

    def _pair_block(self, conn: sqlite3.Connection, pair: str, block_id: str) -> int:
        """Sequence number of ``block_id``, which must exist and belong to ``pair``."""
        blk = self._block(conn, block_id)
        if blk is None:
            raise KeyStoreError(f"pair {pair}: block {block_id} is not in key store {self.path}")
        seq, bpair, _ = blk
        if bpair != pair:
            raise KeyStoreError(f"block {block_id} belongs to pair {bpair}, not {pair}")
        return seq

    @staticmethod
    def _block(conn: sqlite3.Connection, block_id: str) -> tuple[int, str, int] | None:
        row = conn.execute("SELECT seq, pair, nbits FROM blocks WHERE block_id = ?", (block_id,)).fetchone()
        return (int(row[0]), str(row[1]), int(row[2])) if row else None

    @staticmethod
    def _segments(conn: sqlite3.Connection, seq: int, start: int, end: int) -> list[_Seg]:
        rows = conn.execute(
            "SELECT start, length, state, purpose, key_id FROM segments WHERE block_seq = ?1 AND "
            "start >= COALESCE((SELECT MAX(start) FROM segments WHERE block_seq = ?1 AND start <= ?2), 0) "
            "AND start < ?3 ORDER BY start", (seq, start, end)).fetchall()
        return [_Seg(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]

    def _mark(self, conn: sqlite3.Connection, pair: str, seq: int, block_id: str, start: int, length: int, *,
              new_state: str, purpose: str, key_id: str | None, allow: Callable[[_Seg], str | None]) -> None:
        """Set bits ``[start, start+length)`` of block ``seq`` to ``new_state`` if ``allow`` accepts
        every segment they overlap (it returns None, or the reason for refusing)."""
        end = start + length
        segs = self._segments(conn, seq, start, end)
        pos = start
        for s in segs:
            if s.start > pos or s.end <= pos:
                break
            reason = allow(s)
            if reason:
                raise KeyStoreError(f"pair {pair}: bits [{start}, {end}) of block {block_id} {reason}")
            pos = s.end
        if pos < end:
            raise KeyStoreError(f"pair {pair}: bits [{start}, {end}) of block {block_id} are beyond the block's end")
        conn.executemany("DELETE FROM segments WHERE block_seq = ? AND start = ?", [(seq, s.start) for s in segs])
        rows = []
        first, last = segs[0], segs[-1]
        if first.start < start:
            rows.append((seq, first.start, start - first.start, pair, first.purpose, first.state, first.key_id))
        mid_start, mid_len = start, length
        # Merge with equal neighbours so the table stays small (one row per run of equal bits).
        if first.start >= start:
            left = conn.execute("SELECT start, length, state, purpose, key_id FROM segments WHERE block_seq = ? "
                                "AND start < ? ORDER BY start DESC LIMIT 1", (seq, start)).fetchone()
            if left and left[0] + left[1] == start and (left[2], left[3], left[4]) == (new_state, purpose, key_id):
                conn.execute("DELETE FROM segments WHERE block_seq = ? AND start = ?", (seq, left[0]))
                mid_start, mid_len = int(left[0]), mid_len + int(left[1])
        if last.end > end:
            rows.append((seq, end, last.end - end, pair, last.purpose, last.state, last.key_id))
        else:
            right = conn.execute("SELECT start, length, state, purpose, key_id FROM segments WHERE block_seq = ? "
                                 "AND start = ?", (seq, end)).fetchone()
            if right and (right[2], right[3], right[4]) == (new_state, purpose, key_id):
                conn.execute("DELETE FROM segments WHERE block_seq = ? AND start = ?", (seq, end))
                mid_len += int(right[1])
        rows.append((seq, mid_start, mid_len, pair, purpose, new_state, key_id))
        conn.executemany("INSERT INTO segments (block_seq, start, length, pair, purpose, state, key_id) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _io_bits(self, conn: sqlite3.Connection, seq: int, start: int, length: int, *, zero: bool = False,
                 write: np.ndarray | None = None) -> np.ndarray:
        """Read bits ``[start, start+length)`` of block ``seq``; optionally overwrite them with zeros
        (``zero``) or with ``write`` (import).  Only the bytes spanning the range are touched."""
        b0, b1 = start // 8, (start + length + 7) // 8
        self._blobs_opened += 1
        with conn.blobopen("blocks", "material", seq) as blob:
            blob.seek(b0)
            raw = np.frombuffer(blob.read(b1 - b0), dtype=np.uint8)
            bits = np.unpackbits(raw)
            off = start - 8 * b0
            out = bits[off:off + length].copy()
            if zero or write is not None:
                bits[off:off + length] = 0 if write is None else write
                blob.seek(b0)
                blob.write(np.packbits(bits).tobytes())
        return out

    @staticmethod
    def _pool_reason(s: _Seg, purpose: str, key_id: str | None) -> str | None:
        if s.state == "free":
            if s.purpose == purpose or s.purpose == GENERAL:
                return None
            return f"belong to the {s.purpose!r} pool, not {purpose!r}"
        if s.state == "reserved":
            if key_id is not None and s.key_id == key_id and s.purpose == purpose:
                return None
            return "are reserved for another key" if s.key_id != key_id else f"are reserved for purpose {s.purpose!r}"
        return {"consumed": "were already consumed", "exported": "were exported from this store",
                "exporting": "are being exported (an export not finished: `labqfl keys status` finishes or undoes it)",
                "absent": "are not held by this store"}.get(s.state, f"are in state {s.state!r}")

    def _mark_reserved(self, conn: sqlite3.Connection, pair: str, seq: int, block_id: str, start: int, length: int,
                       purpose: str, key_id: str, general: list[Ref]) -> None:
        """Reserve bits ``[start, start+length)`` for ``key_id`` under ``purpose``, appending to
        ``general`` the pieces that came from the ``general`` pool (:meth:`release` gives them back
        to it: a released bit keeps the pool it was added to, at both ends)."""
        end = start + length

        def allow(s: _Seg) -> str | None:
            reason = self._pool_reason(s, purpose, None)
            lo, hi = max(s.start, start), min(s.end, end)
            if reason is None and s.purpose != purpose and hi > lo:
                general.append((block_id, lo, hi - lo))
            return reason

        self._mark(conn, pair, seq, block_id, start, length, new_state="reserved", purpose=purpose, key_id=key_id,
                   allow=allow)

    def _allocate(self, conn: sqlite3.Connection, pair: str, nbits: int, purpose: str,
                  pools: Sequence[str] | None = None) -> list[tuple[int, str, int, int]]:
        """Pick the first ``nbits`` free bits of ``pair`` in pool order then block order:
        ``[(seq, block_id, start, length)]``.  Raises InsufficientKeyError when short."""
        pools = list(pools) if pools is not None else ([purpose] if purpose == GENERAL else [purpose, GENERAL])
        picked: list[tuple[int, str, int, int]] = []
        need = nbits
        for pool in pools:
            cur = conn.execute(
                "SELECT s.block_seq, b.block_id, s.start, s.length FROM segments s JOIN blocks b ON b.seq = s.block_seq "
                "WHERE s.pair = ? AND s.purpose = ? AND s.state = 'free' ORDER BY s.block_seq, s.start", (pair, pool))
            for seq, block_id, start, length in cur:
                take = min(int(length), need)
                picked.append((int(seq), str(block_id), int(start), take))
                need -= take
                if need == 0:
                    break
            cur.close()
            if need == 0:
                return picked
        have = nbits - need
        what = f"in pool {pools[0]!r}" if len(pools) == 1 else f"for purpose {purpose!r} (pools {', '.join(pools)})"
        raise InsufficientKeyError(f"pair {pair}: {have} bits available {what}, {nbits} requested in key store {self.path}")

    def _record(self, conn: sqlite3.Connection, key_id: str, pair: str, purpose: str, kind: str, state: str,
                refs: list[Ref], info: dict[str, Any] | None) -> None:
        now = _now()
        try:
            conn.execute("INSERT INTO deliveries (key_id, pair, purpose, kind, state, nbits, refs, info, created, updated) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (key_id, pair, purpose, kind, state, refs_nbits(refs), json.dumps(refs),
                          _json(info, "delivery info"), now, now))
        except sqlite3.IntegrityError:
            raise KeyStoreError(f"key ID {key_id} was already used in key store {self.path}") from None

    @staticmethod
    def _new_key_ids(n: int, key_ids: Sequence[str] | None) -> list[str]:
        if key_ids is None:
            return [str(uuid.uuid4()) for _ in range(n)]
        ids = [str(k) for k in key_ids]
        if len(ids) != n or len(set(ids)) != n:
            raise KeyStoreError(f"expected {n} distinct key IDs, got {len(ids)} ({len(set(ids))} distinct)")
        return ids

    # ------------------------------------------------------------------ public API: adding

    def add_block(self, pair: str, bits: np.ndarray, *, block_id: str | None = None, purpose: str = GENERAL,
                  run_id: str = "", meta: dict[str, Any] | None = None) -> str:
        """Append a distilled key block to ``pair``'s pool ``purpose``; returns its block ID.

        ``bits``: uint8 0/1, shape (nbits,).  ``block_id``: a UUID string; the distillation
        pipeline passes the *same* ID to both nodes of the pair so refs name the same bits.
        ``meta``: JSON metadata (ε values, QBER, …), stored with the block.
        """
        block_id = str(block_id) if block_id is not None else str(uuid.uuid4())
        return self.add_blocks(pair, [(block_id, bits, purpose, meta)], run_id=run_id)[0]

    def add_blocks(self, pair: str, blocks: Sequence[tuple[str, np.ndarray, str, dict[str, Any] | None]], *,
                   run_id: str = "") -> list[str]:
        """Append several blocks of ``pair``, ``(block_id, bits, purpose, meta)`` each as :meth:`add_block`, in
        one transaction: all of them or none (an accepted key block and its authentication refill: stored in
        two transactions, a failure or crash between them left the refill at one end only, review s35 chaos
        F5). Returns their block IDs."""
        _check_pair(pair)
        rows = []
        for block_id, bits, purpose, meta in blocks:
            _check_purpose(purpose)
            arr = _check_bits(bits)
            block_id = str(block_id)
            if not block_id or len(block_id) > 128:
                raise KeyStoreError(f"block_id {block_id!r} must be a non-empty string of at most 128 characters")
            rows.append((block_id, arr, purpose, _json(meta, f"meta of block {block_id}")))
        if len({r[0] for r in rows}) != len(rows):
            raise KeyStoreError(f"block IDs {[r[0] for r in rows]} are not distinct; refusing to add them")
        with self._write() as conn:
            for block_id, arr, purpose, meta_s in rows:
                if self._block(conn, block_id) is not None:
                    raise KeyStoreError(f"block {block_id} is already in key store {self.path}; refusing to add it twice")
                meta = json.loads(meta_s)  # (the caller's, as _json wrote it)
                _check_origin_values(block_id, meta)
                origin = block_origin(block_id, meta)
                gone = self._retired_refusal(conn, block_id, block_id if origin is None else origin[3])
                if gone:
                    raise KeyStoreError(f"{gone}: refusing to add it")
                if origin is not None:  # the distiller claimed its slots already (same block): any other is refused
                    why = self._origin_refusal(conn, pair, block_id, origin, imported=False)
                    if why:
                        raise KeyStoreError(f"{why}; key distilled twice from the same raw data is not secret "
                                            "(docs/protocol.md §5.2, (P7)): refusing to add it")
                    self._claim_origin(conn, pair, origin)
                cur = conn.execute("INSERT INTO blocks (block_id, pair, nbits, run_id, meta, created, material) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (block_id, pair, int(arr.size), str(run_id), meta_s,
                                                                    _now(), np.packbits(arr).tobytes()))
                conn.execute("INSERT INTO segments (block_seq, start, length, pair, purpose, state) "
                             "VALUES (?, 0, ?, ?, ?, 'free')", (cur.lastrowid, int(arr.size), pair, purpose))
        for block_id, arr, purpose, _ in rows:
            log.info("key store %s: added block %s to pair %s, pool %s: %d bits", self.path.name, block_id, pair,
                     purpose, arr.size)
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ public API: consuming

    def take(self, pair: str, nbits: int, purpose: str, *, key_id: str | None = None,
             info: dict[str, Any] | None = None) -> KeyMaterial:
        """Allocate and consume the first ``nbits`` free bits of ``pair`` for ``purpose`` (pool
        ``purpose`` first, then ``general``), in one transaction that also overwrites them in the
        database.  Send ``result.refs`` to the partner, who calls :meth:`take_exact`."""
        return self.take_many(pair, [nbits], purpose, key_ids=None if key_id is None else [key_id], info=info)[0]

    def take_many(self, pair: str, sizes: Sequence[int], purpose: str, *, key_ids: Sequence[str] | None = None,
                  info: dict[str, Any] | None = None) -> list[KeyMaterial]:
        """Like :meth:`take` for several keys (``sizes`` in bits) in one transaction."""
        _check_pair(pair)
        _check_purpose(purpose)
        _check_object(info, "info")
        sizes = [self._check_nbits(n) for n in sizes]
        ids = self._new_key_ids(len(sizes), key_ids)
        out: list[KeyMaterial] = []
        with self._write() as conn:
            pieces = self._allocate(conn, pair, sum(sizes), purpose)
            it = iter(pieces)
            carry: tuple[int, str, int, int] | None = None
            for size, kid in zip(sizes, ids, strict=True):
                need, refs, chunks = size, [], []
                while need:
                    seq, block_id, start, length = carry if carry is not None else next(it)
                    carry = None
                    use = min(length, need)
                    if use < length:
                        carry = (seq, block_id, start + use, length - use)
                    self._mark(conn, pair, seq, block_id, start, use, new_state="consumed", purpose=purpose,
                               key_id=None, allow=lambda s: self._pool_reason(s, purpose, None))
                    chunks.append(self._io_bits(conn, seq, start, use, zero=True))
                    refs.append((block_id, start, use))
                    need -= use
                self._record(conn, kid, pair, purpose, "take", "delivered", refs, info)
                out.append(KeyMaterial(np.concatenate(chunks), refs, kid, pair, purpose))
        self._scrub()
        log.debug("key store %s: took %d key(s), %d bits, pair %s, purpose %s, key IDs %s", self.path.name,
                  len(out), sum(sizes), pair, purpose, [k.key_id for k in out])
        return out

    def take_exact(self, pair: str, refs: Iterable[Sequence[Any]], purpose: str, *, key_id: str | None = None,
                   info: dict[str, Any] | None = None) -> KeyMaterial:
        """Consume exactly the bits named by ``refs`` (``KeyMaterial.refs`` from the partner's
        :meth:`take`), in order.  Raises :class:`KeyStoreError` if any of them is already
        consumed, reserved for another key, in another pool, or not in this store.  Bits reserved
        with :meth:`reserve_exact` are accepted when ``key_id`` is the reservation's key ID."""
        return self.take_exact_many(pair, [(refs, key_id)], purpose, info=info)[0]

    def take_exact_many(self, pair: str, items: Sequence[tuple[Iterable[Sequence[Any]], str | None]], purpose: str,
                        *, info: dict[str, Any] | None = None) -> list[KeyMaterial]:
        """Like :meth:`take_exact` for several keys ``[(refs, key_id or None)]``, all or nothing."""
        _check_pair(pair)
        _check_purpose(purpose)
        _check_object(info, "info")
        norm = [(self._norm_refs(r), k) for r, k in items]
        out: list[KeyMaterial] = []
        with self._write() as conn:
            seen: set[str] = set()
            for refs, kid in norm:
                reserved = None
                if kid is not None:
                    if kid in seen:
                        raise KeyStoreError(f"key ID {kid} appears twice in one request")
                    seen.add(kid)
                    reserved = conn.execute("SELECT state, refs, pair, purpose FROM deliveries WHERE key_id = ?",
                                            (kid,)).fetchone()
                    if reserved is not None:
                        if reserved[0] != "reserved":
                            raise KeyStoreError(f"key ID {kid} was already {reserved[0]} in key store {self.path}")
                        if reserved[2] != pair or reserved[3] != purpose or self._json_col(reserved[1], "deliveries", "refs", f"delivery {kid}") != [list(r) for r in refs]:
                            raise KeyStoreError(f"key ID {kid} is reserved in key store {self.path} for other bits "
                                                f"(pair {reserved[2]}, purpose {reserved[3]})")
                chunks = []
                for block_id, start, length in refs:
                    seq = self._pair_block(conn, pair, block_id)
                    self._mark(conn, pair, seq, block_id, start, length, new_state="consumed", purpose=purpose,
                               key_id=None, allow=lambda s, k=kid: self._pool_reason(s, purpose, k))  # type: ignore[misc]
                    chunks.append(self._io_bits(conn, seq, start, length, zero=True))
                kid_final = kid if kid is not None else str(uuid.uuid4())
                if reserved is not None:
                    conn.execute("UPDATE deliveries SET state = 'delivered', kind = 'take_exact', updated = ? "
                                 "WHERE key_id = ?", (_now(), kid_final))
                else:
                    self._record(conn, kid_final, pair, purpose, "take_exact", "delivered", refs, info)
                out.append(KeyMaterial(np.concatenate(chunks), refs, kid_final, pair, purpose))
        self._scrub()
        log.debug("key store %s: took exactly %d key(s), %d bits, pair %s, purpose %s, key IDs %s", self.path.name,
                  len(out), sum(k.nbits for k in out), pair, purpose, [k.key_id for k in out])
        return out

    def reserve_exact(self, pair: str, refs: Iterable[Sequence[Any]], purpose: str, key_id: str, *,
                      info: dict[str, Any] | None = None) -> None:
        """Reserve exactly the bits named by ``refs`` for ``key_id`` (no bit leaves the store):
        :meth:`take` skips them; :meth:`take_exact` with the same ``key_id`` consumes them;
        :meth:`release` frees them.  Used by the ETSI KME for the slave side of a key."""
        self.reserve_exact_many(pair, [(refs, key_id)], purpose, info=info)

    def reserve_exact_many(self, pair: str, items: Sequence[tuple[Iterable[Sequence[Any]], str]], purpose: str, *,
                           info: dict[str, Any] | None = None) -> None:
        """Like :meth:`reserve_exact` for several keys, all or nothing."""
        _check_pair(pair)
        _check_purpose(purpose)
        _check_object(info, "info")
        norm = [(self._norm_refs(r), str(k)) for r, k in items]
        with self._write() as conn:
            for refs, kid in norm:
                general: list[Ref] = []
                for block_id, start, length in refs:
                    seq = self._pair_block(conn, pair, block_id)
                    self._mark_reserved(conn, pair, seq, block_id, start, length, purpose, kid, general)
                self._record(conn, kid, pair, purpose, "reserve", "reserved", refs, _with_general(info, general))
        log.debug("key store %s: reserved %d key(s), pair %s, purpose %s", self.path.name, len(norm), pair, purpose)

    def reserve(self, pair: str, nbits: int, purpose: str, key_id: str, *,
                info: dict[str, Any] | None = None) -> list[Ref]:
        """Allocate the first ``nbits`` free bits of ``pair`` for ``purpose`` (the bits :meth:`take`
        would pick) and reserve them for ``key_id`` without reading them; returns their refs.
        The partner reserves or consumes the same bits by refs (:meth:`reserve_exact`,
        :meth:`take_exact`); here :meth:`read_reserved`, :meth:`take_exact` with ``key_id`` or
        :meth:`release` finish the reservation."""
        return self.reserve_many(pair, [nbits], purpose, [key_id], info=info)[0]

    def reserve_many(self, pair: str, sizes: Sequence[int], purpose: str, key_ids: Sequence[str], *,
                     info: dict[str, Any] | None = None) -> list[list[Ref]]:
        """Like :meth:`reserve` for several keys (``sizes[i]`` bits for ``key_ids[i]``, consecutive
        free bits in the order :meth:`take` picks them), all or nothing in one transaction; the refs
        of each key."""
        _check_pair(pair)
        _check_purpose(purpose)
        _check_object(info, "info")
        if len(sizes) != len(key_ids):
            raise KeyStoreError(f"reserve_many: {len(sizes)} sizes for {len(key_ids)} key IDs")
        ns = [self._check_nbits(n) for n in sizes]
        out: list[list[Ref]] = []
        with self._write() as conn:
            for n, key_id in zip(ns, key_ids, strict=True):
                kid = str(key_id)
                refs: list[Ref] = []
                general: list[Ref] = []
                for seq, block_id, start, length in self._allocate(conn, pair, n, purpose):
                    self._mark_reserved(conn, pair, seq, block_id, start, length, purpose, kid, general)
                    refs.append((block_id, start, length))
                self._record(conn, kid, pair, purpose, "reserve", "reserved", refs, _with_general(info, general))
                out.append(refs)
        log.debug("key store %s: reserved %d key(s) of %d bits, pair %s, purpose %s", self.path.name, len(ns),
                  sum(ns), pair, purpose)
        return out

    # Delivery kinds of a pending reservation (free text in ``deliveries.kind``, no CHECK: no migration):
    # ``reserve`` (never read nor tagged: :meth:`release` may free it), ``reserve-tagged``
    # (:meth:`mark_tagged`: its refs were authenticated to the partner, who may use the bits),
    # ``reserve-read`` (:meth:`read_reserved`) and ``reserve-masked`` (:meth:`read_reserved` ``for_mask``:
    # read for a one-time pad, never for one again). Only ``reserve`` goes back to the pool; a kind
    # never moves back towards it.

    def read_reserved(self, key_id: str, *, for_mask: bool = False) -> KeyMaterial:
        """The bits reserved for ``key_id``, which *stay reserved*: no other take can hand them out
        and, once read, :meth:`release` refuses them (they may be in use), so the holder finishes
        them with :meth:`take_exact` (same ``key_id``), which overwrites them.  For a protocol that
        must use the same bits in two steps (a mask, then possibly its reveal after a dropout)
        without keeping them outside the store in between.

        ``for_mask``: the bits are read to mask (one-time pad) something: the reservation becomes
        ``reserve-masked`` in the same transaction as the read, and a second ``for_mask`` read of it
        is refused (:class:`KeyStoreError`) — one pad, one message, whatever the caller's own records
        say (review s34 second look, F3: those were lost with a crash after the reply). A plain read
        (a reveal, the other half of a share pad) never downgrades ``reserve-masked``."""
        kid = str(key_id)
        with self._write() as conn:
            row = conn.execute("SELECT pair, refs, purpose, kind FROM deliveries WHERE key_id = ? AND "
                               "state = 'reserved'", (kid,)).fetchone()
            if row is None:
                raise KeyStoreError(f"no pending reservation for key ID {kid} in key store {self.path}")
            if for_mask and row[3] == "reserve-masked":
                raise KeyStoreError(f"reservation {kid} in key store {self.path} was already read for a mask: a "
                                    "one-time pad masks one message; a second mask read is refused")
            pair, purpose = str(row[0]), str(row[2])
            refs: list[Ref] = [(str(b), int(o), int(n))
                               for b, o, n in self._json_col(row[1], "deliveries", "refs", f"delivery {kid}")]
            chunks = []
            for block_id, start, length in refs:
                seq = self._pair_block(conn, pair, block_id)
                for s in self._segments(conn, seq, start, start + length):
                    if s.state != "reserved" or s.key_id != kid:
                        raise KeyStoreError(f"pair {pair}: bits of block {block_id} reserved for key ID {kid} "
                                            f"are {s.state}")
                chunks.append(self._io_bits(conn, seq, start, length))
            kind = "reserve-masked" if for_mask or row[3] == "reserve-masked" else "reserve-read"
            conn.execute("UPDATE deliveries SET kind = ?, updated = ? WHERE key_id = ?", (kind, _now(), kid))
        log.debug("key store %s: read reservation %s (pair %s, %d bits%s)", self.path.name, kid, pair,
                  refs_nbits(refs), ", for a mask" if for_mask else "")
        return KeyMaterial(np.concatenate(chunks), refs, kid, pair, purpose)

    def mark_tagged(self, key_id: str) -> str:
        """Record that the refs of the pending reservation ``key_id`` were (or are about to be)
        authenticated to the partner, who may then use the bits: a ``reserve`` becomes
        ``reserve-tagged`` (no bit is read) and :meth:`release` refuses it from now on; a
        reservation already read keeps its kind.  Returns the kind it has now.  A master calls it
        before it computes or sends any tag over the refs, so that a crash after the tag left
        cannot put those bits back in the pool (review s34 second look, F2)."""
        kid = str(key_id)
        with self._write() as conn:
            row = conn.execute("SELECT kind FROM deliveries WHERE key_id = ? AND state = 'reserved'",
                               (kid,)).fetchone()
            if row is None:
                raise KeyStoreError(f"no pending reservation for key ID {kid} in key store {self.path}")
            kind = str(row[0])
            if kind == "reserve":
                kind = "reserve-tagged"
                conn.execute("UPDATE deliveries SET kind = ?, updated = ? WHERE key_id = ?", (kind, _now(), kid))
        return kind

    def reservation(self, key_id: str) -> tuple[str, list[Ref], str, dict[str, Any]] | None:
        """``(pair, refs, purpose, info)`` of a pending reservation, or None."""
        with self._read() as conn:
            row = conn.execute("SELECT pair, refs, purpose, info FROM deliveries WHERE key_id = ? AND state = 'reserved'",
                               (str(key_id),)).fetchone()
        if row is None:
            return None
        where = f"delivery {key_id}"
        return (str(row[0]), [tuple(r) for r in self._json_col(row[1], "deliveries", "refs", where)],  # type: ignore[misc]
                str(row[2]), self._json_col(row[3], "deliveries", "info", where))

    def deliveries_since(self, pair: str, since: str) -> list[dict[str, Any]]:
        """The delivery records (no key material) of ``pair`` created at or after ``since`` (UTC ISO time), oldest
        first, as :meth:`delivery` gives them: a record whose refs or info is not JSON raises one
        :class:`KeyStoreError` naming it."""
        with self._read() as conn:
            rows = conn.execute("SELECT key_id, pair, purpose, kind, state, nbits, refs, info, created, updated FROM "
                                "deliveries WHERE pair = ? AND created >= ? ORDER BY created, key_id",
                                (str(pair), str(since))).fetchall()
        return [_delivery_record(self.path, str(r[0]), r[1:]) for r in rows]

    def delivery(self, key_id: str) -> dict[str, Any] | None:
        """The delivery record of ``key_id`` (no key material): pair, purpose, kind, state, nbits, refs, info."""
        with self._read() as conn:
            row = conn.execute("SELECT pair, purpose, kind, state, nbits, refs, info, created, updated FROM deliveries "
                               "WHERE key_id = ?", (str(key_id),)).fetchone()
        return None if row is None else _delivery_record(self.path, str(key_id), row)

    def release(self, key_id: str, *, spend: Iterable[Sequence[Any]] = (), reason: str = "") -> int:
        """Return the bits reserved for ``key_id`` to the free pool; returns the number of bits.

        ``spend``: refs the partner can never hand out (it spent them already): the parts of them
        inside this reservation are discarded instead (marked consumed and overwritten, recorded with
        ``reason``), in the same transaction, so no other key can draw them in between. Parts outside
        the reservation are ignored: a partner's word can spend nothing this reservation does not hold."""
        spend = list(spend)
        spend_refs = self._norm_refs(spend) if spend else []
        done: list[Ref] = []
        with self._write() as conn:
            row = conn.execute("SELECT pair, refs, purpose, kind, info FROM deliveries WHERE key_id = ? AND "
                               "state = 'reserved'", (str(key_id),)).fetchone()
            if row is None:
                raise KeyStoreError(f"no pending reservation for key ID {key_id} in key store {self.path}")
            if row[3] != "reserve":  # reserve-read, -masked, -tagged: the bits may be in use
                how = {"reserve-tagged": "tagged (mark_tagged)"}.get(str(row[3]), "read (read_reserved)")
                raise KeyStoreError(f"reservation {key_id} in key store {self.path} was {how}: its "
                                    "bits may be in use, so they cannot return to the pool; consume them with take_exact")
            pair, purpose = str(row[0]), str(row[2])
            refs = [tuple(r) for r in self._json_col(row[1], "deliveries", "refs", f"delivery {key_id}")]
            info = self._json_col(row[4], "deliveries", "info", f"delivery {key_id}")
            for block_id, start, length in refs:
                blk = self._block(conn, block_id)
                assert blk is not None
                self._mark(conn, pair, blk[0], block_id, int(start), int(length), new_state="free", purpose=purpose,
                           key_id=None, allow=lambda s: None if (s.state == "reserved" and s.key_id == key_id)
                           else "are not reserved for this key")
            for block_id, start, length in info.get(_FROM_GENERAL, []):  # back to the pool they came from
                blk = self._block(conn, block_id)
                assert blk is not None
                self._mark(conn, pair, blk[0], block_id, int(start), int(length), new_state="free", purpose=GENERAL,
                           key_id=None, allow=lambda s: None if s.state == "free" else "are not free")
            conn.execute("UPDATE deliveries SET state = 'released', updated = ? WHERE key_id = ?", (_now(), str(key_id)))
            if spend_refs:
                done, _ = self._discard_free(conn, pair, _clip_refs(spend_refs, refs))  # type: ignore[arg-type]
                if done:
                    self._record(conn, f"discard-{uuid.uuid4()}", pair, purpose, "discard", "discarded", done,
                                 {"reason": str(reason), "released": str(key_id)})
        if done:
            self._scrub()
            log.info("key store %s: %d bits of released reservation %s discarded: %s", self.path.name,
                     refs_nbits(done), key_id, reason)
        log.info("key store %s: released reservation %s (%d bits)", self.path.name, key_id, refs_nbits(refs))  # type: ignore[arg-type]
        return refs_nbits(refs)  # type: ignore[arg-type]

    def forbid_key_id(self, pair: str, key_id: str, purpose: str, reason: str) -> bool:
        """Record ``key_id`` as voided with no bits, so that a later :meth:`take_exact` or reservation under
        that ID is refused here: for a key the partner reserved and voids before this store took it (the
        partner then releases its reservation). False (nothing recorded) if the key ID is already recorded
        here — whether this store took it is then for :meth:`delivery` to say."""
        _check_pair(pair)
        _check_purpose(purpose)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM deliveries WHERE key_id = ?", (str(key_id),)).fetchone() is not None:
                return False
            self._record(conn, str(key_id), pair, purpose, "void-unheld", "voided", [], {"reason": str(reason)})
        log.info("key store %s: key ID %s of pair %s voided before any bit was taken here: %s", self.path.name,
                 key_id, pair, reason)
        return True

    # ------------------------------------------------------------------ stranded reservations

    def pending_reservations(self, purpose: str | None = None) -> list[dict[str, Any]]:
        """Every reservation not finished yet (optionally of pool ``purpose``), as :meth:`delivery`
        records, oldest first — e.g. those a process that was killed mid-protocol left behind."""
        with self._read() as conn:
            rows = conn.execute("SELECT key_id FROM deliveries WHERE state = 'reserved'" +
                                (" AND purpose = ?" if purpose is not None else "") + " ORDER BY created, key_id",
                                () if purpose is None else (_check_purpose(purpose),)).fetchall()
        out = [self.delivery(str(r[0])) for r in rows]
        return [d for d in out if d is not None]

    def void(self, key_id: str, reason: str) -> list[Ref]:
        """Spend a pending reservation without handing its bits to anyone: they are marked consumed
        and overwritten, the delivery is recorded ``voided`` with ``reason``.  For reservations a
        protocol can no longer finish (its process died) whose bits may have been read at either end:
        they can never be used again, and the partner is told to discard the same refs
        (:meth:`discard_exact`).  Returns the refs."""
        kid = str(key_id)
        with self._write() as conn:
            pair, refs = self._void_reservation(conn, kid, reason)
        self._scrub()
        log.info("key store %s: voided reservation %s of pair %s (%d bits): %s", self.path.name, kid, pair,
                 refs_nbits(refs), reason)
        return refs

    def _void_reservation(self, conn: sqlite3.Connection, kid: str, reason: str) -> tuple[str, list[Ref]]:
        """:meth:`void` inside the caller's write transaction: ``(pair, refs)`` of the reservation voided."""
        row = conn.execute("SELECT pair, refs, info FROM deliveries WHERE key_id = ? AND state = 'reserved'",
                           (kid,)).fetchone()
        if row is None:
            raise KeyStoreError(f"no pending reservation for key ID {kid} in key store {self.path}")
        pair = str(row[0])
        refs: list[Ref] = [(str(b), int(o), int(n))
                           for b, o, n in self._json_col(row[1], "deliveries", "refs", f"delivery {kid}")]
        try:
            old = self._json_col(row[2], "deliveries", "info", f"delivery {kid}")
        except KeyStoreError:  # (voiding is the safety action, e.g. keys retire --force: not blocked by the record)
            log.warning("key store %s: reservation %s: its deliveries.info is not a readable JSON object (edited or "
                        "damaged); voided with a new record (the unreadable one is replaced)", self.path.name, kid)
            old = {"info_unreadable": True}
        info = dict(old, voided=str(reason))
        for block_id, start, length in refs:
            seq = self._pair_block(conn, pair, block_id)
            self._mark(conn, pair, seq, block_id, start, length, new_state="consumed",
                       purpose=self._segments(conn, seq, start, start + 1)[0].purpose, key_id=None,
                       allow=lambda s: None if (s.state == "reserved" and s.key_id == kid)
                       else "are not reserved for this key")
            self._io_bits(conn, seq, start, length, zero=True)
        conn.execute("UPDATE deliveries SET state = 'voided', info = ?, updated = ? WHERE key_id = ?",
                     (_json(info, "delivery info"), _now(), kid))
        return pair, refs

    def finished(self, pair: str, *, limit: int | None = 16) -> list[dict[str, Any]]:
        """The ``limit`` (None: all) most recently finished keys of ``pair`` that left this store spent
        (delivered or voided, not released), newest first, as :meth:`delivery` records (one query)."""
        _check_pair(pair)
        with self._read() as conn:
            rows = conn.execute("SELECT key_id, pair, purpose, kind, state, nbits, refs, info, created, updated "
                                "FROM deliveries WHERE pair = ? AND state IN ('delivered', 'voided') "
                                "ORDER BY updated DESC, key_id LIMIT ?",
                                (pair, -1 if limit is None else int(limit))).fetchall()
        return [_delivery_record(self.path, str(r[0]), r[1:]) for r in rows]

    def discard_exact(self, pair: str, refs: Iterable[Sequence[Any]], reason: str) -> int:
        """Discard the bits of ``refs`` that are still free here (any pool): marked consumed and
        overwritten, never handed out — the partner voided them (:meth:`void`).  Bits already
        consumed, exported or absent are left as they are; reserved bits are left too (a live
        key holds them) and logged.  Idempotent; returns the number of bits discarded."""
        _check_pair(pair)
        norm = self._norm_refs(refs)
        with self._write() as conn:
            done, held = self._discard_free(conn, pair, norm)
            if done:
                self._record(conn, f"discard-{uuid.uuid4()}", pair, GENERAL, "discard", "discarded", done,
                             {"reason": str(reason)})
        if done:
            self._scrub()
            log.info("key store %s: discarded %d bits of pair %s: %s", self.path.name, refs_nbits(done), pair, reason)
        if held:
            log.warning("key store %s: %d bits of pair %s the partner voided are reserved here for a key in use; "
                        "left reserved", self.path.name, held, pair)
        return refs_nbits(done)

    def _discard_free(self, conn: sqlite3.Connection, pair: str, refs: list[Ref]) -> tuple[list[Ref], int]:
        """Mark the free bits of ``refs`` consumed and overwrite them (:meth:`discard_exact`); the refs
        discarded and the number of bits left because a reservation holds them."""
        done: list[Ref] = []
        held = 0
        for block_id, start, length in refs:
            blk = self._block(conn, block_id)
            if blk is None or blk[1] != pair:
                continue
            seq, end = blk[0], start + length
            for s in self._segments(conn, seq, start, end):
                lo, hi = max(s.start, start), min(s.end, end)
                if hi <= lo:
                    continue
                if s.state == "reserved":
                    held += hi - lo
                if s.state != "free":
                    continue
                self._mark(conn, pair, seq, block_id, lo, hi - lo, new_state="consumed", purpose=s.purpose,
                           key_id=None, allow=lambda x: None if x.state == "free" else "are not free")
                self._io_bits(conn, seq, lo, hi - lo, zero=True)
                done.append((block_id, lo, hi - lo))
        return done, held

    def spent_refs(self, pair: str, refs: Iterable[Sequence[Any]], *, settled_s: float = 0.0) -> list[Ref]:
        """The parts of ``refs`` this store can never hand out: bits consumed, exported or absent
        here.  Reads only.  Left out: free and reserved bits (a reservation is a live key), bits
        being exported (an export not finished may still be undone, giving them back), bits of
        a block this store does not hold (its add may still be on its way), and bits consumed by a
        key recorded here less than ``settled_s`` seconds ago (the partner's :meth:`take_exact` of
        a key this store allocated may still be on its way).  For the ETSI KME, which spends at
        the master the bits a slave's store already spent (:meth:`discard_exact`)."""
        _check_pair(pair)
        norm = self._norm_refs(refs)
        out: list[Ref] = []
        with self._read() as conn:
            recent: dict[str, list[tuple[int, int]]] = {}
            if settled_s > 0:
                cutoff = (datetime.now(UTC) - timedelta(seconds=float(settled_s))).isoformat(timespec="microseconds")
                for kid, r in conn.execute("SELECT key_id, refs FROM deliveries WHERE pair = ? AND updated >= ? AND "
                                           "state NOT IN ('reserved', 'released')", (pair, cutoff)):
                    for b, o, n in self._json_col(r, "deliveries", "refs", f"delivery {kid}"):
                        recent.setdefault(str(b), []).append((int(o), int(o) + int(n)))
            for block_id, start, length in norm:
                blk = self._block(conn, block_id)
                if blk is None or blk[1] != pair:
                    continue
                end = start + length
                for s in self._segments(conn, blk[0], start, end):
                    lo, hi = max(s.start, start), min(s.end, end)
                    if hi <= lo or s.state not in ("consumed", "exported", "absent"):
                        continue
                    pieces = [(lo, hi)]
                    if s.state == "consumed":
                        for a, b in recent.get(block_id, ()):
                            pieces = [p for x, y in pieces for p in ((x, min(y, a)), (max(x, b), y)) if p[1] > p[0]]
                    out += [(block_id, x, y - x) for x, y in pieces]
        return out

    # ------------------------------------------------------------------ export / import

    def issue_import_ticket(self) -> ImportTicket:
        """A one-time ticket that lets another store export bits *to this store*: it names this
        node and store and holds a fresh 256-bit secret (``secrets.token_bytes``), kept here
        until the export made with it is imported.  The exporter needs the ticket; it must travel
        to the exporting machine as confidentially as an export file travels back."""
        if not self.node:
            raise self._fail("has no node name; open it with node=... before issuing an import ticket")
        ticket = ImportTicket(str(uuid.uuid4()), self.node, self.store_id, secrets.token_bytes(32))
        with self._write() as conn:
            conn.execute("INSERT INTO import_tickets (ticket_id, secret, created) VALUES (?, ?, ?)",
                         (ticket.ticket_id, ticket.secret, _now()))
        log.info("key store %s: issued import ticket %s", self.path.name, ticket.ticket_id)
        return ticket

    def _check_export_ticket(self, pair: str, ticket: ImportTicket) -> None:
        if not isinstance(ticket, ImportTicket):
            raise KeyStoreError(f"export needs an ImportTicket from the target store, got {type(ticket).__name__}")
        if ticket.target_store == self.store_id:
            raise self._fail(f"import ticket {ticket.ticket_id} was issued by this store (node {self.node}); an "
                             "export must go to another store")
        # a pair's key is held by its two nodes, each with its own copy: bits leave a store only for
        # another store of the same node (the partner holds them already; a third node must not)
        if ticket.target_node != (self.node or ticket.target_node) or ticket.target_node not in pair.split("-"):
            raise self._fail(f"import ticket {ticket.ticket_id} is for node {ticket.target_node}; this store holds "
                             f"node {self.node}'s copy of pair {pair}'s key, which may only move to another store of "
                             f"node {self.node} (ask that store for a ticket: labqfl keys ticket --node {self.node})")

    def _export_meta(self, conn: sqlite3.Connection, pair: str, block_id: str, meta_s: str, block_nbits: int,
                     offset: int, length: int) -> dict[str, Any]:
        """The metadata of a block whose bits ``[offset, offset + length)`` an export file carries: a pre-shared
        secret's fingerprints only for those bits (:data:`_UNEXPORTED_META`, review s38 F6) and, for a key block,
        :data:`AUTH_ORIGIN_FIELD`: the origin of every pre-shared authentication secret of ``pair`` in this store
        and those the block brought from an earlier import, so the caveat on the authentication secret travels
        with the key (review s38 F1)."""
        full = self._json_col(meta_s, "blocks", "meta", f"block {block_id}")
        meta = {k: v for k, v in full.items() if k not in _UNEXPORTED_META}
        if meta.get("kind") == _PRESHARED_KIND:
            from labqfl.keystore.preshare import exported_marks  # it imports this module

            return {**meta, **exported_marks(full, block_nbits, offset, length)}
        origins = [o for o in meta.get(AUTH_ORIGIN_FIELD) or [] if isinstance(o, dict)]
        for bid, m in conn.execute("SELECT block_id, meta FROM blocks WHERE pair = ? AND "  # (unreadable: refused, not
                                   + _META_OR_UNREADABLE.format("json_extract(meta, '$.kind') = ?"),  # left out)
                                   (pair, _PRESHARED_KIND)):
            d = self._json_col(m, "blocks", "meta", f"block {bid}")
            if d.get("kind") != _PRESHARED_KIND:
                continue
            rec = {"simulated": d.get("simulated", True), **({"randomness": d["randomness"]} if "randomness" in d
                                                             else {})}
            if rec not in origins:
                origins.append(rec)
        if origins:
            meta[AUTH_ORIGIN_FIELD] = origins
        return meta

    def begin_export(self, pair: str, nbits: int | None, purpose: str | None, *, ticket: ImportTicket,
                     file: str | Path = "", part: str | Path = "",
                     digest_of: Callable[[ExportBinding, list[ExportedSegment]], str] | None = None,
                     ) -> tuple[ExportBinding, list[ExportedSegment]]:
        """First step of an export: take free bits of ``pair`` (all, or the first ``nbits``; pool
        ``purpose`` only, or every pool when None) for an export bound to the store that issued
        ``ticket``, and return them.  One transaction marks them ``exporting`` (segment ``key_id``
        = the export ID) *without* zeroing them and records the export (state ``exporting``, the
        target ``file`` and temporary ``part`` file it will be written to, target node and store,
        ticket, refs).  ``digest_of(binding, segments)``, called inside that transaction, returns
        the SHA-256 (hex) of the bytes the caller will write; it is recorded, so that a crash
        recovery knows a complete file from a partial one.  ``exporting`` bits are never handed
        out (every allocator takes only ``free`` bits; :meth:`take_exact` and imports refuse
        them) and are not spent (:meth:`spent_refs`): :meth:`finish_export` moves them out for
        good, :meth:`abort_export` gives them back.  Refused: a ticket issued by this store (an
        export to itself), one for another node, and one already used by an export here that
        was not aborted."""
        _check_pair(pair)
        pools = list(PURPOSES) if purpose is None else [_check_purpose(purpose)]
        self._check_export_ticket(pair, ticket)
        binding = ExportBinding(str(uuid.uuid4()), self.node or "", self.store_id, ticket.target_node,
                                ticket.target_store, ticket.ticket_id)
        out: list[ExportedSegment] = []
        with self._write() as conn:
            used = conn.execute("SELECT export_id FROM exports WHERE ticket_id = ? AND state <> 'aborted'",
                                (ticket.ticket_id,)).fetchone()
            if used is not None:
                raise self._fail(f"import ticket {ticket.ticket_id} was already used for export {used[0]}; ask the "
                                 f"target store (node {ticket.target_node}) for a new ticket")
            if nbits is None:
                total = conn.execute("SELECT COALESCE(SUM(length), 0) FROM segments WHERE pair = ? AND state = 'free' "
                                     f"AND purpose IN ({','.join('?' * len(pools))})", (pair, *pools)).fetchone()[0]
                if not total:
                    raise InsufficientKeyError(f"pair {pair}: no free bits to export in key store {self.path}")
                nbits = int(total)
            pieces = self._allocate(conn, pair, self._check_nbits(nbits), purpose or GENERAL, pools=pools)
            for seq, block_id, start, length in pieces:
                row = conn.execute("SELECT nbits, run_id, meta FROM blocks WHERE seq = ?", (seq,)).fetchone()
                seg = self._segments(conn, seq, start, start + 1)[0]
                self._mark(conn, pair, seq, block_id, start, length, new_state="exporting", purpose=seg.purpose,
                           key_id=binding.export_id, allow=lambda s: None if s.state == "free" else f"are {s.state}")
                bits = self._io_bits(conn, seq, start, length)
                meta = self._export_meta(conn, pair, block_id, row[2], int(row[0]), start, length)
                out.append(ExportedSegment(pair, block_id, int(row[0]), start, seg.purpose, str(row[1]), meta, bits))
            digest = "" if digest_of is None else str(digest_of(binding, out))
            now = _now()
            conn.execute("INSERT INTO exports (export_id, pair, nbits, refs, target_node, target_store, ticket_id, "
                         "created, state, file, part, digest, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'exporting', "
                         "?, ?, ?, ?)",
                         (binding.export_id, pair, int(nbits), json.dumps([[s.block_id, s.offset, int(s.bits.size)]
                                                                            for s in out]),
                          binding.target_node, binding.target_store, binding.ticket_id, now, str(file), str(part),
                          digest, now))
            if part:  # the export's record now names its temporary file: the reservation is superseded
                conn.execute("DELETE FROM meta WHERE key = ?", (EXPORT_PART_KEY + str(part),))
        log.info("key store %s: export %s of %d bits of pair %s in %d segment(s) begun, bound to node %s, store %s",
                 self.path.name, binding.export_id, nbits, pair, len(out), binding.target_node, binding.target_store)
        return binding, out

    def _export_row(self, conn: sqlite3.Connection, export_id: str) -> tuple[str, str, str]:
        row = conn.execute("SELECT state, pair, digest FROM exports WHERE export_id = ?", (str(export_id),)).fetchone()
        if row is None:
            raise self._fail(f"no export {export_id} was made here")
        return str(row[0]), str(row[1]), str(row[2])

    def _exporting_segments(self, conn: sqlite3.Connection, export_id: str) -> list[tuple[int, str, int, int, str]]:
        """``(seq, block_id, start, length, purpose)`` of the bits ``exporting`` for ``export_id``."""
        rows = conn.execute("SELECT s.block_seq, b.block_id, s.start, s.length, s.purpose FROM segments s "
                            "JOIN blocks b ON b.seq = s.block_seq WHERE s.state = 'exporting' AND s.key_id = ? "
                            "ORDER BY s.block_seq, s.start", (str(export_id),)).fetchall()
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows]

    def finish_export(self, export_id: str, digest: str) -> None:
        """Second step: the export file is complete and synced (its SHA-256 is ``digest``, the one
        :meth:`begin_export` recorded): its bits are marked ``exported`` and zeroed, and the export
        becomes ``written`` (its file may still have its temporary name, :meth:`export_published`
        ends it).  Refused for an export not ``exporting`` (aborted meanwhile: the file must then
        not be published) or another digest."""
        with self._write() as conn:
            state, pair, recorded = self._export_row(conn, export_id)
            if state != "exporting":
                raise self._fail(f"export {export_id} is {state}, not exporting; its bits were not taken out")
            if recorded and recorded != str(digest):
                raise self._fail(f"export {export_id}: its file's digest differs from the one recorded when it began")
            for seq, block_id, start, length, purpose in self._exporting_segments(conn, export_id):
                self._mark(conn, pair, seq, block_id, start, length, new_state="exported", purpose=purpose,
                           key_id=str(export_id), allow=lambda s: None)
                self._io_bits(conn, seq, start, length, zero=True)
            conn.execute("UPDATE exports SET state = 'written', digest = ?, updated = ? WHERE export_id = ?",
                         (str(digest), _now(), str(export_id)))
        self._scrub()
        log.info("key store %s: export %s finished (its bits left the store)", self.path.name, export_id)

    def export_published(self, export_id: str) -> None:
        """Last step: the finished export's file has its final name (state ``done``)."""
        with self._write() as conn:
            state, _, _ = self._export_row(conn, export_id)
            if state not in ("written", "done"):
                raise self._fail(f"export {export_id} is {state}; only a finished export is published")
            conn.execute("UPDATE exports SET state = 'done', updated = ? WHERE export_id = ?", (_now(), str(export_id)))

    def abort_export(self, export_id: str, reason: str = "") -> int:
        """Undo an export that is still ``exporting`` (no complete file of it exists): its bits go
        back to ``free`` in their own pools, the export becomes ``aborted`` and its ticket may be
        used again.  Returns the number of bits given back; 0 when it was aborted already.  Refused
        for a finished export (its bits are in its file)."""
        with self._write() as conn:
            state, pair, _ = self._export_row(conn, export_id)
            if state == "aborted":
                return 0
            if state != "exporting":
                raise self._fail(f"export {export_id} is {state}: its bits are in its file, not in this store; it "
                                 "cannot be undone here")
            n = 0
            for seq, block_id, start, length, purpose in self._exporting_segments(conn, export_id):
                self._mark(conn, pair, seq, block_id, start, length, new_state="free", purpose=purpose, key_id=None,
                           allow=lambda s: None)
                n += length
            conn.execute("UPDATE exports SET state = 'aborted', updated = ? WHERE export_id = ?",
                         (_now(), str(export_id)))
        log.warning("key store %s: export %s aborted, its %d bits are free again%s", self.path.name, export_id, n,
                    f": {reason}" if reason else "")
        return n

    def note_export_part(self, part: str | Path) -> None:
        """Record that an export is about to create its temporary file ``part`` (an absolute path),
        before the file exists and before any bit moves (``meta`` key :data:`EXPORT_PART_KEY` + path,
        so the schema is unchanged).  :meth:`begin_export` drops it in the transaction that records
        the export under that ``part``; until then it is the only trace of the file, by which
        :func:`labqfl.keystore.transfer.recover_exports` finds a file left by a crash in between."""
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (EXPORT_PART_KEY + str(part), _now()))

    def drop_export_part(self, part: str | Path) -> None:
        """Forget a temporary file noted by :meth:`note_export_part` (removed, or never created)."""
        with self._write() as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (EXPORT_PART_KEY + str(part),))

    def export_parts(self) -> list[str]:
        """The temporary files noted by :meth:`note_export_part` and not yet named by an export
        record nor dropped, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT key FROM meta WHERE substr(key, 1, ?) = ? ORDER BY value, key",
                                (len(EXPORT_PART_KEY), EXPORT_PART_KEY)).fetchall()
        return [str(r[0])[len(EXPORT_PART_KEY):] for r in rows]

    def pending_exports(self) -> list[dict[str, Any]]:
        """The exports not finished (``exporting``) or not published (``written``), oldest first, as
        :meth:`exports` records."""
        return [e for e in self.exports() if e["state"] in ("exporting", "written")]

    def exporting_bits(self, export_id: str) -> list[ExportedSegment]:
        """The bits an ``exporting`` export took (read, not zeroed; in block and bit order), with the
        fields :meth:`begin_export` returned, to compare an export file with."""
        out: list[ExportedSegment] = []
        with self._read() as conn:
            state, pair, _ = self._export_row(conn, export_id)
            if state != "exporting":
                raise self._fail(f"export {export_id} is {state}, not exporting")
            for seq, block_id, start, length, purpose in self._exporting_segments(conn, export_id):
                row = conn.execute("SELECT nbits, run_id, meta FROM blocks WHERE seq = ?", (seq,)).fetchone()
                meta = self._export_meta(conn, pair, block_id, row[2], int(row[0]), start, length)
                out.append(ExportedSegment(pair, block_id, int(row[0]), start, purpose, str(row[1]), meta,
                                           self._io_bits(conn, seq, start, length)))
        return out

    def export_segments(self, pair: str, nbits: int | None, purpose: str | None, *,
                        ticket: ImportTicket) -> tuple[ExportBinding, list[ExportedSegment]]:
        """:meth:`begin_export`, :meth:`finish_export` and :meth:`export_published` at once: the bits
        are ``exported`` and zeroed when this returns, before the caller writes them anywhere (a
        crash then loses them).  :func:`labqfl.keystore.transfer.export_keys` uses the three steps."""
        binding, segs = self.begin_export(pair, nbits, purpose, ticket=ticket)
        self.finish_export(binding.export_id, "")
        self.export_published(binding.export_id)
        return binding, segs

    def import_segments(self, binding: ExportBinding, segments: Sequence[ExportedSegment], *,
                        authenticate: Callable[[bytes], bool], file: str = "", file_tag: str = "") -> int:
        """Add exported segments (another store's :meth:`export_segments`) as free bits, with their
        original block IDs and offsets so refs keep naming the same bits.  One transaction.

        Refused, with nothing changed: an export made by this store, one bound to another store
        or node, one already imported here, one whose ticket this store never issued or already
        used, and one that ``authenticate(ticket_secret)`` rejects (the caller checks the file's
        MAC with the ticket's secret).  On success the ticket is spent and its secret erased, and ``file`` (the
        export file's absolute path, if given) is noted until :meth:`drop_import_file` (:meth:`import_files`),
        and ``file_tag`` (the file's MAC tag, if given) is kept for :meth:`imported`.
        Returns the number of bits imported."""
        b = binding
        total = 0
        with self._write() as conn:
            mine = conn.execute("SELECT target_node, target_store FROM exports WHERE export_id = ?",
                                (b.export_id,)).fetchone()
            if mine is not None or b.source_store == self.store_id:
                raise self._fail(f"export {b.export_id} was made by this store; it can be imported only into the "
                                 f"store it is bound to (node {b.target_node}, store {b.target_store})")
            if b.target_store != self.store_id or b.target_node != (self.node or ""):
                raise self._fail(f"export {b.export_id} is bound to node {b.target_node}, store {b.target_store}; "
                                 f"this is node {self.node}, store {self.store_id}: refusing to import it here")
            if conn.execute("SELECT 1 FROM imports WHERE export_id = ?", (b.export_id,)).fetchone() is not None:
                raise KeyStoreError(f"export {b.export_id} was already imported into key store {self.path}")
            row = conn.execute("SELECT secret, used, export_id FROM import_tickets WHERE ticket_id = ?",
                               (b.ticket_id,)).fetchone()
            if row is None:
                raise self._fail(f"export {b.export_id} names import ticket {b.ticket_id}, which this store never "
                                 "issued; refusing it")
            if row[1] is not None:
                raise self._fail(f"import ticket {b.ticket_id} was already used (export {row[2]}); refusing "
                                 f"export {b.export_id}. Its key bits are lost: no store can import them (the file "
                                 "is bound to this store, its ticket spent) and its source cannot take them back; "
                                 "destroy the file (overwrite it with zeros and delete it). One ticket was used by "
                                 "two source stores (a copy of the ticket file?): use each ticket file once, from "
                                 "one store (docs/keystore.md, review s38 K2)")
            if not authenticate(bytes(row[0])):
                raise self._fail(f"export {b.export_id} failed authentication with its import ticket (the file "
                                 "was modified or corrupted, or not made with this ticket); nothing imported")
            now = _now()
            conn.execute("UPDATE import_tickets SET secret = NULL, used = ?, export_id = ? WHERE ticket_id = ?",
                         (now, b.export_id, b.ticket_id))
            conn.execute("INSERT INTO imports (export_id, imported, nbits, source_node, source_store, ticket_id) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (b.export_id, now, sum(int(s.bits.size) for s in segments),
                                                       b.source_node, b.source_store, b.ticket_id))
            for s in segments:
                total += self._import_segment(conn, s, b.export_id, (b.source_node, b.source_store))
            if file_tag:  # identifies the very file imported (review s38 K3)
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (IMPORT_TAG_KEY + b.export_id,
                                                                                        str(file_tag)))
            if file:  # key in clear, live here from this commit on, until the file is destroyed
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (IMPORT_FILE_KEY + file,
                                                                                        b.export_id))
        self._scrub()  # the ticket's secret was overwritten
        log.info("key store %s: imported %d bits from export %s (node %s, store %s)", self.path.name, total,
                 b.export_id, b.source_node, b.source_store)
        return total

    def _import_segment(self, conn: sqlite3.Connection, s: ExportedSegment, export_id: str,
                        source: tuple[str, str]) -> int:
        """One segment of :meth:`import_segments` (inside its transaction): its bits become free here, in a
        block created for it (absent elsewhere) if this store does not hold the block yet. A new block's
        raw-data origin (:func:`block_origin`) is checked against the slots this store distilled or imported
        (:meth:`_origin_refusal`, review s38 F4: the same recording distilled into two data dirs with two block
        sizes, then moved into one store) and recorded in its ledger. Returns the number of bits."""
        _check_pair(s.pair)
        _check_purpose(s.purpose)
        bits = _check_bits(s.bits)
        if s.offset < 0 or s.offset + bits.size > s.block_nbits:
            raise KeyStoreError(f"segment [{s.offset}, {s.offset + bits.size}) lies outside block {s.block_id} "
                                f"of {s.block_nbits} bits")
        known = block_origin(s.block_id, s.meta)
        gone = self._retired_refusal(conn, s.block_id, s.block_id if known is None else known[3])
        if gone:
            raise KeyStoreError(f"export {export_id}: {gone}; nothing was imported. The export file's key bits are "
                                "unusable: no other store can import them (the file is bound to this one) and its "
                                "source cannot take them back (the export is done there); destroy the file "
                                "(overwrite it with zeros and delete it)")
        blk = self._block(conn, s.block_id)
        if blk is None:
            origin = block_origin(s.block_id, s.meta, strict=True)
            if origin is not None:
                why = self._origin_refusal(conn, s.pair, s.block_id, origin, imported=True)
                if why:
                    raise KeyStoreError(f"export {export_id}: {why}; key distilled twice from the same raw data is "
                                        "not secret (docs/protocol.md §5.2, (P7)): nothing was imported. The export "
                                        "file's key bits are unusable: no other store can import them (the file is "
                                        "bound to this one) and its source cannot take them back (the export is done "
                                        "there); destroy the file (overwrite it with zeros and delete it)")
                self._claim_origin(conn, s.pair, origin)
            meta = {**s.meta, IMPORTED_FIELD: {"export_id": export_id, "source_node": source[0],
                                               "source_store": source[1]}}
            cur = conn.execute("INSERT INTO blocks (block_id, pair, nbits, run_id, meta, created, material) "
                               "VALUES (?, ?, ?, ?, ?, ?, zeroblob(?))",
                               (s.block_id, s.pair, s.block_nbits, s.run_id, _json(meta, "block metadata"),
                                _now(), (s.block_nbits + 7) // 8))
            seq = int(cur.lastrowid or 0)
            conn.execute("INSERT INTO segments (block_seq, start, length, pair, purpose, state) "
                         "VALUES (?, 0, ?, ?, ?, 'absent')", (seq, s.block_nbits, s.pair, s.purpose))
        else:
            seq, bpair, bn = blk
            if bpair != s.pair or bn != s.block_nbits:
                raise KeyStoreError(f"block {s.block_id} in key store {self.path} is pair {bpair}, {bn} bits; "
                                    f"the export says pair {s.pair}, {s.block_nbits} bits")
        # Bits that left this store earlier ("exported") may come back from another store.
        self._mark(conn, s.pair, seq, s.block_id, s.offset, int(bits.size), new_state="free", purpose=s.purpose,
                   key_id=None, allow=lambda g: None if g.state in ("absent", "exported")
                   else f"are already held here ({g.state})")
        self._io_bits(conn, seq, s.offset, int(bits.size), write=bits)
        return int(bits.size)

    def imported(self, export_id: str) -> dict[str, Any] | None:
        """The record of export ``export_id`` if this store imported it: export_id, imported (time), nbits,
        source_node, source_store, ticket_id, and file_tag (the imported file's MAC tag; None for an import
        made before it was kept); else None."""
        with self._read() as conn:
            row = conn.execute("SELECT export_id, imported, nbits, source_node, source_store, ticket_id FROM imports "
                               "WHERE export_id = ?", (str(export_id),)).fetchone()
            tag = conn.execute("SELECT value FROM meta WHERE key = ?", (IMPORT_TAG_KEY + str(export_id),)).fetchone()
        return None if row is None else {**dict(zip(("export_id", "imported", "nbits", "source_node", "source_store",
                                                     "ticket_id"), row, strict=True)), "file_tag": tag and tag[0]}

    def compare_held_bits(self, segments: Sequence[ExportedSegment]) -> tuple[int, int, str | None]:
        """Compare an export file's segments with this store's copy, for a file that claims an export imported
        here (review s38 K3): ``(bits compared, bits held here that differ, why the file is no copy)``. Only
        bits this store still holds (free or reserved) are compared; consumed or exported ones are zeroed here.
        ``why`` names a segment whose block this store does not hold as the file says. Reads only; nothing is
        logged."""
        compared = differ = 0
        with self._read() as conn:
            for seg in segments:
                blk = self._block(conn, seg.block_id)
                n = int(seg.bits.size)
                if blk is None or blk[1] != seg.pair or blk[2] != seg.block_nbits or not 0 <= seg.offset <= blk[2] - n:
                    return compared, differ, (f"its block {seg.block_id} ({seg.pair}, {seg.block_nbits} bits, "
                                              f"offset {seg.offset}) is not a block this store holds")
                for g in self._segments(conn, blk[0], seg.offset, seg.offset + n):
                    a, b = max(g.start, seg.offset), min(g.end, seg.offset + n)
                    if a >= b or g.state not in ("free", "reserved"):
                        continue
                    mine = self._io_bits(conn, blk[0], a, b - a)
                    theirs = seg.bits[a - seg.offset:b - seg.offset]
                    compared += b - a
                    differ += int(np.count_nonzero(mine != theirs))
                    mine[:] = 0
        return compared, differ, None

    def import_files(self) -> list[tuple[str, str]]:
        """``(path, export ID)`` of the export files imported here and not known destroyed (:meth:`import_segments`
        ``file``), oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY rowid",
                                (len(IMPORT_FILE_KEY), IMPORT_FILE_KEY)).fetchall()
        return [(str(k)[len(IMPORT_FILE_KEY):], str(v)) for k, v in rows]

    def drop_import_file(self, file: str) -> None:
        """Forget an imported export file (destroyed, or no longer that export)."""
        with self._write() as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (IMPORT_FILE_KEY + str(file),))

    def exports(self) -> list[dict[str, Any]]:
        """The exports this store made (no material): export_id, pair, nbits, refs, target_node,
        target_store, ticket_id, created, state (exporting, written, done, aborted), file, part,
        digest, updated, source_node, source_store."""
        with self._read() as conn:
            rows = conn.execute("SELECT export_id, pair, nbits, refs, target_node, target_store, ticket_id, created, "
                                "state, file, part, digest, updated FROM exports ORDER BY created, export_id").fetchall()
        return [{"export_id": r[0], "pair": r[1], "nbits": r[2], "refs": [tuple(x) for x in self._json_col(r[3], "exports", "refs", f"export {r[0]}")],
                 "target_node": r[4], "target_store": r[5], "ticket_id": r[6], "created": r[7], "state": r[8],
                 "file": r[9], "part": r[10], "digest": r[11], "updated": r[12], "source_node": self.node or "",
                 "source_store": self.store_id} for r in rows]

    # ------------------------------------------------------------------ queries

    def pairs(self) -> list[str]:
        """Pairs that have at least one block in this store."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT pair FROM blocks ORDER BY pair")]

    def has_block(self, block_id: str) -> bool:
        """Whether a block with this ID was ever added here (:meth:`add_block` refuses it again)."""
        with self._read() as conn:
            return self._block(conn, str(block_id)) is not None

    # ------------------------------------------------------------------ distilled slot ranges
    # Ledger of the raw data already distilled (issue 19 item 5): per pair and acquisition, the
    # slot ranges [start, end) that a key block used, whether it delivered key or aborted after
    # reconciliation disclosed parities. Its own table, created on first use (any schema version).

    _DISTILLED_DDL = ("CREATE TABLE IF NOT EXISTS distilled_slots (pair TEXT NOT NULL, acquisition TEXT NOT NULL, "
                      "start INTEGER NOT NULL CHECK (start >= 0), end INTEGER NOT NULL CHECK (end > start), "
                      "block_id TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (pair, acquisition, start))")

    @classmethod
    def _origin_schema(cls, conn: sqlite3.Connection) -> None:
        """The ledger table and what the origin checks read (:data:`_ORIGIN_SCHEMA`, filled from the blocks held),
        inside the caller's write transaction; a no-op once they exist."""
        conn.execute(cls._DISTILLED_DDL)
        conn.execute(_LEDGER_SPAN_INDEX)
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'block_origins'").fetchone() is None:
            for stmt in _ORIGIN_SCHEMA:
                conn.execute(stmt)

    @staticmethod
    def _ledger_overlaps(conn: sqlite3.Connection, pair: str, acquisition: str, start: int, end: int) -> list[tuple]:
        """The ledger's rows ``(start, end, block_id)`` of ``pair`` and ``acquisition`` that overlap ``[start, end)``,
        by first slot (:data:`_LEDGER_OVERLAP_SQL`); [] without a ledger."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'distilled_slots'").fetchone() is None:
            return []
        span = conn.execute(_LEDGER_SPAN_SQL, (pair, acquisition)).fetchone()[0]
        if span is None:
            return []
        return conn.execute(_LEDGER_OVERLAP_SQL, (pair, acquisition, int(end), int(start) - span, int(start))).fetchall()

    @classmethod
    def _slot_overlap(cls, conn: sqlite3.Connection, pair: str, acquisition: str, start: int, end: int) -> tuple | None:
        rows = cls._ledger_overlaps(conn, pair, acquisition, start, end)
        return rows[0] if rows else None

    def _held_candidates(self, conn: sqlite3.Connection, pair: str, acquisition: str, start: int,
                         end: int) -> list[tuple[str, str]]:
        """``(block_id, meta)`` of the blocks of ``pair`` and ``acquisition`` whose recorded slots may overlap
        ``[start, end)``, in the order they were added (:data:`_HELD_OVERLAP_SQL`)."""
        indexed = self._has_table(conn, "block_origins")
        if not indexed:
            bad = self._unreadable_meta(conn, pair)  # (json_extract would stop at it with "malformed JSON")
        else:
            row = conn.execute(_HELD_UNREADABLE_SQL, (pair,)).fetchone()
            bad = None if row is None else str(row[0])
        if bad is not None:
            raise self._fail(f"pair {pair}: the metadata of block {bad} is not valid JSON (an edited store file?), "
                             "so the origin checks cannot tell which raw slots it was distilled from; nothing was "
                             "stored: restore its record (e.g. from a backup) before distilling or importing more "
                             "key of this pair")
        if not indexed:
            return conn.execute(_HELD_SCAN_SQL, (pair, acquisition, int(end), int(start))).fetchall()
        span = conn.execute(_HELD_SPAN_SQL, (pair, acquisition)).fetchone()[0]
        if span is None:
            return []
        return conn.execute(_HELD_OVERLAP_SQL, (pair, acquisition, int(end), int(start) - span, int(start))).fetchall()

    def _held_overlap(self, conn: sqlite3.Connection, pair: str, acquisition: str, start: int, end: int, *,
                      except_key: str | None = None) -> tuple[int, int, str] | None:
        """``(start, end, key block)`` of a block held here whose recorded origin (:func:`block_origin`) overlaps
        slots ``[start, end)`` of ``acquisition`` and belongs to another distillation than ``except_key``; None if
        none does. The ledger alone misses blocks imported before it recorded imports (3432abe) and blocks
        distilled before it existed (review s38 K1), so every check of new slots reads the blocks too."""
        for bid, meta_s in self._held_candidates(conn, pair, acquisition, start, end):
            o = block_origin(str(bid), self._json_col(meta_s, "blocks", "meta", f"block {bid}"))
            if o is not None and o[3] != except_key and o[1] < end and o[2] > start:
                return o[1], o[2], o[3]
        return None

    def _slots_taken(self, conn: sqlite3.Connection, pair: str, acquisition: str, start: int, end: int) -> KeyStoreError | None:
        """The refusal for slots ``[start, end)`` that the ledger or a held block's record gives to a
        distillation already (:meth:`_slot_overlap`, :meth:`_held_overlap`), else None."""
        row = self._slot_overlap(conn, pair, acquisition, start, end)
        if row is None:
            row = self._held_overlap(conn, pair, acquisition, start, end)
        return None if row is None else self._slot_refusal(pair, acquisition, start, end, row)

    def _slot_refusal(self, pair: str, acquisition: str, start: int, end: int, row: tuple) -> KeyStoreError:
        return KeyStoreError(f"pair {pair}: slots [{start}, {end}) of acquisition {acquisition} overlap slots "
                             f"[{row[0]}, {row[1]}) already distilled into key store {self.path} (block {row[2]}); "
                             f"refusing to distil the same raw data twice")

    @staticmethod
    def _check_slot_range(pair: str, acquisition: str, start: int, end: int) -> tuple[str, str, int, int]:
        _check_pair(pair)
        if not isinstance(acquisition, str) or not acquisition or not _utf8(acquisition):
            raise KeyStoreError(f"acquisition must be a non-empty string of UTF-8 text, got {acquisition!r}; nothing "
                                "was stored")
        if not 0 <= int(start) < int(end) <= SLOT_MAX:
            raise KeyStoreError(f"slot range [{start}, {end}) of acquisition {acquisition} must satisfy 0 <= start < "
                                "end <= 2^63 - 1 (SQLite's largest integer); nothing was stored")
        return pair, acquisition, int(start), int(end)

    def check_slots_free(self, pair: str, acquisition: str, start: int, end: int) -> None:
        """Raise :class:`KeyStoreError` if slots ``[start, end)`` of ``acquisition`` overlap a
        range already distilled for ``pair`` (:meth:`claim_slots`)."""
        pair, acquisition, start, end = self._check_slot_range(pair, acquisition, start, end)
        with self._read() as conn:
            refusal = self._slots_taken(conn, pair, acquisition, start, end)
        if refusal is not None:
            raise refusal

    def claim_slots(self, pair: str, acquisition: str, start: int, end: int, block_id: str) -> None:
        """Record slots ``[start, end)`` of ``acquisition`` as distilled for ``pair`` by block
        ``block_id``, in one transaction that first refuses (recording nothing) any overlap."""
        pair, acquisition, start, end = self._check_slot_range(pair, acquisition, start, end)
        with self._write() as conn:
            refusal = self._slots_taken(conn, pair, acquisition, start, end)
            if refusal is not None:
                raise refusal
            self._origin_schema(conn)
            conn.execute("INSERT INTO distilled_slots (pair, acquisition, start, end, block_id, created) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (pair, acquisition, start, end, str(block_id), _now()))

    def distilled_slots(self, pair: str, acquisition: str) -> list[tuple[int, int, str]]:
        """The slot ranges ``(start, end, block_id)`` of ``acquisition`` already distilled for ``pair``."""
        _check_pair(pair)
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'distilled_slots'").fetchone() is None:
                return []
            rows = conn.execute("SELECT start, end, block_id FROM distilled_slots WHERE pair = ? AND acquisition = ? "
                                "ORDER BY start", (pair, acquisition)).fetchall()
        return [(int(a), int(b), str(c)) for a, b, c in rows]

    def overlapping_blocks(self) -> list[dict[str, Any]]:
        """Blocks held here from two distillations of the same raw slots (review s38 K1): a store that
        imported, or distilled, before the origin checks existed may already hold such doubles, whose key is
        not independent (docs/protocol.md §5.2, (P7)). One entry per pair of distillations: ``pair``,
        ``acquisition``, ``blocks`` (the two key blocks, earlier-added first) and ``slots`` (their ranges);
        read from the blocks' records (:func:`block_origin`), never a key bit. Blocks retired here (:meth:`retire_block`) are
        left out."""
        with self._read() as conn:  # a block retired here (retire_block) is no longer one of them
            retired = ("AND block_id NOT IN (SELECT block_id FROM retired_blocks) "
                       if self._has_table(conn, "retired_blocks") else "")
            rows = conn.execute("SELECT block_id, pair, meta FROM blocks WHERE "  # (unreadable: refused)
                                + _META_OR_UNREADABLE.format("json_extract(meta, '$.acquisition') IS NOT NULL")
                                + f" {retired}ORDER BY seq").fetchall()
        by: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
        for bid, pair, meta_s in rows:
            o = block_origin(str(bid), self._json_col(meta_s, "blocks", "meta", f"block {bid}"))
            if o is not None:
                by.setdefault((str(pair), o[0]), []).append((o[1], o[2], o[3]))
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for (pair, acq), items in by.items():
            order = {key: i for i, (_, _, key) in reversed(list(enumerate(items)))}  # first-added position
            ranges = sorted(items)
            for i, (a, b, key) in enumerate(ranges):
                for j in range(i + 1, len(ranges)):  # (no slice: a copy of the rest per block was quadratic)
                    a2, b2, key2 = ranges[j]
                    if a2 >= b:
                        break
                    first, second = sorted(((a, b, key), (a2, b2, key2)), key=lambda r: order[r[2]])
                    if key2 == key or (first[2], second[2]) in seen:
                        continue
                    seen.add((first[2], second[2]))
                    out.append({"pair": pair, "acquisition": acq, "blocks": [first[2], second[2]],
                                "slots": [[first[0], first[1]], [second[0], second[1]]]})
        return out

    def _origin_refusal(self, conn: sqlite3.Connection, pair: str, block_id: str,
                        origin: tuple[str, int, int, str], *, imported: bool) -> str | None:
        """Why a block new to this store, distilled from ``origin`` (:func:`block_origin`), must not come in:
        its slots overlap a range of the same acquisition that this store's ledger records for another
        distillation (distilled here, or brought in by an import), or one a block held here names (a store
        older than the ledger, or a block imported before imports entered it: review s38 K1), or, for an
        ``imported`` block, one this store distilled itself without keeping a block of it (an aborted block).
        None when it may: no overlap, or only blocks of its own distillation (a key block and its
        authentication refill)."""
        acq, start, end, key = origin
        where = f"slots [{start}, {end}) of acquisition {acq}"
        self._origin_schema(conn)  # (inside the write transaction of add_blocks or import_segments)
        held: set[str] = set()
        for bid, meta_s in self._held_candidates(conn, pair, acq, start, end):
            o = block_origin(str(bid), self._json_col(meta_s, "blocks", "meta", f"block {bid}"))
            if o is None:  # (a block of the ledger row's distillation overlaps [start, end) as that row does)
                continue
            held.add(o[3])
            if o[3] != key and o[1] < end and o[2] > start:
                return (f"pair {pair}: block {block_id} was distilled from {where}, which overlap slots "
                        f"[{o[1]}, {o[2]}) of block {o[3]} held in key store {self.path}")
        for a, b, bid in self._ledger_overlaps(conn, pair, acq, start, end):
            if bid != key or (imported and key not in held):
                return (f"pair {pair}: block {block_id} was distilled from {where}, which overlap slots [{a}, {b}) "
                        f"already distilled into (or imported into) key store {self.path} as block {bid}")
        return None

    def _claim_origin(self, conn: sqlite3.Connection, pair: str, origin: tuple[str, int, int, str]) -> None:
        """Record a block's slots in this store's ledger (inside the caller's write transaction, after
        :meth:`_origin_refusal` found no other distillation over them): a later distillation of the same
        recording here, or an import of another block over them, is then refused."""
        acq, start, end, key = origin
        self._origin_schema(conn)
        conn.execute("INSERT OR IGNORE INTO distilled_slots (pair, acquisition, start, end, block_id, created) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (pair, acq, start, end, key, _now()))

    # ------------------------------------------------------------------ retired blocks
    # A block retired by the operator (:meth:`retire_block`, ``labqfl keys retire``): e.g. one of two distillations
    # of the same raw slots that :meth:`overlapping_blocks` flags. Its own table, created on first use (any schema
    # version), one row per block retired; never deleted: the block row and its recorded origin stay too, so its
    # slots stay distilled and nothing brings the block back.

    _RETIRED_DDL = ("CREATE TABLE IF NOT EXISTS retired_blocks (block_id TEXT PRIMARY KEY, pair TEXT NOT NULL, "
                    "key_block TEXT NOT NULL, nbits INTEGER NOT NULL, discarded INTEGER NOT NULL, "
                    "voided TEXT NOT NULL, reason TEXT NOT NULL, created TEXT NOT NULL)")

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    def _retired_refusal(self, conn: sqlite3.Connection, block_id: str, key: str) -> str | None:
        """Why block ``block_id`` of distillation ``key`` (:func:`block_origin`) must not come (back) into this store:
        it, or its distillation, was retired here (:meth:`retire_block`); None if not."""
        if not self._has_table(conn, "retired_blocks"):
            return None
        row = conn.execute("SELECT block_id, created, reason FROM retired_blocks WHERE block_id IN (?, ?) OR "
                           "key_block = ? ORDER BY created LIMIT 1", (block_id, key, key)).fetchone()
        if row is None:
            return None
        return (f"block {block_id}: {'it' if row[0] == block_id else f'block {row[0]} of its distillation'} was "
                f"retired from key store {self.path} at {row[1]} ({row[2]}): its key is never taken back")

    def _distillation(self, conn: sqlite3.Connection, block_id: str) -> tuple[str, str, list[tuple[int, str, int]]]:
        """``(pair, key block, [(seq, block_id, nbits)])``: block ``block_id`` and the other blocks of its
        distillation held here (a key block and its authentication refill rows, :func:`block_origin`), in the order
        added. A block that records no origin stands alone."""
        row = conn.execute("SELECT pair, meta FROM blocks WHERE block_id = ?", (block_id,)).fetchone()
        if row is None:
            raise KeyStoreError(f"no block {block_id} in key store {self.path}")
        pair = str(row[0])
        origin = block_origin(block_id, self._json_col(row[1], "blocks", "meta", f"block {block_id}"))
        key = origin[3] if origin is not None else block_id
        group = []
        for seq, bid, nbits, meta_s in conn.execute(  # (a block whose metadata SQLite cannot read: refused, not left out)
                "SELECT seq, block_id, nbits, meta FROM blocks WHERE pair = ? AND (block_id IN (?, ?) OR "
                + _META_OR_UNREADABLE.format("json_extract(meta, '$.key_block') = ?") + ") ORDER BY seq",
                (pair, block_id, key, key)):
            o = block_origin(str(bid), self._json_col(meta_s, "blocks", "meta", f"block {bid}"))
            if bid == block_id or (origin is not None and o is not None and o[3] == key):
                group.append((int(seq), str(bid), int(nbits)))
        return pair, key, group

    def _retire_obstacles(self, conn: sqlite3.Connection, pair: str, group: list[tuple[int, str, int]],
                          force: bool) -> list[str]:
        """The reservations that hold bits of the blocks of ``group`` (key IDs), after refusing (nothing changed)
        bits being exported, and reserved bits unless ``force``."""
        seqs = [g[0] for g in group]
        rows = conn.execute("SELECT b.block_id, s.start, s.length, s.state, s.key_id FROM segments s JOIN blocks b ON "
                            f"b.seq = s.block_seq WHERE s.block_seq IN ({','.join('?' * len(seqs))}) AND s.state IN "
                            "('reserved', 'exporting') ORDER BY s.block_seq, s.start", seqs).fetchall()
        names = ", ".join(g[1] for g in group)
        exporting = [r for r in rows if r[3] == "exporting"]
        if exporting:
            raise KeyStoreError(
                f"pair {pair}: {sum(r[2] for r in exporting)} bits of block(s) {names} are being exported (export "
                f"{exporting[0][4]}, not finished) from key store {self.path}: nothing was retired; let the export "
                "finish, or finish or undo an interrupted one (`labqfl keys status`, `labqfl keys abort-export`), "
                "then retire the block")
        held: dict[str, int] = {}
        for r in rows:
            held[str(r[4])] = held.get(str(r[4]), 0) + int(r[2])
        if held and not force:
            ids = ", ".join(list(held)[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise KeyStoreError(
                f"pair {pair}: {sum(held.values())} bits of block(s) {names} are reserved in key store {self.path} "
                f"for {len(held)} key(s) not finished (key IDs {ids}): a running KME (`labqfl keys serve`), training "
                "run or node may be using them, and may have read them already. Nothing was retired. Stop what uses "
                "this store and retry, or retire with --force: those keys are then voided (all their bits, in this "
                "block and any other, are overwritten and never handed out; the key is lost to whoever holds it)")
        return list(held)

    def retire_block(self, block_id: str, reason: str, *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Retire block ``block_id`` and the other blocks of its distillation held here (:meth:`_distillation`: a
        key block and its authentication refill), for good: e.g. one of two distillations of the same raw slots
        (:meth:`overlapping_blocks`, docs/protocol.md §5.2, (P7)). One transaction: every bit still free is marked
        consumed and the block's whole material is overwritten with zeros (then the WAL checkpoint, as for every
        overwrite: :meth:`scrub_status`); the retirement is recorded (``retired_blocks``, and a ``retire``
        delivery row with ``reason``), so no import brings the block or its distillation back, and its recorded
        slots stay distilled here. Refused with nothing changed: an unknown block, bits being exported, and bits
        reserved for a key not finished unless ``force`` (those reservations are then voided, :meth:`void`).
        Idempotent. ``dry_run``: only the refusals, nothing changed. Both ends of a pair at once:
        :func:`retire_in_stores`. Returns what was done; never a key bit."""
        bid, why = str(block_id), str(reason).strip() or "retired"
        with self._write() as conn:
            plan = self._retire_plan(conn, bid, force)
            if dry_run:
                pair, key, group, voided = plan
                return {"node": self.node, "store": str(self.path), "pair": pair, "key_block": key,
                        "blocks": [{"block_id": g[1], "nbits": g[2]} for g in group], "voided_keys": voided}
            out = self._retire_apply(conn, why, *plan)
        return self._retired(out)

    def _retire_plan(self, conn: sqlite3.Connection, bid: str,
                     force: bool) -> tuple[str, str, list[tuple[int, str, int]], list[str]]:
        """``(pair, key block, group, reservations to void)`` for retiring ``bid`` (inside the caller's write
        transaction), or the refusal (:meth:`_retire_obstacles`), nothing changed."""
        pair, key, group = self._distillation(conn, bid)
        return pair, key, group, self._retire_obstacles(conn, pair, group, force)

    def _retire_apply(self, conn: sqlite3.Connection, why: str, pair: str, key: str,
                      group: list[tuple[int, str, int]], voided: list[str]) -> dict[str, Any]:
        """The retirement itself (:meth:`retire_block`), inside the caller's write transaction, after
        :meth:`_retire_plan`; the result without the scrub state."""
        conn.execute(self._RETIRED_DDL)
        seqs = [g[0] for g in group]
        marks = ",".join("?" * len(group))
        handed = int(conn.execute(f"SELECT COALESCE(SUM(length), 0) FROM segments WHERE block_seq IN ({marks}) AND "
                                  "state = 'consumed'", seqs).fetchone()[0])  # before this retirement (review s39 K5)
        for kid in voided:
            self._void_reservation(conn, kid, f"block retired: {why}")
        before = {str(r[0]) for r in conn.execute(
            f"SELECT block_id FROM retired_blocks WHERE block_id IN ({marks})", [g[1] for g in group])}
        done: list[Ref] = []
        out: list[dict[str, Any]] = []
        for seq, b, nbits in group:
            discarded, _ = self._discard_free(conn, pair, [(b, 0, nbits)])
            self._zero_block(conn, seq)
            n = refs_nbits(discarded)
            done += discarded
            if b not in before:
                conn.execute("INSERT INTO retired_blocks (block_id, pair, key_block, nbits, discarded, voided, "
                             "reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (b, pair, key, nbits, n, json.dumps(voided), why, _now()))
            out.append({"block_id": b, "nbits": nbits, "discarded_bits": n, "retired_before": b in before})
        exported = {str(k): int(n) for k, n in conn.execute(
            f"SELECT key_id, SUM(length) FROM segments WHERE block_seq IN ({marks}) AND "
            "state = 'exported' GROUP BY key_id ORDER BY key_id", seqs)}
        if done or voided or len(before) < len(group):
            self._record(conn, f"retire-{uuid.uuid4()}", pair, GENERAL, "retire", "discarded", done,
                         {"reason": why, "blocks": [g[1] for g in group], "voided": voided})
        return {"node": self.node, "store": str(self.path), "pair": pair, "key_block": key, "blocks": out,
                "already_retired": len(before) == len(group), "discarded_bits": refs_nbits(done),
                "handed_out_bits": 0 if len(before) == len(group) else handed, "voided_keys": voided,
                "exported_bits": exported, "reason": why}

    def _retired(self, out: dict[str, Any]) -> dict[str, Any]:
        """After a retirement's commit: the WAL checkpoint, the log line, and ``out`` with the scrub state."""
        self._scrub()
        log.info("key store %s: pair %s: block(s) %s retired%s (%d free bits overwritten and discarded, %d "
                 "reservation(s) voided): %s", self.path.name, out["pair"], ", ".join(b["block_id"] for b in out["blocks"]),
                 " before" if out["already_retired"] else "", out["discarded_bits"], len(out["voided_keys"]),
                 out["reason"])
        return {**out, "scrub": self.scrub_status()}

    def _commit(self, conn: sqlite3.Connection) -> None:
        """COMMIT the write transaction :meth:`_begin_immediate` began (:func:`retire_in_stores`)."""
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(f"commit failed ({exc})") from None

    def _zero_block(self, conn: sqlite3.Connection, seq: int) -> None:
        """Overwrite block ``seq``'s whole material with zeros (inside the caller's write transaction; bits
        consumed, exported or never held here are zero already)."""
        self._blobs_opened += 1
        with conn.blobopen("blocks", "material", seq) as blob:
            blob.write(bytes(len(blob)))

    def retired_blocks(self) -> list[dict[str, Any]]:
        """The blocks retired here (:meth:`retire_block`), oldest first: block_id, pair, key_block, nbits,
        discarded (bits overwritten by the retirement), voided (key IDs), reason, created."""
        with self._read() as conn:
            if not self._has_table(conn, "retired_blocks"):
                return []
            rows = conn.execute("SELECT block_id, pair, key_block, nbits, discarded, voided, reason, created FROM "
                                "retired_blocks ORDER BY created, block_id").fetchall()
        return [{"block_id": r[0], "pair": r[1], "key_block": r[2], "nbits": r[3], "discarded": r[4],
                 "voided": self._json_col(r[5], "retired_blocks", "voided", f"retired block {r[0]}"), "reason": r[6], "created": r[7]} for r in rows]

    def free_ranges(self, pair: str, pools: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
        """Block ID → the free ``[start, end)`` ranges of ``pair`` in ``pools``, in block and bit order."""
        _check_pair(pair)
        names = [_check_purpose(p) for p in pools]
        out: dict[str, list[tuple[int, int]]] = {}
        with self._read() as conn:
            rows = conn.execute("SELECT b.block_id, s.start, s.length FROM segments s JOIN blocks b ON b.seq = s.block_seq "
                                f"WHERE s.pair = ? AND s.state = 'free' AND s.purpose IN ({','.join('?' * len(names))}) "
                                "ORDER BY s.block_seq, s.start", (pair, *names)).fetchall()
        for bid, start, length in rows:
            out.setdefault(str(bid), []).append((int(start), int(start) + int(length)))
        return out

    def available_bits(self, pair: str, purpose: str | None = None) -> int:
        """Free bits a :meth:`take` for ``purpose`` could draw (its pool plus ``general``); all
        free bits of the pair when ``purpose`` is None."""
        _check_pair(pair)
        if purpose is None:
            pools = list(PURPOSES)
        else:
            pools = [_check_purpose(purpose)] if purpose == GENERAL else [purpose, GENERAL]
        with self._read() as conn:
            row = conn.execute(f"SELECT COALESCE(SUM(length), 0) FROM segments WHERE pair = ? AND state = 'free' "
                               f"AND purpose IN ({','.join('?' * len(pools))})", (pair, *pools)).fetchone()
        return int(row[0])

    def accounting(self) -> dict[str, dict[str, Any]]:
        """Per pair: ``{"available": {pool: bits}, "reserved": {purpose: bits}, "consumed":
        {purpose: bits}, "exporting": {pool: bits}, "exported": {pool: bits}, "added": bits, "blocks":
        n}`` (``exporting``: taken by an export not finished, see :meth:`begin_export`)."""
        out: dict[str, dict[str, Any]] = {}
        with self._read() as conn:
            for pair, nblocks in conn.execute("SELECT pair, COUNT(*) FROM blocks GROUP BY pair ORDER BY pair"):
                out[pair] = {"available": {}, "reserved": {}, "consumed": {}, "exporting": {}, "exported": {},
                             "added": 0, "blocks": int(nblocks)}
            for pair, state, purpose, n in conn.execute(
                    "SELECT pair, state, purpose, SUM(length) FROM segments GROUP BY pair, state, purpose"):
                if state == "absent":
                    continue
                key = {"free": "available"}.get(state, state)
                out[pair][key][purpose] = int(n)
                out[pair]["added"] += int(n)
        return out

    def blocks(self, pair: str | None = None) -> list[dict[str, Any]]:
        """Block metadata (no material): block_id, pair, nbits, run_id, meta, created."""
        q = "SELECT block_id, pair, nbits, run_id, meta, created FROM blocks"
        args: tuple[Any, ...] = ()
        if pair is not None:
            q, args = q + " WHERE pair = ?", (pair,)
        with self._read() as conn:
            rows = conn.execute(q + " ORDER BY seq", args).fetchall()
        return [{"block_id": r[0], "pair": r[1], "nbits": r[2], "run_id": r[3], "meta": self._json_col(r[4], "blocks", "meta", f"block {r[0]}"),
                 "created": r[5]} for r in rows]

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check_nbits(n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or int(n) <= 0:
            raise KeyStoreError(f"number of bits must be a positive integer, got {n!r}")
        return int(n)

    @staticmethod
    def _norm_refs(refs: Iterable[Sequence[Any]]) -> list[Ref]:
        try:
            return normalize_refs(refs)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(f"invalid key references: {exc}") from None


def retire_in_stores(stores: Sequence[KeyStore], block_id: str, reason: str, *,
                     force: bool = False) -> dict[str, dict[str, Any]]:
    """Retire ``block_id`` in every store of ``stores`` (both ends of its pair: ``labqfl keys retire``), each as
    :meth:`KeyStore.retire_block`, holding every store's write lock from the first check to the last commit
    (review s39 K1): the write transactions begin in the order of the stores' paths (two retirements never wait
    on each other), every store's refusals are asked, and only then is anything changed, so a reservation (a
    KME's) cannot arrive at one end between the checks and the retirement: it waits, and then finds the block's
    bits spent. A refusal anywhere changes nothing anywhere. Only a commit failing after another store committed
    (a full disk, an I/O error) or a crash between two commits splits it: the error then names the stores
    retired and the command that finishes the job (it is idempotent). Returns ``{node: result}``."""
    bid, why = str(block_id), str(reason).strip() or "retired"
    order = sorted(stores, key=lambda st: str(st.path))
    began: list[tuple[KeyStore, sqlite3.Connection]] = []
    committed: list[KeyStore] = []
    try:
        for st in order:
            began.append((st, st._begin_immediate()))  # returns holding st._lock
            st._wrote, st._writes = True, st._writes + 1
        plans = [st._retire_plan(conn, bid, force) for st, conn in began]
        outs = [st._retire_apply(conn, why, *plan) for (st, conn), plan in zip(began, plans, strict=True)]
        for st, conn in began:
            st._commit(conn)
            committed.append(st)
    except BaseException as exc:
        for st, conn in began:
            if st not in committed:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        if committed and isinstance(exc, Exception):
            rest = [st for st, _ in began if st not in committed]
            finish = "; ".join(f"`labqfl keys retire {bid} --node {st.node}`" for st in rest)
            raise KeyStoreError(
                f"block {bid}: retired in the key store(s) of node(s) {', '.join(str(st.node) for st in committed)} "
                f"(committed: its bits there are destroyed), but not in node(s) {', '.join(str(st.node) for st in rest)}"
                f": {exc}. Finish the job once that is fixed: {finish} (the same --data-dir; --force if keys not "
                "finished hold its bits there); until then that end's copy of the key stays free there") from None
        if isinstance(exc, sqlite3.OperationalError):
            raise KeyStoreError(f"retiring block {bid}: {exc}; nothing was retired") from None
        raise
    finally:
        for st, _ in began:
            st._lock.release()
    return {str(st.node): st._retired(out) for st, out in zip(order, outs, strict=True)}


def _clip_refs(refs: list[Ref], within: Sequence[Sequence[Any]]) -> list[Ref]:
    """The parts of ``refs`` that lie inside ``within`` (refs of the same blocks)."""
    out: list[Ref] = []
    for block_id, start, length in refs:
        for b, o, n in within:
            lo, hi = max(start, int(o)), min(start + length, int(o) + int(n))
            if str(b) == block_id and hi > lo:
                out.append((block_id, lo, hi - lo))
    return out


def _reopen(path: str, node: str | None) -> KeyStore:
    return KeyStore(path, node=node)

