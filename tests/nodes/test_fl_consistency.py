"""The consistency stage of a self-mask round over real node processes (docs/secure_aggregation.md §9; Bonawitz
et al., CCS 2017, round 3 ConsistencyCheck): the server node and three ``labqfl node supernode`` processes with
qkd pads from each client's own store. Each SuperNode keeps the round's participants from its mask stage (the
node state crosses ClientApp processes), signs the survivor set, records it in its own data folder under the
signed job ID, and unmasks only with the others' signatures relayed; the round trains. On the code before, no
consistency stage ran (no record, no stage time)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from labqfl.fl.flower.spec import FlowerSpec


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_supernodes_sign_the_survivor_set_and_unmask_a_self_mask_round(tmp_path: Path) -> None:
    from labqfl.fl.datasets.mnist import load_embedded_mnist
    from labqfl.fl.flower.keys import REFS_TAG_BITS
    from labqfl.fl.flower.specsig import consistency_record_path
    from labqfl.fl.masks import mask_graph
    from labqfl.fl.selfmask import share_bits
    from labqfl.keystore import KeyStore
    from labqfl.nodes.fl import FlNetwork

    mn = load_embedded_mnist()
    np.savez(tmp_path / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    names = ["C1", "C2", "C3"]
    spec = FlowerSpec.for_task("mnist-qnn", clients=3, rounds=1, keys="qkd", q=8, self_masks=True,
                               stage_timeout_s=120.0, node_wait_s=90.0, data_dir=str(tmp_path), job_id="job-nodes")
    n = spec.model().n_params
    need = spec.q * n + 2 * share_bits(spec.q) * n + REFS_TAG_BITS + 64
    rng = np.random.default_rng(4)
    for pair in mask_graph(names, "all", 0):
        bits, bid = rng.integers(0, 2, need, dtype=np.uint8), str(uuid.uuid4())
        for node in pair.split("-"):
            with KeyStore.for_node(node, tmp_path / "data") as st:
                st.add_block(pair, bits, block_id=bid, purpose="fl")
    net = FlNetwork(tmp_path / "fl", None, names, tmp_path / "data")
    net.start()
    try:
        res = net.train(spec.to_config(), timeout_s=240)
    finally:
        codes = net.stop()
    assert set(codes.values()) == {0}, codes
    fl = res.get("flower") or []
    assert len(fl) == 1 and not fl[0]["dropped_before_masking"] and not fl[0]["dropped_after_masking"], fl
    assert "consistency" in fl[0]["stage_seconds"] and "unmask" in fl[0]["stage_seconds"], fl[0]
    for c in names:
        rec = json.loads(consistency_record_path(tmp_path / "data", c).read_text())
        assert rec["jobs"] == {"job-nodes": {"1": {"survivors": names, "dropped": []}}}, (c, rec)
