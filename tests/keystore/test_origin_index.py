"""The origin checks (distillation, add_block, import against the blocks' recorded origins and the ledger) read an
index, not every block of the recording (review s38 K1 follow-up: 2 000 blocks of one recording took 17.1 CPU s,
quadratic). The refusals stay those of the scan they replace: on random interval sets, overlapping ones, edited
records and blocks an older labqfl added, the new checks find the same first overlap, with the same words, as
the scan (written out below as it was), and ``overlapping_blocks`` the same pairs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.store import _HELD_OVERLAP_SQL, block_origin

PAIR, OTHER = "C1-C2", "C1-C3"
ACQS = ("acq-A", "acq-B")


# ---------------------------------------------------------------- the checks as they were (a scan of every block)

def _scan_held(conn: sqlite3.Connection, pair: str, acq: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """Origins ``(start, end, key)`` of the blocks of ``pair`` over ``[start, end)`` of ``acq``, in the order added."""
    out = []
    for bid, meta_s in conn.execute("SELECT block_id, meta FROM blocks WHERE pair = ? ORDER BY seq", (pair,)):
        o = block_origin(str(bid), json.loads(meta_s))
        if o is not None and o[0] == acq and o[1] < end and o[2] > start:
            out.append((o[1], o[2], o[3]))
    return out


def _scan_ledger(conn: sqlite3.Connection, pair: str, acq: str, start: int, end: int) -> list[tuple[int, int, str]]:
    rows = conn.execute("SELECT start, end, block_id FROM distilled_slots WHERE pair = ? AND acquisition = ? "
                        "ORDER BY start", (pair, acq)).fetchall()
    return [(int(a), int(b), str(c)) for a, b, c in rows if a < end and b > start]


def _scan_taken(path: Path, conn: sqlite3.Connection, pair: str, acq: str, start: int, end: int) -> str | None:
    """``KeyStore._slots_taken`` before the index: the first ledger row, else the first held block, over the slots."""
    rows = _scan_ledger(conn, pair, acq, start, end) or _scan_held(conn, pair, acq, start, end)
    if not rows:
        return None
    a, b, bid = rows[0]
    return (f"pair {pair}: slots [{start}, {end}) of acquisition {acq} overlap slots [{a}, {b}) already distilled "
            f"into key store {path} (block {bid}); refusing to distil the same raw data twice")


def _scan_refusal(path: Path, conn: sqlite3.Connection, pair: str, block_id: str, origin: tuple[str, int, int, str],
                  imported: bool) -> str | None:
    """``KeyStore._origin_refusal`` before the index."""
    acq, start, end, key = origin
    where = f"slots [{start}, {end}) of acquisition {acq}"
    held = set()
    for a, b, k in _scan_held(conn, pair, acq, start, end):
        held.add(k)
        if k != key:
            return (f"pair {pair}: block {block_id} was distilled from {where}, which overlap slots [{a}, {b}) of "
                    f"block {k} held in key store {path}")
    for a, b, bid in _scan_ledger(conn, pair, acq, start, end):
        if bid != key or (imported and key not in held):
            return (f"pair {pair}: block {block_id} was distilled from {where}, which overlap slots [{a}, {b}) "
                    f"already distilled into (or imported into) key store {path} as block {bid}")
    return None


def _scan_overlapping(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """``KeyStore.overlapping_blocks`` as it was (every pair of distillations over the same slots)."""
    by: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for bid, pair, meta_s in conn.execute("SELECT block_id, pair, meta FROM blocks ORDER BY seq"):
        o = block_origin(str(bid), json.loads(meta_s))
        if o is not None:
            by.setdefault((str(pair), o[0]), []).append((o[1], o[2], o[3]))
    out, seen = [], set()
    for (pair, acq), items in by.items():
        order = {key: i for i, (_, _, key) in reversed(list(enumerate(items)))}
        ranges = sorted(items)
        for i, (a, b, key) in enumerate(ranges):
            for a2, b2, key2 in ranges[i + 1:]:
                if a2 >= b:
                    break
                first, second = sorted(((a, b, key), (a2, b2, key2)), key=lambda r: order[r[2]])
                if key2 == key or (first[2], second[2]) in seen:
                    continue
                seen.add((first[2], second[2]))
                out.append({"pair": pair, "acquisition": acq, "blocks": [first[2], second[2]],
                            "slots": [[first[0], first[1]], [second[0], second[1]]]})
    return out


# ---------------------------------------------------------------- random stores

def _random_meta(rng: np.random.Generator, i: int, keys: list[str]) -> dict[str, Any]:
    """A block record: mostly a distilled block (or a refill of an earlier one), sometimes one a check must pass over
    (no acquisition, no or malformed slots: strings, booleans, floats, reversed)."""
    start = int(rng.integers(0, 5000))
    meta: dict[str, Any] = {"acquisition": str(rng.choice(ACQS)), "slots": [start, start + int(rng.integers(1, 400))]}
    odd = rng.random()
    if odd < 0.05:
        meta.pop("acquisition")
    elif odd < 0.08:
        meta["slots"] = [str(start), str(start + 10)]
    elif odd < 0.10:
        meta["slots"] = [True, start + 10]
    elif odd < 0.12:
        meta["slots"] = [float(start), start + 10.0]
    elif odd < 0.14:
        meta["slots"] = [start + 10, start]
    elif odd < 0.15:
        meta["acquisition"] = 7
    elif odd < 0.30 and keys:
        meta.update(kind="auth-refill", key_block=str(rng.choice(keys)))
    return meta


def _insert_raw(conn: sqlite3.Connection, bid: str, pair: str, meta: dict[str, Any]) -> None:
    """A block as a store without the origin checks (an older labqfl) added it: no check, no ledger row."""
    cur = conn.execute("INSERT INTO blocks (block_id, pair, nbits, meta, created, material) VALUES (?, ?, 8, ?, '', "
                       "zeroblob(1))", (bid, pair, json.dumps(meta)))
    conn.execute("INSERT INTO segments VALUES (?, 0, 8, ?, 'general', 'free', NULL)", (cur.lastrowid, pair))


def _random_store(tmp: Path, seed: int) -> KeyStore:
    rng = np.random.default_rng(seed)
    st = KeyStore.for_node("C1", tmp / f"s{seed}")
    path = st.path
    st.close()
    keys: list[str] = []

    def add(conn: sqlite3.Connection, n: int, tag: str) -> None:
        for i in range(n):
            bid = f"{tag}-{i}"
            _insert_raw(conn, bid, PAIR if rng.random() < 0.85 else OTHER, _random_meta(rng, i, keys))
            keys.append(bid)
            if rng.random() < 0.4:  # a ledger row (of this block, or of one aborted: no block)
                a = int(rng.integers(0, 5000))
                conn.execute("INSERT OR IGNORE INTO distilled_slots VALUES (?, ?, ?, ?, ?, '')",
                             (PAIR, str(rng.choice(ACQS)), a, a + int(rng.integers(1, 400)),
                              bid if rng.random() < 0.7 else f"aborted-{tag}-{i}"))

    with sqlite3.connect(path) as conn:  # blocks from before the index: filled in when it is made
        conn.execute(KeyStore._DISTILLED_DDL)
        add(conn, 120, "old")
    with KeyStore.for_node("C1", path.parent.parent) as s:  # a write that checks origins makes the index
        s.claim_slots(PAIR, "acq-C", 0, 10, "blk-c")
    with sqlite3.connect(path) as conn:  # then an older labqfl adds blocks and an edit changes a record
        add(conn, 120, "new")
        conn.execute("UPDATE blocks SET meta = json_set(meta, '$.slots', json('[100, 2500]')) WHERE block_id = 'old-3'")
        conn.execute("UPDATE blocks SET pair = ? WHERE block_id = 'new-5'", (OTHER,))
    return KeyStore.for_node("C1", path.parent.parent)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_indexed_checks_find_what_the_scan_found(tmp_path: Path, seed: int) -> None:
    st = _random_store(tmp_path, seed)
    rng = np.random.default_rng(100 + seed)
    refused = 0
    with st._write() as conn:  # (_origin_refusal runs inside add_blocks' or an import's write transaction)
        assert conn.execute("SELECT count(*) FROM block_origins").fetchone()[0] > 200  # filled, then kept in step
        plan = conn.execute("EXPLAIN QUERY PLAN " + _HELD_OVERLAP_SQL, (PAIR, "acq-A", 200, 0, 100)).fetchall()
        assert "USING INDEX block_origins_start" in str(plan), plan
        for _ in range(150):
            acq = str(rng.choice((*ACQS, "acq-none")))
            a = int(rng.integers(0, 5600))
            b = a + int(rng.integers(1, 600))
            for pair in (PAIR, OTHER):
                new = st._slots_taken(conn, pair, acq, a, b)
                assert (None if new is None else str(new)) == _scan_taken(st.path, conn, pair, acq, a, b)
                assert st._held_overlap(conn, pair, acq, a, b) == next(iter(_scan_held(conn, pair, acq, a, b)), None)
                key = str(rng.choice([f"old-{int(rng.integers(0, 120))}", "brand-new"]))
                for imported in (False, True):
                    why = st._origin_refusal(conn, pair, "blk-x", (acq, a, b, key), imported=imported)
                    assert why == _scan_refusal(st.path, conn, pair, "blk-x", (acq, a, b, key), imported)
                    refused += why is not None
        expected = _scan_overlapping(conn)
    assert refused > 50  # the random sets overlap: refusals were compared, not only acceptances
    assert st.overlapping_blocks() == expected and len(expected) > 10
    st.close()


# ---------------------------------------------------------------- the cost per check does not grow with the blocks

def _store_of(tmp: Path, n: int) -> KeyStore:
    """A store holding ``n`` distilled blocks of one recording (key block + refill each, ledger rows), then one
    distillation through the store's own calls."""
    st = KeyStore.for_node("C1", tmp / f"n{n}")
    path = st.path
    st.close()
    with sqlite3.connect(path) as conn:
        conn.execute(KeyStore._DISTILLED_DDL)
        for i in range(n):
            meta = {"acquisition": "acq-A", "slots": [100 * i, 100 * i + 100]}
            _insert_raw(conn, f"b{i}", PAIR, meta)
            _insert_raw(conn, f"b{i}-auth", PAIR, {**meta, "kind": "auth-refill", "key_block": f"b{i}"})
            conn.execute("INSERT INTO distilled_slots VALUES (?, 'acq-A', ?, ?, ?, '')", (PAIR, 100 * i, 100 * i + 100,
                                                                                         f"b{i}"))
    st = KeyStore.for_node("C1", path.parent.parent)
    st.claim_slots(PAIR, "acq-A", 100 * n, 100 * n + 100, f"b{n}")
    return st


