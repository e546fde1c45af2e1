"""Review s38 K3: `keys import` of an export this store already imported exits 0 and destroys the file (F3), and
decided that the file was the one imported from header fields only. A copy whose key bits were changed, or another
export's bits under a copied header, was overwritten and deleted as "already imported". The import now keeps the
file's MAC tag (an HMAC under the ticket secret, erased at import: nothing about the bits) and the shortcut is
taken only for a file with that tag; any other file is refused and left as it is, saying why."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR = "C1-C2"
runner = CliRunner()


def _keys(*args: str) -> object:
    return runner.invoke(app, ["keys", *args], env={"COLUMNS": "250"})


def _imported_with_a_copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An export imported into ``tgt`` (file destroyed), and ``copy``: the file as it was before the import."""
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    bits = np.random.default_rng(7).integers(0, 2, 20000, dtype=np.uint8)
    with KeyStore.for_node("C1", src) as a, KeyStore.for_node("C2", src) as b:
        bid = a.add_block(PAIR, bits, run_id="r")
        b.add_block(PAIR, bits, block_id=bid, run_id="r")
    ticket, x, copy = tmp_path / "ticket.json", tmp_path / "x.json", tmp_path / "copy.json"
    assert _keys("ticket", "--node", "C2", "--data-dir", str(tgt), "--out", str(ticket)).exit_code == 0
    res = _keys("export", "--node", "C2", "--pair", PAIR, "--bits", "4096", "--ticket", str(ticket), "--out", str(x),
                "--data-dir", str(src))
    assert res.exit_code == 0, res.output
    copy.write_bytes(x.read_bytes())
    res = _keys("import", str(x), "--data-dir", str(tgt))
    assert res.exit_code == 0 and not x.exists(), res.output
    return tgt, copy, tmp_path / "edited.json"


def test_a_copy_with_other_bits_is_refused_and_left(tmp_path: Path) -> None:
    tgt, copy, edited = _imported_with_a_copy(tmp_path)
    doc = json.loads(copy.read_text())
    raw = bytearray(base64.b64decode(doc["segments"][0]["bits"]))
    raw[0] ^= 0xFF  # other bits under the imported export's header
    doc["segments"][0]["bits"] = base64.b64encode(bytes(raw)).decode()
    edited.write_text(json.dumps(doc))
    res = _keys("import", str(edited), "--data-dir", str(tgt))
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and edited.exists(), text
    assert "is not the file imported: 8 of its bits differ" in text and "left as it is" in text, text
    doc = json.loads(copy.read_text())
    doc["hmac_sha256"] = "0" * 64  # the imported bits under another MAC: not the file imported either
    edited.write_text(json.dumps(doc))
    res = _keys("import", str(edited), "--data-dir", str(tgt))
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and edited.exists() and "MAC (hmac_sha256) is not the one" in text, text
    # the unchanged copy is the file imported: destroyed, nothing imported again
    res = _keys("import", str(copy), "--data-dir", str(tgt), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["export_file"] == "destroyed" and not copy.exists(), res.output
    assert "file_tag" not in res.stdout  # the tag stays in the store
    with KeyStore.for_node("C2", tgt) as st:
        assert st.accounting()[PAIR]["available"] == {"general": 4096}


def test_an_import_that_kept_no_tag_is_checked_against_the_bits_held(tmp_path: Path) -> None:
    """An import made before the tag was kept: a file whose every bit this store still holds, equal, is the file
    imported (destroyed); once part of the bits is used up here, it cannot be shown to be, so it is left and the
    message says what to do if it is."""
    tgt, copy, _ = _imported_with_a_copy(tmp_path)
    spare = tmp_path / "spare.json"
    spare.write_bytes(copy.read_bytes())
    with KeyStore.for_node("C2", tgt) as st:
        path = st.path
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE key LIKE 'import_mac:%'")
    res = _keys("import", str(copy), "--data-dir", str(tgt))
    assert res.exit_code == 0 and not copy.exists(), res.output
    with KeyStore.for_node("C2", tgt) as st:
        st.take(PAIR, 100, "general")  # used up: zeroed here
    res = _keys("import", str(spare), "--data-dir", str(tgt))
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and spare.exists(), text
    assert "100 of its 4096 bits are used up here" in text and "cannot be shown to be that file" in text, text
    assert "destroy it" in text, text
