"""An export file is bound to one target store and imported once (issue 19, item 3: one export
once imported into a second store and back into the exporting store, and both then handed out
the same 4,096 bits under identical block refs).  Store level, CLI, tampering, and the schema
migration that gives older stores an identity."""

from __future__ import annotations

import copy
import json
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import DataFormatError, KeyStoreError
from labqfl.keystore import APPLICATION_ID, SCHEMA_VERSION, KeyStore, node_store_path
from labqfl.keystore.transfer import export_keys, import_keys, read_ticket, write_ticket

PAIR = "C1-C2"


def test_an_export_imports_once_into_its_bound_store_and_nowhere_else(tmp_path: Path, two_stores, kh):
    stores, blocks = two_stores
    src = stores["C2"]
    target = KeyStore.for_node("C2", tmp_path / "target")
    stranger = KeyStore.for_node("C2", tmp_path / "stranger")
    assert len({src.store_id, target.store_id, stranger.store_id}) == 3
    out = tmp_path / "x.json"
    summary = export_keys(src, PAIR, out, ticket=target.issue_import_ticket(), nbits=4096)
    assert (summary["target_node"], summary["target_store"]) == ("C2", target.store_id)
    (rec,) = src.exports()  # the source records its export and where it went
    assert (rec["export_id"], rec["nbits"], rec["target_store"]) == (summary["export_id"], 4096, target.store_id)
    assert src.accounting()[PAIR]["exported"] == {"general": 4096}

    before = src.accounting()
    with pytest.raises(KeyStoreError, match=f"bound to node C2, store {target.store_id}"):
        import_keys(stranger, out)  # into a second store
    with pytest.raises(KeyStoreError, match="made by this store"):
        import_keys(src, out)  # back into the exporting store
    assert src.accounting() == before and stranger.accounting() == {}

    assert import_keys(target, out)["imported_bits"] == 4096
    with pytest.raises(KeyStoreError, match="already imported"):
        import_keys(target, out)  # a second time into the same store
    with pytest.raises(KeyStoreError, match="made by this store"):
        import_keys(src, out)
    with pytest.raises(KeyStoreError, match="bound to"):
        import_keys(stranger, out)

    # The 4,096 bits exist once: C1 allocates them, the target consumes the same bits; neither the
    # source nor the stranger can hand them out.
    k = stores["C1"].take(PAIR, 4096, "general")
    assert {r[0] for r in k.refs} <= set(blocks)
    assert np.array_equal(target.take_exact(PAIR, k.refs, "general").bits, kh.expected_bits(blocks, k.refs))
    with pytest.raises(KeyStoreError, match="exported"):
        src.take_exact(PAIR, k.refs, "general")
    with pytest.raises(KeyStoreError, match="not in key store"):
        stranger.take_exact(PAIR, k.refs, "general")
    for s in (target, stranger):
        s.close()


def test_edited_binding_or_bits_fail_authentication_and_tickets_are_one_use(tmp_path: Path, two_stores):
    stores, _ = two_stores
    src = stores["C2"]
    target = KeyStore.for_node("C2", tmp_path / "target")
    stranger = KeyStore.for_node("C2", tmp_path / "stranger")
    ticket = target.issue_import_ticket()
    out = tmp_path / "x.json"
    export_keys(src, PAIR, out, ticket=ticket, nbits=512)
    doc = json.loads(out.read_text())

    def variant(name: str, **edit: object) -> Path:
        d = copy.deepcopy(doc)
        d.update(edit)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(d))
        return p

    # Re-bound to the stranger, with a real ticket of the stranger's: the MAC was made with another secret.
    st = stranger.issue_import_ticket()
    rebound = variant("rebound", target_store=stranger.store_id, ticket_id=st.ticket_id)
    with pytest.raises(KeyStoreError, match="failed authentication"):
        import_keys(stranger, rebound)
    with pytest.raises(KeyStoreError, match="never issued"):
        import_keys(stranger, variant("noticket", target_store=stranger.store_id))
    # A new export ID to dodge "already imported", or other bits: refused by the bound target too.
    with pytest.raises(KeyStoreError, match="failed authentication"):
        import_keys(target, variant("newid", export_id="00000000-0000-4000-8000-000000000000"))
    segs = copy.deepcopy(doc["segments"])
    segs[0]["offset"] += 8
    with pytest.raises(KeyStoreError, match="failed authentication"):
        import_keys(target, variant("shifted", segments=segs))
    assert target.accounting() == {} and stranger.accounting() == {}

    assert import_keys(target, out)["imported_bits"] == 512  # the genuine file, after the forgeries
    # The ticket is spent: a second export made with it is refused at the source (nothing moves)...
    before = src.accounting()
    with pytest.raises(KeyStoreError, match="already used for export"):
        export_keys(src, PAIR, tmp_path / "again.json", ticket=ticket, nbits=8)
    assert src.accounting() == before
    # ...and so is an export to the exporting store itself.
    with pytest.raises(KeyStoreError, match="issued by this store"):
        export_keys(src, PAIR, tmp_path / "self.json", ticket=src.issue_import_ticket(), nbits=8)
    assert src.accounting() == before and not (tmp_path / "self.json").exists()
    # Version 1 (unbound) export files are refused.
    with pytest.raises(DataFormatError, match="version 1"):
        import_keys(target, variant("v1", version=1))
    # Tickets never show or pickle their secret.
    assert ticket.secret.hex() not in repr(ticket)
    with pytest.raises(TypeError):
        pickle.dumps(ticket)
    for s in (target, stranger):
        s.close()


