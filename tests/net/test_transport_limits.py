"""What a node's server admits before it reads a session, and how long sessions live (review s32, F3/F4/F7).

* F3: a peer allowed on none of the node's services is refused at the start of its RPC, before its hello
  is read or decoded; an allowed peer's hello larger than :data:`~labqfl.net.transport.MAX_HELLO_BYTES` is
  refused before it is decoded (it used to be decoded first: a 200 MiB hello from the detector's
  certificate cost the serving process 2 GB).
* F4: a stream that sends no hello is cancelled after the hello timeout; one peer holds at most
  ``per_peer`` sessions, so its hello-less streams no longer starve the operator's ``ctl/ping``.
* F7: a session has no deadline of its own (``timeout_s`` bounds each reply), and keepalive pings end a
  session whose peer the network black-holed.

Each test failed on the code before the fix (checked by running this file against ``git archive HEAD``
of the tree before the fix): the refusal came after decoding, the starved ``ctl/ping`` timed out, the
active session died at its deadline, and the keyword arguments for the timeouts did not exist.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import labqfl.net.transport as transport
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd.messaging import _MAGIC, Message, MessageError, _pack_str


class _Pong:
    def __init__(self, slow: threading.Event | None = None) -> None:
        self.slow = slow

    def handle(self, req: Message) -> Message:
        if req.kind == "slow" and self.slow is not None:
            self.slow.wait(10)
        return Message("pong", {})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["C1", "C2", "detector", "ctl"])
    return d


def _server(certs: Path, closed: list | None = None, slow: threading.Event | None = None, **kw: object) -> NodeServer:
    srv = NodeServer(NodeCredentials.load(certs, "C2"), **kw)  # type: ignore[arg-type]

    def factory(peer: str, hello: Message) -> ServedSession:
        return ServedSession(_Pong(slow), on_close=closed.append if closed is not None else None)

    srv.route("ctl", factory, allowed_peers={"ctl"})
    srv.route("ann", factory, allowed_peers={"detector"})
    srv.route("x", factory, allowed_peers={"C1"})
    return srv.start()


def _raw(certs: Path, who: str, address: str, frames: Iterator[bytes]) -> tuple[grpc.Channel, grpc.RpcContext]:
    """A stream to node C2 as ``who``, sending ``frames`` as they come (no hello of NodeChannel's)."""
    c = NodeCredentials.load(certs, who)
    tls = grpc.ssl_channel_credentials(root_certificates=c.ca_pem, private_key=c.key_pem, certificate_chain=c.cert_pem)
    ch = grpc.secure_channel(address, tls, options=[("grpc.ssl_target_name_override", "C2"),
                                                    *transport._grpc_options(transport.MAX_MESSAGE_BYTES)])
    return ch, ch.stream_stream(transport._METHOD)(frames)


def _outcome(call: grpc.RpcContext) -> tuple[grpc.StatusCode, str]:
    try:
        for _ in call:  # type: ignore[attr-defined]
            pass
    except grpc.RpcError as e:
        return e.code(), e.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


@pytest.fixture
def server_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of what the serving node's threads (``node-C2…``) decode."""
    seen: list[int] = []
    real = transport.decode_message

    def spy(data):  # type: ignore[no-untyped-def]
        if threading.current_thread().name.startswith("node-C2"):
            seen.append(len(data))
        return real(data)

    monkeypatch.setattr(transport, "decode_message", spy)
    return seen


def test_a_peer_allowed_on_no_service_is_refused_before_its_hello_is_read(certs: Path, server_decodes: list) -> None:
    srv = NodeServer(NodeCredentials.load(certs, "C2"))
    srv.route("ctl", lambda peer, hello: ServedSession(_Pong()), allowed_peers={"ctl"})
    srv.start()
    try:
        with pytest.raises(MessageError, match="PERMISSION_DENIED: node 'detector' may not open any service on node "
                                               r"C2 \(it serves \['ctl'\]"):
            NodeChannel(srv.address, NodeCredentials.load(certs, "detector"), "C2", "ctl", timeout_s=30)
        assert server_decodes == []
        with NodeChannel(srv.address, NodeCredentials.load(certs, "ctl"), "C2", "ctl", timeout_s=30) as ch:
            assert ch.request(Message("ctl/ping", {})).kind == "pong"  # positive control
        assert server_decodes  # the spy sees the server's decoding
    finally:
        srv.stop(0)


def test_an_allowed_peers_oversized_hello_is_refused_before_it_is_decoded(certs: Path, server_decodes: list) -> None:
    srv = _server(certs)
    n = 1 << 20
    body = _MAGIC + _pack_str("session/open") + struct.pack("<H", 0) + struct.pack("<QQ", 0, n * 8) + bytes(n)
    try:
        ch, call = _raw(certs, "detector", srv.address, iter([transport._frame(body, b"")]))
        code, details = _outcome(call)
        ch.close()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert f"node 'detector' sent a {len(body) + 2}-byte session hello to node C2; expected at most " \
               f"{transport.MAX_HELLO_BYTES} bytes" == details
        assert server_decodes == []
        # a service the peer may not open, named in a well-formed hello: refused by the route's own check
        with pytest.raises(MessageError, match="PERMISSION_DENIED: node 'detector' may not open 'ctl' on node C2"):
            NodeChannel(srv.address, NodeCredentials.load(certs, "detector"), "C2", "ctl", timeout_s=30)
    finally:
        srv.stop(0)


def _never(stop: threading.Event) -> Iterator[bytes]:
    stop.wait()
    return
    yield b""  # a generator that sends nothing


def test_a_stream_without_a_hello_is_cancelled_after_the_hello_timeout(certs: Path) -> None:
    srv = _server(certs, hello_timeout_s=0.5)
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        ch, call = _raw(certs, "C1", srv.address, _never(stop))
        code, details = _outcome(call)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
        assert details == "node 'C1' sent no session hello within 0.5 s of opening a stream to node C2; " \
                          "expected session/open at once"
        assert time.monotonic() - t0 < 4.0
        stop.set()
        ch.close()
        # its count released with its worker, which ends just after the client saw the status (a loaded
        # 2-core CI run once read the count in between): a bounded wait, not a sleep
        deadline = time.monotonic() + 5.0
        while srv._open_sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv._open_sessions == {}
    finally:
        stop.set()
        srv.stop(0)


def test_one_peers_hello_less_streams_do_not_starve_the_operator(certs: Path) -> None:
    srv = _server(certs, max_workers=16)  # as a node's own: at most a quarter of the workers per peer (≥ 8)
    stop = threading.Event()
    held = [_raw(certs, "detector", srv.address, _never(stop)) for _ in range(16)]
    outcomes: list[tuple[grpc.StatusCode, str]] = []
    threads = [threading.Thread(target=lambda c=c: outcomes.append(_outcome(c)), daemon=True) for _, c in held]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        with NodeChannel(srv.address, NodeCredentials.load(certs, "ctl"), "C2", "ctl", timeout_s=4) as ch:
            assert ch.request(Message("ctl/ping", {})).kind == "pong"
        assert time.monotonic() - t0 < 2.0
        refused = [d for c, d in outcomes if c == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) == 8, outcomes
        assert refused[0] == "node 'detector' already holds 8 sessions on node C2, the most one peer may hold; " \
                             "expected one to end first"
    finally:
        stop.set()
        for ch_, c in held:
            c.cancel()  # type: ignore[attr-defined]
            ch_.close()
        srv.stop(0)


def test_an_active_session_outlives_its_timeout_and_a_late_reply_aborts_it(certs: Path) -> None:
    closed: list = []
    slow = threading.Event()
    srv = _server(certs, closed, slow)
    try:
        with NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "x", timeout_s=1.0) as ch:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3.0:  # three times the timeout, a request every 0.3 s
                assert ch.request(Message("ping", {})).kind == "pong"
                time.sleep(0.3)
            t1 = time.monotonic()
            with pytest.raises(MessageError, match=r"^node C2 did not answer 'slow' on session x within 1 s; the "
                                                   "session is aborted$"):
                ch.request(Message("slow", {}))
            assert time.monotonic() - t1 < 3.0
    finally:
        slow.set()
        srv.stop(0)


