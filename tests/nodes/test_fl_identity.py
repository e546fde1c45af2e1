"""Client identity over real node processes: a member of the network (it holds C2's certificate)
runs a SuperNode that claims to be client C1. The mutual-TLS front admits it (C2 is a client of
the station), but the ServerApp of ``labqfl node server`` refuses its signed setup answer (the
certificate's CN is not the claimed name) while the honest ``labqfl node supernode --name C2`` is
accepted; with C1 missing, the run fails and says why. The message-level checks themselves are
tests/fl/flower/test_identity.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labqfl.fl.flower.deploy import LocalFederation, TlsFiles
from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, NODE_KEY
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.nodes.common import NodeError
from labqfl.nodes.tunnel import TunnelEnd


def _mnist_cache(folder: Path) -> str:
    from labqfl.fl.datasets.mnist import load_embedded_mnist

    mn = load_embedded_mnist()
    np.savez(folder / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    return str(folder)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_supernode_with_c2s_certificate_claiming_c1_is_refused_by_the_server_node(tmp_path) -> None:
    from labqfl.nodes.fl import FlNetwork

    net = FlNetwork(tmp_path / "fl", None, ["C2"], tmp_path / "data")
    net.start()  # certificates (server, C2, ctl), the server node, the honest SuperNode of C2
    impostor_dir = tmp_path / "impostor"
    impostor_dir.mkdir()
    c2 = TlsFiles(ca=net.certs / "ca.pem", cert=net.certs / "node-C2.pem", key=net.certs / "node-C2.key")
    tunnel = TunnelEnd(ca=c2.ca, cert=c2.cert, key=c2.key, server=net.fleet_address)  # the front admits C2
    fed = LocalFederation(impostor_dir, tunnel.start(), tls=c2)
    try:
        # with the network CA, as a real node has it (without, its ClientApp refuses the run itself: it could
        # check neither its peers' signatures nor the operator's signed spec)
        fed.start_supernode("C1", {"labqfl-client": "C1", NODE_CERT: str(c2.cert), NODE_KEY: str(c2.key),
                                   NODE_CA: str(c2.ca)})
        spec = FlowerSpec.for_task("mnist-qnn", clients=2, rounds=1, keys="csprng", node_wait_s=5.0,
                                   stage_timeout_s=120.0, data_dir=_mnist_cache(tmp_path))
        with pytest.raises(NodeError, match="the Flower run failed"):
            net.train(spec.to_config(), timeout_s=150)
    finally:
        fed.stop()
        tunnel.stop()
        codes = net.stop()
    assert codes == {"server": 0, "supernode-C2": 0}
    logs = list((tmp_path / "fl" / "server" / "nodes" / "server" / "flower").glob("flwr-run-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "refused as C1: it claims client 'C1' but is signed with the certificate of 'C2'" in text, text[-3000:]
    assert "no SuperNode answered as client(s) ['C1']" in text and "got ['C2']" in text  # C2 itself was accepted


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_qkd_training_over_node_processes_signs_and_checks_every_pairs_refs(tmp_path) -> None:
    """Three ``labqfl node supernode`` processes and the server node, qkd keys from the nodes' own
    stores, two rounds: every SuperNode has its certificate, key and the network CA in its node
    config, so every master signs its refs and every slave requires that signature (a node with
    ``labqfl-cert`` but no ``labqfl-ca`` would refuse to mask: docs/secure_aggregation.md §9). The run
    completes with no client lost and both ends of every pair in step."""
    import uuid

    from labqfl.fl.flower.keys import REFS_TAG_BITS
    from labqfl.fl.masks import mask_graph
    from labqfl.keystore import KeyStore
    from labqfl.nodes.fl import FlNetwork

    names = ["C1", "C2", "C3"]
    spec = FlowerSpec.for_task("mnist-qnn", clients=3, rounds=2, keys="qkd", q=8, stage_timeout_s=120.0,
                               data_dir=_mnist_cache(tmp_path))
    need = 2 * (spec.q * spec.model().n_params + REFS_TAG_BITS) + 64
    rng = np.random.default_rng(3)
    for p in mask_graph(names):
        bits, bid = rng.integers(0, 2, need, dtype=np.uint8), str(uuid.uuid4())
        for node in p.split("-"):
            with KeyStore.for_node(node, tmp_path / "data") as st:
                st.add_block(p, bits, block_id=bid, purpose="fl")
    net = FlNetwork(tmp_path / "fl", None, names, tmp_path / "data")
    net.start()
    try:
        res = net.train(spec.to_config(), timeout_s=240)
    finally:
        codes = net.stop()
    assert set(codes.values()) == {0}
    fl = res.get("flower") or []
    assert len(fl) == 2 and all(not rd["dropped_before_masking"] and not rd["dropped_after_masking"] for rd in fl)
    for c in names:
        with KeyStore.for_node(c, tmp_path / "data") as st:
            assert all(a["available"] == {"fl": 64} and a["reserved"] == {} for a in st.accounting().values()), c
