"""Cj's pending copy of a block Ci refused is destroyed when the pair's run ends, not kept until the pair's next
session (review s32, F8).

If the connection is cut after ``block/accept`` reached Cj (or ``block/accept`` is delivered twice), Cj writes
the block's final key to a pending file while Ci refuses it; only the pair's next ``qkd/pairctl`` session
resolved it, so after the last acquisition of a run the key bits stayed on Cj's disk. Now Ci resolves Cj's
pending blocks at the end of the pair's run too (over a fresh session if its own broke): stored at Cj if Ci
holds them, else overwritten, flushed and deleted there.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
from labqfl.sim_backends.qrng import new_client_log

import labqfl.keystore.preshare as preshare
from labqfl.keystore import KeyStore
from labqfl.net import NodeCredentials, make_node_certs
from labqfl.nodes.client import ClientNode, _Acq, _IPair, _JPair, block_id_for
from labqfl.nodes.common import open_session

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f8"
RNG = np.random.default_rng(8)


def test_pending_blocks_are_resolved_at_the_end_of_the_pair_s_run(tmp_path: Path, monkeypatch: Any) -> None:
    certs, data = tmp_path / "certs", tmp_path / "data"
    make_node_certs(certs, ["C1", "C2", "detector", "ctl"])
    node = ClientNode("C2", station=None, data_dir=data, listen="127.0.0.1:0", certs=certs)
    node.server.start()
    shredded: list[Path] = []
    real_shred = preshare.shred_secret_file
    monkeypatch.setattr(preshare, "shred_secret_file", lambda p: shredded.append(Path(p)) or real_shred(p))
    a = _Acq(ACQ, new_client_log(node.cfg.client("C2"), 1 << 20), {})
    for p, ci in node.j_of.items():
        a.j_pairs[p] = _JPair(node, a, p, ci)
    node.acqs[ACQ] = a
    held, refused = block_id_for(ACQ, PAIR, 0, 100), block_id_for(ACQ, PAIR, 100, 200)
    bits = {b: RNG.integers(0, 2, 600, dtype=np.uint8) for b in (held, refused)}
    s1 = KeyStore.for_node("C1", data)
    s1.add_block(PAIR, bits[held], block_id=held, purpose="general")  # Ci stored this one, refused the other
    files = {}
    for b in (held, refused):
        node.write_pending(PAIR, b, bits[b], 0, {"run_id": ""})
        files[b] = node._pending_path(b)
    creds = NodeCredentials.load(certs, "C1")
    ip: Any = object.__new__(_IPair)
    ip.pair, ip.cj = PAIR, "C2"
    ip.acq = types.SimpleNamespace(acq=ACQ, peers={"C2": node.server.address})
    ip.node = types.SimpleNamespace(store=s1, name="C1", creds=creds)
    ip.ctl = open_session(node.server.address, creds, "C2", "qkd/pairctl", fields={"pair": PAIR, "acq": ACQ})
    ip.ctl.inner.abort()  # the session broke (a cut connection): a fresh one is opened for the resolution
    try:
        ip._resolve_pending_at_end()
        assert node.pending_ids(PAIR) == []
        assert not any(f.exists() for f in files.values())
        assert sorted(shredded) == sorted(files.values())  # overwritten, flushed, deleted (not just unlinked)
        assert node.store.has_block(held) and not node.store.has_block(refused)
        km = s1.take(PAIR, 600, "general")  # the block both ends hold is the same key
        assert np.array_equal(node.store.take_exact(PAIR, km.refs, "general").bits, km.bits)
    finally:
        ip.ctl.close()
        node.server.stop(0)
        node.store.close()
        s1.close()