class _BlackHole:
    """A TCP relay to ``target`` that, once ``cut`` is set, swallows every byte both ways and never closes
    (a peer lost behind a firewall that drops packets: no reset, no FIN)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.cut = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, x: socket.socket, y: socket.socket) -> None:
        while True:
            try:
                data = x.recv(1 << 16)
                if not data:
                    return
                if not self.cut.is_set():
                    y.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_keepalive_ends_a_session_whose_peer_the_network_black_holed(certs: Path) -> None:
    closed: list = []
    ka = transport.Keepalive(time_s=0.5, timeout_s=1.0)
    srv = _server(certs, closed, keepalive=ka)
    hole = _BlackHole(srv.address)
    try:
        ch = NodeChannel(hole.address, NodeCredentials.load(certs, "C1"), "C2", "x", timeout_s=None, keepalive=ka)
        assert ch.request(Message("ping", {})).kind == "pong"
        time.sleep(2.0)  # idle with keepalive pings on: the server accepts them (no GOAWAY too_many_pings)
        assert ch.request(Message("ping", {})).kind == "pong"
        hole.cut.set()
        t0 = time.monotonic()
        with pytest.raises(MessageError, match=r"node C2 at .* unreachable during session x: the connection was "
                                               r"lost \(reset, or no answer to keepalive pings\)"):
            ch.request(Message("ping", {}))  # no reply timeout: only keepalive can end the wait
        assert time.monotonic() - t0 < 8.0
        for _ in range(100):  # the serving end noticed too (its own pings went unanswered)
            if closed:
                break
            time.sleep(0.1)
        assert len(closed) == 1 and isinstance(closed[0], MessageError), closed
    finally:
        hole.close()
        srv.stop(0)
