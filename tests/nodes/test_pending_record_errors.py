"""A client node's ``pending/*.json`` records (blocks Cj accepted, waiting for Ci's commit): a corrupt file was
refused with the bare JSONDecodeError text (``pending/list: Expecting value: line 1 …``, no file name) and a record
without ``pair`` raised a KeyError that the pairctl handler does not catch (review s36 input F12). Each is now one
LabqflError naming the file and what was expected, never the record's content (it holds key bits)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from labqfl.errors import LabqflError
from labqfl.nodes.client import ClientNode


def _node(tmp_path: Path) -> SimpleNamespace:
    ns = SimpleNamespace(pending=tmp_path / "pending")
    ns.pending.mkdir()
    ns._pending_path = lambda block_id: ClientNode._pending_path(ns, block_id)  # type: ignore[arg-type]
    return ns


def _records(ns: SimpleNamespace, pair: str) -> list[tuple[Path, dict]]:
    return ClientNode._pending_records(ns, pair)  # type: ignore[arg-type]


def test_a_good_record_reads(tmp_path: Path) -> None:
    ns = _node(tmp_path)
    ClientNode.write_pending(ns, "C1-C2", "blk-1", np.ones(16, np.uint8), 0, {"run_id": "r"})  # type: ignore[arg-type]
    [(f, rec)] = _records(ns, "C1-C2")
    assert rec["block_id"] == "blk-1" and rec["nbits"] == 16 and f.parent == ns.pending
    assert _records(ns, "C2-C3") == []


@pytest.mark.parametrize(("body", "expect"), [
    ("{\"pair\": \"C1-C2\", \"bits_hex\": \"ffff", "not valid JSON (JSONDecodeError"),
    ("", "not valid JSON"),
    ("[1, 2]", "missing or mistyped (not an object)"),
    (json.dumps({"block_id": "b", "nbits": 16, "refill": 0, "bits_hex": "ffff", "meta": {}}),
     "missing or mistyped pair"),
    (json.dumps({"pair": "C1-C2", "block_id": "b", "nbits": "16", "refill": 0, "bits_hex": "ffff", "meta": {}}),
     "missing or mistyped nbits"),
])
def test_a_bad_record_is_one_error_naming_the_file(tmp_path: Path, body: str, expect: str) -> None:
    ns = _node(tmp_path)
    f = ns.pending / "0123abcd.json"
    f.write_text(body)
    with pytest.raises(LabqflError) as ei:
        _records(ns, "C1-C2")
    msg = str(ei.value)
    assert msg.startswith(f"pending block record {f}: {expect}"), msg
    assert "ffff" not in msg and "\n" not in msg  # never the key bits


def test_a_pending_record_is_durable_before_write_pending_returns(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Cj's pending copy of an accepted block survives a crash right after ``write_pending`` returns: the file is
    fsynced, renamed into place, then the pending folder is fsynced (the rename lives in the folder's entry).
    Before (session 39), the folder was never synced; the file is 0600 (it holds key bits)."""
    import os
    import stat

    ns = _node(tmp_path)
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("folder" if os.path.samestat(os.fstat(fd), os.stat(ns.pending)) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ClientNode.write_pending(ns, "C1-C2", "blk-1", np.ones(16, np.uint8), 0, {"run_id": "r"})  # type: ignore[arg-type]
    monkeypatch.undo()
    assert events == ["file", "folder"]
    [(f, _)] = _records(ns, "C1-C2")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert [p.name for p in ns.pending.iterdir()] == [f.name]  # no temporary left beside it


def test_temporaries_a_crash_left_are_shredded_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node killed between writing a pending block's temporary file and its rename left the bits in it (0600);
    the next start overwrites each such file with zeros and deletes it (review s40 keysrev F2: nothing removed
    them, before or after labqfl.durable). Pending records themselves are kept."""
    import os

    ns = _node(tmp_path)
    ns.name = "C2"
    ClientNode.write_pending(ns, "C1-C2", "blk-1", np.ones(16, np.uint8), 0, {"run_id": "r"})  # type: ignore[arg-type]
    kept = sorted(p.name for p in ns.pending.iterdir())
    left = [ns.pending / f".{kept[0]}.4242.deadbeef.tmp", ns.pending / "0123abcd.tmp"]  # new and old naming
    for p in left:
        p.write_text('{"bits_hex": "ffff"}')
    zeroed: list[bytes] = []
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self in left:
            zeroed.append(self.read_bytes())
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    ClientNode._shred_pending_temporaries(ns)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert sorted(p.name for p in ns.pending.iterdir()) == kept
    assert len(zeroed) == 2 and all(z == b"\0" * len(z) and z for z in zeroed)
    assert os.path.exists(ns.pending / kept[0])
