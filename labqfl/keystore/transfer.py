"""Move key material between stores (e.g. machines): ``labqfl keys ticket|export|import``.

An export is **bound** to one target store (issue 19, item 3: one export file once imported into
a second store and back into its own, both then handing out the same bits):

1. The target issues an import ticket (:meth:`KeyStore.issue_import_ticket`, ``labqfl keys
   ticket``): its node name, its store ID (``meta.store_id``, a random UUID) and a fresh 256-bit
   secret it keeps until the ticket is used.  Ticket file (JSON, 0600, never overwritten)::

       {"format": "labqfl-import-ticket", "version": 1, "ticket_id": "<uuid4>",
        "target_node": "C2", "target_store": "<uuid4>", "secret": "<base64 of 32 bytes>"}

2. The source exports with that ticket: the file's disk space is reserved first (a temporary
   file in the target folder, :func:`export_keys`), then one transaction marks the bits
   ``exported``, zeroes them and records the export (ID, refs, target node and store, ticket) in
   its ``exports`` table; then the export file is written into that space, synced and renamed to
   its name (JSON, 0600, never overwritten)::

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
over a trusted channel and destroy the export file after import (``labqfl keys import`` does).
An import reads the file once and authenticates the very bytes it imports (:class:`ExportFile`).  Version 1 (unbound) export files
are refused.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.errors import DataFormatError, KeyStoreError
from labqfl.keystore.store import PURPOSES, ExportBinding, ExportedSegment, ImportTicket, KeyStore
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


def _export_size_bound(store: KeyStore, pair: str, nbits: int | None, purpose: str | None) -> int:
    """An upper bound on the size in bytes of the export file of ``nbits`` (None: all) free bits of
    ``pair`` (pool ``purpose`` or every pool), from the store's free ranges and block metadata before
    any bit moves: the file is preallocated at this size, so a disk too full for it refuses the export
    before the store gives anything up (review s33 F1).  Margins cover a concurrent take splitting a
    free range into more segments."""
    pools = list(PURPOSES) if purpose is None else [purpose]
    ranges = store.free_ranges(pair, pools)
    info = {b["block_id"]: b for b in store.blocks(pair)}
    total = sum(e - s for rr in ranges.values() for s, e in rr)
    want = total if nbits is None else min(int(nbits), total)
    per_seg = [256 + len(bid) + len(str(info.get(bid, {}).get("run_id", "")))
               + len(json.dumps(info.get(bid, {}).get("meta", {}))) for bid, rr in ranges.items() for _ in rr]
    nseg = len(per_seg) + 16
    b64 = 4 * ((want + 7) // 8 // 3 + 2 * nseg)
    return int(1.25 * (4096 + sum(per_seg) + 16 * max(per_seg, default=256) + b64)) + 65536


def _preallocate(fd: int, size: int) -> None:
    """Give ``fd`` ``size`` bytes of disk now (``posix_fallocate``, else zeros written and synced)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    chunk = b"\0" * (1 << 20)
    left = size
    while left > 0:
        left -= os.write(fd, chunk[:min(left, len(chunk))])
    os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
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


def _write_exact(fd: int, data: bytes | bytearray) -> None:
    """Write ``data`` at offset 0 of ``fd``, cut the file there and sync it."""
    os.lseek(fd, 0, os.SEEK_SET)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _publish(tmp: Path, out: Path) -> None:
    """Give the complete, synced ``tmp`` its final name ``out`` without overwriting anything there."""
    try:
        os.link(tmp, out)  # fails if out exists
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links (FAT, exFAT): rename, having checked out is free
        if out.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(out)) from None
        os.rename(tmp, out)
    else:
        tmp.unlink()
    _fsync_dir(out.parent)


def _rescue_path(store: KeyStore, export_id: str) -> Path:
    return store.path.parent / f"{store.path.stem}.export-{export_id}.json"


