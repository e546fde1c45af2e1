"""KeyStore: consume-once, master/slave synchronisation by refs, pools, overwrite of used
material, permissions, refusal of corrupt or foreign files, accounting, export/import."""

from __future__ import annotations

import copy
import json
import os
import pickle
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import DataFormatError, InsufficientKeyError, KeyStoreError
from labqfl.keystore import KeyStore, list_node_stores, node_store_path, open_node_stores
from labqfl.keystore.transfer import export_keys, import_keys, read_export

PAIR = "C1-C2"


def test_take_then_take_exact_gives_the_same_bits_once(two_stores, kh):
    stores, blocks = two_stores
    k1 = stores["C1"].take(PAIR, 2500, "fl")  # spans two blocks
    assert len({r[0] for r in k1.refs}) == 2
    assert np.array_equal(k1.bits, kh.expected_bits(blocks, k1.refs))
    k2 = stores["C2"].take_exact(PAIR, k1.refs, "fl")
    assert np.array_equal(k1.bits, k2.bits) and k2.refs == k1.refs
    with pytest.raises(KeyStoreError, match="already consumed"):
        stores["C2"].take_exact(PAIR, k1.refs, "fl")
    k3 = stores["C1"].take(PAIR, 100, "fl")
    assert k3.refs[0][1] == 500  # continues where the first take stopped
    assert not set(kh.positions(k1.refs)) & set(kh.positions(k3.refs))


def test_take_exact_rejects_partial_overlap_absent_and_foreign_blocks(two_stores):
    stores, blocks = two_stores
    k = stores["C1"].take(PAIR, 64, "general")
    stores["C2"].take_exact(PAIR, k.refs, "general")
    bid = k.refs[0][0]
    with pytest.raises(KeyStoreError, match="already consumed"):
        stores["C2"].take_exact(PAIR, [(bid, 60, 10)], "general")  # overlaps the consumed 64 bits
    with pytest.raises(KeyStoreError, match="beyond the block's end"):
        stores["C2"].take_exact(PAIR, [(bid, 1990, 20)], "general")
    with pytest.raises(KeyStoreError, match="not in key store"):
        stores["C2"].take_exact(PAIR, [("no-such-block", 0, 8)], "general")
    with pytest.raises(KeyStoreError, match="belongs to pair"):
        stores["C2"].take_exact("C2-C3", [(bid, 100, 8)], "general")
    with pytest.raises(KeyStoreError, match="invalid key references"):
        stores["C2"].take_exact(PAIR, [(bid, -1, 8)], "general")
    # Nothing was consumed by the failed calls.
    assert stores["C2"].available_bits(PAIR) == 6000 - 64


def test_pools_and_general_fallback(tmp_path: Path, kh):
    stores = open_node_stores(["C1", "C2"], tmp_path)
    kh.fill_pair(stores, PAIR, 1, 100, seed=2, purpose="auth")
    kh.fill_pair(stores, PAIR, 1, 100, seed=3, purpose="fl")
    kh.fill_pair(stores, PAIR, 1, 100, seed=4, purpose="general")
    s = stores["C1"]
    assert s.available_bits(PAIR, "auth") == 200 and s.available_bits(PAIR, "etsi") == 100
    assert s.available_bits(PAIR) == 300
    k = s.take(PAIR, 150, "auth")  # own pool first, then general
    assert [r[2] for r in k.refs] == [100, 50]
    with pytest.raises(InsufficientKeyError, match=r"50 bits available .* 51 requested"):
        s.take(PAIR, 51, "etsi")
    # The fl pool is never drawn by another purpose.
    assert s.available_bits(PAIR, "fl") == 150
    k_fl = s.take(PAIR, 100, "fl")
    with pytest.raises(KeyStoreError, match="'fl' pool, not 'auth'"):
        stores["C2"].take_exact(PAIR, k_fl.refs, "auth")
    acc = s.accounting()[PAIR]
    assert acc["consumed"] == {"auth": 150, "fl": 100}
    assert acc["available"] == {"general": 50}
    assert sum(acc["available"].values()) + sum(acc["consumed"].values()) == acc["added"] == 300


