"""A delivery's ``info`` and a block's ``meta`` must be a dict (a JSON object): any other JSON value used to be
stored, and every later read of the record (``delivery``, ``finished`` of the whole pair, ``release``, ``void``, a
``retire_block`` that must void that reservation) then refused it as "edited or damaged" (review s40 keysrev F4).
Now refused at write time with one error naming the argument, nothing written. And voiding a reservation whose
stored ``info`` is damaged (``keys retire --force``, the safety action) is no longer blocked by that record."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore

PAIR = "C1-C2"


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    st = KeyStore(tmp_path / "C1.sqlite", node="C1")
    st.add_block(PAIR, np.random.default_rng(1).integers(0, 2, 4096, dtype=np.uint8), block_id="blk-1")
    yield st
    st.close()


def _rows(st: KeyStore) -> tuple[int, int, int]:
    with st._read() as conn:
        return (int(conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]),
                int(conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]),
                int(conn.execute("SELECT COUNT(*) FROM segments WHERE state = 'free'").fetchone()[0]))


@pytest.mark.parametrize("bad", [["a", "list"], "text", 3, True])
def test_non_dict_info_refused_nothing_written(store, bad):
    before, free = _rows(store), store.available_bits(PAIR)
    calls = [lambda: store.take(PAIR, 64, "general", info=bad),
             lambda: store.take_many(PAIR, [8, 8], "general", info=bad),
             lambda: store.take_exact(PAIR, [("blk-1", 0, 64)], "general", info=bad),
             lambda: store.reserve(PAIR, 64, "general", "kid-1", info=bad),
             lambda: store.reserve_exact(PAIR, [("blk-1", 0, 64)], "general", "kid-2", info=bad)]
    for call in calls:
        with pytest.raises(KeyStoreError, match=rf"^info must be a dict \(stored as a JSON object\) or None, got "
                                                 rf"{type(bad).__name__}; nothing was stored$"):
            call()
    assert _rows(store) == before and store.available_bits(PAIR) == free
    assert store.finished(PAIR, limit=None) == [] and store.pending_reservations() == []


def test_non_dict_meta_refused_nothing_written(store):
    before = _rows(store)
    bits = np.random.default_rng(2).integers(0, 2, 256, dtype=np.uint8)
    with pytest.raises(KeyStoreError, match=r"^meta of block blk-2 must be a dict \(stored as a JSON object\) or "
                                            r"None, got list; nothing was stored$"):
        store.add_block(PAIR, bits, block_id="blk-2", meta=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError, match=r"^meta of block blk-4 must be a dict .* got str;"):
        store.add_blocks(PAIR, [("blk-3", bits, "general", {}), ("blk-4", bits, "general", "x")])  # type: ignore[list-item]
    assert _rows(store) == before
    assert [b["block_id"] for b in store.blocks(PAIR)] == ["blk-1"]


def test_dict_and_none_still_accepted(store):
    k = store.take(PAIR, 64, "general", info={"use": "test"})
    assert store.delivery(k.key_id)["info"] == {"use": "test"}
    k2 = store.take(PAIR, 64, "general")
    assert store.delivery(k2.key_id)["info"] == {}


@pytest.mark.parametrize("damage", ["not json{", '["a", "list"]'])
def test_void_not_blocked_by_damaged_info(store, caplog, damage):
    refs = store.reserve(PAIR, 128, "general", "kid-r", info={"use": "test"})
    conn = sqlite3.connect(store.path)  # a hand edit (or damage) of the reservation's record
    conn.execute("UPDATE deliveries SET info = ? WHERE key_id = 'kid-r'", (damage,))
    conn.commit()
    conn.close()
    with pytest.raises(KeyStoreError, match="edited or damaged"):
        store.delivery("kid-r")  # (reads still refuse it)
    caplog.set_level(logging.WARNING, logger="labqfl")
    assert store.void("kid-r", "test void") == refs
    rec = store.delivery("kid-r")
    assert rec["state"] == "voided" and rec["info"] == {"info_unreadable": True, "voided": "test void"}
    warn = [r.getMessage() for r in caplog.records if "kid-r" in r.getMessage()]
    assert warn and "not a readable JSON object" in warn[0] and damage not in warn[0]


def test_retire_force_not_blocked_by_damaged_info(store):
    store.reserve(PAIR, 128, "general", "kid-r", info={"use": "test"})
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE deliveries SET info = '\"text\"' WHERE key_id = 'kid-r'")
    conn.commit()
    conn.close()
    out = store.retire_block("blk-1", "compromised", force=True)
    assert out["voided_keys"] == ["kid-r"]
    assert store.delivery("kid-r")["state"] == "voided"
    assert store.available_bits(PAIR) == 0
