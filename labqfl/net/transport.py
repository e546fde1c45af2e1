"""Node-to-node transport: request/response sessions over gRPC with mutual TLS.

Why gRPC (see docs/decisions/0001-node-transport.md): it is already installed with Flower (which
labqfl uses for federated training), it does TLS 1.3 with client certificates through BoringSSL,
HTTP/2 multiplexes many sessions (one per pair and block) over one connection, and a bidirectional
stream gives the ordered request/response exchange the post-processing protocols need without
code generation (raw ``bytes`` messages through a generic handler).

One RPC, ``/labqfl.node.v1.Node/Session``, a bidirectional stream of frames.  The first frame from
the connecting node is a hello (``session/open`` :class:`~labqfl.qkd.messaging.Message` naming the
``service`` and its parameters); the serving node checks the peer's identity against the service's
allowed peers, builds a :class:`ServedSession` and answers ``session/ready``.  After that each
request frame gets exactly one reply frame.

**Who is served, and how much** (review s32, F1/F3/F4).  At the start of every RPC, before a byte of
it is read, the serving node takes the peer's name from its certificate, which must carry the node
identity ``urn:labqfl:node:<CN>`` (:func:`labqfl.net.pki.node_cert_problem`: an ETSI SAE certificate
of the same CA with a node's name is refused, UNAUTHENTICATED), and refuses a peer that may open
none of its services (PERMISSION_DENIED) or that already holds :attr:`NodeServer.per_peer` sessions
(RESOURCE_EXHAUSTED; a quarter of the workers, at least 8: one peer cannot starve the operator's
``ctl`` or the other pairs).  The hello must come within :data:`HELLO_TIMEOUT_S` (else the session is
cancelled, DEADLINE_EXCEEDED) and be at most :data:`MAX_HELLO_BYTES` long (checked before it is
decoded, INVALID_ARGUMENT); then the service's own allowed peers are checked.  gRPC queues at most
``4 × max_workers`` RPCs (``maximum_concurrent_rpcs``; beyond, RESOURCE_EXHAUSTED).

**Liveness** (F7).  A session has no deadline of its own (an active one lives as long as its nodes);
each request waits at most ``timeout_s`` for its reply (:class:`NodeChannel`), and both ends send
HTTP/2 keepalive pings (:data:`KEEPALIVE`: every 30 s, 20 s to answer, also while no data flows), so
a peer cut off without a reset (a black hole) ends the session at both ends within about a minute.

A frame is ``u16 tag length | tag | payload``, the payload an :func:`encode_message` encoding (no
pickle).  With an authenticator on both ends every payload is Wegman–Carter tagged by its sender
and verified by its receiver *before* it is decoded: TLS protects each hop computationally, the
tags protect the protocol end to end information-theoretically.  A bad tag ends the session at both
ends with an :class:`~labqfl.errors.AuthenticationError` where the bad tag was seen and a
:class:`~labqfl.qkd.messaging.MessageError` naming ``UNAUTHENTICATED`` at the other end.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from labqfl.errors import AuthenticationError
from labqfl.log import get_logger
from labqfl.net.pki import NodeCredentials, certified_node_name
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
#: seconds a peer has, once its stream is open, to send its hello (a stream without one held a worker forever)
HELLO_TIMEOUT_S = 5.0
#: the largest hello frame [bytes] a node decodes (a hello names a service and a few short fields)
MAX_HELLO_BYTES = 8 << 10
#: each reply's timeout [s] by default (:class:`NodeChannel`); the session itself has none
REPLY_TIMEOUT_S = 3600.0


class Keepalive(NamedTuple):
    """HTTP/2 keepalive of a node's connections: a ping after ``time_s`` without one, the connection
    dropped when its answer takes longer than ``timeout_s``."""

    time_s: float = 30.0
    timeout_s: float = 20.0


#: both ends' keepalive: a black-holed peer is noticed within about ``time_s + timeout_s``
KEEPALIVE = Keepalive()


def _grpc_options(max_bytes: int) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]


def _keepalive_options(k: Keepalive, *, server: bool) -> list[tuple[str, Any]]:
    """gRPC's keepalive options for one end. Pings go out while calls are open, with or without data
    (``max_pings_without_data`` 0: no limit; gRPC's default 2 stops pinging an idle stream); a server
    accepts a client's pings every ``time_s / 2`` without data (gRPC's default, 5 min, would answer the
    second ping with GOAWAY ``too_many_pings``)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", max(1, round(k.time_s * 1000))),
        ("grpc.keepalive_timeout_ms", max(1, round(k.timeout_s * 1000))),
        ("grpc.http2.ping_timeout_ms", max(1, round(k.timeout_s * 1000))),  # gRPC ≥ 1.5x times pings with this
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0)]
    if server:
        opts.append(("grpc.http2.min_ping_interval_without_data_ms", max(1, round(k.time_s * 500))))
    return opts


