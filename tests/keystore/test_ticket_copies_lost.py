"""Review s38 K2: two copies of one ticket file used by two source stores: both export, the target imports the
first and refuses the second, whose key bits are then lost (only the target knows the ticket is spent). The
refusal says the bits are lost and to destroy the file, and the second source's abort-export no longer answers
only "done": it says the bits left for the file, cannot be taken back, and what to do if the target refused it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR = "C1-C2"
runner = CliRunner()


def _fill(data: Path, seed: int) -> None:
    bits = np.random.default_rng(seed).integers(0, 2, 20000, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as a, KeyStore.for_node("C2", data) as b:
        bid = a.add_block(PAIR, bits, run_id="r")
        b.add_block(PAIR, bits, block_id=bid, run_id="r")


def _keys(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["keys", *args], env={"COLUMNS": "250"})
    return res.exit_code, " ".join(res.output.split())


def test_the_second_copy_of_a_ticket_says_its_key_is_lost(tmp_path: Path) -> None:
    src_a, src_c, tgt = tmp_path / "srcA", tmp_path / "srcC", tmp_path / "tgt"
    _fill(src_a, 1)
    _fill(src_c, 2)
    ticket, copy = tmp_path / "t.json", tmp_path / "t_copy.json"
    assert _keys("ticket", "--node", "C2", "--data-dir", str(tgt), "--out", str(ticket))[0] == 0
    shutil.copy2(ticket, copy)  # made before its first use: the used_by mark cannot reach it
    common = ["--node", "C2", "--pair", PAIR, "--bits", "256"]
    xa, xc = tmp_path / "a.json", tmp_path / "c.json"
    assert _keys("export", *common, "--ticket", str(ticket), "--out", str(xa), "--data-dir", str(src_a))[0] == 0
    assert _keys("export", *common, "--ticket", str(copy), "--out", str(xc), "--data-dir", str(src_c))[0] == 0
    assert _keys("import", str(xa), "--data-dir", str(tgt))[0] == 0

    rc, text = _keys("import", str(xc), "--data-dir", str(tgt))
    assert rc == 1 and xc.exists(), text
    assert "was already used" in text and "key bits are lost" in text and "destroy the file" in text, text
    with KeyStore.for_node("C2", src_c) as st:
        eid = st.exports()[0]["export_id"]
    rc, text = _keys("abort-export", eid, "--node", "C2", "--data-dir", str(src_c))
    assert rc == 1, text
    assert f"left this store for its file {xc}" in text and "cannot be taken back" in text, text
    assert "its bits are lost: destroy the file" in text and "nothing was changed" in text, text


def test_a_mark_left_by_a_killed_export_is_not_called_only_used(tmp_path: Path) -> None:
    """Review s38 K6: an export killed after marking the ticket file and before its record leaves a mark with no
    export behind it; another store's refusal says the mark may be only that, and that its store may still use it."""
    import json

    src_a, src_c, tgt = tmp_path / "srcA", tmp_path / "srcC", tmp_path / "tgt"
    _fill(src_a, 1)
    _fill(src_c, 2)
    ticket = tmp_path / "t.json"
    assert _keys("ticket", "--node", "C2", "--data-dir", str(tgt), "--out", str(ticket))[0] == 0
    with KeyStore.for_node("C2", src_a) as st:  # the mark a killed export of srcA left (no export record)
        doc = json.loads(ticket.read_text())
        doc["used_by"] = {"source_store": st.store_id, "source_node": "C2", "at": "2026-12-07T12:00:00+00:00"}
        assert st.exports() == []
    ticket.write_text(json.dumps(doc))
    rc, text = _keys("export", "--node", "C2", "--pair", PAIR, "--bits", "256", "--ticket", str(ticket),
                     "--out", str(tmp_path / "c.json"), "--data-dir", str(src_c))
    assert rc == 1 and "nothing was exported" in text, text
    assert "or only marked by an export there that stopped before any bit moved" in text, text
    assert "that store may still use it" in text, text
