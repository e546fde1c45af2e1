"""Node identity is the certificate's CN *and* its URI subjectAltName ``urn:labqfl:node:<CN>`` (review s32,
F1): the ETSI SAE certificates that ``labqfl keys certs`` issues from the same CA (default SAE IDs C1…C4, the
client node names; EKU clientAuth) are refused as client nodes and as the operator ``ctl`` by every serving
check — the node server, the FL server's mutual-TLS front — and so are node certificates issued before the
binding (no node URI), each with one error naming the certificate and saying that node certificates must
be re-issued.

On the code before the fix the SAE certificate of C1 was served on C2's ``qkd/pairctl`` as peer 'C1', the
one named ``ctl`` on the ``ctl`` service, and the front spliced the SAE 'C1' through (checked by running
this file against ``git archive HEAD`` of the tree before the fix: every test here failed)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from labqfl.errors import ConfigError
from labqfl.keystore import certs as dev_certs
from labqfl.keystore.certs import make_dev_certs
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd.messaging import Message, MessageError


class _Echo:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def handle(self, req: Message) -> Message:
        return Message("echo", {"peer": self.peer})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA: node certificates C1, C2, ctl, server; the ETSI SAE C1; a hand-made SAE 'ctl' (what ``labqfl keys
    certs --sae ctl`` made before it refused the name) and a node certificate of C1 as labqfl issued them
    before the binding (CN + DNS SAN, no node URI)."""
    d = tmp_path_factory.mktemp("pki")
    make_node_certs(d, ["C1", "C2", "ctl", "server"])
    make_dev_certs(d, kmes=(), saes=("C1",))
    ca = dev_certs._load_ca(d)
    assert ca is not None
    dev_certs._issue(d, "sae-ctl", "ctl", [x509.DNSName("ctl")], False, ca, 30)
    dev_certs._issue(d, "old-C1", "C1", [x509.DNSName("C1"), x509.DNSName("localhost")], True, ca, 30,
                     ekus=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    return d


def _creds(d: Path, stem: str, name: str) -> NodeCredentials:
    return NodeCredentials(name, (d / "ca.pem").read_bytes(), (d / f"{stem}.pem").read_bytes(),
                           (d / f"{stem}.key").read_bytes())


def _serve(d: Path) -> NodeServer:
    srv = NodeServer(NodeCredentials.load(d, "C2"), max_workers=4)
    srv.route("qkd/pairctl", lambda peer, hello: ServedSession(_Echo(peer)), allowed_peers={"C1"})
    srv.route("ctl", lambda peer, hello: ServedSession(_Echo(peer)), allowed_peers={"ctl"})
    return srv.start()


def test_node_certificates_carry_their_node_uri(pki: Path) -> None:
    for name in ("C1", "C2", "ctl"):
        assert dev_certs.cert_uris(x509.load_pem_x509_certificate((pki / f"node-{name}.pem").read_bytes())) \
            == [f"urn:labqfl:node:{name}"]


def test_an_sae_certificate_named_like_a_node_or_the_operator_is_refused(pki: Path) -> None:
    srv = _serve(pki)
    try:
        for stem, who in (("node-C1", "C1"), ("node-ctl", "ctl")):  # positive controls
            service = "ctl" if who == "ctl" else "qkd/pairctl"
            with NodeChannel(srv.address, _creds(pki, stem, who), "C2", service, timeout_s=30) as ch:
                assert ch.request(Message("ping", {})).get("peer") == who
        for stem, who, service in (("sae-C1", "C1", "qkd/pairctl"), ("sae-ctl", "ctl", "ctl"),
                                   ("old-C1", "C1", "qkd/pairctl")):
            with pytest.raises(MessageError) as exc:
                NodeChannel(srv.address, _creds(pki, stem, who), "C2", service, timeout_s=30)
            msg = str(exc.value)
            assert "UNAUTHENTICATED" in msg and f"certificate CN {who!r}" in msg, msg
            assert f"lacks the URI subjectAltName 'urn:labqfl:node:{who}'" in msg, msg
            assert "node certificates must be re-issued with labqfl.net.make_node_certs" in msg, msg
    finally:
        srv.stop()


def test_a_node_certificate_without_its_node_uri_is_refused_when_loaded(pki: Path, tmp_path: Path) -> None:
    for f in ("ca.pem", "old-C1.pem", "old-C1.key"):
        (tmp_path / f.replace("old-", "node-")).write_bytes((pki / f).read_bytes())
    (tmp_path / "node-C1.key").chmod(0o600)
    with pytest.raises(ConfigError, match=r"node-C1\.pem: certificate CN 'C1' .* lacks the URI subjectAltName "
                                          r"'urn:labqfl:node:C1' .* must be re-issued"):
        NodeCredentials.load(tmp_path, "C1")


def test_sae_ids_of_the_networks_fixed_nodes_are_refused(tmp_path: Path) -> None:
    for name in ("ctl", "detector", "optics", "server"):
        with pytest.raises(ConfigError, match=f"SAE ID {name!r} is the name of a node"):
            make_dev_certs(tmp_path, saes=("C1", name))
    assert not (tmp_path / "sae-C1.pem").exists()  # refused before anything is written


def _through_front(pki: Path, stem: str, front_stem: str = "node-server") -> bytes:
    """Send bytes through the FL server's mutual-TLS front (target: an echo server) presenting ``stem``; the
    front presents ``front_stem``."""
    from labqfl.nodes.tunnel import MtlsFront, TunnelEnd

    echo = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = echo.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    front = MtlsFront(ca=pki / "ca.pem", cert=pki / f"{front_stem}.pem", key=pki / f"{front_stem}.key",
                      listen="127.0.0.1:0", target=f"127.0.0.1:{echo.getsockname()[1]}", allowed=["C1"])
    end = TunnelEnd(ca=pki / "ca.pem", cert=pki / f"{stem}.pem", key=pki / f"{stem}.key", server=front.start())
    try:
        host, port = end.start().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(b"labqfl")
            try:
                return s.recv(64)
            except (ConnectionError, TimeoutError):
                return b""
    finally:
        end.stop()
        front.stop()
        echo.close()


def test_the_fl_front_refuses_the_sae_certificate_of_a_client(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert _through_front(pki, "node-C1") == b"labqfl"  # positive control
    with caplog.at_level("WARNING"):
        assert _through_front(pki, "sae-C1") == b""
    assert "certificate CN 'C1'" in caplog.text and "urn:labqfl:node:C1" in caplog.text
    assert "must be re-issued" in caplog.text


def test_a_tunnel_end_refuses_a_kme_certificate_issued_for_the_servers_name(pki: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """The client side of the FL tunnel checks the server's node identity too: a KME certificate of the same
    CA whose host names include ``server`` passes TLS hostname verification, but is not the server node."""
    make_dev_certs(pki, kmes=("server",), saes=(), hosts=("server", "127.0.0.1"))
    with caplog.at_level("WARNING"):
        assert _through_front(pki, "node-C1", front_stem="kme-server") == b""
    assert "refused server node server" in caplog.text and "urn:labqfl:node:server" in caplog.text


def test_a_work_folder_with_node_certificates_issued_before_the_binding_is_refused_not_reused(
        pki: Path, tmp_path: Path) -> None:
    """`labqfl node up --workdir W` run again reuses W's certificates: one without its node URI would have been
    reused and every node would then refuse to start; the launcher says so first, naming the file."""
    from labqfl.nodes.launch import node_certs

    for f in ("ca.pem", "ca.key", "old-C1.pem", "old-C1.key"):
        (tmp_path / f.replace("old-", "node-")).write_bytes((pki / f).read_bytes())
    with pytest.raises(ConfigError, match=r"node-C1\.pem: .*lacks the URI subjectAltName 'urn:labqfl:node:C1'.*"
                                          r"delete the folder"):
        node_certs(tmp_path, ["C1", "C2"])
    assert not (tmp_path / "node-C2.pem").exists()  # nothing issued into a folder it refused
