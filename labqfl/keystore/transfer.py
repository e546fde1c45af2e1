"""Move key material between stores (e.g. machines): ``labqfl keys ticket|export|import``.

An export is **bound** to one target store (issue 19, item 3: one export file once imported into
a second store and back into its own, both then handing out the same bits):

1. The target issues an import ticket (:meth:`KeyStore.issue_import_ticket`, ``labqfl keys
   ticket``): its node name, its store ID (``meta.store_id``, a random UUID) and a fresh 256-bit
   secret it keeps until the ticket is used.  Ticket file (JSON, 0600, never overwritten)::

       {"format": "labqfl-import-ticket", "version": 1, "ticket_id": "<uuid4>",
        "target_node": "C2", "target_store": "<uuid4>", "secret": "<base64 of 32 bytes>"}

2. The source exports with that ticket: one transaction marks the bits ``exported``, zeroes
   them and records the export (ID, refs, target node and store, ticket) in its ``exports``
   table; then the export file is written (JSON, 0600, never overwritten)::

       {"format": "labqfl-key-export", "version": 2, "export_id": "<uuid4>", "created": "...",
        "source_node": "C2", "source_store": "<uuid4>", "target_node": "C2",
        "target_store": "<uuid4>", "ticket_id": "<uuid4>", "pair": "C1-C2", "nbits": 4096,
        "segments": [{"block_id": "<uuid>", "block_nbits": 100000, "offset": 0, "length": 4096,
                      "purpose": "general", "run_id": "...", "meta": {...},
                      "bits": "<base64 of the segment's bits packed MSB-first, zero-padded>"}],
        "hmac_sha256": "<hex HMAC-SHA-256, keyed with the ticket's secret, of the canonical JSON
                         of every other field>"}

3. The target imports it only if it names this store and node, was not made by this store, was
   not imported before, names a ticket this store issued and has not used, and its MAC verifies
   with that ticket's secret; then, in the same transaction, the ticket is spent (secret erased).

The canonical JSON is ``json.dumps(doc_without_mac, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)``; the MAC is HMAC (RFC 2104) with SHA-256 (FIPS 180-4) from Python's
``hmac``/``hashlib``.  What the binding rests on: the ticket secret is known only to the target
store and to whoever carries the ticket to the source; without it, a file whose binding fields
(target, ticket, export ID) or bits were edited fails the MAC (forging a tag is as hard as breaking
HMAC-SHA-256 as a PRF), and a ticket is accepted once, so a copy of a used file is refused
everywhere: the target has recorded the import and spent the ticket, every other store finds
itself not named (or, if the name is edited, a ticket it never issued, or a MAC that fails).
Whoever holds a file holds the key bits in clear anyway, so this guards the key stores' one-use
bookkeeping against mistakes and edited files, not a reader of the file: carry tickets and files
over a trusted channel and delete the export file after import.  Version 1 (unbound) export files
are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.errors import DataFormatError, KeyStoreError
from labqfl.keystore.store import ExportBinding, ExportedSegment, ImportTicket, KeyStore
from labqfl.log import get_logger

log = get_logger(__name__)

EXPORT_FORMAT = "labqfl-key-export"
EXPORT_VERSION = 2
TICKET_FORMAT = "labqfl-import-ticket"
TICKET_VERSION = 1
MAC_FIELD = "hmac_sha256"
_BINDING_FIELDS = ("export_id", "source_node", "source_store", "target_node", "target_store", "ticket_id")


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != MAC_FIELD}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def _mac(secret: bytes, doc: dict[str, Any]) -> str:
    return hmac.new(secret, _canonical(doc), hashlib.sha256).hexdigest()


def _create_new(path: Path, what: str) -> int:
    """Create ``path`` (mode 0600, never overwriting) and return its descriptor; one clear error if
    it exists or cannot be created there."""
    if path.exists():
        raise DataFormatError(f"{what} {path} already exists; refusing to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise DataFormatError(f"{what} {path}: cannot create it ({exc.strerror or exc}); expected a new file "
                              "in a writable folder") from None


def _write_fd(fd: int, doc: dict[str, Any]) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{what} {path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DataFormatError(f"{what} {path}: expected a JSON object")
    return doc


# ---------------------------------------------------------------------- tickets


def write_ticket(store: KeyStore, out: Path) -> dict[str, Any]:
    """Issue an import ticket from ``store`` (the future target) into a new file ``out``.
    Returns a summary without the secret."""
    out = Path(out)
    fd = _create_new(out, "ticket file")
    try:
        t = store.issue_import_ticket()
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    _write_fd(fd, {"format": TICKET_FORMAT, "version": TICKET_VERSION, "ticket_id": t.ticket_id,
                   "target_node": t.target_node, "target_store": t.target_store,
                   "secret": base64.b64encode(t.secret).decode("ascii")})
    return {"ticket_id": t.ticket_id, "target_node": t.target_node, "target_store": t.target_store, "file": str(out)}


def read_ticket(path: Path) -> ImportTicket:
    """Parse a ticket file written by :func:`write_ticket`."""
    doc = _read_json(path, "ticket file")
    if doc.get("format") != TICKET_FORMAT:
        raise DataFormatError(f"ticket file {path}: not a labqfl import ticket (format {TICKET_FORMAT!r} expected)")
    if doc.get("version") != TICKET_VERSION:
        raise DataFormatError(f"ticket file {path}: version {doc.get('version')!r}, this labqfl reads {TICKET_VERSION}")
    try:
        secret = base64.b64decode(doc["secret"], validate=True)
        fields = [doc["ticket_id"], doc["target_node"], doc["target_store"]]
    except (KeyError, TypeError, binascii.Error) as exc:
        raise DataFormatError(f"ticket file {path}: malformed ({exc})") from None
    if len(secret) != 32 or not all(isinstance(f, str) and f for f in fields):
        raise DataFormatError(f"ticket file {path}: expected ticket_id, target_node, target_store and a 32-byte secret")
    return ImportTicket(fields[0], fields[1], fields[2], secret)


# ---------------------------------------------------------------------- export / import


def export_keys(store: KeyStore, pair: str, out: Path, *, ticket: ImportTicket, nbits: int | None = None,
                purpose: str | None = None) -> dict[str, Any]:
    """Move ``nbits`` (default: all) free bits of ``pair`` (pool ``purpose``, or every pool) from
    ``store`` into a new export file ``out``, bound to the store that issued ``ticket``.  Returns a
    summary (no key material)."""
    out = Path(out)
    a, sep, b = pair.partition("-")
    if sep and store.node and store.node not in (a, b):  # else the store's refusal would talk of "C1's copy"
        raise KeyStoreError(f"node {store.node} is not a member of pair {pair}: its store holds no key of that pair "
                            f"(export from the store of node {a} or {b})")
    fd = _create_new(out, "export file")  # before any bit moves: a path that cannot be written loses nothing
    try:
        binding, segs = store.export_segments(pair, nbits, purpose, ticket=ticket)
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **{f: getattr(binding, f) for f in _BINDING_FIELDS},
        "pair": pair, "nbits": int(sum(s.bits.size for s in segs)),
        "segments": [{"block_id": s.block_id, "block_nbits": s.block_nbits, "offset": s.offset,
                      "length": int(s.bits.size), "purpose": s.purpose, "run_id": s.run_id, "meta": s.meta,
                      "bits": base64.b64encode(np.packbits(s.bits).tobytes()).decode("ascii")} for s in segs],
    }
    doc[MAC_FIELD] = _mac(ticket.secret, doc)
    try:
        _write_fd(fd, doc)
    finally:
        for s in segs:
            s.bits[:] = 0
        doc.clear()
    log.info("exported %d bits of pair %s from %s to %s (export %s, bound to node %s, store %s)",
             sum(s.bits.size for s in segs), pair, store.path.name, out, binding.export_id, binding.target_node,
             binding.target_store)
    return {"export_id": binding.export_id, "pair": pair, "nbits": int(sum(s.bits.size for s in segs)),
            "segments": len(segs), "file": str(out), "source_node": binding.source_node,
            "source_store": binding.source_store, "target_node": binding.target_node,
            "target_store": binding.target_store, "ticket_id": binding.ticket_id}


def read_export(path: Path) -> tuple[dict[str, Any], list[ExportedSegment]]:
    """Parse an export file; returns (header: binding fields, created, pair, nbits; segments).
    The MAC is checked on import, with the target store's ticket secret."""
    path = Path(path)
    doc = _read_json(path, "export file")
    if doc.get("format") != EXPORT_FORMAT:
        raise DataFormatError(f"export file {path}: not a labqfl key export (format {EXPORT_FORMAT!r} expected)")
    if doc.get("version") != EXPORT_VERSION:
        raise DataFormatError(f"export file {path}: version {doc.get('version')!r}, this labqfl reads {EXPORT_VERSION} "
                              "(exports bound to a target store, made with an import ticket: `labqfl keys ticket`)")
    missing = [f for f in (*_BINDING_FIELDS, "pair", "nbits", "segments", MAC_FIELD) if f not in doc]
    if missing or not all(isinstance(doc[f], str) for f in (*_BINDING_FIELDS, MAC_FIELD)):
        raise DataFormatError(f"export file {path}: missing or malformed field(s) {missing or list(_BINDING_FIELDS)}")
    segs: list[ExportedSegment] = []
    try:
        for s in doc["segments"]:
            raw = np.frombuffer(base64.b64decode(s["bits"], validate=True), dtype=np.uint8)
            length = int(s["length"])
            if raw.size != (length + 7) // 8:
                raise ValueError(f"segment of {length} bits carries {raw.size} bytes")
            segs.append(ExportedSegment(str(doc["pair"]), str(s["block_id"]), int(s["block_nbits"]), int(s["offset"]),
                                        str(s["purpose"]), str(s.get("run_id", "")), dict(s.get("meta") or {}),
                                        np.unpackbits(raw)[:length].copy()))
        if sum(s.bits.size for s in segs) != int(doc["nbits"]):
            raise ValueError("segment lengths do not add up to nbits")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise DataFormatError(f"export file {path}: malformed segment ({exc})") from None
    header = {k: doc[k] for k in (*_BINDING_FIELDS, "created", "pair", "nbits")}
    return header, segs


def import_keys(store: KeyStore, path: Path) -> dict[str, Any]:
    """Add the bits of export file ``path`` to ``store``, which must be the store the export is
    bound to; refused (nothing changed) otherwise, or when already imported, or when the file
    fails authentication with the store's ticket."""
    path = Path(path)
    header, segs = read_export(path)
    doc = _read_json(path, "export file")
    binding = ExportBinding(*(str(header[f]) for f in _BINDING_FIELDS))
    tag = str(doc[MAC_FIELD])

    def authenticate(secret: bytes) -> bool:
        return hmac.compare_digest(_mac(secret, doc), tag)

    try:
        n = store.import_segments(binding, segs, authenticate=authenticate)
    finally:
        for s in segs:
            s.bits[:] = 0
        doc.clear()
    return {**header, "imported_bits": n, "store": str(store.path)}


__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "TICKET_FORMAT", "export_keys", "import_keys", "read_export",
           "read_ticket", "write_ticket"]
