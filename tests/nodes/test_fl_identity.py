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
from labqfl.fl.flower.identity import NODE_CERT, NODE_KEY
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
        fed.start_supernode("C1", {"labqfl-client": "C1", NODE_CERT: str(c2.cert), NODE_KEY: str(c2.key)})
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