class _Watchdog:
    """One daemon thread per process that calls what is due: a callback armed for a moment and not
    disarmed before it (a reply or a hello that does not come). Arming and disarming are a dict
    operation under a lock; the thread wakes only when something is due or an earlier moment is armed."""

    _MAX_WAIT_S = 3600.0  # threading's waits overflow beyond ~9e9 s; a long wait is taken in steps

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # a forked child has no watchdog thread: it starts its own
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Callable[[], None]]] = {}
        self._ids = itertools.count()
        self._wake = math.inf
        self._thread: threading.Thread | None = None

    def arm(self, delay_s: float, fire: Callable[[], None]) -> int:
        at = time.monotonic() + delay_s
        with self._cond:
            key = next(self._ids)
            self._due[key] = (at, fire)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="labqfl-net-watchdog", daemon=True)
                self._thread.start()
            if at < self._wake:
                self._cond.notify()
        return key

    def disarm(self, key: int) -> bool:
        """False if the callback already fired (or is firing)."""
        with self._cond:
            return self._due.pop(key, None) is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                fired = [k for k, (at, _) in self._due.items() if at <= now]
                calls = [self._due.pop(k)[1] for k in fired]
                if not calls:
                    self._wake = min((at for at, _ in self._due.values()), default=math.inf)
                    self._cond.wait(min(self._wake - now, self._MAX_WAIT_S))
                    self._wake = -math.inf  # awake: an arm while the due ones are scanned needs no notify
                    continue
            for fire in calls:
                try:
                    fire()
                except Exception as e:  # a callback's failure must not stop the others
                    log.warning("labqfl.net: a timeout's handler failed: %s", e)


_WATCHDOG = _Watchdog()


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


@functools.lru_cache(maxsize=64)
def _certified(cert_pem: bytes) -> tuple[str, str]:
    return certified_node_name(cert_pem)


