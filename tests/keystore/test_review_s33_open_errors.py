"""Review s33 F4: a healthy key store on a full or read-only file system was reported as "corrupt or
not an SQLite database" — wording that invites restoring a backup, the one action that hands out
key already used. Only damaged content or a file that is no database may be called corrupt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore, node_store_path

PAIR = "C1-C2"


def _healthy(data: Path) -> Path:
    with KeyStore.for_node("C2", data) as st:
        st.add_block(PAIR, np.random.default_rng(1).integers(0, 2, 512, dtype=np.uint8))
    return node_store_path("C2", data)


def test_a_store_whose_wal_cannot_be_opened_is_not_called_corrupt(tmp_path: Path):
    """A real SQLite failure to open (SQLITE_CANTOPEN: the -wal file cannot be created, as on a read-only
    file system) with the store's content intact."""
    path = _healthy(tmp_path)
    Path(f"{path}-wal").mkdir()
    with pytest.raises(KeyStoreError) as err:
        KeyStore.for_node("C2", tmp_path, create=False)
    msg = str(err.value)
    assert "corrupt" not in msg and "cannot open or write it" in msg and "Do not restore a backup" in msg
    res = CliRunner().invoke(app, ["keys", "status", "--node", "C2"], env={"LABQFL_DATA_DIR": str(tmp_path)})
    assert res.exit_code == 1 and "corrupt" not in res.output
    Path(f"{path}-wal").rmdir()
    with KeyStore.for_node("C2", tmp_path, create=False) as st:  # intact once the file system is fixed
        assert st.available_bits(PAIR) == 512


@pytest.mark.parametrize(("error", "why"), [
    ("database or disk is full", "the disk is full"),
    ("attempt to write a readonly database", "read-only"),
    ("unable to open database file", "cannot be opened"),
    ("disk I/O error", "disk I/O error"),
])
def test_file_system_errors_are_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, why: str):
    _healthy(tmp_path)

    def fail(self: KeyStore, conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError(error)

    monkeypatch.setattr(KeyStore, "_configure", fail)
    with pytest.raises(KeyStoreError) as err:
        KeyStore.for_node("C2", tmp_path, create=False)
    msg = str(err.value)
    assert why in msg and error in msg and "corrupt" not in msg and "Do not restore a backup" in msg


@pytest.mark.parametrize("error", ["file is not a database", "database disk image is malformed"])
def test_damaged_content_is_still_called_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str):
    _healthy(tmp_path)

    def fail(self: KeyStore, conn: sqlite3.Connection) -> None:
        raise sqlite3.DatabaseError(error)

    monkeypatch.setattr(KeyStore, "_configure", fail)
    with pytest.raises(KeyStoreError, match="corrupt or not an SQLite database"):
        KeyStore.for_node("C2", tmp_path, create=False)


def test_a_file_that_is_no_database_is_called_corrupt(tmp_path: Path):
    path = node_store_path("C2", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage, not sqlite" * 100)
    with pytest.raises(KeyStoreError, match="corrupt or not an SQLite database"):
        KeyStore.for_node("C2", tmp_path, create=False)
