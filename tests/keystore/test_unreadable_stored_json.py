"""A stored JSON column that is not JSON (a hand-edited or damaged store: ``blocks.meta``, ``deliveries.refs`` /
``info``, ``exports.refs``, ``retired_blocks.voided``) made ``blocks()``, ``retire_block`` (``_distillation``),
``overlapping_blocks``, ``delivery``/``release`` … raise a bare ``json.JSONDecodeError`` or SQLite's "malformed JSON"
(inside a write: "cannot be written … fix the file system"), and ``keys status`` print "JSONDecodeError: Expecting
value" (review s39 leftover). Each is one :class:`KeyStoreError` now, naming the store, the row, the column and
what was expected, and nothing stored changes (every table's rows compared before and after)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore, node_store_path

PAIR, OTHER, ACQ = "C1-C2", "C2-C3", "acq/unreadable"


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, material included, in a fixed order."""
    with sqlite3.connect(str(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def _store(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """C2's store: three blocks of one acquisition (pair C1-C2), a block of C2-C3 retired (voided key IDs), a
    reservation (deliveries), an export (exports). Returns its path and the IDs (and an import ticket of another
    store of node C2)."""
    rng = np.random.default_rng(5)
    ids: dict[str, Any] = {}
    with KeyStore.for_node("C2", tmp_path) as st, KeyStore.for_node("C2", tmp_path / "moved") as target:
        for i in range(3):
            bits = rng.integers(0, 2, 4096, dtype=np.uint8)
            ids[f"b{i}"] = st.add_block(PAIR, bits, meta={"eps_sec": 1e-10, "acquisition": ACQ, "slots": [10 * i, 10 * i + 10]})
        ids["other"] = st.add_block(OTHER, rng.integers(0, 2, 4096, dtype=np.uint8))
        ids["gone"] = st.add_block(OTHER, rng.integers(0, 2, 4096, dtype=np.uint8))
        st.reserve(OTHER, 16, "general", "k-voided")
        st.retire_block(ids["gone"], "test", force=True)
        st.reserve(PAIR, 64, "general", "k-res")
        binding, _ = st.begin_export(OTHER, 32, "general", ticket=target.issue_import_ticket())
        ids["export"] = binding.export_id
        ids["ticket"] = target.issue_import_ticket()
    return node_store_path("C2", tmp_path), ids


#: (table, key column, row key (an ``ids`` name or a literal), column, row's name in the message, calls that read it)
CASES: list[tuple[str, str, str, str, str, list[Callable[[KeyStore, dict[str, Any]], Any]]]] = [
    ("blocks", "block_id", "b1", "meta", "block {}", [
        lambda st, ids: st.blocks(),
        lambda st, ids: st.blocks(PAIR),
        lambda st, ids: st.overlapping_blocks(),
        lambda st, ids: st.retire_block(ids["b1"], "test", dry_run=True),
        lambda st, ids: st.retire_block(ids["b1"], "test"),
        lambda st, ids: st.retire_block(ids["b0"], "test"),  # another block of the pair: its group is unknown
        lambda st, ids: st.begin_export(PAIR, 32, "general", ticket=ids["ticket"]),  # b0's bits: the pair's
        # pre-shared blocks are read for the export's metadata
    ]),
    ("deliveries", "key_id", "k-res", "refs", "delivery {}", [
        lambda st, ids: st.delivery("k-res"),
        lambda st, ids: st.reservation("k-res"),
        lambda st, ids: st.pending_reservations(),
        lambda st, ids: st.release("k-res"),
        lambda st, ids: st.void("k-res", "test"),
        lambda st, ids: st.read_reserved("k-res"),
    ]),
    ("deliveries", "key_id", "k-res", "info", "delivery {}", [
        lambda st, ids: st.delivery("k-res"),
        lambda st, ids: st.release("k-res"),
        # (void is not refused for a damaged info since review s40 keysrev F4: voiding is the safety action,
        # tests/keystore/test_info_must_be_object.py)
    ]),
    ("exports", "export_id", "export", "refs", "export {}", [lambda st, ids: st.exports()]),
    ("retired_blocks", "block_id", "gone", "voided", "retired block {}", [lambda st, ids: st.retired_blocks()]),
]


@pytest.mark.parametrize("bad", ["not json{", "", '{"eps_sec": 1e-10', "[1, 2]"], ids=["text", "empty", "cut", "type"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}.{c[3]}" for c in CASES])
def test_an_unreadable_stored_json_column_is_one_refusal_naming_it_and_nothing_changes(tmp_path: Path, case, bad) -> None:  # type: ignore[no-untyped-def]
    table, key_col, key, column, row_name, calls = case
    if bad == "[1, 2]" and column in ("refs", "voided"):
        bad = '{"a": 1}'  # (a list is what these hold: a JSON object is the wrong type there)
    path, ids = _store(tmp_path)
    row_key = ids.get(key, key)
    with sqlite3.connect(str(path)) as conn:  # the hand edit
        assert conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key_col} = ?", (bad, row_key)).rowcount == 1
    before = _rows(path)
    with KeyStore(path) as st:
        for call in calls:
            with pytest.raises(KeyStoreError) as err:
                call(st, ids)
            msg = str(err.value)
            assert msg.startswith(f"key store {path}: {row_name.format(row_key)}: its {table}.{column} is "), msg
            assert "expected " in msg and "nothing was changed" in msg and "\n" not in msg, msg
            assert bad not in msg or bad == "", msg  # (the value itself is not shown)
    assert _rows(path) == before  # every row of every table, the other blocks' material included


def test_the_origin_checks_of_a_store_without_the_index_refuse_by_name_too(tmp_path: Path) -> None:
    """A store whose origin index was never made (no write checked origins yet) reads the blocks with SQLite's
    ``json_extract``: it stopped at the unreadable one with "malformed JSON", named a file-system failure."""
    path = node_store_path("C2", tmp_path)
    rng = np.random.default_rng(6)
    with KeyStore(path, node="C2") as st:
        a = st.add_block(PAIR, rng.integers(0, 2, 256, dtype=np.uint8))
    with sqlite3.connect(str(path)) as conn:
        conn.execute("DROP TABLE IF EXISTS block_origins")
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE blocks SET meta = 'not json' WHERE block_id = ?", (a,))
    before = _rows(path)
    with KeyStore(path) as st:
        assert not st._has_table(st._connection(), "block_origins")
        with pytest.raises(KeyStoreError, match=f"key store {path}: pair {PAIR}: the metadata of block {a} is not "
                                                "valid JSON.*nothing was stored"):
            st.check_slots_free(PAIR, ACQ, 0, 10)
    assert _rows(path) == before