def _write_after_commit(store: KeyStore, fd: int, tmp: Path, out: Path, data: bytearray, export_id: str) -> Path:
    """Write the export file once its bits left the store: ``data`` into the preallocated ``tmp``,
    synced, then renamed to ``out``; returns where the export is.  If that fails, ``tmp`` is
    removed (no partial file with key bits in clear is left) and the complete file is written
    next to the store instead (its bits must not be lost); only if that fails too are they lost,
    and the error says so."""
    try:
        try:
            _write_exact(fd, data)
        finally:
            os.close(fd)
        _publish(tmp, out)
        return out
    except OSError as exc:
        first = f"{exc.strerror or exc}" + (" (disk full)" if exc.errno == errno.ENOSPC else "")
        tmp.unlink(missing_ok=True)
    rescue = _rescue_path(store, export_id)
    try:
        rfd = os.open(rescue, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_exact(rfd, data)
        finally:
            os.close(rfd)
        _fsync_dir(rescue.parent)
    except OSError as exc:
        rescue.unlink(missing_ok=True)
        raise KeyStoreError(f"export file {out}: writing it failed ({first}) after export {export_id} had taken its "
                            f"bits out of key store {store.path}, and writing them next to the store failed too "
                            f"({exc.strerror or exc}): those bits are lost at this node") from None
    log.error("export %s: writing %s failed (%s); the export was written to %s instead", export_id, out, first, rescue)
    raise KeyStoreError(f"export file {out}: writing it failed ({first}); the bits of export {export_id} had already "
                        f"left key store {store.path} and were written to {rescue} instead: that file is the export "
                        "(import it with `labqfl keys import`), key material in clear; nothing was lost")


def export_keys(store: KeyStore, pair: str, out: Path, *, ticket: ImportTicket, nbits: int | None = None,
                purpose: str | None = None) -> dict[str, Any]:
    """Move ``nbits`` (default: all) free bits of ``pair`` (pool ``purpose``, or every pool) from
    ``store`` into a new export file ``out``, bound to the store that issued ``ticket``.  Returns a
    summary (no key material).

    Order (review s33 F1): a hidden temporary file ``.NAME.*.part`` is created in ``out``'s folder
    and given the disk space the file will need (an upper bound), before any bit moves, so a full
    disk or an unwritable folder refuses the export with the store unchanged; then the store's one
    transaction moves the bits (:meth:`KeyStore.export_segments`); then the file is written into
    that space, synced, and renamed to ``out``.  A write that still fails removes the temporary
    file and writes the export next to the store (:func:`_write_after_commit`)."""
    out = Path(out)
    a, sep, b = pair.partition("-")
    if sep and store.node and store.node not in (a, b):  # else the store's refusal would talk of "C1's copy"
        raise KeyStoreError(f"node {store.node} is not a member of pair {pair}: its store holds no key of that pair "
                            f"(export from the store of node {a} or {b})")
    if out.exists():
        raise DataFormatError(f"export file {out} already exists; refusing to overwrite it")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.part")
    size = _export_size_bound(store, pair, nbits, purpose)
    fd = _create_new(tmp, "export file")  # before any bit moves: a path that cannot be written loses nothing
    try:
        _preallocate(fd, size)
    except OSError as exc:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise DataFormatError(f"export file {out}: cannot reserve {size} bytes for it in {out.parent} "
                              f"({exc.strerror or exc}); nothing was exported, the bits stay in the store") from None
    try:
        binding, segs = store.export_segments(pair, nbits, purpose, ticket=ticket)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
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
    data = bytearray(json.dumps(doc).encode("ascii"))
    try:
        where = _write_after_commit(store, fd, tmp, out, data, binding.export_id)
    finally:
        for s in segs:
            s.bits[:] = 0
        doc.clear()
        data[:] = bytes(len(data))
    log.info("exported %d bits of pair %s from %s to %s (export %s, bound to node %s, store %s)",
             sum(s.bits.size for s in segs), pair, store.path.name, where, binding.export_id, binding.target_node,
             binding.target_store)
    return {"export_id": binding.export_id, "pair": pair, "nbits": int(sum(s.bits.size for s in segs)),
            "segments": len(segs), "file": str(where), "source_node": binding.source_node,
            "source_store": binding.source_store, "target_node": binding.target_node,
            "target_store": binding.target_store, "ticket_id": binding.ticket_id}


#: The largest export file read (bytes): far above any real export (a 2^30-bit export is ~180 MB).
MAX_EXPORT_FILE_BYTES = 1 << 30


@dataclass
class ExportFile:
    """An export file read once (review s33 F2): its parsed document, header and segments all come
    from the same bytes, so the MAC checked on import covers exactly the bits imported."""

    path: Path
    doc: dict[str, Any] = field(repr=False)
    header: dict[str, Any]
    segments: list[ExportedSegment] = field(repr=False)

    def wipe(self) -> None:
        for s in self.segments:
            s.bits[:] = 0
        self.doc.clear()


def _read_once(path: Path, what: str) -> dict[str, Any]:
    """``path`` read in one pass (one open, one read loop) and parsed as a JSON object."""
    try:
        with open(path, "rb") as fh:
            raw = bytearray(fh.read(MAX_EXPORT_FILE_BYTES + 1))
    except OSError as exc:
        raise DataFormatError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        if len(raw) > MAX_EXPORT_FILE_BYTES:
            raise DataFormatError(f"{what} {path}: larger than {MAX_EXPORT_FILE_BYTES} bytes; not an export file")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DataFormatError(f"{what} {path}: not readable JSON ({exc})") from None
    finally:
        raw[:] = bytes(len(raw))
    if not isinstance(doc, dict):
        raise DataFormatError(f"{what} {path}: expected a JSON object")
    return doc


def load_export(path: Path) -> ExportFile:
    """Read export file ``path`` once and parse it (:func:`read_export`'s checks); pass the result to
    :func:`import_keys`, which authenticates and imports these very bytes."""
    path = Path(path)
    doc = _read_once(path, "export file")
    header, segs = _parse_export(doc, path)
    return ExportFile(path, doc, header, segs)


def read_export(path: Path) -> tuple[dict[str, Any], list[ExportedSegment]]:
    """Parse an export file; returns (header: binding fields, created, pair, nbits; segments).
    The MAC is checked on import, with the target store's ticket secret."""
    exp = load_export(path)
    return exp.header, exp.segments


def _parse_export(doc: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[ExportedSegment]]:
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
        for s in segs:
            s.bits[:] = 0
        raise DataFormatError(f"export file {path}: malformed segment ({exc})") from None
    header = {k: doc[k] for k in (*_BINDING_FIELDS, "created", "pair", "nbits")}
    return header, segs


def import_keys(store: KeyStore, source: Path | ExportFile) -> dict[str, Any]:
    """Add the bits of an export file (a path, read once here, or :func:`load_export`'s result) to
    ``store``, which must be the store the export is bound to; refused (nothing changed) otherwise,
    or when already imported, or when the file fails authentication with the store's ticket.  The
    MAC is checked over the same parsed document whose segments are imported (review s33 F2: a file
    read twice could be swapped between the reads)."""
    exp = source if isinstance(source, ExportFile) else load_export(Path(source))
    doc, header, segs = exp.doc, exp.header, exp.segments
    binding = ExportBinding(*(str(header[f]) for f in _BINDING_FIELDS))
    tag = str(doc[MAC_FIELD])

    def authenticate(secret: bytes) -> bool:
        return hmac.compare_digest(_mac(secret, doc), tag)

    try:
        n = store.import_segments(binding, segs, authenticate=authenticate)
    finally:
        exp.wipe()
    return {**header, "imported_bits": n, "store": str(store.path)}


__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "TICKET_FORMAT", "ExportFile", "export_keys", "import_keys",
           "load_export", "read_export", "read_ticket", "write_ticket"]
