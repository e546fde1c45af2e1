"""A pending WAL checkpoint finishes in a process that holds the store and makes no further call on it (session 39
leftover of review s39 K2): its retry thread ran while idle, but left the store's ``scrub_pending`` mark behind,
and a checkpoint another process left pending (it ended, or closed, while a reader held an old snapshot) was never
noticed by an idle holder, whose connection also keeps SQLite from checkpointing when the reader's closes: the
consumed bits stayed in the files until that process next used the store. Now the retry removes the mark it read,
and the idle watch (one thread per process, a stat of the ``-wal`` file a second) finds another process's mark.
And a store closed while its retry or the watch is at work closes at once, leaves no thread, and is not created
again if its file is removed afterwards."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from labqfl.keystore import KeyStore, node_store_path

PAIR, NB = "C1-C2", 8 * 4096
#: how long a pending checkpoint may take to finish once the reader left: one look of the idle watch (1 s), then
#: the retry's first attempt (20 ms); generous under the load of a shared test machine
BOUND_S = 10.0


def _block(path: Path, seed: int) -> list[bytes]:
    """A block of NB bits in the store at ``path``; returns probes (16-byte pieces of its packed bits)."""
    bits = np.random.default_rng(seed).integers(0, 2, NB, dtype=np.uint8)
    with KeyStore(path, node=path.stem) as st:
        st.add_block(PAIR, bits)
    raw = np.packbits(bits).tobytes()
    return [raw[i:i + 16] for i in range(0, len(raw) - 16, 64)]


def _found(path: Path, probes: list[bytes]) -> int:
    blob = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return sum(p in blob for p in probes)


def _mark(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM meta WHERE key = 'scrub_pending'").fetchone()[0])
    finally:
        conn.close()


def _reader(path: Path) -> sqlite3.Connection:
    """Another connection inside a read transaction: a checkpoint cannot finish past its snapshot."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM blocks").fetchone()
    return conn


def _within(cond: Callable[[], bool], seconds: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def test_the_retry_of_an_idle_holder_removes_the_bits_and_the_mark(tmp_path: Path) -> None:
    path = node_store_path("C1", tmp_path)
    probes = _block(path, 1)
    st = KeyStore(path, node="C1")
    try:
        reader = _reader(path)
        st.take(PAIR, NB, "general")
        assert st.scrub_status()["pending"] and _mark(path) == 1
        assert _found(path, probes) > len(probes) // 2
        reader.execute("COMMIT")
        reader.close()
        # no call on st from here: its retry thread alone
        took = _within(lambda: _found(path, probes) == 0 and _mark(path) == 0 and not st._scrub_pending, BOUND_S)
        assert took is not None, (_found(path, probes), _mark(path))  # before: the mark stayed (1)
        assert Path(str(path) + "-wal").stat().st_size == 0
    finally:
        st.close()


def test_an_idle_process_holding_the_store_finishes_another_process_s_pending_checkpoint(tmp_path: Path) -> None:
    path = node_store_path("C2", tmp_path)
    probes = _block(path, 2)
    idle = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time; from labqfl.keystore import KeyStore
        st = KeyStore({str(path)!r}); st.available_bits("C1-C2")
        print("open", flush=True)
        sys.stdin.readline()  # no call on the store until told
        print(st.wait_scrubbed(10), flush=True); st.close()  # (its retry records it after the mark's removal)""")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert idle.stdout is not None and idle.stdin is not None
        assert idle.stdout.readline().strip() == "open"
        reader = _reader(path)
        with KeyStore(path) as writer:  # another process's consuming call, ended while the reader stays
            writer.take(PAIR, NB, "general")
            assert writer.scrub_status()["pending"]
        assert _mark(path) == 1 and _found(path, probes) > len(probes) // 2
        reader.execute("COMMIT")
        reader.close()  # not the last connection (the idle process's is open): SQLite does not checkpoint
        took = _within(lambda: _found(path, probes) == 0 and _mark(path) == 0, BOUND_S)
        assert took is not None, (_found(path, probes), _mark(path))  # before: 64 of 64 until its next call
        idle.stdin.write("\n")
        idle.stdin.flush()
        assert idle.stdout.readline().strip() == "True"  # its own view agrees
        assert idle.wait(30) == 0
    finally:
        if idle.poll() is None:
            idle.kill()
            idle.wait()
    assert Path(str(path) + "-wal").stat().st_size == 0 if Path(str(path) + "-wal").exists() else True


#: run in a process of its own: the assertions on threads hold for the whole process
_OPEN_CLOSE = """
import sys, threading, time
from pathlib import Path
from labqfl.keystore import KeyStore

path = Path(sys.argv[1])


def scrub_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("keystore-scrub"))


for i in range(10):  # the retry (opening found the mark) and the watch at work, closed at varied moments
    st = KeyStore(path)
    assert "keystore-scrub-watch" in scrub_threads() and st.scrub_status()["pending"], scrub_threads()
    time.sleep(0.1 * (i % 4) + (1.05 if i == 9 else 0.0))  # (the last one past a look of the watch)
    t0 = time.monotonic()
    st.close()
    assert time.monotonic() - t0 < 2.0, time.monotonic() - t0
    assert scrub_threads() == [], scrub_threads()  # the last store closed here: no thread of ours is left
a, b = KeyStore(path), KeyStore(path)  # one closed while another opens: the watch goes on for the open one
opener = threading.Thread(target=lambda: b.available_bits("C1-C2"))
a.close()
opener.start()
opener.join()
time.sleep(1.2)
assert "keystore-scrub-watch" in scrub_threads(), scrub_threads()
b.close()
assert scrub_threads() == [], scrub_threads()
st = KeyStore(path)  # its files removed while it is open and its retry at work
for side in ("", "-wal", "-shm"):
    Path(str(path) + side).unlink()
time.sleep(2.5)  # (the retry's attempts: 20 ms doubling to 1 s)
assert not path.exists(), "the retry created the removed store again"
st.close()
print("ok")
"""


def test_a_store_closed_while_its_retry_or_the_watch_is_at_work_closes_at_once_and_stays_closed(tmp_path: Path) -> None:
    path = node_store_path("C3", tmp_path)
    _block(path, 3)
    reader = _reader(path)
    try:
        with KeyStore(path) as writer:
            writer.take(PAIR, 64, "general")
        assert _mark(path) == 1  # pending: every store opened below has its retry, the watch, or both at work
        out = subprocess.run([sys.executable, "-c", _OPEN_CLOSE, str(path)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert not path.exists()
