"""Node-to-node transport: request/response sessions over gRPC with mutual TLS.

Why gRPC (see docs/decisions/0001-node-transport.md): it is already installed with Flower (which
labqfl uses for federated training), it does TLS 1.3 with client certificates through BoringSSL,
HTTP/2 multiplexes many sessions (one per pair and block) over one connection, and a bidirectional
stream gives the ordered request/response exchange the post-processing protocols need without
code generation (raw ``bytes`` messages through a generic handler).

One RPC, ``/labqfl.node.v1.Node/Session``, a bidirectional stream of frames.  The first frame from
the connecting node is a hello (``session/open`` :class:`~labqfl.qkd.messaging.Message` naming the
``service`` and its parameters); the serving node checks the peer's certificate CN against the
service's allowed peers, builds a :class:`ServedSession` and answers ``session/ready``.  After that
each request frame gets exactly one reply frame.

A frame is ``u16 tag length | tag | payload``, the payload an :func:`encode_message` encoding (no
pickle).  With an authenticator on both ends every payload is Wegman–Carter tagged by its sender
and verified by its receiver *before* it is decoded: TLS protects each hop computationally, the
tags protect the protocol end to end information-theoretically.  A bad tag ends the session at both
ends with an :class:`~labqfl.errors.AuthenticationError` where the bad tag was seen and a
:class:`~labqfl.qkd.messaging.MessageError` naming ``UNAUTHENTICATED`` at the other end.
"""

from __future__ import annotations

import queue
import struct
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from labqfl.errors import AuthenticationError
from labqfl.log import get_logger
from labqfl.net.pki import NodeCredentials
from labqfl.qkd.messaging import (
    Authenticator,
    Channel,
    ChannelStats,
    Message,
    MessageError,
    Responder,
    _check_tag,
    decode_message,
    encode_message,
    encode_message_parts,
)

__all__ = ["NodeChannel", "NodeServer", "ServedSession", "SessionFactory"]

log = get_logger(__name__)

_SERVICE = "labqfl.node.v1.Node"
_METHOD = f"/{_SERVICE}/Session"
_HELLO, _READY = "session/open", "session/ready"
MAX_MESSAGE_BYTES = 1 << 28  # 256 MiB: a 10^8-slot block's announcements fit


def _grpc_options(max_bytes: int) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]


def _frame(payload: bytes, tag: bytes) -> bytes:
    return struct.pack("<H", len(tag)) + tag + payload


_NO_TAG = struct.pack("<H", 0)


def _encoded_frame(msg: Message, auth: Authenticator | None) -> tuple[bytes, int, int]:
    """The frame of ``msg`` (tagged by ``auth`` if there is one), its payload's and its tag's lengths.
    Without an authenticator the header and the message's pieces are joined once: an array field's
    bytes are copied once here, not three times (:func:`encode_message_parts`)."""
    if auth is None:
        frame = b"".join([_NO_TAG, *encode_message_parts(msg)])
        return frame, len(frame) - 2, -1
    payload = encode_message(msg)
    tag = auth.tag(payload)
    return _frame(payload, tag), len(payload), len(tag)


def _unframe(raw: bytes) -> tuple[memoryview, bytes]:
    """(payload, tag) of a frame; the payload is a view of ``raw`` (:func:`decode_message` reads it in
    place)."""
    if len(raw) < 2:
        raise MessageError(f"frame of {len(raw)} bytes is too short; expected at least the 2-byte tag length")
    (t,) = struct.unpack_from("<H", raw)
    if len(raw) < 2 + t:
        raise MessageError(f"frame announces a {t}-byte tag but holds {len(raw) - 2} bytes")
    return memoryview(raw)[2 + t:], raw[2:2 + t]


def _checked(auth: Authenticator | None, payload: memoryview, tag: bytes) -> bytes | memoryview:
    """``payload`` once its tag is verified (:func:`~labqfl.qkd.messaging._check_tag`): as bytes where an
    authenticator reads it, else the view as it is."""
    if auth is None:
        _check_tag(None, b"", tag)  # a tag where none is expected is refused
        return payload
    data = bytes(payload)
    _check_tag(auth, data, tag)
    return data


