"""Mutual-TLS TCP tunnels for the federated-learning traffic of the nodes.

Flower's SuperLink serves TLS but never asks for a client certificate (flwr 1.42:
``grpc.ssl_server_credentials(..., require_client_auth=False)`` in ``flwr.supercore.grpc``; its
Fleet API is HTTPS without client authentication), so it cannot tell a client of the network from
anyone who can reach its port. The FL server node therefore puts a mutual-TLS front before it, and
every SuperNode reaches it through a local end that presents its owner's node certificate:

    SuperNode Ci --plain TCP, 127.0.0.1 of Ci's host--> TunnelEnd (cert Ci)
        ==mutual TLS, network CA, peer CN checked==> MtlsFront (cert server) --TCP, 127.0.0.1--> SuperLink

The bytes inside are the SuperNode's own TLS session with the SuperLink (it verifies the
SuperLink's certificate against the network CA), so the Flower traffic is TLS end to end and the
tunnel adds node identity: :class:`MtlsFront` requires a client certificate issued by the
network's CA (``ssl.CERT_REQUIRED``) that is a node certificate (URI subjectAltName
``urn:labqfl:node:<CN>``, :func:`labqfl.net.pki.node_cert_problem`: an ETSI SAE certificate of the same
CA named like a client is refused) whose CN is one of the allowed names, and refuses every other
connection before a byte reaches the SuperLink. Python's :mod:`ssl` (OpenSSL) and :mod:`asyncio`
streams; one event loop in a daemon thread per tunnel.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Collection, Coroutine
from pathlib import Path
from typing import Any

from cryptography import x509

from labqfl.errors import ConfigError
from labqfl.log import get_logger
from labqfl.net.pki import node_cert_problem

log = get_logger(__name__)

__all__ = ["MtlsFront", "TunnelEnd", "split_address"]

#: seconds a peer has to finish the TLS handshake
HANDSHAKE_TIMEOUT_S = 15.0
_CHUNK = 1 << 16


def split_address(address: str, what: str = "address") -> tuple[str, int]:
    """``"host:port"`` → (host, port); one clear error otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} {address!r} is not HOST:PORT with a port 0-65535")
    return host.strip("[]"), int(port)


def _peer_cn(cert: dict | None) -> str:  # type: ignore[type-arg]
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _node_problem(der: bytes | None) -> str:
    """Why the peer's certificate (DER, as TLS got it) is not a node certificate; "" if it is."""
    if not der:
        return "the peer presented no certificate"
    try:
        return node_cert_problem(x509.load_der_x509_certificate(der))
    except ValueError as exc:
        return f"the peer's certificate is unreadable ({exc})"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, ssl.SSLError, OSError, RuntimeError):
            pass


async def _splice(r1: asyncio.StreamReader, w1: asyncio.StreamWriter, r2: asyncio.StreamReader,
                  w2: asyncio.StreamWriter) -> None:
    await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))


