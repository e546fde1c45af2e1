"""What every node process shares: its identity, its own data folder, its server, its control
service, its clean shutdown, and the test hook that kills it at a chosen protocol message.

A node is one OS process (``labqfl node client|detector|optics``). It holds its certificate
(:class:`~labqfl.net.NodeCredentials`), a data folder nobody else reads, and a
:class:`~labqfl.net.NodeServer` (gRPC, mutual TLS). The operator (certificate CN ``ctl``: the
launcher, ``labqfl node acquire``) commands it through the ``ctl`` service; every other service
names the peers allowed to open it (checked against the peer certificate's CN).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig, load_station_config
from labqfl.errors import ConfigError, LabqflError
from labqfl.log import get_logger
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession
from labqfl.qkd.messaging import Channel, Message, MessageError, decode_message, encode_message

log = get_logger(__name__)

__all__ = ["CTL", "Node", "NodeError", "RecordedChannel", "exit_hook", "ok", "open_session", "parse_addresses",
           "read_wire", "refuse", "request"]

#: Certificate name of the operator (the launcher / ``labqfl node acquire``).
CTL = "ctl"
#: Test hook: ``KIND:N`` makes the node kill itself (SIGKILL) right after the N-th message of
#: ``KIND`` it handled or was answered (tests of a node lost in mid-block).
EXIT_AFTER_ENV = "LABQFL_NODE_EXIT_AFTER"


class NodeError(LabqflError):
    """A node could not do what it was asked (the message names what and why)."""


def ok(kind: str, **fields: Any) -> Message:
    return Message(kind, dict(fields))


def refuse(reason: str) -> Message:
    return Message("node/refused", {"reason": reason})


_hook_lock = threading.Lock()
_hook_counts: dict[str, int] = {}


def exit_hook(kind: str) -> None:
    """Kill this process with SIGKILL after the N-th ``kind`` if ``LABQFL_NODE_EXIT_AFTER=kind:N``
    (nothing is flushed or closed: a crash at exactly that protocol point); ``kind:N:TERM`` sends
    SIGTERM instead (the operator's clean stop, at exactly that point)."""
    spec = os.environ.get(EXIT_AFTER_ENV)
    if not spec or ":" not in spec:
        return
    parts = spec.split(":")
    want, n = parts[0], parts[1]
    sig = signal.SIGTERM if parts[2:] == ["TERM"] else signal.SIGKILL
    if want != kind:
        return
    with _hook_lock:
        _hook_counts[kind] = _hook_counts.get(kind, 0) + 1
        hit = _hook_counts[kind] == int(n)
    if hit:
        os.kill(os.getpid(), sig)


def parse_addresses(items: list[str] | None, what: str) -> dict[str, str]:
    """``["C1=host:port", ...]`` → ``{"C1": "host:port"}``; one clear error for a bad item."""
    out: dict[str, str] = {}
    for it in items or []:
        for part in it.split(","):
            if not part:
                continue
            name, sep, addr = part.partition("=")
            if not sep or not name or ":" not in addr:
                raise ConfigError(f"{what}: {part!r} is not NAME=HOST:PORT")
            out[name] = addr
    return out


class _Ctl:
    """The ``ctl`` service: ``ctl/<verb>`` → ``node.ctl_<verb>(message)``."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def handle(self, req: Message) -> Message:
        verb = req.kind.partition("/")[2].replace("-", "_")
        fn: Callable[[Message], Message] | None = getattr(self.node, f"ctl_{verb}", None)
        if not req.kind.startswith("ctl/") or fn is None:
            return refuse(f"node {self.node.name} has no control command {req.kind!r}")
        try:
            return fn(req)
        except (LabqflError, ValueError, OSError) as e:
            log.warning("node %s: %s failed: %s", self.node.name, req.kind, e)
            return refuse(f"{req.kind}: {e}")


class Node:
    """Base of the node processes (module docstring). Subclasses add routes and ``ctl_*`` verbs."""

    role = "node"

    def __init__(self, name: str, *, station: str | Path | None, data_dir: str | Path, listen: str,
                 certs: str | Path, max_workers: int = 64) -> None:
        self.name = name
        self.cfg: StationConfig = load_station_config(station)
        self.station_path = station
        self.data = Path(data_dir).expanduser().resolve()
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        #: this node's own files inside the data folder (labqfl's layout: several nodes of one
        #: machine may share a data folder, each touching only keystore/<name>.sqlite and nodes/<name>/)
        self.private = self.data / "nodes" / name
        for d in (self.data / "nodes", self.private):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        self.creds = NodeCredentials.load(Path(certs), name)
        self.server = NodeServer(self.creds, listen, max_workers=max_workers)
        self.server.route("ctl", lambda peer, hello: ServedSession(_Ctl(self)), allowed_peers={CTL})
        self.stopping = threading.Event()

    # -- control verbs every node answers ----------------------------------------------------
    def ctl_ping(self, req: Message) -> Message:
        return ok("ctl/pong", role=self.role, name=self.name)

    def ctl_stop(self, req: Message) -> Message:
        self.stopping.set()
        return ok("ctl/stopping")

    # -- life cycle ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Finish what is in progress (no half-stored block) and release resources."""

    def serve(self, as_json: bool = False) -> None:
        """Serve until SIGTERM/SIGINT (or ``ctl/stop``), then shut down cleanly.

        Prints ``NODE <name> <address>`` on stdout once listening (``as_json``: the JSON object
        ``{"node", "role", "address"}`` instead) and writes it to ``<data>/nodes/<name>/address.json``,
        so a launcher can read the ephemeral port."""
        def on_signal(signum: int, frame: object) -> None:
            self.stopping.set()

        # A launcher's SIGTERM may arrive while this node is already stopping (after a ``ctl/stop``
        # or its own signal): during the shutdown it only sets the event again, and once the node
        # has shut down both signals are ignored, because the interpreter's own finalisation puts
        # Python-level handlers back to the default action, and a late SIGTERM would then kill a
        # cleanly stopped node (exit -15 instead of 0).
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, on_signal)
        self.server.start()
        info = {"node": self.name, "role": self.role, "address": self.server.address}
        (self.private / "address.json").write_text(json.dumps(info))
        print(json.dumps(info) if as_json else f"NODE {self.name} {self.server.address}", flush=True)
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            log.info("node %s: stopping", self.name)
            try:
                self.shutdown()
            finally:
                self.server.stop(grace_s=2.0)
                for s in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(s, signal.SIG_IGN)


