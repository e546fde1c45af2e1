"""Move key material between stores (e.g. machines): ``labqfl keys ticket|export|import``.

An export is **bound** to one target store (issue 19, item 3: one export file once imported into
a second store and back into its own, both then handing out the same bits):

1. The target issues an import ticket (:meth:`KeyStore.issue_import_ticket`, ``labqfl keys
   ticket``): its node name, its store ID (``meta.store_id``, a random UUID) and a fresh 256-bit
   secret it keeps until the ticket is used.  Ticket file (JSON, 0600, never overwritten)::

       {"format": "labqfl-import-ticket", "version": 1, "ticket_id": "<uuid4>",
        "target_node": "C2", "target_store": "<uuid4>", "secret": "<base64 of 32 bytes>"}

   An export with it adds ``"used_by": {"source_store", "source_node", "at"}`` before any bit moves, and an
   export from another store refuses a file that has one (:func:`claim_ticket_file`, review s38 F5).

2. The source exports with that ticket: the file's disk space is reserved first (a temporary
   file in the target folder, noted in the store before it is created, :func:`export_keys`), then one transaction marks the bits
   ``exporting`` (not zeroed) and records the export (ID, refs, target node and store, ticket,
   file paths, digest) in its ``exports`` table; then the export file is written into that space
   and synced, a second transaction marks the bits ``exported`` and zeroes them, and the file is
   renamed to its name (JSON, 0600, never overwritten).  A crash anywhere is finished or undone by
   :func:`recover_exports` (review s33 F1)::

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
   with that ticket's secret, and no block new to it was distilled from slots it holds for another
   distillation (review s38 F4, :meth:`KeyStore.import_segments`); then, in the same transaction, the ticket
   is spent (secret erased) and the file noted until ``labqfl keys import`` destroys it (review s38 F3).

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
import fcntl
import hashlib
import hmac
import json
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.errors import DataFormatError, KeyStoreError
from labqfl.keystore.store import PURPOSES, ExportBinding, ExportedSegment, ImportTicket, KeyStore
from labqfl.keystore.store import _fsync_dir as _fsync_dir
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


#: Field a ticket file gets when an export begins with it (review s38 F5): the store that uses it.
TICKET_USED_BY = "used_by"


def _ticket_file_fd(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise DataFormatError(f"ticket file {path}: cannot open it for writing ({exc.strerror or exc}); an export "
                              "records in its ticket file which store uses it, before any bit moves, so that no other "
                              "store exports with the same ticket: make the file writable; nothing was exported") from None
    fcntl.flock(fd, fcntl.LOCK_EX)  # two exports with one ticket file at once: one after the other
    return fd


def claim_ticket_file(path: Path, store: KeyStore, ticket: ImportTicket) -> bool:
    """Record in ticket file ``path`` (``ticket``'s file) that ``store`` exports with it (:data:`TICKET_USED_BY`:
    source store ID, node, time), before any bit moves (review s38 F5: one ticket used by two source stores, both
    exports zeroed their bits, the target imported one, the other's key was lost). Refused, with nothing changed,
    when the file records another store: a ticket is good for one export, and only the target knows when it is
    spent. True when this call wrote the record (:func:`release_ticket_file` may take it back), False when the
    file already named this store (whose own ``exports`` table then decides, :meth:`KeyStore.begin_export`)."""
    path = Path(path)
    fd = _ticket_file_fd(path)
    try:
        with os.fdopen(os.dup(fd), "r+", encoding="utf-8") as fh:
            try:
                doc = json.loads(fh.read())
            except ValueError as exc:
                raise DataFormatError(f"ticket file {path}: not readable JSON ({exc})") from None
            if not isinstance(doc, dict) or doc.get("ticket_id") != ticket.ticket_id:
                raise DataFormatError(f"ticket file {path} changed while it was read; nothing was exported")
            used = doc.get(TICKET_USED_BY)
            if isinstance(used, dict) and used.get("source_store") == store.store_id:
                return False
            if used is not None:
                who = used if isinstance(used, dict) else {}
                raise KeyStoreError(
                    f"import ticket {ticket.ticket_id} ({path}) was already used for an export from another store "
                    f"(node {who.get('source_node', '?')}, store {who.get('source_store', '?')}, "
                    f"{who.get('at', '?')}; or only marked by an export there that stopped before any bit moved: "
                    "that store may still use it); a ticket is good for one export from one store: ask the target "
                    f"store for a new ticket (labqfl keys ticket --node {ticket.target_node}); nothing was exported")
            doc[TICKET_USED_BY] = {"source_store": store.store_id, "source_node": store.node or "",
                                   "at": datetime.now(UTC).isoformat(timespec="seconds")}
            _rewrite(fh, doc)
        return True
    finally:
        os.close(fd)


def release_ticket_file(path: Path, store: KeyStore) -> None:
    """Take back :func:`claim_ticket_file`'s record for an export that moved no bit (refused before its record),
    so that the ticket may serve another store; a record of another store is left as it is."""
    try:
        fd = _ticket_file_fd(Path(path))
    except DataFormatError:
        return
    try:
        with os.fdopen(os.dup(fd), "r+", encoding="utf-8") as fh:
            doc = json.loads(fh.read())
            used = doc.get(TICKET_USED_BY) if isinstance(doc, dict) else None
            if isinstance(used, dict) and used.get("source_store") == store.store_id:
                del doc[TICKET_USED_BY]
                _rewrite(fh, doc)
    except (OSError, ValueError) as exc:
        log.warning("ticket file %s: could not take back its record of this export (%s)", path, exc)
    finally:
        os.close(fd)


def _rewrite(fh: Any, doc: dict[str, Any]) -> None:
    """Write ``doc`` over the open file ``fh`` (same file: its mode stays 0600), cut it there and sync it."""
    fh.seek(0)
    json.dump(doc, fh)
    fh.truncate()
    fh.flush()
    os.fsync(fh.fileno())


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
        _crash_point("linked")
        tmp.unlink()
    _fsync_dir(out.parent)


def _crash_point(where: str) -> None:
    """Called at each step of :func:`export_keys` (``created``, ``begun``, ``half-written``, ``written``,
    ``finished``, ``linked``, ``published``); does nothing.  The crash tests replace it in a child
    process with a SIGKILL at one step."""


def _shred(path: Path, *, unlink: bool = True) -> None:
    """Overwrite ``path`` (a partial export file of ours: key bits in clear) with zeros, sync, and
    delete it (``unlink``; kept, zeroed, otherwise: recovery reads it as partial and undoes the export)."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            left, zeros = os.fstat(fd).st_size, bytes(1 << 20)
            while left > 0:
                left -= os.write(fd, zeros[:min(left, len(zeros))])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    if unlink:
        path.unlink(missing_ok=True)


def _render(binding: ExportBinding, segs: list[ExportedSegment], pair: str, secret: bytes) -> bytearray:
    """The export file's bytes (JSON with the MAC); the caller zeroes them after use."""
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **{f: getattr(binding, f) for f in _BINDING_FIELDS},
        "pair": pair, "nbits": int(sum(s.bits.size for s in segs)),
        "segments": [{"block_id": s.block_id, "block_nbits": s.block_nbits, "offset": s.offset,
                      "length": int(s.bits.size), "purpose": s.purpose, "run_id": s.run_id, "meta": s.meta,
                      "bits": base64.b64encode(np.packbits(s.bits).tobytes()).decode("ascii")} for s in segs],
    }
    doc[MAC_FIELD] = _mac(secret, doc)
    try:
        return bytearray(json.dumps(doc).encode("ascii"))
    finally:
        doc.clear()