def test_bits_may_move_back_by_a_new_export_bound_to_the_first_store(tmp_path: Path, two_stores, kh):
    stores, blocks = two_stores
    src = stores["C2"]
    remote = KeyStore.for_node("C2", tmp_path / "remote")
    export_keys(src, PAIR, tmp_path / "there.json", ticket=remote.issue_import_ticket(), nbits=300)
    import_keys(remote, tmp_path / "there.json")
    export_keys(remote, PAIR, tmp_path / "back.json", ticket=src.issue_import_ticket(), nbits=300)
    assert import_keys(src, tmp_path / "back.json")["imported_bits"] == 300
    with pytest.raises(KeyStoreError, match="made by this store"):
        import_keys(src, tmp_path / "there.json")  # the first file still cannot come back
    k = stores["C1"].take(PAIR, 300, "general")
    assert np.array_equal(src.take_exact(PAIR, k.refs, "general").bits, kh.expected_bits(blocks, k.refs))
    with pytest.raises(KeyStoreError, match="exported"):
        remote.take_exact(PAIR, k.refs, "general")
    remote.close()


def test_cli_export_import_refuses_the_second_store_and_the_exporting_store(tmp_path: Path, kh):
    runner = CliRunner()
    dirs = {n: tmp_path / n for n in ("src", "target", "stranger")}

    def run(where: str, *args: str) -> object:
        return runner.invoke(app, list(args), env={"LABQFL_DATA_DIR": str(dirs[where])})

    stores = {n: KeyStore.for_node(n, dirs["src"]) for n in ("C1", "C2")}
    kh.fill_pair(stores, PAIR, 1, 8192, seed=3)
    for s in stores.values():
        s.close()
    KeyStore.for_node("C2", dirs["stranger"]).close()
    ticket, out = tmp_path / "ticket.json", tmp_path / "x.json"
    res = run("target", "keys", "ticket", "--node", "C2", "--out", str(ticket), "--json")
    assert res.exit_code == 0, res.output
    assert read_ticket(ticket).target_store == json.loads(res.stdout)["target_store"]
    assert "secret" not in res.stdout
    res = run("src", "keys", "export", "--node", "C2", "--pair", PAIR, "--bits", "4096", "--ticket", str(ticket),
              "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    res = run("stranger", "keys", "import", str(out))
    assert res.exit_code == 1 and "bound to node C2" in res.output, res.output
    res = run("src", "keys", "import", str(out), "--node", "C2")
    assert res.exit_code == 1 and "made by this store" in res.output, res.output
    res = run("target", "keys", "import", str(out), "--json", "--keep-file")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["imported_bits"] == 4096
    res = run("target", "keys", "import", str(out))  # imported already: nothing again, the file destroyed (s38 F3)
    assert res.exit_code == 0 and "already imported" in res.output and not out.exists(), res.output
    res = run("src", "keys", "export", "--node", "C2", "--pair", PAIR, "--bits", "8", "--ticket", str(ticket),
              "--out", str(tmp_path / "y.json"))
    assert res.exit_code == 1 and "already used" in res.output, res.output
    st = json.loads(run("src", "keys", "status", "--node", "C2", "--json").stdout)["nodes"]["C2"]
    assert st["pairs"][PAIR]["exported"] == {"general": 4096} and len(st["exports"]) == 1
    assert json.loads(run("stranger", "keys", "status", "--json").stdout)["nodes"]["C2"]["pairs"] == {}


# The layout of a version-1 store as labqfl wrote it before the store identity was added.
_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (seq INTEGER PRIMARY KEY AUTOINCREMENT, block_id TEXT NOT NULL UNIQUE, pair TEXT NOT NULL,
  nbits INTEGER NOT NULL CHECK (nbits > 0), run_id TEXT NOT NULL DEFAULT '', meta TEXT NOT NULL DEFAULT '{}',
  created TEXT NOT NULL, material BLOB NOT NULL);
CREATE INDEX blocks_pair ON blocks (pair, seq);
CREATE TABLE segments (block_seq INTEGER NOT NULL REFERENCES blocks (seq), start INTEGER NOT NULL CHECK (start >= 0),
  length INTEGER NOT NULL CHECK (length > 0), pair TEXT NOT NULL, purpose TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'consumed', 'exported', 'absent')), key_id TEXT,
  PRIMARY KEY (block_seq, start)) WITHOUT ROWID;
