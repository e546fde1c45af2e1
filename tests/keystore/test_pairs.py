"""retire_one_sided_blocks: a block held at one end of a pair only is discarded there (never handed
out, its reserved bits left alone); blocks both ends hold, and young one-sided blocks (a networked run
may be storing the partner's copy right now), are left as they are."""

from __future__ import annotations

import numpy as np

from labqfl.keystore import open_node_stores
from labqfl.keystore.pairs import retire_one_sided_blocks

PAIR = "C1-C2"


def test_one_sided_blocks_are_discarded_at_the_holding_end_only_when_old_enough(tmp_path, kh):
    stores = open_node_stores(["C1", "C2"], tmp_path)
    kh.fill_pair(stores, PAIR, 1, 256, seed=1)
    rng = np.random.default_rng(2)
    lonely = stores["C1"].add_block(PAIR, rng.integers(0, 2, 512, dtype=np.uint8))
    stores["C1"].reserve_exact(PAIR, [(lonely, 0, 64)], "general", "live-key")  # a key in use keeps its bits
    assert retire_one_sided_blocks(stores, [PAIR]) == []  # young: maybe a networked run storing it
    assert stores["C1"].available_bits(PAIR) == 256 + 448
    (rec,) = retire_one_sided_blocks(stores, [PAIR, "C2-C3"], min_age_s=0)
    assert rec == {"pair": PAIR, "block_id": lonely, "node": "C1", "nbits": 512, "discarded": 448}
    for s in stores.values():
        assert s.available_bits(PAIR) == 256
    assert stores["C1"].reservation("live-key") is not None
    assert retire_one_sided_blocks(stores, [PAIR], min_age_s=0) == []  # idempotent
    k = stores["C2"].take(PAIR, 256, "general")
    assert np.array_equal(stores["C1"].take_exact(PAIR, k.refs, "general").bits, k.bits)
    for s in stores.values():
        s.close()
