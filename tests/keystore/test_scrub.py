"""Consumed key bits leave the database files even when another connection holds a read
snapshot (issue 19, item 4): a take never waits for the busy timeout, the checkpoint's result is
read, the pending state is visible, and once the reader leaves the bits are gone from the main
file and the WAL (searched as raw bytes)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore, node_store_path

PAIR = "C1-C2"
BUSY_S = 30.0  # a take that waited for the busy timeout would take this long


@contextmanager
def reader_holding_snapshot(path: Path) -> Iterator[None]:
    """Another connection, in another thread, inside a read transaction until the block exits."""
    started, release, errors = threading.Event(), threading.Event(), []

    def run() -> None:
        try:
            con = sqlite3.connect(str(path), isolation_level=None)
            con.execute("BEGIN")
            con.execute("SELECT count(*) FROM blocks").fetchone()  # the snapshot starts here
            started.set()
            release.wait(120)
            con.execute("COMMIT")
            con.close()
        except Exception as exc:  # reported by the test, never swallowed
            errors.append(exc)
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30) and not errors, errors
    try:
        yield
    finally:
        release.set()
        t.join(30)
        assert not t.is_alive() and not errors, errors


def _store_with_block(tmp_path: Path, seed: int) -> tuple[KeyStore, np.ndarray]:
    path = node_store_path("C1", tmp_path)
    bits = np.random.default_rng(seed).integers(0, 2, 8 * 4096, dtype=np.uint8)
    with KeyStore(path, node="C1") as s:
        s.add_block(PAIR, bits)
    # Reopened: the block is in the main file, the WAL empty; a take that waited for the busy
    # timeout would take BUSY_S.
    return KeyStore(path, node="C1", busy_timeout_s=BUSY_S), bits


def _probes(bits: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    raw = np.packbits(bits).tobytes()
    return ([raw[i:i + 16] for i in range(0, 2048, 64)],  # in the consumed half
            [raw[i:i + 16] for i in range(2112, 4096 - 16, 64)])  # in the free half (past the 8-bit take)


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _take_while_reading(s: KeyStore, bits: np.ndarray) -> None:
    t0 = time.monotonic()
    k = s.take(PAIR, 8 * 2048, "general")
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"take waited {elapsed:.1f} s with a reader present (busy timeout {BUSY_S} s)"
    assert np.array_equal(k.bits, bits[:8 * 2048])
    st = s.scrub_status()
    assert st["pending"] is True and st["last"]["busy"] == 1, st
    assert st["wal_bytes"] > 0


def test_take_is_prompt_with_a_reader_and_the_retry_scrubs_once_it_leaves(tmp_path: Path):
    s, bits = _store_with_block(tmp_path, seed=11)
    consumed, kept = _probes(bits)
    with reader_holding_snapshot(s.path):
        _take_while_reading(s, bits)
        t0 = time.monotonic()
        s.take(PAIR, 8, "general")  # a second take is prompt too (nothing blocks on the pending checkpoint)
        assert time.monotonic() - t0 < 5.0
        assert s.scrub_status()["pending"] is True
    # The reader has left: the background retry finishes the checkpoint without any further call.
    assert s.wait_scrubbed(timeout=20), s.scrub_status()
    st = s.scrub_status()
    assert st["pending"] is False and st["last"]["busy"] == 0 and st["wal_bytes"] == 0, st
    blob = _file_bytes(s.path)
    assert not any(p in blob for p in consumed), "consumed key material still in the database file or WAL"
    assert all(p in blob for p in kept), "unconsumed key material must stay"
    s.close()


def test_close_after_the_reader_left_scrubs_and_status_shows_the_pending_checkpoint(tmp_path: Path):
    s, bits = _store_with_block(tmp_path, seed=12)
    consumed, _ = _probes(bits)
    runner = CliRunner()
    with reader_holding_snapshot(s.path):
        _take_while_reading(s, bits)
        assert any(p in _file_bytes(s.path) for p in consumed)  # what the reader's snapshot still needs
        res = runner.invoke(app, ["keys", "status", "--node", "C1", "--json"], env={"LABQFL_DATA_DIR": str(tmp_path)})
        assert res.exit_code == 0, res.output
        node = json.loads(res.stdout)["nodes"]["C1"]
        assert node["scrub"]["pending"] is True and node["scrub"]["wal_bytes"] > 0
        assert node["store_id"] == s.store_id
    s.close()  # stops the retry and checkpoints itself: no reader is left
    blob = _file_bytes(s.path)
    assert not any(p in blob for p in consumed), "consumed key material still in the database file or WAL"
    wal = Path(str(s.path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    res = runner.invoke(app, ["keys", "status", "--node", "C1"], env={"LABQFL_DATA_DIR": str(tmp_path)})
    assert res.exit_code == 0 and "WAL checkpointed" in res.output, res.output


def test_a_write_after_the_reader_left_scrubs_even_without_the_retry(tmp_path: Path):
    s, bits = _store_with_block(tmp_path, seed=13)
    consumed, _ = _probes(bits)
    s._RETRY_FIRST_S = 3600.0  # keep the background retry out of this test: only the next take may scrub
    with reader_holding_snapshot(s.path):
        _take_while_reading(s, bits)
    assert s.scrub_status()["pending"] is True
    s.take(PAIR, 8, "general")
    assert s.scrub_status()["pending"] is False
    assert not any(p in _file_bytes(s.path) for p in consumed)
    s.close()
