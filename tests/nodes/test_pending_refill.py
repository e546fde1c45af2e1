"""A pending block resolved after a crash keeps its authentication refill at Cj too (review s35 chaos F1).

Ci stores an accepted block as two blocks, ``<id>-auth`` (the first ``refill`` bits, the pair's ``auth`` pool)
and ``<id>`` (the rest, key), then sends ``block/commit``; killed in between, Cj keeps the block in its pending
file until the pair's next session (or the end of the run), where Ci names the IDs it holds (``pending/resolve``).
Ci named only the pending *key* IDs, so Cj never stored ``<id>-auth``: the refill stayed at Ci alone (its
``auth`` pool larger than Cj's), and a block whose whole final key went to the refill (Ci holds only
``<id>-auth``) was destroyed at Cj. Here Cj's pending files are written by the real ``write_pending``, Ci's
store by the real ``store_block``, and the resolution runs over a real ``qkd/pairctl`` session.
"""

from __future__ import annotations

import sqlite3
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends.qrng import new_client_log

from labqfl.keystore import KeyStore
from labqfl.net import NodeCredentials, make_node_certs
from labqfl.nodes.client import AUTH_REFILL_SUFFIX, ClientNode, _Acq, _IPair, _JPair, block_id_for
from labqfl.nodes.common import open_session

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f9"
REFILL = 384


def _material(path: Path, pair: str) -> dict[str, tuple[str, bytes, int, str]]:
    """block ID → (pool, material, nbits, state) of one store, opened read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT b.block_id, s.purpose, b.material, b.nbits, s.state FROM blocks b "
                           "JOIN segments s ON s.block_seq = b.seq WHERE b.pair = ?", (pair,)).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], bytes(r[2]), int(r[3]), r[4]) for r in rows}


@pytest.mark.parametrize("when", ["session start", "end of run"])
def test_a_pending_block_s_auth_refill_is_stored_at_cj_as_ci_holds_it(tmp_path: Path, when: str) -> None:
    certs, data = tmp_path / "certs", tmp_path / "data"
    make_node_certs(certs, ["C1", "C2", "detector", "ctl"])
    node = ClientNode("C2", station=None, data_dir=data, listen="127.0.0.1:0", certs=certs)
    node.server.start()
    a = _Acq(ACQ, new_client_log(node.cfg.client("C2"), 1 << 20), {})
    for p, ci in node.j_of.items():
        a.j_pairs[p] = _JPair(node, a, p, ci)
    node.acqs[ACQ] = a
    rng = np.random.default_rng(35)
    # a block with key after its refill; one whose final key all went to the refill; one Ci never stored
    both, only_auth, lost = (block_id_for(ACQ, PAIR, 100 * k, 100 * k + 100) for k in range(3))
    finals = {both: rng.integers(0, 2, 4885, dtype=np.uint8), only_auth: rng.integers(0, 2, REFILL, dtype=np.uint8),
              lost: rng.integers(0, 2, 3000, dtype=np.uint8)}
    s1 = KeyStore.for_node("C1", data)
    ci_store = types.SimpleNamespace(store=s1)
    for b in (both, only_auth):  # Ci stored these (ClientNode.store_block) and was killed before block/commit
        held = ClientNode.store_block(ci_store, PAIR, b, finals[b], REFILL, {"run_id": ""})  # type: ignore[arg-type]
        assert held == ([b + AUTH_REFILL_SUFFIX, b] if b == both else [b + AUTH_REFILL_SUFFIX])
    for b, f in finals.items():  # Cj's pending copies, as block/accept left them
        node.write_pending(PAIR, b, f, REFILL, {"run_id": ""})
    creds = NodeCredentials.load(certs, "C1")
    ip: Any = object.__new__(_IPair)
    ip.pair, ip.cj = PAIR, "C2"
    ip.acq = types.SimpleNamespace(acq=ACQ, peers={"C2": node.server.address})
    ip.node = types.SimpleNamespace(store=s1, name="C1", creds=creds)
    ip.ctl = open_session(node.server.address, creds, "C2", "qkd/pairctl", fields={"pair": PAIR, "acq": ACQ})
    try:
        if when == "session start":
            assert ip._resolve_pending() == (3, 2)  # 3 pending at Cj, 2 of them (or their refill) held here
        else:
            ip._resolve_pending_at_end()
        assert node.pending_ids(PAIR) == []
        for b in (both, only_auth):
            assert node.store.has_block(b + AUTH_REFILL_SUFFIX), f"{b}: refill not stored at Cj"
        assert node.store.has_block(both) and not node.store.has_block(only_auth)
        assert not node.store.has_block(lost) and not node.store.has_block(lost + AUTH_REFILL_SUFFIX)
        # identical blocks, pools, material and per-bit states at both ends: the auth pools agree
        m1, m2 = _material(s1.path, PAIR), _material(node.store.path, PAIR)
        assert m1 == m2 and len(m1) == 3
        assert s1.available_bits(PAIR, "auth") == node.store.available_bits(PAIR, "auth")
        assert s1.free_ranges(PAIR, ["auth"]) == node.store.free_ranges(PAIR, ["auth"])
        km = s1.take(PAIR, 2 * REFILL, "auth")  # the refills are the same key at both ends
        assert np.array_equal(node.store.take_exact(PAIR, km.refs, "auth").bits, km.bits)
    finally:
        ip.ctl.close()
        node.server.stop(0)
        node.store.close()
        s1.close()