def test_invalid_inputs_are_refused(tmp_path: Path):
    s = KeyStore.for_node("C1", tmp_path)
    with pytest.raises(KeyStoreError, match="not of the form"):
        s.add_block("C1C2", np.ones(8, np.uint8))
    with pytest.raises(KeyStoreError, match="uint8 0/1"):
        s.add_block(PAIR, np.ones(8, np.int64))
    with pytest.raises(KeyStoreError, match="0 or 1"):
        s.add_block(PAIR, np.full(8, 2, np.uint8))
    with pytest.raises(KeyStoreError, match="unknown key purpose"):
        s.add_block(PAIR, np.ones(8, np.uint8), purpose="mining")
    bid = s.add_block(PAIR, np.ones(8, np.uint8))
    with pytest.raises(KeyStoreError, match="already in key store"):
        s.add_block(PAIR, np.ones(8, np.uint8), block_id=bid)
    with pytest.raises(KeyStoreError, match="positive integer"):
        s.take(PAIR, 0, "fl")
    with pytest.raises(KeyStoreError, match="invalid"):
        KeyStore.for_node("../evil", tmp_path)


def test_key_material_never_shows_or_pickles_its_bits(two_stores):
    stores, _ = two_stores
    k = stores["C1"].take(PAIR, 128, "general")
    text = repr(k) + str(k)
    assert "nbits=128" in text and k.key_id in text
    assert "".join(map(str, k.bits[:32])) not in text and k.to_bytes().hex()[:8] not in text
    for attempt in (lambda: pickle.dumps(k), lambda: copy.copy(k), lambda: copy.deepcopy(k)):
        with pytest.raises(TypeError, match="cannot be pickled"):
            attempt()
    with pytest.raises(ValueError):
        k.bits[0] = 1  # read-only view
    k.wipe()
    assert not k.bits.any()


def test_consumed_material_is_overwritten_in_the_database_files(tmp_path: Path):
    s = KeyStore.for_node("C1", tmp_path)
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2, 8 * 4096, dtype=np.uint8)
    s.add_block(PAIR, bits)
    raw = np.packbits(bits).tobytes()
    probes = [raw[i:i + 16] for i in range(0, 2048, 64)]  # in the consumed half
    keep = [raw[i:i + 16] for i in range(2048, 4096 - 16, 64)]  # in the free half

    def file_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.glob("keystore/C1.sqlite*"))

    assert all(p in file_bytes() for p in probes)
    k = s.take(PAIR, 8 * 2048, "general")
    assert np.array_equal(k.bits, bits[:8 * 2048])
    blob = file_bytes()
    assert not any(p in blob for p in probes), "consumed key material still present in the database files"
    assert all(p in blob for p in keep), "unconsumed key material must stay"
    s.close()
    blob = file_bytes()
    assert not any(p in blob for p in probes)


def _blob_references(conn: sqlite3.Connection) -> int:
    """Weak references the ``sqlite3`` connection holds (CPython keeps one per blob it opened)."""
    import gc
    import weakref
    return sum(sum(isinstance(r, weakref.ref) for r in o) for o in gc.get_referents(conn) if isinstance(o, list))


def test_a_long_open_store_does_not_keep_a_reference_per_blob_it_opened(two_stores, kh, monkeypatch):
    """A store open for hours (GUI, ``keys serve``, a node) opened a blob per segment read or zeroed,
    and CPython's connection kept a weak reference to each until it closed: ≈ 13 MB an hour.  The
    connection is now renewed between transactions after ``_BLOBS_PER_CONNECTION`` blobs, keeping
    its settings (secure_delete) and every bit."""
    stores, blocks = two_stores
    monkeypatch.setattr(KeyStore, "_BLOBS_PER_CONNECTION", 50)
    keys = [stores["C1"].take(PAIR, 8, "general") for _ in range(400)]
    conn = stores["C1"]._connection()
    assert _blob_references(conn) <= 50
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    for k in keys:  # the bits are still the right ones, handed out once
        assert np.array_equal(k.bits, kh.expected_bits(blocks, k.refs))
        assert np.array_equal(stores["C2"].take_exact(PAIR, k.refs, "general").bits, k.bits)
    assert stores["C1"].available_bits(PAIR) == stores["C2"].available_bits(PAIR) == 6000 - 400 * 8