#: Test hook: a folder where every node appends every message of the sessions it opens, both
#: ways (``<node>.wire``: u32 length + :func:`encode_message` bytes), for the isolation tests.
WIRE_LOG_ENV = "LABQFL_NODE_WIRE_LOG"


class RecordedChannel(Channel):
    """A session this node opened; with ``LABQFL_NODE_WIRE_LOG`` set, every request and reply
    is appended to ``<folder>/<node>.wire`` (the messages as they crossed the wire, before TLS)."""

    def __init__(self, inner: Channel, node: str) -> None:
        super().__init__(None)
        self.inner = inner
        self.stats = inner.stats
        folder = os.environ.get(WIRE_LOG_ENV)
        self._path = Path(folder) / f"{node}.wire" if folder else None
        self._lock = threading.Lock()

    def _record(self, msg: Message) -> None:
        if self._path is None:
            return
        raw = encode_message(msg)
        with self._lock, self._path.open("ab") as f:
            f.write(len(raw).to_bytes(4, "little") + raw)

    def request(self, msg: Message) -> Message:
        self._record(msg)
        rep = self.inner.request(msg)
        self._record(rep)
        exit_hook(msg.kind)
        return rep

    def _exchange(self, msg: Message) -> Message:  # pragma: no cover - request is overridden
        return self.inner.request(msg)

    def close(self) -> None:
        self.inner.close()


def open_session(address: str, creds: NodeCredentials, peer: str, service: str, **kw: Any) -> RecordedChannel:
    """A :class:`~labqfl.net.NodeChannel` to ``service`` on node ``peer``, recorded if asked (above)."""
    return RecordedChannel(NodeChannel(address, creds, peer, service, **kw), creds.name)


def read_wire(path: Path) -> list[Message]:
    """The messages of a ``.wire`` recording, in order."""
    raw = Path(path).read_bytes()
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i:i + 4], "little")
        out.append(decode_message(raw[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def request(ch: Any, msg: Message, expect: str) -> Message:
    """``ch.request(msg)``; a ``node/refused`` answer or another kind raises :class:`NodeError`."""
    rep = ch.request(msg)
    if rep.kind == "node/refused":
        raise NodeError(str(rep.fields.get("reason", "refused")))
    if rep.kind != expect:
        raise MessageError(f"answered {rep.kind!r} to {msg.kind!r}; expected {expect!r}")
    return rep
