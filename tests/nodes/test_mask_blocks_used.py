"""``labqfl.nodes.runjob.mask_blocks_used`` reads Ci's deliveries through the key store (no key bit): the mask
pads' block IDs since a time; a delivery record that is not JSON is one KeyStoreError naming the store, the key
ID and the column (before session 40 it opened the SQLite file itself and raised a bare JSONDecodeError)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.fl.keysource import take_master_keys
from labqfl.keystore import KeyStore
from labqfl.nodes.runjob import mask_blocks_used

PAD = 768


def _store_with_two_mask_pads(keys) -> tuple[list[str], str]:
    rng = np.random.default_rng(3)
    with KeyStore.for_node("C1", keys) as st:
        blocks = [st.add_block("C1-C2", rng.integers(0, 2, PAD, dtype=np.uint8), run_id="t", meta={"eps_sec": 1e-4})
                  for _ in range(2)]
        take_master_keys(st, "C1-C2", PAD, round_index=1)
        since = datetime.now(UTC).isoformat(timespec="microseconds")
        take_master_keys(st, "C1-C2", PAD, round_index=2)
    return blocks, since


def test_mask_blocks_since_a_time(tmp_path) -> None:
    blocks, since = _store_with_two_mask_pads(tmp_path)
    assert mask_blocks_used(tmp_path, ["C1-C2"], "1970-01-01T00:00:00+00:00") == {"C1-C2": sorted(blocks)}
    [only] = mask_blocks_used(tmp_path, ["C1-C2"], since)["C1-C2"]
    assert only in blocks


def test_a_delivery_record_that_is_not_json_is_one_error_naming_it(tmp_path) -> None:
    _store_with_two_mask_pads(tmp_path)
    path = tmp_path / "keystore" / "C1.sqlite"
    con = sqlite3.connect(path)
    with con:
        [(key_id,)] = con.execute("SELECT key_id FROM deliveries ORDER BY created LIMIT 1").fetchall()
        con.execute("UPDATE deliveries SET info = 'not json' WHERE key_id = ?", (key_id,))
    con.close()
    with pytest.raises(KeyStoreError) as exc:
        mask_blocks_used(tmp_path, ["C1-C2"], "1970-01-01T00:00:00+00:00")
    msg = str(exc.value)
    assert str(path) in msg and key_id in msg and "deliveries.info" in msg and "expected" in msg