def test_files_are_private(tmp_path: Path):
    s = KeyStore.for_node("C1", tmp_path)
    s.add_block(PAIR, np.ones(64, np.uint8))
    for p in tmp_path.glob("keystore/C1.sqlite*"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((tmp_path / "keystore").stat().st_mode) == 0o700
    s.close()
    os.chmod(s.path, 0o644)
    KeyStore.for_node("C1", tmp_path).close()
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600


def test_corrupt_and_foreign_files_are_refused_and_left_untouched(tmp_path: Path):
    path = node_store_path("C1", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(8192))
    before = path.read_bytes()
    with pytest.raises(KeyStoreError, match=str(path)):
        KeyStore(path)
    assert path.read_bytes() == before
    foreign = tmp_path / "other.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE photos (id INTEGER)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    with pytest.raises(KeyStoreError, match="not a labqfl key store"):
        KeyStore(foreign)
    assert foreign.read_bytes() == before
    # A real store truncated in the middle.
    good = KeyStore.for_node("C2", tmp_path)
    good.add_block(PAIR, np.random.default_rng(0).integers(0, 2, 80_000, dtype=np.uint8))
    good.close()
    data = good.path.read_bytes()
    good.path.write_bytes(data[: len(data) // 2] + os.urandom(len(data) // 2))
    with pytest.raises(KeyStoreError, match="C2.sqlite"):
        KeyStore.for_node("C2", tmp_path)


def test_schema_version_and_node_are_checked(tmp_path: Path):
    s = KeyStore.for_node("C1", tmp_path)
    s.close()
    with pytest.raises(KeyStoreError, match="belongs to node 'C1'"):
        KeyStore(s.path, node="C2")
    con = sqlite3.connect(s.path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(KeyStoreError, match="schema version '99'"):
        KeyStore(s.path)
    assert list_node_stores(tmp_path) == ["C1"]


def test_reserve_release_and_take_by_key_id(two_stores, kh):
    stores, blocks = two_stores
    a, b = stores["C1"], stores["C2"]
    k = a.take(PAIR, 300, "etsi")
    b.reserve_exact(PAIR, k.refs, "etsi", k.key_id, info={"who": "test"})
    assert b.accounting()[PAIR]["reserved"] == {"etsi": 300}
    other = b.take(PAIR, 100, "etsi")  # skips the reserved bits
    assert not set(kh.positions(other.refs)) & set(kh.positions(k.refs))
    with pytest.raises(KeyStoreError, match="reserved for another key"):
        b.take_exact(PAIR, k.refs, "etsi")
    got = b.take_exact(PAIR, k.refs, "etsi", key_id=k.key_id)
    assert np.array_equal(got.bits, k.bits)
    assert b.delivery(k.key_id)["state"] == "delivered"
    with pytest.raises(KeyStoreError, match="already delivered"):
        b.take_exact(PAIR, k.refs, "etsi", key_id=k.key_id)
    a.take_exact(PAIR, other.refs, "etsi")  # keep the two ends in step
    k2 = a.take(PAIR, 50, "etsi")
    b.reserve_exact(PAIR, k2.refs, "etsi", k2.key_id)
    assert b.release(k2.key_id) == 50
    assert b.reservation(k2.key_id) is None
    acc = b.accounting()[PAIR]
    assert sum(acc["available"].values()) + sum(acc["consumed"].values()) == acc["added"]


def test_export_import_moves_bits_once_and_detects_tampering(tmp_path: Path, two_stores):
    stores, blocks = two_stores
    first = stores["C1"].take(PAIR, 100, "general")
    stores["C2"].take_exact(PAIR, first.refs, "general")
    out = tmp_path / "c2.json"
    # Import on "another machine": a fresh C2 store that then pairs with C1 by refs.
    remote = KeyStore.for_node("C2", tmp_path / "remote")
    summary = export_keys(stores["C2"], PAIR, out, ticket=remote.issue_import_ticket(), nbits=1000)
    assert summary["nbits"] == 1000
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stores["C2"].accounting()[PAIR]["exported"] == {"general": 1000}
    with pytest.raises(DataFormatError, match="already exists"):
        export_keys(stores["C2"], PAIR, out, ticket=remote.issue_import_ticket(), nbits=8)
    res = import_keys(remote, out)
    assert res["imported_bits"] == 1000
    with pytest.raises(KeyStoreError, match="already imported"):
        import_keys(remote, out)
    k = stores["C1"].take(PAIR, 1000, "general")
    r = remote.take_exact(PAIR, k.refs, "general")
    assert np.array_equal(r.bits, k.bits)
    # The source store cannot hand out the exported bits any more.
    with pytest.raises(KeyStoreError, match="exported"):
        stores["C2"].take_exact(PAIR, k.refs, "general")
    out2 = tmp_path / "c2-2.json"
    export_keys(stores["C2"], PAIR, out2, ticket=remote.issue_import_ticket(), nbits=64)
    doc = json.loads(out2.read_text())
    doc["segments"][0]["offset"] += 8
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(KeyStoreError, match="failed authentication"):
        import_keys(remote, bad)
    assert import_keys(remote, out2)["imported_bits"] == 64  # a refused forgery does not spend the ticket
    bad.write_text(out.read_text()[:-40])
    with pytest.raises(DataFormatError, match="not readable JSON"):
        read_export(bad)


def test_pickling_a_store_reopens_it_by_path(tmp_path: Path):
    s = KeyStore.for_node("C1", tmp_path)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.path == s.path and s2.node == "C1"



def test_waiting_for_another_process_s_write_lock_can_be_interrupted_and_times_out_clearly(tmp_path):
    """A write waited for another process's lock inside one 60 s SQLite call, where Python cannot run
    its SIGINT handler: Ctrl-C was ignored until the lock holder finished. Now the wait is made of
    short SQLite waits; a timeout names the lock holder instead of "database is locked"."""
    import signal
    import sqlite3
    import time

    path = tmp_path / "C1.sqlite"
    KeyStore(path, node="C1").close()
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        st = KeyStore(path, node="C1", busy_timeout_s=0.5)
        with pytest.raises(KeyStoreError, match=r"locked by another process for 0.5 s \(it holds a write "
                                                r"transaction\); nothing was changed"):
            st.add_block("C1-C2", np.ones(64, np.uint8), block_id="b1")
        st.close()
        st = KeyStore(path, node="C1", busy_timeout_s=60)

        def interrupt(*_: object) -> None:
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        t0 = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                st.add_block("C1-C2", np.ones(64, np.uint8), block_id="b2")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert time.monotonic() - t0 < 30  # the handler ran long before the 60 s busy timeout
        st.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with KeyStore(path, node="C1") as st:
        assert st.accounting() == {}


def test_released_bits_go_back_to_the_pool_they_were_added_to(tmp_path: Path, kh):
    """Review s31 (crash consistency), F5: a reservation for ``etsi`` that drew on ``general`` bits
    and was released left them in the ``etsi`` pool at the master (where the slave, which never
    reserved them, kept them ``general``): the ends disagreed, and ``fl`` could no longer use them."""
    stores = open_node_stores(["C1", "C2"], tmp_path)
    kh.fill_pair(stores, PAIR, 1, 100, seed=4, purpose="etsi")
    kh.fill_pair(stores, PAIR, 1, 1000, seed=5, purpose="general")
    before = stores["C1"].accounting()[PAIR]["available"]
    assert before == {"etsi": 100, "general": 1000}
    refs = stores["C1"].reserve(PAIR, 256, "etsi", "k1")  # 100 from etsi, 156 from general
    stores["C2"].reserve_exact(PAIR, refs, "etsi", "k1")
    for s in stores.values():
        assert s.release("k1") == 256
        assert s.accounting()[PAIR]["available"] == before
    k = stores["C2"].take(PAIR, 1000, "fl")  # fl draws on general: all of it again
    assert np.array_equal(stores["C1"].take_exact(PAIR, k.refs, "fl").bits, k.bits)
    for s in stores.values():
        s.close()