def _peer(context: grpc.ServicerContext) -> tuple[str, str]:
    """(node name, problem) of the peer of ``context``: its certificate's CN if the certificate carries
    the node identity of that name (:func:`labqfl.net.pki.node_cert_problem`), else ("", why not)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return "", "the peer presented no certificate"
    return _certified(bytes(pems[0]))


#: how long [s] a session whose requests ended waits to learn whether its call was cancelled (below)
_SETTLE_S = 0.02


def _settled_active(context: grpc.ServicerContext) -> bool:
    """Whether the call of ``context`` is still active once its requests ended. A lost connection (a reset,
    keepalive pings unanswered) ends the requests and cancels the call as two events that gRPC's Python
    side takes in turn, so the cancellation is waited for a moment (:data:`_SETTLE_S`); a peer that
    closed normally keeps the call active until its status is sent."""
    until = time.monotonic() + _SETTLE_S
    while context.is_active():
        if time.monotonic() >= until:
            return True
        time.sleep(0.002)
    return False


def _cancel(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End the call of ``context`` from another thread (its handler may be blocked reading), with
    ``code``/``details`` where gRPC's call object takes a status, else as a plain cancellation."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    codes = getattr(getattr(grpc, "_common", None), "STATUS_CODE_TO_CYGRPC_STATUS_CODE", {})
    try:
        call.cancel(codes[code], details)  # type: ignore[union-attr]
    except Exception:  # another gRPC's internals: the status is lost, the call still ends
        context.cancel()


class NodeServer:
    """The serving side of a node: other nodes open sessions to its registered services.

    Mutual TLS with ``creds`` (client certificates required and checked against the node's CA); a
    peer is known by its node identity (CN + ``urn:labqfl:node:<CN>``) and admitted as the module
    docstring says: ``per_peer`` sessions at most per peer (default: a quarter of ``max_workers``, at
    least 8), the hello within ``hello_timeout_s``, keepalive ``keepalive``.
    """

    def __init__(self, creds: NodeCredentials, address: str = "127.0.0.1:0", *, max_workers: int = 16,
                 max_bytes: int = MAX_MESSAGE_BYTES, per_peer: int | None = None,
                 hello_timeout_s: float = HELLO_TIMEOUT_S, keepalive: Keepalive = KEEPALIVE) -> None:
        self.creds = creds
        self._routes: dict[str, _Route] = {}
        self.per_peer = per_peer if per_peer is not None else max(8, max_workers // 4)
        self.hello_timeout_s = hello_timeout_s
        self._open_sessions: dict[str, int] = {}
        self._count_lock = threading.Lock()
        # no SO_REUSEPORT: with it (gRPC's default on Linux) a second node on a port already served listens
        # beside the first, and the two share its connections; without it that bind fails (below)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"node-{creds.name}"),
                                   options=[*_grpc_options(max_bytes), ("grpc.so_reuseport", 0),
                                            *_keepalive_options(keepalive, server=True)],
                                   maximum_concurrent_rpcs=4 * max_workers)
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
        """Serve ``service`` with ``factory``; only peers whose node name is in ``allowed_peers`` (every node
        certificate of the CA if None)."""
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
    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, reason: str) -> None:
        log.warning("node %s: refused a session: %s", self.creds.name, reason)
        context.abort(code, reason)

    def _admit(self, context: grpc.ServicerContext) -> str:
        """The peer's node name, once its certificate is a node's, it may open some service here and
        holds fewer than :attr:`per_peer` sessions (one more is counted); the call is aborted otherwise.
        Nothing of the call has been read yet."""
        peer, problem = _peer(context)
        if problem:
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, f"node {self.creds.name} refused the peer: {problem}")
        routes = list(self._routes.items())
        if not any(r.allowed_peers is None or peer in r.allowed_peers for _, r in routes):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"node {peer!r} may not open any service on node {self.creds.name} "
                         f"(it serves {sorted(s for s, _ in routes)} to other nodes)")
        with self._count_lock:
            n = self._open_sessions.get(peer, 0)
            if n < self.per_peer:
                self._open_sessions[peer] = n + 1
        if n >= self.per_peer:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"node {peer!r} already holds {n} sessions on node {self.creds.name}, the most one peer "
                         "may hold; expected one to end first")
        return peer

    def _release(self, peer: str) -> None:
        with self._count_lock:
            n = self._open_sessions.get(peer, 1) - 1
            if n > 0:
                self._open_sessions[peer] = n
            else:
                self._open_sessions.pop(peer, None)

    def _hello(self, requests: Iterator[bytes], context: grpc.ServicerContext, peer: str) -> bytes | None:
        """The first frame, if it comes within :attr:`hello_timeout_s` (else the call is cancelled:
        DEADLINE_EXCEEDED) and is at most :data:`MAX_HELLO_BYTES` long (else INVALID_ARGUMENT); None when
        the peer ended or was cancelled before it."""
        late = (f"node {peer!r} sent no session hello within {self.hello_timeout_s:g} s of opening a stream to "
                f"node {self.creds.name}; expected session/open at once")
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _cancel(context, grpc.StatusCode.DEADLINE_EXCEEDED, late)

        key = _WATCHDOG.arm(self.hello_timeout_s, expire)
        try:
            first: bytes | None = next(requests)
        except (StopIteration, grpc.RpcError):
            first = None
        if not _WATCHDOG.disarm(key) or expired.is_set():
            log.warning("node %s: refused a session: %s", self.creds.name, late)
            return None
        if first is not None and len(first) > MAX_HELLO_BYTES:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"node {peer!r} sent a {len(first)}-byte session hello to node {self.creds.name}; "
                         f"expected at most {MAX_HELLO_BYTES} bytes")
        return first

    def _open(self, first: bytes, context: grpc.ServicerContext, peer: str) -> tuple[ServedSession, str]:
        payload, _ = _unframe(first)
        hello = decode_message(payload)
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
        peer = self._admit(context)
        try:
            first = self._hello(requests, context, peer)
            if first is None:
                return
            try:
                sess, service = self._open(first, context, peer)
            except MessageError as e:  # a malformed hello
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"session hello from node {peer!r}: {e}")
                raise  # unreachable: abort raises
            yield _frame(encode_message(Message(_READY)), b"")
            yield from self._serve(sess, service, peer, requests, context)
        finally:
            self._release(peer)

    def _serve(self, sess: ServedSession, service: str, peer: str, requests: Iterator[bytes],
               context: grpc.ServicerContext) -> Iterator[bytes]:
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
            log.warning("node %s: session %s from %s ended: %s", self.creds.name, service, peer, e)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        except grpc.RpcError as e:  # the peer went away mid-session (or stopped answering keepalive pings)
            error = MessageError(f"peer lost during {service}: {e}")
        except Exception as e:
            error = e
            log.warning("node %s: session %s failed: %s", self.creds.name, service, e)
            context.abort(grpc.StatusCode.INTERNAL, f"{service}: {e}")
        finally:
            if error is None and sess.on_close is not None and not _settled_active(context):
                error = MessageError(f"session {service} cancelled by the peer or the network")
            if sess.on_close is not None:
                sess.on_close(error)


_END = object()
#: Reply timeouts [s] longer than this (about 31 years) are dropped (no limit). Until review s32 the
#: timeout was gRPC's deadline on the whole session, which gRPC adds to its clock in int64 nanoseconds:
#: from about 7e9 s on (grpcio 1.85) the call ended at once with DEADLINE_EXCEEDED.
MAX_DEADLINE_S = 1e9


class NodeChannel(Channel):
    """Connecting side of a session: ``request(msg) -> reply`` to service ``service`` on node ``peer``.

    The peer's certificate must be issued by our CA for the name ``peer`` (TLS hostname check against
    ``DNS:<peer>``); a peer presenting another CA's certificate or another node's is refused.

    ``timeout_s`` bounds each reply (the hello's too), not the session: a request not answered in time
    aborts the session with one :class:`MessageError` naming the request, the peer and the timeout
    (None, or more than :data:`MAX_DEADLINE_S`: no limit). A session lives as long as both nodes keep it;
    ``keepalive`` pings notice a peer the network lost without a reset.
    """

    def __init__(self, address: str, creds: NodeCredentials, peer: str, service: str, *,
                 fields: dict[str, Any] | None = None, authenticator: Authenticator | None = None,
                 timeout_s: float | None = REPLY_TIMEOUT_S, max_bytes: int = MAX_MESSAGE_BYTES,
                 keepalive: Keepalive = KEEPALIVE) -> None:
        super().__init__(authenticator)
        self.peer, self.service, self.address = peer, service, address
        self.timeout_s = None if timeout_s is None or timeout_s > MAX_DEADLINE_S else float(timeout_s)
        tls = grpc.ssl_channel_credentials(root_certificates=creds.ca_pem, private_key=creds.key_pem,
                                           certificate_chain=creds.cert_pem)
        self._grpc = grpc.secure_channel(address, tls, options=[("grpc.ssl_target_name_override", peer),
                                                                *_grpc_options(max_bytes),
                                                                *_keepalive_options(keepalive, server=False)])
        self._out: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        call = self._grpc.stream_stream(_METHOD)
        self._responses: Iterator[bytes] = call(iter(self._out.get, _END))  # no deadline: see timeout_s
        self._closed = False
        self._aborted = False  # abort() was called here (a request in flight then fails as aborted)
        self._opened = False  # the peer answered the hello
        self._expired = ""  # the request whose reply did not come in time
        hello = Message(_HELLO, {"service": service, **(fields or {})})
        ready = self._roundtrip(_frame(encode_message(hello), b""), _HELLO)
        if decode_message(_unframe(ready)[0]).kind != _READY:
            self.close()
            raise MessageError(f"node {peer} at {address} did not open {service!r}")
        self._opened = True

    def _expire(self, what: str) -> None:
        self._expired = what
        self._responses.cancel()  # type: ignore[attr-defined]

    def _roundtrip(self, frame: bytes, what: str) -> bytes:
        if self._closed:
            raise MessageError(f"session {self.service} with node {self.peer} is closed")
        key = None if self.timeout_s is None else _WATCHDOG.arm(self.timeout_s, lambda: self._expire(what))
        self._out.put(frame)
        try:
            reply = next(self._responses)
            if key is None or _WATCHDOG.disarm(key):
                return reply
            self._expired = self._expired or what  # the timeout fired as the reply came: the call is cancelled
            raise grpc.RpcError()
        except StopIteration:
            raise MessageError(f"node {self.peer} ended session {self.service} without replying") from None
        except grpc.RpcError as e:
            if key is not None:
                _WATCHDOG.disarm(key)
            self._closed = True
            self._grpc.close()
            raise self._lost(e) from None
        except BaseException:  # Ctrl-C while waiting: the call keeps a pending receive, so close() could not
            if key is not None:  # read it out (gRPC's "Internal gRPC call error 8"): it ends as failed now
                _WATCHDOG.disarm(key)
            self.abort()
            raise

    def _lost(self, e: grpc.RpcError) -> MessageError:
        """The one error a failed call ends in (the reason this node saw)."""
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
        details = e.details() if hasattr(e, "details") else ""  # type: ignore[attr-defined]
        if self._expired:
            return MessageError(f"node {self.peer} did not answer {self._expired!r} on session {self.service} within "
                                f"{self.timeout_s:g} s; the session is aborted")
        if self._aborted and code == grpc.StatusCode.CANCELLED:
            return MessageError(f"session {self.service} with node {self.peer} aborted by this node")
        if code == grpc.StatusCode.UNAVAILABLE and self._opened:
            return MessageError(f"node {self.peer} at {self.address} unreachable during session {self.service}: the "
                                f"connection was lost (reset, or no answer to keepalive pings): {details}")
        if code == grpc.StatusCode.UNAVAILABLE:
            return MessageError(f"node {self.peer} at {self.address} unreachable or refused the TLS handshake "
                                f"(expected a certificate for {self.peer!r} from our CA): {details}")
        return MessageError(f"node {self.peer} ended session {self.service}: {code.name}: {details}")

    def _exchange(self, msg: Message) -> Message:
        with self._lock:
            frame, n_payload, n_tag = _encoded_frame(msg, self.authenticator)
            self.stats.count(msg, n_payload, n_tag)
            rpayload, rtag = _unframe(self._roundtrip(frame, msg.kind))
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
