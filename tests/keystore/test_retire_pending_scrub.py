"""A retirement whose WAL checkpoint a reader's snapshot blocks, while another labqfl process (a KME between
requests) has the store open (review s39 K2): the retiring process's retry dies with it, and the reader closing is
not the last connection, so SQLite does not checkpoint. The pending checkpoint is recorded in the store, and the
other process's next transaction (a read: a KME's next request) checkpoints once the reader has left."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from labqfl.keystore import KeyStore

PAIR, ACQ, NB = "C1-C2", "acq/pending-scrub", 8 * 4096


def _found(d: Path, probes: list[bytes]) -> int:
    blob = b"".join(p.read_bytes() for p in (d / "keystore").glob("C2.sqlite*"))
    return sum(p in blob for p in probes)


def test_the_next_read_of_a_process_holding_the_store_scrubs_once_the_reader_left(tmp_path: Path) -> None:
    d = tmp_path
    bits = np.random.default_rng(3).integers(0, 2, NB, dtype=np.uint8)
    raw = np.packbits(bits).tobytes()
    probes = [raw[i:i + 16] for i in range(0, len(raw) - 16, 64)]
    with KeyStore.for_node("C2", d) as st:
        st.claim_slots(PAIR, ACQ, 0, 10, "A")
        st.add_blocks(PAIR, [("A", bits, "general", {"acquisition": ACQ, "slots": [0, 10]})])
    # the idle process: opens the store, then reads once when told (a file appears), then once more
    go = d / "go"
    idle = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time; from pathlib import Path; from labqfl.keystore import KeyStore
        st = KeyStore.for_node("C2", Path({str(d)!r})); st.available_bits("C1-C2")
        print("open", flush=True)
        while not Path({str(go)!r}).exists(): time.sleep(0.02)
        st.available_bits("C1-C2"); print("read", flush=True); time.sleep(30)""")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert idle.stdout is not None and idle.stdout.readline().strip() == "open"
        reader = sqlite3.connect(str(d / "keystore" / "C2.sqlite"), isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM blocks").fetchone()
        retirer = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from pathlib import Path; from labqfl.keystore import KeyStore
            with KeyStore.for_node("C2", Path({str(d)!r})) as st:
                print(st.retire_block("A", "test")["scrub"]["pending"])""")], capture_output=True, text=True)
        assert retirer.returncode == 0 and retirer.stdout.strip() == "True", retirer.stderr
        assert _found(d, probes) > len(probes) // 2  # the reader's snapshot still holds them
        reader.execute("COMMIT")
        reader.close()  # (SQLite does not checkpoint: the idle process's connection is open; since session 40 its
        go.touch()  # idle watch does, within about a second: tests/keystore/test_idle_scrub.py)
        assert idle.stdout.readline().strip() == "read"
        assert _found(d, probes) == 0  # before: 63 of 64 until the next open
    finally:
        idle.kill()
        idle.wait()
    with sqlite3.connect(str(d / "keystore" / "C2.sqlite")) as conn:  # the mark went with the checkpoint
        assert conn.execute("SELECT count(*) FROM meta WHERE key = 'scrub_pending'").fetchone()[0] == 0
