"""Review s38 K1: a block imported before imports entered the store's ledger of distilled slots (3432abe) has
no ledger row, and distillation checked only the ledger, so the same raw slots could be distilled again beside
the imported block. Every check of new slots (check_slots_free, claim_slots, add_block) now reads the origins
the held blocks record too, and ``keys status`` flags blocks of two distillations over the same slots that an
older store already holds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import export_keys, import_keys

PAIR = "C1-C2"
ACQ = "sagnac-4client-sim/1c7f6dd4/epoch"


def _old_import(tmp: Path) -> Path:
    """Data dir T whose C2 store holds block ``blk-d2a`` (slots [0, 925) of ACQ) imported from D2 with no
    ledger row, as the import before 3432abe left it."""
    d2, t = tmp / "D2", tmp / "T"
    bits = np.random.default_rng(2).integers(0, 2, 3000, dtype=np.uint8)
    with KeyStore.for_node("C2", d2) as s:
        s.claim_slots(PAIR, ACQ, 0, 925, "blk-d2a")
        s.add_block(PAIR, bits, block_id="blk-d2a", meta={"acquisition": ACQ, "slots": [0, 925]})
    with KeyStore.for_node("C2", t) as ts, KeyStore.for_node("C2", d2) as s:
        export_keys(s, PAIR, tmp / "x.json", ticket=ts.issue_import_ticket(), purpose="general")
    with KeyStore.for_node("C2", t) as ts:
        assert import_keys(ts, tmp / "x.json")["imported_bits"] == 3000
        path = ts.path
    with sqlite3.connect(path) as conn:  # the pre-fix import recorded nothing in the ledger
        conn.execute("DELETE FROM distilled_slots")
    return t


def test_distilling_over_a_pre_ledger_imported_block_is_refused(tmp_path: Path) -> None:
    t = _old_import(tmp_path)
    with KeyStore.for_node("C2", t) as ts:
        assert ts.distilled_slots(PAIR, ACQ) == []
        with pytest.raises(KeyStoreError, match=r"overlap slots \[0, 925\).*blk-d2a"):
            ts.check_slots_free(PAIR, ACQ, 0, 2000)  # the distiller's check (labqfl/qkd/pipeline.py)
        with pytest.raises(KeyStoreError, match="blk-d2a"):
            ts.claim_slots(PAIR, ACQ, 900, 2000, "blk-new")
        assert ts.distilled_slots(PAIR, ACQ) == []  # nothing recorded by the refusal
        with pytest.raises(KeyStoreError, match="blk-d2a"):  # add_block reads the held blocks' records too
            ts.add_block(PAIR, np.ones(100, np.uint8), block_id="blk-new", meta={"acquisition": ACQ, "slots": [0, 2000]})
        assert not ts.has_block("blk-new")
        ts.check_slots_free(PAIR, ACQ, 925, 2000)  # the slots next to it stay free
        ts.claim_slots(PAIR, ACQ, 925, 2000, "blk-next")
        ts.add_block(PAIR, np.ones(100, np.uint8), block_id="blk-next", meta={"acquisition": ACQ, "slots": [925, 2000]})
        assert ts.overlapping_blocks() == []


def test_keys_status_flags_doubles_an_older_store_holds(tmp_path: Path) -> None:
    t = _old_import(tmp_path)
    with KeyStore.for_node("C2", t) as ts:
        ts.claim_slots(PAIR, ACQ, 2000, 3000, "blk-x")
        ts.add_block(PAIR, np.ones(100, np.uint8), block_id="blk-x", meta={"acquisition": ACQ, "slots": [2000, 3000]})
        ts.add_block(PAIR, np.ones(50, np.uint8), block_id="blk-x-auth", purpose="auth",
                     meta={"acquisition": ACQ, "slots": [2000, 3000], "kind": "auth-refill", "key_block": "blk-x"})
        assert ts.overlapping_blocks() == []  # a key block and its refill are one distillation
        path = ts.path
    with sqlite3.connect(path) as conn:  # blk-x distilled over blk-d2a's slots by the code before (K1's double)
        conn.execute("UPDATE blocks SET meta = json_set(meta, '$.slots', json('[0, 2000]')) "
                     "WHERE block_id IN ('blk-x', 'blk-x-auth')")
    with KeyStore.for_node("C2", t) as ts:
        assert ts.overlapping_blocks() == [{"pair": PAIR, "acquisition": ACQ, "blocks": ["blk-d2a", "blk-x"],
                                            "slots": [[0, 925], [0, 2000]]}]
    res = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(t), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    nodes = doc["nodes"] if "nodes" in doc else doc
    assert nodes["C2"]["overlapping_blocks"][0]["blocks"] == ["blk-d2a", "blk-x"], res.output
    res = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(t)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    warn = [ln for ln in res.output.splitlines() if "blk-d2a" in ln and "WARNING" in ln]
    assert warn and "blk-x" in warn[0] and "same raw slots" in warn[0] and "not independent" in warn[0], res.output
