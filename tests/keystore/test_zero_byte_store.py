"""A 0-byte key store file (a truncated store) was refused by ``keys status`` but silently re-initialised as a new,
empty store, with a new store ID, by ``keys ticket`` and every other opener that may create a store (review s36
input F8): the evidence of what happened was gone and the node looked healthy. A new store is now only ever
published initialised (written beside, synced, hard-linked into place), so an existing empty file is always refused,
named, and left as it was."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore.store import KeyStore


def test_a_creating_open_refuses_an_empty_file_and_leaves_it(tmp_path: Path) -> None:
    victim = tmp_path / "keystore" / "C3.sqlite"
    victim.parent.mkdir()
    victim.write_bytes(b"")
    with pytest.raises(KeyStoreError) as ei:
        KeyStore(victim, node="C3", create=True)
    msg = str(ei.value)
    assert msg.startswith(f"key store {victim}: empty (0 bytes, no tables): not an initialised key store (truncated?)")
    assert "move it aside" in msg and "\n" not in msg, msg
    assert victim.stat().st_size == 0
    assert sorted(p.name for p in victim.parent.iterdir()) == ["C3.sqlite"]  # no -wal, no temporary left


def test_keys_ticket_refuses_a_truncated_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    victim = data / "keystore" / "C3.sqlite"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"")
    victim.chmod(0o600)  # as a store has it (else a permissions warning comes first)
    r = CliRunner().invoke(app, ["keys", "ticket", "--node", "C3", "--out", str(tmp_path / "t.json"),
                                 "--data-dir", str(data)])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and f"key store {victim}: empty (0 bytes" in lines[0], r.output
    assert victim.stat().st_size == 0 and not (tmp_path / "t.json").exists()


def test_a_new_store_is_created_whole_and_once(tmp_path: Path) -> None:
    path = tmp_path / "keystore" / "C1.sqlite"
    ids: list[str] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            with KeyStore(path, node="C1") as st:
                ids.append(st.store_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(ids) == 6 and len(set(ids)) == 1  # every opener got the one store
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    with KeyStore(path, create=False) as st:
        assert st.store_id == ids[0] and st.node == "C1"
