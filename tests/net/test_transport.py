"""Node transport: gRPC sessions with mutual TLS and end-to-end Wegman–Carter tags."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import labqfl.net.transport as transport
from labqfl.errors import AuthenticationError, ConfigError
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd.authentication import BitPool, WegmanCarterAuthenticator
from labqfl.qkd.messaging import Message, MessageError


class Adder:
    """Answers ``x + 1``; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, req: Message) -> Message:
        self.seen.append(int(req.get("x")))
        return Message("sum", {"x": int(req.get("x")) + 1}, disclosed=np.array([1, 0, 1], dtype=np.uint8))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["C1", "C2", "C3"])
    return d


def _serve(creds: NodeCredentials, closed: list, auth_bits: np.ndarray | None = None,
           allowed: set[str] | None = None) -> tuple[NodeServer, Adder]:
    adder = Adder()
    srv = NodeServer(creds).start()

    def factory(peer: str, hello: Message) -> ServedSession:
        auth = WegmanCarterAuthenticator(BitPool(auth_bits.copy())) if auth_bits is not None else None
        return ServedSession(adder, auth, on_close=closed.append)

    srv.route("adder", factory, allowed_peers=allowed)
    return srv, adder


def _wait(closed: list, n: int = 1) -> None:
    ev = threading.Event()
    for _ in range(200):
        if len(closed) >= n:
            return
        ev.wait(0.01)
    raise AssertionError(f"session end not reported (saw {closed})")


def test_request_reply_between_nodes_counts_leakage_and_ends_cleanly(certs: Path) -> None:
    closed: list = []
    srv, adder = _serve(NodeCredentials.load(certs, "C2"), closed, allowed={"C1"})
    try:
        with NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "adder") as ch:
            assert [ch.request(Message("add", {"x": i})).get("x") for i in range(5)] == [1, 2, 3, 4, 5]
            assert ch.stats.leaked_bits == 5 * 3 and ch.stats.round_trips == 5
        _wait(closed)
        assert closed == [None] and adder.seen == [0, 1, 2, 3, 4]
    finally:
        srv.stop()


@pytest.mark.parametrize("timeout_s", [3e11, 1e10])
def test_a_session_deadline_beyond_grpc_s_clock_still_opens_a_session(certs: Path, timeout_s: float) -> None:
    """gRPC adds the timeout to its clock in int64 ns: from ~7e9 s on the call used to fail at once with
    DEADLINE_EXCEEDED (``labqfl run --duration 1e9`` asked for 3e11 s); such deadlines are dropped."""
    closed: list = []
    srv, _ = _serve(NodeCredentials.load(certs, "C2"), closed)
    try:
        with NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "adder", timeout_s=timeout_s) as ch:
            assert ch.request(Message("add", {"x": 41})).get("x") == 42
    finally:
        srv.stop()


def test_wegman_carter_tags_verified_end_to_end_and_a_flipped_bit_is_refused(certs: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bits = np.random.default_rng(1).integers(0, 2, 1 << 14, dtype=np.uint8)
    closed: list = []
    srv, adder = _serve(NodeCredentials.load(certs, "C2"), closed, auth_bits=bits)
    try:
        auth = WegmanCarterAuthenticator(BitPool(bits.copy()))
        ch = NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "adder", authenticator=auth)
        assert ch.request(Message("add", {"x": 41})).get("x") == 42
        assert auth.tags_made == 1 and auth.tags_verified == 1 and ch.stats.tag_bytes > 0
        # A man in the middle above TLS (e.g. a relaying node) flips one payload bit after tagging.
        real_frame = transport._frame
        flip = {"armed": True}

        def tampering(payload: bytes, tag: bytes) -> bytes:
            if flip["armed"] and tag:
                flip["armed"] = False
                payload = bytes([payload[0] ^ 0x01]) + payload[1:]
            return real_frame(payload, tag)

        monkeypatch.setattr(transport, "_frame", tampering)
        with pytest.raises(MessageError, match="UNAUTHENTICATED"):
            ch.request(Message("add", {"x": 1}))
        _wait(closed)
        assert isinstance(closed[0], AuthenticationError)
        assert adder.seen == [41], "the tampered request must never reach the service"
        with pytest.raises(MessageError, match="closed"):
            ch.request(Message("add", {"x": 2}))
    finally:
        srv.stop()


