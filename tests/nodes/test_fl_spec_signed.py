"""The operator-signed training spec over real node processes (docs/secure_aggregation.md §9): the
server node and two ``labqfl node supernode`` processes (each with the network CA in its node config).
A run whose spec the operator signed but which has expired is refused by every SuperNode at its first
message (the server node passes it on; the nodes check it), and the run fails saying why; the honest
run right after — ``labqfl node train``'s path, the spec signed with the operator's ``node-ctl`` key by
:func:`~labqfl.nodes.fl.train_on_server` — trains with qkd pads from each client's own store. On the
code before the signed spec the first run trained (the nodes followed the server's settings)."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from pathlib import Path

import numpy as np
import pytest

from labqfl.fl.flower.spec import FlowerSpec
from labqfl.nodes.common import NodeError


def _mnist_cache(folder: Path) -> str:
    from labqfl.fl.datasets.mnist import load_embedded_mnist

    mn = load_embedded_mnist()
    np.savez(folder / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    return str(folder)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_supernodes_refuse_an_expired_signed_spec_and_train_under_the_operators_signature(tmp_path) -> None:
    from labqfl.fl.flower.identity import ReplySigner
    from labqfl.fl.flower.keys import REFS_TAG_BITS
    from labqfl.fl.flower.specsig import OPERATOR, sign_spec
    from labqfl.keystore import KeyStore
    from labqfl.nodes.fl import FlNetwork, train_on_server

    names = ["C1", "C2"]
    spec = FlowerSpec.for_task("mnist-qnn", clients=2, rounds=1, keys="qkd", q=8, stage_timeout_s=120.0,
                               node_wait_s=10.0, data_dir=_mnist_cache(tmp_path))
    need = spec.q * spec.model().n_params + REFS_TAG_BITS + 64
    bits, bid = np.random.default_rng(4).integers(0, 2, need, dtype=np.uint8), str(uuid.uuid4())
    for node in names:
        with KeyStore.for_node(node, tmp_path / "data") as st:
            st.add_block("C1-C2", bits, block_id=bid, purpose="fl")
    net = FlNetwork(tmp_path / "fl", None, names, tmp_path / "data")
    net.start()
    try:
        op = ReplySigner((net.certs / f"node-{OPERATOR}.pem").read_bytes(),
                         (net.certs / f"node-{OPERATOR}.key").read_bytes())
        expired = sign_spec(spec, op, valid_s=60, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2))
        with pytest.raises(NodeError, match="the Flower run failed"):
            train_on_server(net.server_address, net.certs, spec.to_config(), timeout_s=120, signed_spec=expired)
        # signed by train_on_server with node-ctl.key; the wait for the nodes is the server's (not signed)
        res = net.train(dataclasses.replace(spec, node_wait_s=90.0).to_config(), timeout_s=180)
    finally:
        codes = net.stop()
    assert set(codes.values()) == {0}, codes
    logs = sorted((tmp_path / "fl" / "server" / "nodes" / "server" / "flower").glob("flwr-run-*.log"),
                  key=lambda p: p.stat().st_mtime)
    assert len(logs) == 2
    first = logs[0].read_text()
    assert f"the operator-signed spec {expired.spec_id} expired at" in first, first[-3000:]
    fl = res.get("flower") or []
    assert len(fl) == 1 and not fl[0]["dropped_before_masking"] and not fl[0]["dropped_after_masking"]
    for c in names:  # the pads of the honest run came from each client's own store
        with KeyStore.for_node(c, tmp_path / "data") as st:
            assert st.accounting()["C1-C2"]["available"] == {"fl": 64}, c
