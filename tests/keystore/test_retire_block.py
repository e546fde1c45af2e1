"""Retiring a key block (``KeyStore.retire_block``, ``labqfl keys retire``): a store that holds two distillations of
the same raw slots (``overlapping_blocks``, review s38 K1) had no way to destroy one of them. A retired block's
unused bits are overwritten in the database file (and the WAL, once checkpointed), never handed out, never
imported back, its distillation's other rows and its raw slots never distilled again, and it leaves
``overlapping_blocks``; reservations refuse it unless forced, bits being exported always."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import InsufficientKeyError, KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import export_keys, import_keys

PAIR = "C1-C2"
ACQ = "sagnac-4client-sim/retire/epoch"
NBITS = 8 * 4096


def _distil(st: KeyStore, bid: str, start: int, end: int, bits: np.ndarray) -> None:
    """A distilled block as the distiller leaves it: its slots claimed, the key block and its refill row."""
    meta = {"acquisition": ACQ, "slots": [start, end]}
    st.claim_slots(PAIR, ACQ, start, end, bid)
    st.add_blocks(PAIR, [(bid, bits, "general", meta),
                         (bid + "-auth", bits[:1024], "auth", {**meta, "kind": "auth-refill", "key_block": bid})])


def _store(tmp: Path, node: str = "C2") -> tuple[KeyStore, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    bits = {b: rng.integers(0, 2, NBITS, dtype=np.uint8) for b in ("blk-a", "blk-b")}
    st = KeyStore.for_node(node, tmp)
    _distil(st, "blk-a", 0, 1000, bits["blk-a"])
    _distil(st, "blk-b", 1000, 2000, bits["blk-b"])
    return st, bits


def _probes(bits: np.ndarray, lo_byte: int, hi_byte: int) -> list[bytes]:
    raw = np.packbits(bits).tobytes()
    return [raw[i:i + 16] for i in range(lo_byte, hi_byte - 16, 64)]


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@contextmanager
def _reader_holding_snapshot(path: Path) -> Iterator[None]:
    """Another connection inside a read transaction until the block exits (as tests/keystore/test_scrub.py)."""
    started, release = threading.Event(), threading.Event()

    def run() -> None:
        con = sqlite3.connect(str(path), isolation_level=None)
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM blocks").fetchone()
        started.set()
        release.wait(60)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30)
    try:
        yield
    finally:
        release.set()
        t.join(30)


def test_retire_overwrites_the_unused_bits_in_the_database_file(tmp_path: Path) -> None:
    st, bits = _store(tmp_path)
    st.take(PAIR, 8 * 1024, "general")  # the first 1 KiB of blk-a is used (zeroed already)
    path = st.path
    st.close()
    st = KeyStore(path, node="C2")  # reopened: every block in the main file, the WAL empty
    free_a = _probes(bits["blk-a"], 1024, 4096)
    kept_b = _probes(bits["blk-b"], 0, 4096)
    assert all(p in _file_bytes(path) for p in free_a)
    with _reader_holding_snapshot(path):  # a reader's snapshot holds the old pages: the checkpoint waits for it
        res = st.retire_block("blk-a", "double of another distillation")
        assert res["scrub"]["pending"] is True, res["scrub"]
    assert st.wait_scrubbed(timeout=20), st.scrub_status()  # the retry of issue 19 item 4 finishes it
    blob = _file_bytes(path)
    assert not any(p in blob for p in free_a), "retired key material still in the database file or WAL"
    assert all(p in blob for p in kept_b), "another block's key must stay"
    assert [b["block_id"] for b in res["blocks"]] == ["blk-a", "blk-a-auth"]  # its refill too: one distillation
    assert res["discarded_bits"] == NBITS - 8 * 1024 + 1024 and res["voided_keys"] == []
    with sqlite3.connect(path) as conn:  # the whole material is zero, refill row included
        for (m,) in conn.execute("SELECT material FROM blocks WHERE block_id IN ('blk-a', 'blk-a-auth')"):
            assert not any(m)
    acc = st.accounting()[PAIR]
    assert acc["available"] == {"auth": 1024, "general": NBITS}  # blk-b's only
    rec = st.retired_blocks()
    assert [r["block_id"] for r in rec] == ["blk-a", "blk-a-auth"] and rec[0]["reason"] == "double of another " \
        "distillation" and rec[0]["discarded"] == NBITS - 8 * 1024
    st.close()


def test_a_retired_block_is_never_handed_out_nor_distilled_again(tmp_path: Path) -> None:
    st, bits = _store(tmp_path)
    st.retire_block("blk-a-auth", "refill id names the distillation")  # either row retires both
    assert {r["block_id"] for r in st.retired_blocks()} == {"blk-a", "blk-a-auth"}
    keys = st.take_many(PAIR, [NBITS], "general")
    assert [r[0] for r in keys[0].refs] == ["blk-b"]  # every free bit left is blk-b's
    with pytest.raises(InsufficientKeyError):
        st.take(PAIR, 1, "general")
    with pytest.raises(KeyStoreError, match="already consumed"):  # the partner's refs into it
        st.take_exact(PAIR, [("blk-a", 0, 64)], "general")
    with pytest.raises(KeyStoreError, match="overlap slots"):  # its raw slots stay distilled
        st.claim_slots(PAIR, ACQ, 500, 1500, "blk-c")
    with pytest.raises(KeyStoreError, match="retired"):  # nor another row of its distillation
        st.add_block(PAIR, np.ones(64, np.uint8), block_id="blk-a-auth2", purpose="auth",
                     meta={"acquisition": ACQ, "slots": [0, 1000], "kind": "auth-refill", "key_block": "blk-a"})
    again = st.retire_block("blk-a", "again")
    assert again["already_retired"] is True and again["discarded_bits"] == 0
    st.close()


def test_a_retired_block_cannot_come_back_by_import(tmp_path: Path) -> None:
    """Bits of it exported before the retirement, sent back; and its refill row, left at the source, imported."""
    src, s_dir, t_dir = tmp_path / "S", tmp_path / "S2", tmp_path / "T"
    st, bits = _store(src)
    with KeyStore.for_node("C2", t_dir) as t:  # 4096 bits of blk-a leave for T
        export_keys(st, PAIR, tmp_path / "out.json", ticket=t.issue_import_ticket(), nbits=4096, purpose="general")
        assert import_keys(t, tmp_path / "out.json")["imported_bits"] == 4096
    res = st.retire_block("blk-a", "double")
    assert res["exported_bits"] and sum(res["exported_bits"].values()) == 4096  # the CLI says: retire it there too
    with KeyStore.for_node("C2", t_dir) as t:  # T sends them back
        export_keys(t, PAIR, tmp_path / "back.json", ticket=st.issue_import_ticket(), purpose="general")
    before = st.accounting()
    with pytest.raises(KeyStoreError, match=r"blk-a: it was retired .*nothing was imported.*destroy the file"):
        import_keys(st, tmp_path / "back.json")
    assert st.accounting() == before and (tmp_path / "back.json").exists()

    # a store that holds blk-a alone (its general pool imported) retires it; the refill row comes later
    with KeyStore.for_node("C2", s_dir) as s2:
        src2, _ = _store(tmp_path / "S3")
        export_keys(src2, PAIR, tmp_path / "g.json", ticket=s2.issue_import_ticket(), purpose="general")
        import_keys(s2, tmp_path / "g.json")
        s2.retire_block("blk-a", "double")
        export_keys(src2, PAIR, tmp_path / "auth.json", ticket=s2.issue_import_ticket(), purpose="auth")
        with pytest.raises(KeyStoreError, match=r"blk-a-auth: block blk-a of its distillation was retired"):
            import_keys(s2, tmp_path / "auth.json")
        assert not s2.has_block("blk-a-auth")
        src2.close()
    st.close()


def test_reservations_refuse_unless_forced_and_exports_always(tmp_path: Path) -> None:
    st, _ = _store(tmp_path)
    st.reserve(PAIR, 100, "general", "kid-1")  # the first 100 bits of blk-a, for a key not finished
    before = st.accounting()
    with pytest.raises(KeyStoreError) as err:
        st.retire_block("blk-a", "x")
    msg = str(err.value)
    assert "100 bits" in msg and "kid-1" in msg and "Nothing was retired" in msg and "--force" in msg, msg
    assert st.accounting() == before and st.retired_blocks() == [] and st.reservation("kid-1") is not None
    res = st.retire_block("blk-a", "forced", force=True)
    assert res["voided_keys"] == ["kid-1"] and st.delivery("kid-1")["state"] == "voided"
    assert st.accounting()[PAIR]["reserved"] == {}

    with KeyStore.for_node("C2", tmp_path / "T") as t:  # bits of blk-b being exported: refused, even forced
        st.begin_export(PAIR, 64, "general", ticket=t.issue_import_ticket())
    with pytest.raises(KeyStoreError, match="being exported.*nothing was retired"):
        st.retire_block("blk-b", "x", force=True)
    assert [r["block_id"] for r in st.retired_blocks()] == ["blk-a", "blk-a-auth"]
    st.close()


def test_overlapping_blocks_no_longer_lists_a_retired_block(tmp_path: Path) -> None:
    st, _ = _store(tmp_path)
    path = st.path
    st.close()
    with sqlite3.connect(path) as conn:  # blk-b distilled over blk-a's slots by a store before the checks
        conn.execute("UPDATE blocks SET meta = json_set(meta, '$.slots', json('[500, 2000]')) "
                     "WHERE block_id IN ('blk-b', 'blk-b-auth')")
    with KeyStore(path, node="C2") as st:
        assert [d["blocks"] for d in st.overlapping_blocks()] == [["blk-a", "blk-b"]]
        st.retire_block("blk-b", "the double")
        assert st.overlapping_blocks() == []
        with pytest.raises(KeyStoreError, match=r"^no block blk-z in key store"):
            st.retire_block("blk-z", "x")


def test_retire_reports_the_bits_handed_out_before_it(tmp_path: Path) -> None:
    """Review s39 K5: keys delivered from the block before it was retired cannot be recalled; the result says how
    many of its bits were handed out (or discarded) before, and a second retirement reports none."""
    with KeyStore.for_node("C2", tmp_path) as st:
        st.add_blocks("C1-C2", [("blk-k", np.zeros(1024, np.uint8), "general", None)])
        st.take("C1-C2", 100, "general")
        first = st.retire_block("blk-k", "test")
        assert first["handed_out_bits"] == 100 and first["discarded_bits"] == 924
        assert st.retire_block("blk-k", "again")["handed_out_bits"] == 0
