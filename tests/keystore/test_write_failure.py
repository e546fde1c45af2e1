"""A key store that cannot be written refuses in one line naming the store and the cause (review s35 chaos F2).

An immutable store file (``chattr +i``: read-only even for root) opens read-only, and the first write inside a
transaction (``add_block``'s INSERT) raised a raw ``sqlite3.OperationalError: attempt to write a readonly
database``: a client node died at start with a 30-line traceback. Simulated here by a store whose connections
open the file read-only (``mode=ro``), as SQLite does for a file it cannot open for writing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore

PAIR = "C1-C2"


def _read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyStore:
    """The store at ``path`` (created and holding one block), reopened with read-only connections."""
    with KeyStore(path, node="C2") as st:
        st.add_block(PAIR, np.ones(512, np.uint8), block_id="kept")

    def connect(self: KeyStore) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self._busy_ms / 1000,
                               isolation_level=None, check_same_thread=False)

    monkeypatch.setattr(KeyStore, "_connect", connect)
    return KeyStore(path, node="C2")


def test_a_write_to_a_read_only_store_is_one_key_store_error_naming_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keystore" / "C2.sqlite"
    st = _read_only(path, monkeypatch)
    try:
        with pytest.raises(KeyStoreError) as ei:
            st.add_block(PAIR, np.zeros(512, np.uint8), block_id="new")
        msg = str(ei.value)
        assert msg.startswith(f"key store {path}: cannot be written: the file or its folder is read-only")
        assert "attempt to write a readonly database" in msg and "nothing was changed" in msg
        assert "\n" not in msg and "corrupt" not in msg.replace("says nothing of", "")
        with pytest.raises(KeyStoreError, match="cannot be written"):  # a take (another write path) alike
            st.take(PAIR, 64, "general")
        assert not st.has_block("new") and st.available_bits(PAIR, "general") == 512  # nothing changed
    finally:
        st.close()