def _undo_export(store: KeyStore, export_id: str, tmp: Path, why: str) -> str:
    """Zero our partial file, give the export's bits back, then remove the file (this order: a crash
    in between leaves the zeroed file, which recovery reads as partial and undoes; a missing file is
    never taken for a partial one — it may have been imported: second review s33 H1); what became of
    the bits, for the error."""
    _shred(tmp, unlink=False)
    try:
        n = store.abort_export(export_id, why)
    except KeyStoreError as exc:
        return (f"giving its bits back failed too ({exc}): they stay reserved for export {export_id}, unusable but "
                "not lost, until `labqfl keys status` gives them back")
    tmp.unlink(missing_ok=True)
    return f"export {export_id} was undone: its {n} bits are back in the store, no file was left; the ticket is good"


def _write_and_finish(store: KeyStore, fd: int, tmp: Path, out: Path, data: bytearray, binding: ExportBinding,
                      digest: str) -> None:
    """Phase 3 of :func:`export_keys`: write ``data`` into the reserved ``tmp``, sync it, finish the
    export in the store (bits zeroed), then give the file its name.  A failure before the store's
    finish undoes the export; after it, the complete file stays at ``tmp`` (nothing is lost)."""
    eid = binding.export_id
    step = "writing it"
    try:
        _crash_point("begun")
        half = len(data) // 2
        os.lseek(fd, 0, os.SEEK_SET)
        view = memoryview(data)[:half]
        while view:
            view = view[os.write(fd, view):]
        _crash_point("half-written")
        _write_exact(fd, data)
        _crash_point("written")
        step = "recording it complete in the store"
        store.finish_export(eid, digest)
    except BaseException as exc:
        if _export_state(store, eid) == "written":  # the finish did commit: go on publishing
            pass
        else:
            why = f"{exc.strerror or exc}" + (" (disk full)" if exc.errno == errno.ENOSPC else "") \
                if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            fate = _undo_export(store, eid, tmp, f"export file {out}: {step} failed: {why}")
            if not isinstance(exc, Exception):
                raise
            raise KeyStoreError(f"export file {out}: {step} failed ({why}); {fate}") from None
    _crash_point("finished")
    try:
        _publish(tmp, out)
    except OSError as exc:
        raise KeyStoreError(f"export file {out}: export {eid} is complete in {tmp} (its bits have left key store "
                            f"{store.path}; nothing was lost) but could not be given its name ({exc.strerror or exc}): "
                            f"free {out} and run `labqfl keys status`, which renames it, or import {tmp} itself") from None
    _crash_point("published")
    try:
        store.export_published(eid)
    except KeyStoreError as exc:  # the file is in place; recovery marks it done later
        log.warning("export %s: written to %s, but recording that failed (%s)", eid, out, exc)


def _named_by_export(store: KeyStore, part: Path) -> bool:
    """Whether an export record of ``store`` names ``part`` as its temporary file (True if unknown)."""
    try:
        return any(e["part"] == os.path.abspath(part) for e in store.exports())
    except KeyStoreError:
        return True