class _LoopThread:
    """An asyncio loop in a daemon thread serving one listening socket."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_error)
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None
        self.address = ""

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:  # type: ignore[type-arg]
        exc = context.get("exception")
        # a failed handshake (another CA, no certificate) lands here: the connection is refused
        log.warning("%s: refused or dropped a connection: %s", self.name,
                    f"{type(exc).__name__}: {exc}" if exc is not None else context.get("message"))

    def _listen(self, coro: Coroutine[Any, Any, asyncio.Server]) -> str:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)
        self._server = server
        sock = server.sockets[0].getsockname()
        host = sock[0] if ":" not in sock[0] else f"[{sock[0]}]"
        self.address = f"{host}:{sock[1]}"
        return self.address

    def stop(self) -> None:
        """Stop listening and end every open connection (idempotent)."""
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        except (TimeoutError, RuntimeError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class MtlsFront(_LoopThread):
    """The FL server node's listening side: mutual TLS with the network's CA; a connection whose
    certificate is a node certificate (``urn:labqfl:node:<CN>``) with its CN in ``allowed`` is spliced to ``target`` (the SuperLink on loopback), every
    other one is refused (handshake failure or closed after it) and logged."""

    def __init__(self, *, ca: Path, cert: Path, key: Path, listen: str, target: str, allowed: Collection[str],
                 name: str = "fl-front") -> None:
        super().__init__(name)
        self.listen, self.target = listen, target
        self.allowed = frozenset(allowed)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED  # a client certificate from this CA, or no connection
        self.ctx = ctx
        #: peers accepted / refused since start (names or reasons; no payload)
        self.accepted: list[str] = []
        self.refused: list[str] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        where = writer.get_extra_info("peername")
        try:  # the handshake here, not in start_server, so that a refused one is logged
            await writer.start_tls(self.ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self.refused.append(f"{type(exc).__name__}")
            log.warning("%s: refused a connection from %s: TLS handshake failed (%s: %s)", self.name, where,
                        type(exc).__name__, exc)
            writer.transport.abort()
            return
        peer = _peer_cn(writer.get_extra_info("peercert"))
        ssl_obj = writer.get_extra_info("ssl_object")
        problem = _node_problem(ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None)
        if problem:
            self.refused.append(f"{peer or '<no name>'}: not a node certificate")
            log.warning("%s: refused a connection from %s: %s", self.name, where, problem)
            writer.close()
            return
        if peer not in self.allowed:
            self.refused.append(peer or "<no name>")
            log.warning("%s: refused peer %r (allowed: %s)", self.name, peer, sorted(self.allowed))
            writer.close()
            return
        host, port = split_address(self.target, "SuperLink address")
        try:
            ur, uw = await asyncio.open_connection(host, port)
        except OSError as exc:
            log.warning("%s: SuperLink at %s unreachable for %s: %s", self.name, self.target, peer, exc)
            writer.close()
            return
        self.accepted.append(peer)
        await _splice(reader, writer, ur, uw)

    def start(self) -> str:
        """Listen; returns ``host:port`` (the bound port when ``listen`` asked for port 0)."""
        host, port = split_address(self.listen, "--fl-listen")
        return self._listen(asyncio.start_server(self._handle, host, port))


class TunnelEnd(_LoopThread):
    """A client's end: listens on ``127.0.0.1`` (plain, for its own SuperNode only) and carries
    each connection over mutual TLS to the server node's :class:`MtlsFront`, presenting this
    node's certificate and verifying the server's (CA and name ``server_name``, and that it is a node
    certificate: ``urn:labqfl:node:<CN>`` with CN ``server_name``, so that an ETSI KME certificate of
    the same CA issued for that host name does not pass for the server node)."""

    def __init__(self, *, ca: Path, cert: Path, key: Path, server: str, server_name: str = "server",
                 name: str = "fl-tunnel") -> None:
        super().__init__(name)
        self.server, self.server_name = server, server_name
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(ca))
        self.ctx = ctx

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = split_address(self.server, "--server")
        try:
            ur, uw = await asyncio.open_connection(host, port, ssl=self.ctx, server_hostname=self.server_name,
                                                   ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s: cannot reach server node %s at %s: %s", self.name, self.server_name, self.server, exc)
            writer.close()
            return
        ssl_obj = uw.get_extra_info("ssl_object")
        problem = _node_problem(ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None)
        cn = _peer_cn(uw.get_extra_info("peercert"))
        if problem or cn != self.server_name:
            log.warning("%s: refused server node %s at %s: %s", self.name, self.server_name, self.server,
                        problem or f"its certificate is for {cn!r}, expected {self.server_name!r}")
            uw.transport.abort()
            writer.close()
            return
        await _splice(reader, writer, ur, uw)

    def start(self) -> str:
        return self._listen(asyncio.start_server(self._handle, "127.0.0.1", 0))
