"""A ``block/commit`` Cj could not carry out is reported as what it is (review s35 chaos F6).

Cj's store failing at ``block/commit`` (a full disk) left the block in Ci's store, its key bits free, while Ci's
result said the block was aborted with 0 final bits and every node exited 0. Now the block is recorded as stored
at Ci and pending at Cj (its final bits, none delivered), and the pair's error says so.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.keystore import KeyStore
from labqfl.nodes.client import ClientNode, _IPair, block_id_for
from labqfl.nodes.common import NodeError
from labqfl.qkd.messaging import Message
from labqfl.qkd.pipeline import DistillSettings, PairResult
from labqfl.qkd.twoparty import BlockOutcome

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f6"
REFILL = 256
RNG = np.random.default_rng(56)


def _ipair(store: KeyStore, final: np.ndarray, commit_reply: Message) -> Any:
    """Ci's driver of one block (``_IPair._block``) with the protocol's outcome given (accepted, ``final``) and
    Cj's answer to ``block/commit`` given; Ci's store is real."""
    node = types.SimpleNamespace(name="C1", store=store, settings=DistillSettings(),
                                 block_meta=lambda *a: {"run_id": ""})
    node.store_block = lambda *a: ClientNode.store_block(node, *a)  # type: ignore[arg-type]
    end = types.SimpleNamespace(counts=None, n_bits=0, auth=types.SimpleNamespace(key_bits_used=1,
                                                                                   forgery_bound=lambda k: 1e-20))
    end.run_block = lambda ch, bid, s, e: BlockOutcome(bid, accepted=True, n=9000, ell=int(final.size),
                                                       final=final.copy())
    ip: Any = object.__new__(_IPair)
    ip.node, ip.end, ip.pair, ip.cj = node, end, PAIR, "C2"
    ip.acq = types.SimpleNamespace(acq=ACQ)
    ip.ch = ip.ctl = object()
    ip.block_index, ip.block_start = 0, 0
    ip.result = PairResult(PAIR)
    ip.accepted_ids = []
    ip._draw_auth = lambda *a: None
    ip._ctl_request = lambda msg, expect: commit_reply
    return ip


def test_a_commit_cj_could_not_store_is_recorded_as_stored_here_and_pending_there(tmp_path: Path) -> None:
    final = RNG.integers(0, 2, 4791 + REFILL, dtype=np.uint8)
    reason = "block/commit: key store C2.sqlite: commit failed (disk I/O error); nothing was handed out"
    with KeyStore.for_node("C1", tmp_path) as st:
        ip = _ipair(st, final, Message("node/refused", {"reason": reason}))
        with pytest.raises(NodeError) as ei:
            ip._block(1000)
        bid = block_id_for(ACQ, PAIR, 0, 1000)
        assert st.has_block(bid) and st.available_bits(PAIR, "general") == 4791  # kept here: Cj's copy is pending
        msg = str(ei.value)
        assert msg.startswith(f"block {bid} stored at C1, pending at C2 ({reason})")  # _run adds "pair C1-C2: "
        assert "until then its 5047 bits are at C1 only" in msg
        (b,) = ip.result.blocks
        assert b.final_key_bits == 5047 and b.delivered_bits == 0 and b.abort  # not "0 final bits"
        assert b.abort_reason.startswith("stored at C1, pending at C2")
        assert ip.accepted_ids == []
