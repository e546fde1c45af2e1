"""Concurrency and crash safety of the key store: many threads and processes taking at once
never get overlapping bits, and processes SIGKILLed at random instants never cause a bit to be
handed out twice nor lose an unconsumed bit."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import InsufficientKeyError
from labqfl.keystore import KeyStore

PAIR = "C1-C2"


def test_threads_taking_concurrently_never_overlap(two_stores, kh):
    stores, blocks = two_stores
    store = stores["C1"]

    def worker(i: int) -> list[tuple[list, np.ndarray]]:
        out = []
        for j in range(15):
            k = store.take(PAIR, 8 + (i * 7 + j) % 40, "general")
            out.append((k.refs, k.bits.copy()))
        return out

    with ThreadPoolExecutor(8) as ex:
        results = [r for rs in ex.map(worker, range(8)) for r in rs]
    seen: set = set()
    for refs, bits in results:
        pos = kh.positions(refs)
        assert not seen & set(pos)
        seen |= set(pos)
        assert np.array_equal(bits, kh.expected_bits(blocks, refs))
    acc = store.accounting()[PAIR]
    assert acc["consumed"]["general"] == len(seen)


def _proc_worker(path: str, n: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    store = KeyStore(path)
    out = []
    for j in range(n):
        out.append(store.take(PAIR, 16 + j % 24, "general").refs)
    q.put(out)


def test_processes_taking_concurrently_never_overlap(two_stores, kh):
    stores, _ = two_stores
    path = str(stores["C1"].path)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc_worker, args=(path, 20, q)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    seen: set = set()
    for refs_list in results:
        for refs in refs_list:
            pos = set(kh.positions([tuple(r) for r in refs]))
            assert not seen & pos
            seen |= pos


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from labqfl.keystore import KeyStore
    from labqfl.errors import InsufficientKeyError
    store = KeyStore(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    print("ready", flush=True)
    while True:
        try:
            k = store.take("C1-C2", int(rng.integers(1, 200)), "general")
        except InsufficientKeyError:
            print("empty", flush=True)
            break
        print(json.dumps({"refs": k.refs, "bits": "".join(map(str, k.bits.tolist()))}), flush=True)
""")


def test_sigkill_at_random_points_never_reuses_nor_loses_bits(tmp_path: Path):
    rng = np.random.default_rng(11)
    store = KeyStore.for_node("C1", tmp_path)
    blocks = {}
    for _ in range(3):
        bits = rng.integers(0, 2, 20000, dtype=np.uint8)
        blocks[store.add_block(PAIR, bits)] = bits
    added = 60000
    path = str(store.path)
    store.close()
    returned: list[tuple[list, str]] = []
    kills = 0
    for round_ in range(8):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, path, str(round_)], stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        n_lines = int(rng.integers(0, 12))
        empty = False
        for _ in range(n_lines):
            line = child.stdout.readline()
            if not line or line.strip() == "empty":
                empty = True
                break
            d = json.loads(line)
            returned.append((d["refs"], d["bits"]))
        if not empty:
            child.send_signal(signal.SIGKILL)  # the child is somewhere inside its take loop
            kills += 1
        # Lines the child printed before dying were handed out: count them too.
        for line in child.stdout.read().splitlines():
            if line.strip() and line.strip() != "empty":
                d = json.loads(line)
                returned.append((d["refs"], d["bits"]))
        child.wait(30)
        if empty:
            break
    assert kills >= 3
    seen: set = set()
    for refs, bit_string in returned:
        pos = {(b, i) for b, o, n in refs for i in range(o, o + n)}
        assert not seen & pos, "a bit was handed out twice"
        seen |= pos
        exp = np.concatenate([blocks[b][o:o + n] for b, o, n in refs])
        assert bit_string == "".join(map(str, exp.tolist())), "handed-out bits differ from the stored key"
    # No loss: what is left is still there, intact, and available + consumed == added.
    store = KeyStore(path)
    acc = store.accounting()[PAIR]
    consumed = sum(acc["consumed"].values())
    available = sum(acc["available"].values())
    assert available + consumed == added == acc["added"]
    assert consumed >= len(seen)  # a child may die after its commit and before printing
    if available:
        rest = store.take(PAIR, available, "general")
        assert not set(seen) & {(b, i) for b, o, n in rest.refs for i in range(o, o + n)}
        assert np.array_equal(rest.bits, np.concatenate([blocks[b][o:o + n] for b, o, n in rest.refs]))
    with pytest.raises(InsufficientKeyError):
        store.take(PAIR, 1, "general")
