"""Move key material between machines: ``labqfl keys export`` / ``labqfl keys import``.

Export file (JSON, UTF-8, written with permissions 0600, never overwriting a file)::

    {"format": "labqfl-key-export", "version": 1,
     "export_id": "<uuid4>", "created": "<ISO 8601 UTC>", "source_node": "C2",
     "pair": "C1-C2", "nbits": 4096,
     "segments": [{"block_id": "<uuid>", "block_nbits": 100000, "offset": 0, "length": 4096,
                   "purpose": "general", "run_id": "...", "meta": {...},
                   "bits": "<base64 of the segment's bits packed MSB-first, zero-padded>"}],
     "sha256": "<hex SHA-256 of the canonical JSON of every other field>"}

The canonical JSON is ``json.dumps(doc_without_sha256, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)``.  The digest detects corruption and truncation; it is not a signature
(anyone who can write the file can recompute it) and the file is key material in clear: carry it
over a trusted channel and delete it after import.

Semantics: export *moves* bits.  The source store marks them ``exported`` and overwrites them in
the same transaction, before the file is written (a crash in between loses those bits, never
duplicates them).  Import adds them to the target store as free bits with their original block
IDs and offsets, so the partner node's refs still name the same bits; one ``export_id`` is
accepted once per store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.errors import DataFormatError
from labqfl.keystore.store import ExportedSegment, KeyStore
from labqfl.log import get_logger

log = get_logger(__name__)

EXPORT_FORMAT = "labqfl-key-export"
EXPORT_VERSION = 1


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "sha256"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def export_keys(store: KeyStore, pair: str, out: Path, *, nbits: int | None = None,
                purpose: str | None = None) -> dict[str, Any]:
    """Move ``nbits`` (default: all) free bits of ``pair`` (pool ``purpose``, or every pool) from
    ``store`` into a new export file ``out``.  Returns a summary (no key material)."""
    out = Path(out)
    if out.exists():
        raise DataFormatError(f"export file {out} already exists; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    segs = store.export_segments(pair, nbits, purpose)
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "export_id": str(uuid.uuid4()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "source_node": store.node or "",
        "pair": pair, "nbits": int(sum(s.bits.size for s in segs)),
        "segments": [{"block_id": s.block_id, "block_nbits": s.block_nbits, "offset": s.offset,
                      "length": int(s.bits.size), "purpose": s.purpose, "run_id": s.run_id, "meta": s.meta,
                      "bits": base64.b64encode(np.packbits(s.bits).tobytes()).decode("ascii")} for s in segs],
    }
    doc["sha256"] = hashlib.sha256(_canonical(doc)).hexdigest()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    for s in segs:
        s.bits[:] = 0
    log.info("exported %d bits of pair %s from %s to %s (export %s)", doc["nbits"], pair, store.path.name, out,
             doc["export_id"])
    return {"export_id": doc["export_id"], "pair": pair, "nbits": doc["nbits"], "segments": len(segs),
            "file": str(out), "source_node": doc["source_node"]}


def read_export(path: Path) -> tuple[dict[str, Any], list[ExportedSegment]]:
    """Parse and verify an export file; returns (header without segments, segments)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"export file {path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise DataFormatError(f"export file {path}: not a labqfl key export (format {EXPORT_FORMAT!r} expected)")
    if doc.get("version") != EXPORT_VERSION:
        raise DataFormatError(f"export file {path}: version {doc.get('version')!r}, this labqfl reads {EXPORT_VERSION}")
    digest = hashlib.sha256(_canonical(doc)).hexdigest()
    if not isinstance(doc.get("sha256"), str) or not hmac.compare_digest(digest, doc["sha256"]):
        raise DataFormatError(f"export file {path}: SHA-256 mismatch (corrupt or modified); nothing imported")
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
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"export file {path}: malformed segment ({exc})") from None
    header = {k: doc[k] for k in ("export_id", "created", "source_node", "pair", "nbits")}
    return header, segs


def import_keys(store: KeyStore, path: Path) -> dict[str, Any]:
    """Verify export file ``path`` and add its bits to ``store`` (once per export ID)."""
    header, segs = read_export(path)
    try:
        n = store.import_segments(str(header["export_id"]), segs)
    finally:
        for s in segs:
            s.bits[:] = 0
    return {**header, "imported_bits": n, "target_node": store.node or "", "store": str(store.path)}