def test_a_bad_reply_tag_is_refused_by_the_connecting_node(certs: Path) -> None:
    bits = np.random.default_rng(2).integers(0, 2, 1 << 14, dtype=np.uint8)
    other = bits.copy()
    other[200] ^= 1  # the serving node's key differs in one bit of a pad
    closed: list = []
    srv, _ = _serve(NodeCredentials.load(certs, "C2"), closed, auth_bits=other)
    try:
        auth = WegmanCarterAuthenticator(BitPool(bits.copy()))
        ch = NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "adder", authenticator=auth)
        with pytest.raises((AuthenticationError, MessageError)):
            for i in range(4):
                ch.request(Message("add", {"x": i}))
        _wait(closed)
        assert closed[0] is not None, "the serving node must see the session fail, not end normally"
    finally:
        srv.stop()


def test_peer_outside_the_allowed_set_is_refused(certs: Path) -> None:
    srv, adder = _serve(NodeCredentials.load(certs, "C2"), [], allowed={"C1"})
    try:
        with pytest.raises(MessageError, match="PERMISSION_DENIED.*'C3' may not open any service on node C2"):
            NodeChannel(srv.address, NodeCredentials.load(certs, "C3"), "C2", "adder")
        assert adder.seen == []
    finally:
        srv.stop()


def test_certificate_from_another_ca_is_refused_both_ways(certs: Path, tmp_path: Path) -> None:
    make_node_certs(tmp_path, ["C1", "C2"])  # a second network with its own CA
    srv, adder = _serve(NodeCredentials.load(certs, "C2"), [])
    try:
        with pytest.raises(MessageError, match="refused the TLS handshake"):
            NodeChannel(srv.address, NodeCredentials.load(tmp_path, "C1"), "C2", "adder", timeout_s=10)
    finally:
        srv.stop()
    foreign, _ = _serve(NodeCredentials.load(tmp_path, "C2"), [])
    try:
        with pytest.raises(MessageError, match="refused the TLS handshake"):
            NodeChannel(foreign.address, NodeCredentials.load(certs, "C1"), "C2", "adder", timeout_s=10)
    finally:
        foreign.stop()
    assert adder.seen == []


def test_a_node_impersonating_another_is_refused(certs: Path) -> None:
    srv, _ = _serve(NodeCredentials.load(certs, "C3"), [])  # C3's certificate, reached as if it were C2
    try:
        with pytest.raises(MessageError, match="expected a certificate for 'C2'"):
            NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "adder", timeout_s=10)
    finally:
        srv.stop()


def test_credentials_are_checked_on_load(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="node certificate of node 'C9' not found"):
        NodeCredentials.load(certs, "C9")
    for f in ("ca.pem", "node-C1.pem", "node-C1.key"):
        (tmp_path / f).write_bytes((certs / f).read_bytes())
    (tmp_path / "node-C2.pem").write_bytes((certs / "node-C1.pem").read_bytes())
    (tmp_path / "node-C2.key").write_bytes((certs / "node-C1.key").read_bytes())
    for f in ("node-C1.key", "node-C2.key"):  # copies as private as the originals (a wider key is refused)
        (tmp_path / f).chmod(0o600)
    with pytest.raises(ConfigError, match="certificate is for 'C1', expected node 'C2'"):
        NodeCredentials.load(tmp_path, "C2")
    assert "BEGIN" not in repr(NodeCredentials.load(certs, "C1"))
    assert oct((certs / "node-C1.key").stat().st_mode & 0o777) == "0o600"


_SERVER_SCRIPT = """
import sys
from pathlib import Path
from labqfl.net import NodeCredentials, NodeServer, ServedSession
from labqfl.qkd.messaging import Message
class Adder:
    def handle(self, req):
        return Message("sum", {"x": int(req.get("x")) + 1})
srv = NodeServer(NodeCredentials.load(Path(sys.argv[1]), "C2")).start()
srv.route("adder", lambda peer, hello: ServedSession(Adder()), allowed_peers={"C1"})
print(srv.address, flush=True)
sys.stdin.read()
srv.stop()
"""


def test_sessions_between_separate_processes(certs: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER_SCRIPT, str(certs)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        with NodeChannel(address, NodeCredentials.load(certs, "C1"), "C2", "adder") as ch:
            assert ch.request(Message("add", {"x": 7})).get("x") == 8
        ch = NodeChannel(address, NodeCredentials.load(certs, "C1"), "C2", "adder")
        assert ch.request(Message("add", {"x": 1})).get("x") == 2
        proc.kill()  # a node killed mid-session: the peer gets one clear error, not a hang
        proc.wait(10)
        with pytest.raises(MessageError, match="node C2"):
            ch.request(Message("add", {"x": 2}))
        with pytest.raises(MessageError, match="unreachable"):
            NodeChannel(address, NodeCredentials.load(certs, "C1"), "C2", "adder", timeout_s=10)
    finally:
        proc.kill()
        proc.wait(10)