def _export_state(store: KeyStore, export_id: str) -> str:
    try:
        return next((e["state"] for e in store.exports() if e["export_id"] == export_id), "")
    except KeyStoreError:
        return ""


def export_keys(store: KeyStore, pair: str, out: Path, *, ticket: ImportTicket, nbits: int | None = None,
                purpose: str | None = None, ticket_file: Path | None = None) -> dict[str, Any]:
    """Move ``nbits`` (default: all) free bits of ``pair`` (pool ``purpose``, or every pool) from
    ``store`` into a new export file ``out``, bound to the store that issued ``ticket``.  Returns a
    summary (no key material).

    Three phases (review s33 F1), so that neither a full disk nor a crash loses or doubles a bit:

    1. a hidden temporary file ``.NAME.*.part`` is noted in the store, then created in ``out``'s
       folder (:func:`_create_part`), locked (``flock``: a recovery in another process leaves it
       alone while this one runs) and given the disk space the file will need (an upper bound),
       before any bit moves: a full disk or an unwritable folder refuses the export with the store
       unchanged, and a crash leaves a zero-filled file that recovery removes (:func:`_recover_parts`);
    2. the store marks the bits ``exporting`` (not zeroed) and records the export with both file
       names and the SHA-256 of the bytes to be written (:meth:`KeyStore.begin_export`);
    3. the file is written into the reserved space and synced; the store marks the bits
       ``exported`` and zeroes them (:meth:`KeyStore.finish_export`); the file is linked/renamed
       to ``out`` (never overwriting) and the export recorded ``done``.  A write that fails undoes
       the export (file removed, bits free again, ticket good).

    A crash leaves an export ``exporting`` or ``written``; :func:`recover_exports`, run by every
    export, import and ``keys status`` on the store, finishes or undoes it.  Its notes are in the
    summary's ``recovered``.

    ``ticket_file``: the file ``ticket`` was read from; before any bit moves it records this store as the one
    exporting with it, and a file that names another store is refused (:func:`claim_ticket_file`)."""
    out = Path(out)
    a, sep, b = pair.partition("-")
    if sep and store.node and store.node not in (a, b):  # else the store's refusal would talk of "C1's copy"
        raise KeyStoreError(f"node {store.node} is not a member of pair {pair}: its store holds no key of that pair "
                            f"(export from the store of node {a} or {b})")
    recovered = recover_exports(store)
    if out.exists():
        raise DataFormatError(f"export file {out} already exists; refusing to overwrite it")
    size = _export_size_bound(store, pair, nbits, purpose)
    claimed = ticket_file is not None and claim_ticket_file(ticket_file, store, ticket)
    try:
        return {**_export_to(store, pair, out, ticket, nbits, purpose, size), "recovered": recovered}
    except BaseException:
        if claimed and ticket_file is not None and not _ticket_held(store, ticket):
            release_ticket_file(ticket_file, store)  # no export of ours holds it: the ticket may serve another store
        raise


def _ticket_held(store: KeyStore, ticket: ImportTicket) -> bool:
    """Whether an export of ``store`` not aborted uses ``ticket`` (True when the store cannot say)."""
    try:
        return any(e["ticket_id"] == ticket.ticket_id and e["state"] != "aborted" for e in store.exports())
    except KeyStoreError:
        return True


def _export_to(store: KeyStore, pair: str, out: Path, ticket: ImportTicket, nbits: int | None, purpose: str | None,
               size: int) -> dict[str, Any]:
    """:func:`export_keys` from the temporary file on: create and reserve it, then phases 2 and 3."""
    tmp, fd = _create_part(store, out)  # before any bit moves: a path that cannot be written loses nothing
    try:
        try:
            _preallocate(fd, size)
            _fsync_dir(tmp.parent)  # its name survives a power cut: after the store's finish it may be the export
        except OSError as exc:
            _discard_part(store, tmp, fd)
            raise DataFormatError(f"export file {out}: cannot reserve {size} bytes for it in {out.parent} "
                                  f"({exc.strerror or exc}); nothing was exported, the bits stay in the store") from None
        return _export_locked(store, pair, out, tmp, fd, ticket, nbits, purpose)
    finally:
        os.close(fd)


#: longest wait of an export for its store folder's lock (:func:`_parts_lock`), which another process holds
#: only while it creates a temporary file or its recovery checks leftover ones [s]
PARTS_LOCK_WAIT_S = 60.0


