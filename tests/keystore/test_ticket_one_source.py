"""Review s38 F5: one import ticket used by two source stores (two data dirs of node C2): both exports zeroed their
bits, the target imported the first, and the second export's key could be neither imported nor given back, its
file (key in clear) left behind. An export now records in the ticket file which store uses it, before any bit
moves; a second store is refused with nothing moved and no file written."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import export_keys, read_ticket

PAIR = "C1-C2"
USED_BY = "used_by"  # labqfl.keystore.transfer.USED_BY
runner = CliRunner()


def _fill(data: Path, seed: int) -> None:
    bits = np.random.default_rng(seed).integers(0, 2, 20000, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as a, KeyStore.for_node("C2", data) as b:
        bid = a.add_block(PAIR, bits, run_id="r")
        b.add_block(PAIR, bits, block_id=bid, run_id="r")


def _keys(*args: str) -> object:
    return runner.invoke(app, ["keys", *args])


def _c2(data: Path) -> dict:
    with KeyStore.for_node("C2", data) as st:
        return st.accounting()[PAIR]


def test_a_second_source_store_refuses_a_used_ticket_before_moving_a_bit(tmp_path: Path) -> None:
    src_a, src_b, tgt = tmp_path / "srcA", tmp_path / "srcB", tmp_path / "tgt"
    _fill(src_a, 1)
    _fill(src_b, 2)
    KeyStore.for_node("C2", tgt).close()
    ticket = tmp_path / "ticket.json"
    assert _keys("ticket", "--node", "C2", "--data-dir", str(tgt), "--out", str(ticket)).exit_code == 0
    common = ["--node", "C2", "--pair", PAIR, "--bits", "4096", "--ticket", str(ticket)]
    res = _keys("export", *common, "--out", str(tmp_path / "xA.json"), "--data-dir", str(src_a))
    assert res.exit_code == 0, res.output

    before = _c2(src_b)
    res = _keys("export", *common, "--out", str(tmp_path / "xB.json"), "--data-dir", str(src_b))
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "already used for an export from another store" in text and "new ticket" in text, text
    assert _c2(src_b) == before and before["exported"] == {}  # nothing moved
    assert not (tmp_path / "xB.json").exists() and not list(tmp_path.glob(".xB.json*"))
    with KeyStore.for_node("C2", src_a) as st:
        assert json.loads(ticket.read_text())[USED_BY]["source_store"] == st.store_id
    assert ticket.stat().st_mode & 0o077 == 0

    # the first export imports as before, and the ticket file stays readable as a ticket
    assert _keys("import", str(tmp_path / "xA.json"), "--data-dir", str(tgt)).exit_code == 0
    assert read_ticket(ticket).target_node == "C2"


def test_an_export_refused_before_its_record_leaves_the_ticket_free(tmp_path: Path) -> None:
    """A store with no key of the pair (the wrong data dir) takes no claim on the ticket: the right store uses it."""
    empty, src, tgt = tmp_path / "empty", tmp_path / "src", tmp_path / "tgt"
    from labqfl.keystore.transfer import TICKET_USED_BY

    assert TICKET_USED_BY == USED_BY
    KeyStore.for_node("C2", empty).close()
    _fill(src, 3)
    with KeyStore.for_node("C2", tgt) as t:
        tk = t.issue_import_ticket()
    ticket = tmp_path / "t.json"
    ticket.write_text(json.dumps({"format": "labqfl-import-ticket", "version": 1, "ticket_id": tk.ticket_id,
                                  "target_node": "C2", "target_store": tk.target_store,
                                  "secret": base64.b64encode(tk.secret).decode()}))
    with KeyStore.for_node("C2", empty) as st, pytest.raises(Exception, match="no free bits"):
        export_keys(st, PAIR, tmp_path / "e.json", ticket=tk, ticket_file=ticket)
    assert USED_BY not in json.loads(ticket.read_text())
    with KeyStore.for_node("C2", src) as st:
        assert export_keys(st, PAIR, tmp_path / "x.json", ticket=tk, nbits=64, ticket_file=ticket)["nbits"] == 64
        with pytest.raises(KeyStoreError, match="already used for export"):  # the same store: its own table says
            export_keys(st, PAIR, tmp_path / "y.json", ticket=tk, nbits=64, ticket_file=ticket)
