"""After its nodes stopped, the launcher says which blocks a client holds only as a pending file (review s35
chaos F4).

A client killed after it stored a block and before ``block/commit`` leaves the block in its own store and the
partner's copy in a pending file until the pair's next session (docs/nodes.md, step 4). ``node up`` ended with
the kill's error and nothing else: ``keys status`` then showed more key at Ci than at Cj with no word why, and
an operator could train or serve from Ci's one-sided bits. The launcher reads only each pending file's header
(pair, block ID), never its key bits.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest
from node_helpers import sibling

from labqfl.keystore import KeyStore
from labqfl.nodes.client import AUTH_REFILL_SUFFIX, ClientNode, block_id_for
from labqfl.nodes.launch import LocalNetwork

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f4"


def test_pending_blocks_left_at_cj_are_named_with_what_ci_holds(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    station = sibling("test_network", __file__)._station(tmp_path / "station.toml", 2)
    net = LocalNetwork(tmp_path / "work", station)
    assert net.pending_blocks() == []  # no client folder yet: nothing to say
    rng = np.random.default_rng(4)
    stored, lost = block_id_for(ACQ, PAIR, 0, 100), block_id_for(ACQ, PAIR, 100, 200)
    finals = {b: rng.integers(0, 2, 3000, dtype=np.uint8) for b in (stored, lost)}
    cj = types.SimpleNamespace(pending=net.data_of("C2") / "nodes" / "C2" / "pending")
    cj.pending.mkdir(parents=True)
    cj._pending_path = lambda b: ClientNode._pending_path(cj, b)  # type: ignore[arg-type]
    for b, f in finals.items():
        ClientNode.write_pending(cj, PAIR, b, f, 256, {"run_id": ""})  # type: ignore[arg-type]
    with KeyStore.for_node("C1", net.data_of("C1")) as s1:  # Ci stored one of them, was killed before the commit
        ClientNode.store_block(types.SimpleNamespace(store=s1), PAIR, stored, finals[stored], 256,  # type: ignore[arg-type]
                               {"run_id": ""})
    net.nodes = {"C2": types.SimpleNamespace(proc=None, role="client")}  # type: ignore[dict-item]
    net._stop_group = lambda names, t_end: dict.fromkeys(names, 0)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="labqfl.nodes.launch"):
        net.stop()
    assert sorted(net.pending) == sorted([
        f"pair {PAIR}: block {stored} stored at C1 ({stored}{AUTH_REFILL_SUFFIX}, {stored}), pending at C2: its bits "
        "are at C1 only until C2 stores it at the pair's next session (a draw of them before is refused at C2)",
        f"pair {PAIR}: block {lost} pending at C2 only (C1 never stored it): destroyed there at the pair's next "
        "session"])  # in the order of the pending files' names
    assert sorted(net.pending) == sorted([r.getMessage() for r in caplog.records if "pending at C2" in r.getMessage()])