def _parts_lock(store: KeyStore, *, wait: bool) -> int | None:
    """An ``flock``-ed descriptor of the folder of ``store``'s file (resolved: one lock however the
    store is reached).  An export holds it from noting its temporary file in the store until the file
    is created and locked itself (:func:`_create_part`); a recovery holds it while it removes the
    temporary files left by a crash in between (:func:`_recover_parts`).  None: this file system
    cannot lock.  Raises BlockingIOError when another process holds it (at once, or after
    :data:`PARTS_LOCK_WAIT_S` when ``wait``)."""
    try:
        dfd = os.open(store.path.resolve().parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    deadline = time.monotonic() + (PARTS_LOCK_WAIT_S if wait else 0.0)
    while True:
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return dfd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(dfd)
                raise
            time.sleep(0.02)
        except OSError:
            os.close(dfd)
            return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` (not followed if a link) is the file open as ``fd``."""
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _create_part(store: KeyStore, out: Path) -> tuple[Path, int]:
    """Create the hidden temporary file ``.NAME.<random>.part`` of an export to ``out`` and lock it
    (``flock``); returns its path and descriptor.  Under the store folder's lock
    (:func:`_parts_lock`), the store notes the file (:meth:`KeyStore.note_export_part`) before it is
    created, so that a crash before :meth:`KeyStore.begin_export` names it in the export's record
    leaves a trace by which recovery removes it, and no recovery can see the note without the file
    or the file without its lock while this runs.  The file is checked to be still at its name once
    locked (a file removed meanwhile would take the export with it)."""
    try:
        lock = _parts_lock(store, wait=True)
    except BlockingIOError:
        raise KeyStoreError(f"key store {store.path}: another labqfl process has held the export lock of its folder for "
                            f"{PARTS_LOCK_WAIT_S:.0f} s; nothing was exported, try again") from None
    try:
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.part")
        store.note_export_part(os.path.abspath(tmp))
        try:
            fd = _create_new(tmp, "export file")
        except BaseException:
            _forget_part(store, tmp)  # nothing of ours at that name (an existing file is refused, not opened)
            raise
        try:
            _crash_point("created")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _same_file(fd, tmp):
                raise OSError(errno.ESTALE, "it was removed or replaced while it was being created")
        except BaseException as exc:
            _discard_part(store, tmp, fd)
            os.close(fd)
            if not isinstance(exc, OSError):
                raise
            raise DataFormatError(f"export file {out}: cannot create and lock its temporary file {tmp} "
                                  f"({exc.strerror or exc}); nothing was exported, the bits stay in the store") from None
        return tmp, fd
    finally:
        if lock is not None:
            os.close(lock)


def _forget_part(store: KeyStore, tmp: Path) -> None:
    try:
        store.drop_export_part(os.path.abspath(tmp))
    except KeyStoreError as exc:  # the note stays; a later recovery finds the file gone and drops it
        log.warning("export: could not forget temporary file %s in key store %s (%s)", tmp, store.path.name, exc)


def _discard_part(store: KeyStore, tmp: Path, fd: int) -> None:
    """Remove our temporary file ``tmp`` (open as ``fd``; no key in it yet: no export record names it)
    and forget it in the store.  A file at that name that is not ``fd``'s is left alone; one that
    cannot be removed stays noted, for a later recovery."""
    if _same_file(fd, tmp):
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("export: could not remove its temporary file %s (%s); it holds no key", tmp, exc)
            return
    _forget_part(store, tmp)


def _export_locked(store: KeyStore, pair: str, out: Path, tmp: Path, fd: int, ticket: ImportTicket,
                   nbits: int | None, purpose: str | None) -> dict[str, Any]:
    """Phases 2 and 3 of :func:`export_keys`, with ``tmp`` created, reserved and locked as ``fd``."""
    rendered: list[bytearray] = []

    def digest_of(binding: ExportBinding, segs: list[ExportedSegment]) -> str:
        for old in rendered:
            old[:] = bytes(len(old))
        rendered[:] = [_render(binding, segs, pair, ticket.secret)]
        return hashlib.sha256(rendered[0]).hexdigest()

    try:
        binding, segs = store.begin_export(pair, nbits, purpose, ticket=ticket, file=os.path.abspath(out),
                                           part=os.path.abspath(tmp), digest_of=digest_of)
    except BaseException:
        for old in rendered:
            old[:] = bytes(len(old))
        if not _named_by_export(store, tmp):  # a record naming it (begun, then interrupted): recovery's to undo
            _discard_part(store, tmp, fd)
        raise
    data = rendered[0]
    try:
        _write_and_finish(store, fd, tmp, out, data, binding, hashlib.sha256(data).hexdigest())
    finally:
        for s in segs:
            s.bits[:] = 0
        data[:] = bytes(len(data))
    n = int(sum(s.bits.size for s in segs))
    log.info("exported %d bits of pair %s from %s to %s (export %s, bound to node %s, store %s)", n, pair,
             store.path.name, out, binding.export_id, binding.target_node, binding.target_store)
    return {"export_id": binding.export_id, "pair": pair, "nbits": n, "segments": len(segs), "file": str(out),
            "source_node": binding.source_node, "source_store": binding.source_store,
            "target_node": binding.target_node, "target_store": binding.target_store, "ticket_id": binding.ticket_id}


# ---------------------------------------------------------------------- recovery of interrupted exports


class _InUse(Exception):
    """The export's temporary file is locked: the export is running in another process."""


def _lock_part(part: Path | None) -> int | None:
    """An open, ``flock``-ed descriptor of ``part``; None when it does not exist.  Raises
    :class:`_InUse` when another process holds it, OSError when it cannot be opened."""
    if part is None:
        return None
    try:
        fd = os.open(part, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _InUse() from None
    except OSError:
        os.close(fd)
        raise
    return fd


def _probe(path: Path, rec: dict[str, Any], bits: list[ExportedSegment] | None) -> tuple[str, str]:
    """Whether ``path`` holds this export, complete: ``("complete", digest)``; ``("missing", "")``;
    ``("other", "")`` (readable, not a complete copy); ``("unreadable", reason)`` (it, or its
    folder, cannot be read: an unmounted drive, permissions).  Complete: its SHA-256 is the one
    recorded when the export began (the MAC included: those are the bytes this store rendered),
    and, for an ``exporting`` export (``bits``), it parses as this export (ID, binding) and carries
    exactly the bits the store holds for it."""
    if not path.parent.is_dir():
        return "unreadable", f"its folder {path.parent} is not there (a drive not mounted?)"
    if not path.exists() and not path.is_symlink():
        return "missing", ""
    try:
        with open(path, "rb") as fh:
            raw = bytearray(fh.read(MAX_EXPORT_FILE_BYTES + 1))
    except FileNotFoundError:
        return "missing", ""
    except OSError as exc:
        return "unreadable", str(exc.strerror or exc)
    try:
        digest = hashlib.sha256(raw).hexdigest()
        if rec["digest"] and digest != rec["digest"]:
            return "other", ""
        if bits is None:
            return ("complete", digest) if rec["digest"] else ("other", "")
        try:
            exp = json.loads(raw.decode("utf-8"))
            header, segs = _parse_export(exp, path) if isinstance(exp, dict) else ({}, [])
        except (DataFormatError, ValueError):
            return "other", ""
    finally:
        raw[:] = bytes(len(raw))
    if not header:
        return "other", ""
    try:
        same = (header["export_id"] == rec["export_id"] and header["source_store"] == rec["source_store"]
                and header["ticket_id"] == rec["ticket_id"] and len(segs) == len(bits)
                and all((s.block_id, s.offset) == (t.block_id, t.offset) and np.array_equal(s.bits, t.bits)
                        for s, t in zip(segs, bits, strict=True)))
    finally:
        for s in segs:
            s.bits[:] = 0
    if isinstance(exp, dict):
        exp.clear()
    return ("complete", digest) if same else ("other", "")


def _recover_exporting(store: KeyStore, rec: dict[str, Any], out: Path, part: Path | None) -> dict[str, str]:
    """An export interrupted before the store's finish: finish it if a complete copy is at ``out``
    or ``part``; undo it if there is none and nothing else is at ``out``; else hold it."""
    eid = rec["export_id"]
    bits = store.exporting_bits(eid)
    try:
        at_out = _probe(out, rec, bits)
        at_part = _probe(part, rec, bits) if part is not None else ("missing", "")
    finally:
        for s in bits:
            s.bits[:] = 0
    if "complete" in (at_out[0], at_part[0]):
        store.finish_export(eid, at_out[1] if at_out[0] == "complete" else at_part[1])
        return _recover_written(store, {**rec, "state": "written"}, out, part, done_here=True)
    if at_out[0] == "missing" and at_part[0] == "other" and part is not None:
        # ours (its random name, made and synced before any bit moved) and shown partial: zeroed, then the
        # bits given back, then removed (a crash in between leaves the zeroed file: undone again next time)
        _shred(part, unlink=False)
        n = store.abort_export(eid, "interrupted before its file was complete (recovery)")
        part.unlink(missing_ok=True)
        return {"action": "aborted", "message": f"export {eid} was interrupted before its file {out} was complete: "
                f"undone, its {n} bits are free in the store again and the partial file was removed; export again "
                "(the same ticket is good)"}
    if at_out[0] == "missing" and at_part[0] == "missing":
        # a crash always leaves the temporary file: with neither file there, a complete copy may have been
        # imported (an import destroys its file) or moved — undoing would put the same bits in two stores
        # (second review s33 H1: the complete .part imported at the target, then recovery freed the bits)
        return {"action": "held", "message": f"export {eid} was interrupted, and neither its file {out} nor its "
                f"temporary file {part} is there: nothing was touched; its {rec['nbits']} bits stay reserved for it "
                "(unusable, not lost). If either file was imported into a store or copied, leave it so; if you are "
                f"sure no copy exists, give the bits back with `labqfl keys abort-export --node {store.node} {eid}`"}
    what = (f"{out} holds another file" if at_out[0] == "other"
            else f"{out} cannot be read ({at_out[1]})" if at_out[0] == "unreadable"
            else f"its temporary file {part} cannot be read ({at_part[1]})")
    return {"action": "held", "message": f"export {eid} was interrupted, and {what}: nothing was touched; its "
            f"{rec['nbits']} bits stay reserved for it (unusable, not lost). Make the file readable, or move the "
            f"other file away, and run `labqfl keys status`; if you are sure no copy of the export exists, give the "
            f"bits back with `labqfl keys abort-export --node {store.node} {eid}`"}


def _recover_written(store: KeyStore, rec: dict[str, Any], out: Path, part: Path | None, *,
                     done_here: bool = False) -> dict[str, str]:
    """An export whose bits left the store (its file complete) but whose file may lack its name."""
    eid = rec["export_id"]
    at_out = _probe(out, rec, None)
    at_part = _probe(part, rec, None) if part is not None else ("missing", "")
    finished = f"export {eid} was interrupted after its file was complete; finished: " if done_here else         f"export {eid}: "
    if at_out[0] == "complete":
        if part is not None and at_part[0] == "complete":
            part.unlink(missing_ok=True)  # the same file under its temporary name
        store.export_published(eid)
        return {"action": "finished", "message": finished + f"its bits are in {out}"}
    if at_part[0] == "complete" and at_out[0] == "missing" and part is not None:
        _publish(part, out)
        store.export_published(eid)
        return {"action": "finished", "message": finished + f"its bits are in {out}"}
    if at_part[0] == "complete":
        return {"action": "held", "message": finished + f"complete in {part}, but {out} holds another file or "
                "cannot be written: move it away and run `labqfl keys status`, or import the temporary file itself"}
    if at_out[0] == "missing" and at_part[0] == "missing":
        store.export_published(eid)
        return {"action": "finished", "message": finished + f"its file is no longer at {out} (moved?); its bits "
                "left this store when the file was complete"}
    return {"action": "held", "message": finished + f"its file is not found complete at {out} nor {part} "
            f"({at_out[1] or at_part[1] or 'another file is there'}); its bits left this store when the file was "
            "complete: find the file and run `labqfl keys status`"}


def recover_exports(store: KeyStore) -> list[dict[str, str]]:
    """Finish or undo the exports of ``store`` that a crash interrupted; one note per export
    handled, ``{"export_id", "action": finished|aborted|held, "message"}``, also logged; then
    remove the empty temporary files of exports a crash stopped before they began in the store
    (:func:`_recover_parts`: ``removed``, or ``held`` when left, with ``export_id`` "").

    The rule, for an export still ``exporting`` (its bits not zeroed): if its file ``out`` or
    its temporary file holds it complete (the SHA-256 recorded when it began, the same export
    ID and binding, exactly the bits the store holds for it), the export is finished (bits
    zeroed) and the file given its name; if the temporary file (ours) is there and shown partial
    and nothing is at ``out``, it is removed and the export undone (bits free again); if neither
    file is there (a complete copy may have been imported, which destroys its file, or moved:
    second review s33 H1), another or an unreadable file is at ``out``, or the temporary file or
    a folder cannot be read, nothing is touched and the bits stay reserved (unusable, not lost)
    until that is resolved or ``labqfl keys abort-export``.  A ``written`` export (bits zeroed)
    gets its name.  An export whose temporary file another process holds locked is running,
    and left alone.  The rule assumes that nobody copied the hidden temporary file elsewhere
    before recovery ran: the copy of an undone export would hold bits that are free again."""
    notes: list[dict[str, str]] = []
    for rec in store.pending_exports():
        out, part = Path(rec["file"]), (Path(rec["part"]) if rec["part"] else None)
        if not rec["file"]:
            continue  # begun by a caller of the store's own API, not by export_keys: nothing to look at
        fd: int | None = None
        try:
            fd = _lock_part(part)
        except _InUse:
            continue
        except OSError as exc:
            note = {"action": "held", "message": f"export {rec['export_id']}: its temporary file {part} "
                              f"cannot be opened ({exc.strerror or exc}); nothing was touched, its bits stay "
                              "reserved for it (unusable, not lost)"}
        else:
            try:
                # read again under the lock: another recovery may have finished it meanwhile
                now = [e for e in store.pending_exports() if e["export_id"] == rec["export_id"]]
                if not now:
                    continue
                note = (_recover_exporting if now[0]["state"] == "exporting" else _recover_written)(store, now[0], out,
                                                                                                     part)
            except (KeyStoreError, OSError) as exc:
                note = {"action": "held", "message": f"export {rec['export_id']}: recovering it failed ({exc}); "
                        "nothing was lost, it is tried again by the next export, import or keys status"}
        finally:
            if fd is not None:
                os.close(fd)
        notes.append({"export_id": rec["export_id"], **note})
        (log.info if note["action"] == "finished" else log.warning)("key store %s: %s", store.path.name,
                                                                     note["message"])
    try:
        parts = _recover_parts(store)
    except (KeyStoreError, OSError) as exc:
        parts = [{"export_id": "", "action": "held", "message": f"removing leftover temporary export files failed "
                  f"({exc}); they hold no key, it is tried again by the next export, import or keys status"}]
    for note in parts:
        (log.info if note["action"] == "removed" else log.warning)("key store %s: %s", store.path.name, note["message"])
    return notes + parts


def _all_zero(fd: int) -> bool:
    """Whether every byte of the file open as ``fd`` is zero (read from its start, 1 MiB at a time)."""
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        if chunk.count(0) != len(chunk):
            return False
    return True


def _recover_parts(store: KeyStore) -> list[dict[str, str]]:
    """Remove the temporary files that exports of ``store`` created but never recorded: a crash
    after :func:`_create_part` and before :meth:`KeyStore.begin_export` leaves an empty or
    zero-filled hidden ``.NAME.<random>.part`` (no bit had moved: nothing to undo in the store).
    One note per file removed (``removed``) or left (``held``).  A file is removed only when all of
    these hold, each for a reason:

    * the store noted it before creating it (:meth:`KeyStore.note_export_part`) and no export
      record names it: it is this store's, and no export of it ever began (a record means bits
      moved, and :func:`recover_exports`'s rule for that export decides).  Files are never looked
      for by their name pattern: another store exporting into the same folder has files of the
      same pattern whose export this store cannot see;
    * the store folder's lock is held (:func:`_parts_lock`; else nothing is done this time): an
      export of this store holds it from noting its file until the file exists and is locked, so a
      note whose file is missing is a creation that died (the note is dropped) and not one about to
      happen, and the file cannot be taken before its own export has locked it;
    * the file's own lock is free (``flock``): an export that is running holds it throughout; and,
      under that lock, the note is still there and still no record names the file (the export may
      have begun just before it ended);
    * it is a regular file, still the one opened (not followed through a link, not replaced), and
      every byte of it is zero, read here: no key was ever written into it.  A file with any other
      byte is not one this store made (its content is written only after its export is recorded):
      it is left in place, reported once, and forgotten, whatever it holds;
    * it can be removed: on a read-only folder it is left, reported, and tried again next time.

    A note whose folder is not there (a drive not mounted) is kept for a later recovery."""
    if not store.export_parts():
        return []
    try:
        lock = _parts_lock(store, wait=False)
    except BlockingIOError:
        return []  # an export of this store is creating its file now: next time
    if lock is None:
        log.warning("key store %s: its folder cannot be locked; leftover temporary export files are not removed",
                    store.path.name)
        return []
    try:
        notes = []
        for key in store.export_parts():
            note = _recover_part(store, Path(key))
            if note is not None:
                notes.append({"export_id": "", "file": key, **note})
        return notes
    finally:
        os.close(lock)


def _recover_part(store: KeyStore, part: Path) -> dict[str, str] | None:
    """One temporary file noted by :meth:`KeyStore.note_export_part` (see :func:`_recover_parts`)."""
    if _named_by_export(store, part):
        store.drop_export_part(str(part))  # its export's record covers it (a note kept by an interrupted drop)
        return None
    if not part.parent.is_dir():
        return None  # its drive is not mounted: the file may be there later
    try:
        fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        store.drop_export_part(str(part))  # never created, or removed by an earlier recovery
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link: this store never made one
            store.drop_export_part(str(part))
            return {"action": "held", "message": f"the temporary export file {part} (no export of this store was "
                    "recorded for it) is a link, which this store never made: left in place, untouched, and forgotten"}
        return {"action": "held", "message": f"the temporary export file {part} (no export of this store was recorded "
                f"for it: no key moved) cannot be opened ({exc.strerror or exc}): left in place; the next export, "
                "import or keys status tries again"}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: its export is running
            return None
        if str(part) not in store.export_parts() or _named_by_export(store, part):
            return None  # its export began meanwhile, or another recovery handled it
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _same_file(fd, part) or not _all_zero(fd):
            store.drop_export_part(str(part))
            return {"action": "held", "message": f"the temporary export file {part} was noted by this store, but no "
                    "export of it was recorded and it holds data this store never wrote (not all zero bytes): it may "
                    "be another store's export or another file; left in place, untouched, and forgotten here"}
        try:
            part.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            return {"action": "held", "message": f"the temporary file {part} of an export that was interrupted before "
                    f"any key moved holds no key (all zero bytes) but cannot be removed ({exc.strerror or exc}; a "
                    "read-only folder?); remove it, or make the folder writable: the next export, import or keys "
                    "status removes it"}
        _fsync_dir(part.parent)
        store.drop_export_part(str(part))
        return {"action": "removed", "message": f"the temporary file {part} of an export that was interrupted before any "
                f"key moved was removed ({st.st_size} bytes, all zero: no key was in it; the store was unchanged)"}
    finally:
        os.close(fd)


def abort_pending_export(store: KeyStore, export_id: str) -> dict[str, Any]:
    """Give back the bits of an export still ``exporting`` that recovery holds (another or an
    unreadable file at its path): the user says no copy of it exists.  Its temporary file (ours)
    is removed if it is there; the file at its name is never touched.  Refused for an export that
    is running, or whose bits already left the store."""
    rec = next((e for e in store.exports() if e["export_id"] == export_id), None)
    if rec is None:
        raise KeyStoreError(f"key store {store.path}: no export {export_id} was made here")
    if rec["state"] != "exporting":
        left = (f": its bits left this store for its file {rec['file'] or '(no name recorded)'} and cannot be taken "
                "back here, since its target may have imported them and a source cannot know; nothing was changed. "
                "If the target refused that file because its ticket was already used (one ticket used by two source "
                "stores, review s38 K2), its bits are lost: destroy the file (overwrite it with zeros and delete it)")
        raise KeyStoreError(f"key store {store.path}: export {export_id} is {rec['state']}"
                            + ("" if rec["state"] == "aborted" else left))
    part = Path(rec["part"]) if rec["part"] else None
    try:
        fd = _lock_part(part)
    except _InUse:
        raise KeyStoreError(f"export {export_id} is running in another process; nothing was changed") from None
    except OSError:
        fd = None
    try:
        if part is not None and fd is not None:
            _shred(part)
        n = store.abort_export(export_id, "aborted by the user (keys abort-export)")
    finally:
        if fd is not None:
            os.close(fd)
    return {"export_id": export_id, "freed_bits": n, "store": str(store.path)}


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
    recovered = recover_exports(store)
    exp = source if isinstance(source, ExportFile) else load_export(Path(source))
    doc, header, segs = exp.doc, exp.header, exp.segments
    binding = ExportBinding(*(str(header[f]) for f in _BINDING_FIELDS))
    tag = str(doc[MAC_FIELD])

    def authenticate(secret: bytes) -> bool:
        return hmac.compare_digest(_mac(secret, doc), tag)

    try:
        n = store.import_segments(binding, segs, authenticate=authenticate, file=os.path.abspath(exp.path),
                                  file_tag=tag)
    finally:
        exp.wipe()
    return {**header, "imported_bits": n, "store": str(store.path), "recovered": recovered}


def already_imported(store: KeyStore, exp: ExportFile) -> dict[str, Any] | None:
    """The import record of the export in file ``exp`` (:func:`load_export`) if ``store`` imported that very
    file: the export ID, bound to this node and store, from the same source store with the same ticket and size,
    its bits equal to every bit of it this store still holds (:meth:`KeyStore.compare_held_bits`), and the same
    MAC tag as the file imported, or, for an import made before the tag was kept, every bit of it still held
    here (review s38 K3: header fields alone took a corrupted or edited copy, or another export's bits under a
    copied header, for the imported file, and destroyed it). Such a file
    can never be imported anywhere (this store has its bits, every other one is not its target), so destroying
    it loses nothing (review s38 F3: an import killed after its commit left the file, key in clear live here).
    None for an export this store did not import. Raises :class:`DataFormatError`, the file left as it is, when
    the header names an import here but the file cannot be shown to be the file imported."""
    header = exp.header
    rec = store.imported(str(header.get("export_id", "")))
    if rec is None or header.get("target_store") != store.store_id or header.get("target_node") != (store.node or ""):
        return None
    same = (rec["source_store"], rec["ticket_id"], int(rec["nbits"])) == (
        header.get("source_store"), header.get("ticket_id"), int(header.get("nbits", -1)))
    if not same:
        return None
    tag, nbits = exp.doc.get(MAC_FIELD), int(rec["nbits"])
    compared, differ, why = store.compare_held_bits(exp.segments)
    where = (f"export file {exp.path}: export {header['export_id']} was imported into key store {store.path} at "
             f"{rec['imported']}")
    if why is not None or differ:
        raise DataFormatError(f"{where}, but this file is not the file imported: "
                              + (why or f"{differ} of its bits differ from the {compared} this store still holds")
                              + " (a corrupted or edited copy, or another export's bits); nothing was imported and "
                              "the file is left as it is")
    if not rec.get("file_tag") and compared < nbits:
        raise DataFormatError(f"{where}, before labqfl kept the MAC of the file imported, and {nbits - compared} of "
                              f"its {nbits} bits are used up here, so this file cannot be shown to be that file; "
                              "nothing was imported and the file is left as it is. If it is the file you imported "
                              "(its key is live in, or was used by, this store), destroy it (overwrite it with zeros "
                              "and delete it); if not, it is not that export")
    if rec.get("file_tag") and not (isinstance(tag, str) and hmac.compare_digest(tag, str(rec["file_tag"]))):
        raise DataFormatError(f"{where}, but this file's MAC ({MAC_FIELD}) is not the one of the file imported: "
                              "it is not that file (a corrupted or edited copy); nothing was imported and the file "
                              "is left as it is")
    return {k: v for k, v in rec.items() if k != "file_tag"}


def _partly_overwritten(path: Path) -> bool:
    """Whether ``path`` looks like an export file the import's shred stopped in (review s38 K4): zero bytes
    written over part of it, some of it not (a ``"bits"`` field may still hold key in clear). Reads the bytes,
    never shows them."""
    try:
        raw = path.read_bytes()
    except OSError:
        return False
    return b"\0" in raw and raw.count(0) < len(raw)


def leftover_import_files(store: KeyStore) -> list[dict[str, str]]:
    """The export files ``store`` imported that are still on disk (:meth:`KeyStore.import_files`): ``{"file",
    "export_id"}`` each; key bits in clear that are live in the store. A noted file that is gone, or now holds
    something else, is forgotten; one that cannot be read is reported (``"unreadable"``: the reason), and so is
    one the shred stopped in, partly zeroed (``"partly_overwritten"``: review s38 K4, it was forgotten)."""
    out = []
    for path, eid in store.import_files():
        p = Path(path)
        if not p.exists():
            store.drop_import_file(path)
            continue
        try:
            exp = load_export(p)
        except DataFormatError as exc:
            if "cannot read it" in str(exc):
                out.append({"file": path, "export_id": eid, "unreadable": str(exc)})
            elif _partly_overwritten(p):
                out.append({"file": path, "export_id": eid, "partly_overwritten": "yes"})
            else:
                store.drop_import_file(path)  # replaced by something that is no export, or all zeros
            continue
        exp.wipe()
        if exp.header["export_id"] != eid:
            store.drop_import_file(path)
            continue
        out.append({"file": path, "export_id": eid})
    return out


def noted_import(store: KeyStore, path: Path) -> dict[str, Any] | None:
    """The import record of the export ``store`` imported from the file at ``path`` (its note, not yet
    dropped: the file was never destroyed), with ``store``; None if this store notes no import of that file.
    For a file that no longer reads as an export (review s38 K4: an import stopped while it overwrote it)."""
    file = os.path.abspath(path)
    for noted, eid in store.import_files():
        if noted == file:
            rec = store.imported(eid) or {"export_id": eid}
            return {**{k: v for k, v in rec.items() if k != "file_tag"}, "store": str(store.path)}
    return None


__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "TICKET_FORMAT", "TICKET_USED_BY", "ExportFile", "abort_pending_export",
           "already_imported", "claim_ticket_file", "export_keys", "leftover_import_files", "release_ticket_file",
           "import_keys", "load_export", "noted_import", "read_export", "read_ticket", "recover_exports", "write_ticket"]
