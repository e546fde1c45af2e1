"""The origin index never leaves a block out silently (review s39 K4): a block whose metadata SQLite cannot read
as JSON makes the checks of its pair refuse, naming it (the scan before the index raised too), and an index whose
triggers are missing (a migration that rebuilt ``blocks`` would drop them) is rebuilt when the store opens, so
blocks added meanwhile are found."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore

PAIR, ACQ = "C1-C2", "acq/index-integrity"


def _store(tmp: Path) -> Path:
    with KeyStore.for_node("C2", tmp) as st:
        st.claim_slots(PAIR, ACQ, 0, 100, "blk-a")  # creates the index and its triggers
        st.add_blocks(PAIR, [("blk-a", np.zeros(64, np.uint8), "general", {"acquisition": ACQ, "slots": [0, 100]})])
        return st.path


def test_a_block_with_unreadable_metadata_makes_the_checks_refuse(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with sqlite3.connect(path) as conn:  # an edited file: blk-a's record no longer JSON
        conn.execute("UPDATE blocks SET meta = '{\"acquisition\": \"acq/index-integrity\", \"slots\": [0, 100' "
                     "WHERE block_id = 'blk-a'")
    with KeyStore.for_node("C2", tmp_path) as st:
        for call in (lambda: st.check_slots_free(PAIR, ACQ, 150, 160),
                     lambda: st.claim_slots(PAIR, ACQ, 500, 600, "blk-x"),
                     lambda: st.add_blocks(PAIR, [("blk-y", np.zeros(64, np.uint8), "general",
                                                   {"acquisition": ACQ, "slots": [700, 800]})])):
            with pytest.raises(KeyStoreError, match="metadata of block blk-a is not valid JSON.*nothing was stored"):
                call()
        st.check_slots_free("C1-C3", ACQ, 50, 60)  # another pair is not concerned
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT block_id FROM blocks")] == ["blk-a"]


def test_missing_triggers_are_recreated_at_open_and_the_index_refilled(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with sqlite3.connect(path) as conn:  # the triggers lost, then a block added by another writer
        conn.execute("DROP TRIGGER block_origins_add")
        conn.execute("INSERT INTO blocks (block_id, pair, nbits, meta, created, material) VALUES ('blk-b', ?, 64, ?, "
                     "'now', zeroblob(8))", (PAIR, json.dumps({"acquisition": ACQ, "slots": [200, 300]})))
    with KeyStore.for_node("C2", tmp_path) as st:
        with pytest.raises(KeyStoreError, match=r"overlap slots \[200, 300\).*blk-b"):
            st.check_slots_free(PAIR, ACQ, 250, 260)
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"block_origins_add", "block_origins_edit", "block_origins_drop"} <= names
