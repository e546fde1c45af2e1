"""A key store whose pages are corrupt was refused by ``keys status`` over three stderr lines: SQLite's
integrity_check rows hold newlines ("*** in database main ***\\nPage 33 is never used"), embedded as they came
(review s36 input F11). The refusal is one line now, and the file is left as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import open_node_stores


def test_a_corrupt_store_is_refused_in_one_line(tmp_path: Path, kh) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    stores = open_node_stores(["C2", "C3"], data)
    kh.fill_pair(stores, "C2-C3", 4, 1 << 16, seed=1)
    for st in stores.values():
        st.close()
    p = data / "keystore" / "C3.sqlite"
    for side in ("-wal", "-shm"):
        Path(str(p) + side).unlink(missing_ok=True)
    b = bytearray(p.read_bytes())
    page = int.from_bytes(b[16:18], "big")
    # every b-tree page claims 200 fragmented free bytes (header byte 7, sqlite.org/fileformat.html §1.6), which
    # quick_check reports in one row of several lines ("*** in database main ***\nPage 9: free space corruption")
    for off in range(page, len(b), page):
        if b[off] in (2, 5, 10, 13):
            b[off + 7] = 200
    p.write_bytes(bytes(b))
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    r = CliRunner().invoke(app, ["keys", "status", "--node", "C3", "--data-dir", str(data)])
    assert r.exit_code == 1, r.output
    tail = r.output[r.output.index("error:"):]
    assert tail.count("\n") == 1, tail
    assert f"key store {p}:" in tail, tail
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
