"""Node certificates after review s31: the operator's certificate only connects (F1: no node that never
serves holds a serverAuth certificate for localhost/127.0.0.1), a node key others can read is refused
(F4), and the node network still runs with mutual TLS."""

from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from labqfl.errors import ConfigError
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd.messaging import Message


class _Echo:
    def handle(self, req: Message) -> Message:
        return Message("echo", dict(req.fields))


def _eku(path) -> set:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ctl_connects_but_cannot_serve_and_nodes_still_talk(tmp_path):
    make_node_certs(tmp_path, ["C1", "C2", "ctl"])
    assert _eku(tmp_path / "node-ctl.pem") == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _eku(tmp_path / "node-C1.pem") == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    srv = NodeServer(NodeCredentials.load(tmp_path, "C2")).start()
    srv.route("echo", lambda peer, hello: ServedSession(_Echo()), allowed_peers={"C1", "ctl"})
    try:
        for who in ("C1", "ctl"):  # a node and the operator open sessions as before
            with NodeChannel(srv.address, NodeCredentials.load(tmp_path, who), "C2", "echo", timeout_s=30) as ch:
                assert ch.request(Message("ping", {"n": 1})).fields == {"n": 1}
    finally:
        srv.stop()
    # ctl's certificate cannot be served: a TLS client (verifying serverAuth) refuses it
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(tmp_path / "node-ctl.pem"), str(tmp_path / "node-ctl.key"))
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client_ctx.check_hostname = False
    a, b = socket.socketpair()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate purpose"):
        client_ctx.wrap_socket(b, server_hostname="ctl")
    b.close()
    t.join(10)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_node_key_others_can_read_is_refused(tmp_path):
    make_node_certs(tmp_path, ["C1"])
    key = tmp_path / "node-C1.key"
    key.chmod(0o644)
    with pytest.raises(ConfigError) as exc:
        NodeCredentials.load(tmp_path, "C1")
    assert str(key) in str(exc.value) and "0644" in str(exc.value) and "'C1'" in str(exc.value)
    key.chmod(0o600)
    assert NodeCredentials.load(tmp_path, "C1").name == "C1"
