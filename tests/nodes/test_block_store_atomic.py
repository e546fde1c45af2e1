"""An accepted block is stored at Ci all or nothing (review s35 chaos F5).

Ci stored a block as two transactions, its authentication refill ``<id>-auth`` then its key ``<id>``; a failure
(disk full) or crash between them left the refill at Ci alone, and Cj's pending copy was destroyed at the end of
the run (Ci "held" only the refill's ID). Now both parts are one transaction (``KeyStore.add_blocks``).
"""

from __future__ import annotations

import sqlite3
import types
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.nodes.client import AUTH_REFILL_SUFFIX, ClientNode, block_id_for

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f5"
REFILL = 256
RNG = np.random.default_rng(55)


def _store_block(store: KeyStore, bid: str, final: np.ndarray) -> list[str]:
    return ClientNode.store_block(types.SimpleNamespace(store=store), PAIR, bid, final, REFILL,  # type: ignore[arg-type]
                                  {"run_id": ""})


def test_a_block_whose_key_part_cannot_be_stored_leaves_no_refill_either(tmp_path: Path) -> None:
    final = RNG.integers(0, 2, 4000, dtype=np.uint8)
    with KeyStore.for_node("C1", tmp_path) as st:
        bid = block_id_for(ACQ, PAIR, 0, 100)
        st.add_block(PAIR, final[:64], block_id=bid, purpose="general")  # the key part's INSERT then fails
        with pytest.raises(KeyStoreError, match="already in key store"):
            _store_block(st, bid, final)
        assert not st.has_block(bid + AUTH_REFILL_SUFFIX)  # before: the refill stayed, at this end only
        assert st.free_ranges(PAIR, ["auth"]) == {}

        other = block_id_for(ACQ, PAIR, 100, 200)  # an SQLite failure inside the transaction (as a full disk)
        st._connection().execute("CREATE TEMP TRIGGER fail_key BEFORE INSERT ON main.blocks WHEN NEW.block_id = "
                                  f"'{other}' BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END")
        with pytest.raises((KeyStoreError, sqlite3.Error)):
            _store_block(st, other, final)
        assert not st.has_block(other + AUTH_REFILL_SUFFIX) and not st.has_block(other)
        st._connection().execute("DROP TRIGGER fail_key")
        assert _store_block(st, other, final) == [other + AUTH_REFILL_SUFFIX, other]  # all of it, once it can
