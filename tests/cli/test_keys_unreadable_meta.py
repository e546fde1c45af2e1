"""A store one of whose blocks' metadata was overwritten with text that is not JSON (a hand edit): ``labqfl keys
status`` printed "error: JSONDecodeError: Expecting value: line 1 column 1 (char 0)" (no store, no block) and
``keys retire`` "retiring block …: malformed JSON". Now one line names the store, the block, the column and what
was expected; the exit status is 1, there is no traceback, the other node's store is still shown, and no row of
the store changes (review s39 leftover)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR, ACQ = "C1-C2", "acq/unreadable-cli"


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(str(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def _data(tmp_path: Path) -> tuple[Path, list[str], Path]:
    rng = np.random.default_rng(8)
    ids = []
    with KeyStore.for_node("C1", tmp_path) as a, KeyStore.for_node("C2", tmp_path) as b:
        for i in range(3):
            bits = rng.integers(0, 2, 4096, dtype=np.uint8)
            meta = {"eps_sec": 1e-10, "acquisition": ACQ, "slots": [10 * i, 10 * i + 10]}
            ids.append(a.add_block(PAIR, bits, meta=meta))
            b.add_block(PAIR, bits, block_id=ids[-1], meta=meta)
        path = b.path
    with sqlite3.connect(str(path)) as conn:
        conn.execute("UPDATE blocks SET meta = 'eps_sec=1e-10' WHERE block_id = ?", (ids[1],))
    return tmp_path, ids, path


def test_keys_status_names_the_block_whose_metadata_is_not_json(tmp_path: Path) -> None:
    data, ids, path = _data(tmp_path)
    before = _rows(path)
    res = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(data)])
    assert res.exit_code == 1, res.output
    line = res.output[res.output.index("error:"):]
    assert line.count("\n") == 1 and res.output.count("error:") == 1, res.output  # one line, the last
    assert line.startswith(f"error: node C2: key store {path}: block {ids[1]}: its blocks.meta is not JSON"), line
    assert "expected the block's metadata as a JSON object" in line and "Traceback" not in res.output, line
    # C1's store is still shown: its table row (review s40 user LOW-3), or its record where the table does not fit
    assert re.search(r"│ C1 +│ C1-C2 +│ +3 │", res.output) or (
        "node C1 pair C1-C2" in res.output and "blocks: 3" in res.output), res.output
    assert _rows(path) == before


def test_keys_retire_names_it_and_retires_nothing(tmp_path: Path) -> None:
    data, ids, path = _data(tmp_path)
    before = {n: _rows(data / "keystore" / f"{n}.sqlite") for n in ("C1", "C2")}
    for bid in (ids[1], ids[0]):  # the block itself, and another of its pair (which blocks share its origin?)
        line = error_line(CliRunner().invoke(app, ["keys", "retire", bid, "--data-dir", str(data)]))
        assert f"key store {path}: block {ids[1]}: its blocks.meta is not JSON" in line, line
        assert "expected the block's metadata as a JSON object" in line and "nothing was changed" in line, line
    assert {n: _rows(data / "keystore" / f"{n}.sqlite") for n in ("C1", "C2")} == before