CREATE INDEX segments_free ON segments (pair, purpose, block_seq, start) WHERE state = 'free';
CREATE TABLE deliveries (key_id TEXT PRIMARY KEY, pair TEXT NOT NULL, purpose TEXT NOT NULL, kind TEXT NOT NULL,
  state TEXT NOT NULL, nbits INTEGER NOT NULL, refs TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}',
  created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE imports (export_id TEXT PRIMARY KEY, imported TEXT NOT NULL, nbits INTEGER NOT NULL);
"""


def test_a_version_1_store_is_migrated_in_place_and_keeps_its_keys(tmp_path: Path):
    path = node_store_path("C2", tmp_path)
    path.parent.mkdir(parents=True)
    bits = np.random.default_rng(4).integers(0, 2, 1024, dtype=np.uint8)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.executescript(_V1_SCHEMA)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "labqfl-keystore"), ("schema_version", "1"),
                                                       ("created", "2026-01-01T00:00:00+00:00"), ("node", "C2")])
    con.execute("INSERT INTO blocks (block_id, pair, nbits, created, material) VALUES ('b1', ?, 1024, 'x', ?)",
                (PAIR, np.packbits(bits).tobytes()))
    con.execute("INSERT INTO segments VALUES (1, 0, 1024, ?, 'general', 'free', NULL)", (PAIR,))
    con.execute("INSERT INTO imports VALUES ('old-export', 'x', 64)")
    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    con.close()

    s = KeyStore.for_node("C2", tmp_path)
    assert s.store_id and s.node == "C2"
    assert s.accounting()[PAIR]["available"] == {"general": 1024}
    assert np.array_equal(s.take_exact(PAIR, [("b1", 0, 100)], "general").bits, bits[:100])
    s.close()
    con = sqlite3.connect(path)
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    assert meta["schema_version"] == str(SCHEMA_VERSION) == "3"
    assert con.execute("SELECT export_id, source_store FROM imports").fetchall() == [("old-export", "")]
    con.close()
    with KeyStore.for_node("C2", tmp_path) as again:  # idempotent: the identity stays
        assert again.store_id == meta["store_id"]
        write_ticket(again, tmp_path / "t.json")  # and the migrated store can be an export target
    assert read_ticket(tmp_path / "t.json").target_store == meta["store_id"]


def test_key_moves_only_between_stores_of_the_same_node(tmp_path: Path, two_stores):
    """A ticket from another node's store is refused before anything moves: from C2's store, one of
    C3 would have put pair C1-C2's key on a third node, one of C1 lost C2's copy (C1 holds the same
    bits already, so the import failed and the pair fell out of step)."""
    stores, _ = two_stores
    src = stores["C2"]
    before = src.accounting()
    for node in ("C3", "C1"):
        other = KeyStore.for_node(node, tmp_path / f"other-{node}")
        with pytest.raises(KeyStoreError, match=f"import ticket .* is for node {node}; this store holds node C2's copy "
                                                f"of pair C1-C2's key, which may only move to another store of node C2"):
            export_keys(src, PAIR, tmp_path / f"to-{node}.json", ticket=other.issue_import_ticket(), nbits=64)
        assert not (tmp_path / f"to-{node}.json").exists()
        other.close()
    assert src.accounting() == before


@pytest.mark.parametrize("where", ["/proc/labqfl-nowhere/x.json", "file/x.json"])
def test_an_export_to_a_path_it_cannot_write_moves_no_bits_and_keeps_the_ticket(tmp_path: Path, two_stores, where):
    """The export file is created before the bits move: an unwritable path used to mark the bits
    exported and spend the ticket, then fail with "FileNotFoundError" and no file."""
    stores, _ = two_stores
    src = stores["C2"]
    target = KeyStore.for_node("C2", tmp_path / "target")
    (tmp_path / "file").write_text("a file, not a folder")
    ticket = target.issue_import_ticket()
    before = src.accounting()
    with pytest.raises(DataFormatError, match=r"export file .*: cannot create it .*; expected a new file in a writable"):
        export_keys(src, PAIR, tmp_path / where, ticket=ticket, nbits=64)
    assert src.accounting() == before
    out = tmp_path / "x.json"
    assert export_keys(src, PAIR, out, ticket=ticket, nbits=64)["nbits"] == 64  # the same ticket still works
    assert import_keys(target, out)["imported_bits"] == 64
    target.close()