def _bind_problem(address: str) -> str:
    """Why ``address`` (HOST:PORT) cannot be listened on, as the OS says it ("" if it can): the port in use
    (a listening socket, whoever holds it), the host not one of this machine's addresses, or not a name."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: a port in TIME_WAIT is free
            s.bind(sockaddr)
            s.listen(1)
    except (OSError, ValueError, IndexError) as e:
        return str(getattr(e, "strerror", None) or e)
    return ""


@dataclass
class ServedSession:
    """What a service hands the server for one session: who answers, who checks tags, who hears the end.

    ``on_close(error)`` is called exactly once when the session ends: ``None`` when the peer closed it
    normally, else the exception that ended it (bad tag, malformed frame, lost peer).
    """

    responder: Responder
    authenticator: Authenticator | None = None
    on_close: Callable[[BaseException | None], None] | None = None
    stats: ChannelStats = field(default_factory=ChannelStats)


SessionFactory = Callable[[str, Message], ServedSession]
"""``factory(peer_name, hello) -> ServedSession``; raise :class:`~labqfl.errors.LabqflError` to refuse."""


@dataclass(frozen=True)
class _Route:
    factory: SessionFactory
    allowed_peers: Collection[str] | None


def _peer_name(context: grpc.ServicerContext) -> str:
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else ""


class NodeServer:
    """The serving side of a node: other nodes open sessions to its registered services.

    Mutual TLS with ``creds`` (client certificates required and checked against the node's CA).
    """

    def __init__(self, creds: NodeCredentials, address: str = "127.0.0.1:0", *, max_workers: int = 16,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.creds = creds
        self._routes: dict[str, _Route] = {}
        # no SO_REUSEPORT: with it (gRPC's default on Linux) a second node on a port already served listens
        # beside the first, and the two share its connections; without it that bind fails (below)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"node-{creds.name}"),
                                   options=[*_grpc_options(max_bytes), ("grpc.so_reuseport", 0)])
        handler = grpc.method_handlers_generic_handler(
            _SERVICE, {"Session": grpc.stream_stream_rpc_method_handler(self._session)})
        self._server.add_generic_rpc_handlers((handler,))
        tls = grpc.ssl_server_credentials([(creds.key_pem, creds.cert_pem)], root_certificates=creds.ca_pem,
                                          require_client_auth=True)
        host = address.rsplit(":", 1)[0]
        # asked first: gRPC's own failure is a C-level log line on stderr and "Failed to bind" with no reason
        problem = _bind_problem(address)
        try:
            self.port = 0 if problem else self._server.add_secure_port(address, tls)
        except RuntimeError:  # grpcio ≥ 1.60 raises "Failed to bind to address ..." where it returned 0
            self.port = 0
        if self.port == 0:
            raise MessageError(f"node {creds.name}: cannot listen on {address}: "
                               f"{problem or 'the address could not be bound'}; expected HOST:PORT with a free port "
                               "and HOST an address or name of this machine")
        self.address = f"{host}:{self.port}"

    def route(self, service: str, factory: SessionFactory, *, allowed_peers: Collection[str] | None = None) -> None:
        """Serve ``service`` with ``factory``; only peers whose certificate CN is in ``allowed_peers`` (all if None)."""
        self._routes[service] = _Route(factory, None if allowed_peers is None else frozenset(allowed_peers))

    def start(self) -> NodeServer:
        self._server.start()
        log.info("node %s serving on %s", self.creds.name, self.address)
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        self._server.stop(grace_s).wait()

    def __enter__(self) -> NodeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ one session
    def _open(self, first: bytes, context: grpc.ServicerContext) -> tuple[ServedSession, str]:
        payload, _ = _unframe(first)
        hello = decode_message(payload)
        peer = _peer_name(context)
        service = str(hello.fields.get("service", "")) if hello.kind == _HELLO else ""
        route = self._routes.get(service)
        if route is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"node {self.creds.name} has no service {service!r}; it serves {sorted(self._routes)}")
        assert route is not None
        if route.allowed_peers is not None and peer not in route.allowed_peers:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"node {peer!r} may not open {service!r} on node {self.creds.name}")
        try:
            return route.factory(peer, hello), service
        except Exception as e:  # a refusal by the service: tell the peer why, in one line
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{service}: {e}")
            raise  # unreachable: abort raises

    def _session(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            first = next(requests)
        except StopIteration:
            return
        sess, service = self._open(first, context)
        yield _frame(encode_message(Message(_READY)), b"")
        error: BaseException | None = None
        try:
            for raw in requests:
                payload, tag = _unframe(raw)
                req = decode_message(_checked(sess.authenticator, payload, tag))
                sess.stats.count(req, len(payload), len(tag) if sess.authenticator else -1)
                reply = sess.responder.handle(req)
                frame, n_payload, n_tag = _encoded_frame(reply, sess.authenticator)
                sess.stats.count(reply, n_payload, n_tag)
                sess.stats.round_trips += 1
                yield frame
        except (MessageError, AuthenticationError) as e:
            error = e
            log.warning("node %s: session %s from %s ended: %s", self.creds.name, service, _peer_name(context), e)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        except grpc.RpcError as e:  # the peer went away mid-session
            error = MessageError(f"peer lost during {service}: {e}")
        except Exception as e:
            error = e
            log.warning("node %s: session %s failed: %s", self.creds.name, service, e)
            context.abort(grpc.StatusCode.INTERNAL, f"{service}: {e}")
        finally:
            if error is None and not context.is_active():
                error = MessageError(f"session {service} cancelled by the peer or the network")
            if sess.on_close is not None:
                sess.on_close(error)


_END = object()
#: Session deadlines [s] longer than this (about 31 years) are dropped, not passed on: gRPC adds the
#: timeout to the clock in int64 nanoseconds, and from about 7e9 s on (measured with grpcio 1.85:
#: 3e9 s worked, 9.2e9 s failed) the call ends at once with DEADLINE_EXCEEDED.
MAX_DEADLINE_S = 1e9


class NodeChannel(Channel):
    """Connecting side of a session: ``request(msg) -> reply`` to service ``service`` on node ``peer``.

    The peer's certificate must be issued by our CA for the name ``peer`` (TLS hostname check against
    ``DNS:<peer>``); a peer presenting another CA's certificate or another node's is refused.
    """

    def __init__(self, address: str, creds: NodeCredentials, peer: str, service: str, *,
                 fields: dict[str, Any] | None = None, authenticator: Authenticator | None = None,
                 timeout_s: float | None = 3600.0, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(authenticator)
        self.peer, self.service, self.address = peer, service, address
        tls = grpc.ssl_channel_credentials(root_certificates=creds.ca_pem, private_key=creds.key_pem,
                                           certificate_chain=creds.cert_pem)
        self._grpc = grpc.secure_channel(address, tls, options=[("grpc.ssl_target_name_override", peer),
                                                                *_grpc_options(max_bytes)])
        self._out: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        call = self._grpc.stream_stream(_METHOD)
        if timeout_s is not None and timeout_s > MAX_DEADLINE_S:
            timeout_s = None  # beyond ~7e9 s gRPC's deadline overflows and the call fails at once
        self._responses: Iterator[bytes] = call(iter(self._out.get, _END), timeout=timeout_s)
        self._closed = False
        self._aborted = False  # abort() was called here (a request in flight then fails as aborted)
        hello = Message(_HELLO, {"service": service, **(fields or {})})
        ready = self._roundtrip(_frame(encode_message(hello), b""))
        if decode_message(_unframe(ready)[0]).kind != _READY:
            self.close()
            raise MessageError(f"node {peer} at {address} did not open {service!r}")

    def _roundtrip(self, frame: bytes) -> bytes:
        if self._closed:
            raise MessageError(f"session {self.service} with node {self.peer} is closed")
        self._out.put(frame)
        try:
            return next(self._responses)
        except StopIteration:
            raise MessageError(f"node {self.peer} ended session {self.service} without replying") from None
        except grpc.RpcError as e:
            self._closed = True
            self._grpc.close()
            code, details = e.code(), e.details()  # type: ignore[attr-defined]
            if self._aborted and code == grpc.StatusCode.CANCELLED:
                raise MessageError(f"session {self.service} with node {self.peer} aborted by this node") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise MessageError(f"node {self.peer} at {self.address} unreachable or refused the TLS handshake "
                                   f"(expected a certificate for {self.peer!r} from our CA): {details}") from None
            raise MessageError(f"node {self.peer} ended session {self.service}: {code.name}: {details}") from None
        except BaseException:  # Ctrl-C while waiting: the call keeps a pending receive, so close() could not
            self.abort()       # read it out (gRPC's "Internal gRPC call error 8"): it ends as failed now
            raise

    def _exchange(self, msg: Message) -> Message:
        with self._lock:
            frame, n_payload, n_tag = _encoded_frame(msg, self.authenticator)
            self.stats.count(msg, n_payload, n_tag)
            rpayload, rtag = _unframe(self._roundtrip(frame))
            try:
                data = _checked(self.authenticator, rpayload, rtag)
            except (MessageError, AuthenticationError):
                self.abort()
                raise
            reply = decode_message(data)
            self.stats.count(reply, len(rpayload), len(rtag) if self.authenticator else -1)
            return reply

    def close(self) -> None:
        """End the session (the serving side sees a normal end) and release the connection."""
        if not self._closed:
            self._closed = True
            self._out.put(_END)
            try:  # let the serving side see the end of the requests, then the end of its replies
                for _ in self._responses:
                    pass
            except grpc.RpcError:
                pass  # the session had already failed; the error was raised where it happened
            self._grpc.close()

    def abort(self) -> None:
        """End the session as failed: the serving side's ``on_close`` receives an error, not a normal end."""
        if not self._closed:
            self._closed = self._aborted = True
            self._responses.cancel()  # type: ignore[attr-defined]
            self._out.put(_END)
            self._grpc.close()

    def __enter__(self) -> NodeChannel:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