def _vm_steps(st: KeyStore, n: int) -> dict[str, int]:
    """SQLite virtual-machine steps (in 100s) of the distiller's checks of one more block at the end of the recording,
    of an add_blocks of it, and of a check in the middle of the recording."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    out = {}
    conn = st._connection()
    conn.set_progress_handler(tick, 100)
    try:
        for name, call in (
                ("check_end", lambda: st.check_slots_free(PAIR, "acq-A", 100 * n + 100, 100 * n + 200)),
                ("add_block", lambda: st.add_block(PAIR, np.ones(64, np.uint8), block_id=f"b{n}",
                                                   meta={"acquisition": "acq-A", "slots": [100 * n, 100 * n + 100]})),
                ("check_middle", lambda: pytest.raises(KeyStoreError, st.check_slots_free, PAIR, "acq-A", 50 * n,
                                                       50 * n + 100))):
            count[0] = 0
            call()
            out[name] = count[0]
    finally:
        conn.set_progress_handler(None, 0)
    return out


def test_a_check_reads_the_index_not_every_block_of_the_recording(tmp_path: Path) -> None:
    small, large = _store_of(tmp_path, 200), _store_of(tmp_path, 4000)
    s, g = _vm_steps(small, 200), _vm_steps(large, 4000)
    small.close()
    large.close()
    for name in s:  # a scan of every block grows 20-fold from 200 to 4 000 blocks; the index reads O(log n)
        assert g[name] < 2 * s[name] + 50, (name, s, g)
