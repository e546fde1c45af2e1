"""Two-party classical message channel for QKD post-processing (reconciliation, later the pipeline).

Design
------
Post-processing protocols here are **request/response**: one party (the *client*, Bob in
reconciliation: he holds the noisy key and drives the protocol) sends a :class:`Message` and the
other party (the *server*, Alice: she holds the reference key) answers with exactly one
:class:`Message`.  Alice's side is a :class:`Responder` (``handle(request) -> reply``), so the same
protocol code runs

* in process (:class:`LocalChannel`: the responder is called directly — simulation, tests), or
* over any byte transport (:class:`StreamChannel` on a socket-like object, served on Alice's side by
  :func:`serve_stream`); messages are encoded with :func:`encode_message`, a small self-describing
  binary format (no pickle).

**Leakage is counted at the channel.**  Every message carries ``disclosed``: the bits that are a
function of the key (parities revealed by Cascade, syndrome bits, revealed filler values), as a
uint8 0/1 array.  The channel adds ``len(disclosed) - credit`` to :attr:`ChannelStats.leaked_bits`
for each message in either direction; ``credit`` is the number of one-time uniformly random filler
bits (never key bits) that the sender mixed into ``disclosed`` and that provably mask as many bits of
it (punctured LDPC symbols with independent columns, Kiktenko et al. arXiv:1612.03673).  Nobody
estimates leakage from a formula.

**Authentication.**  An optional ``authenticator`` object with ``tag(payload: bytes) -> bytes`` and
``verify(payload: bytes, tag: bytes) -> None`` (raises on a bad tag) tags every encoded message in
both directions (Wegman–Carter tags from the pair's key pool are provided elsewhere).  The channel
counts tags and tag bytes (:attr:`ChannelStats.tag_bytes`) so the key they consume can be deducted.

Key material never appears in ``repr``/logs: :class:`Message` hides ``disclosed`` in its repr.
"""

from __future__ import annotations

import functools
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from labqfl.errors import LabqflError

__all__ = [
    "Authenticator",
    "Channel",
    "ChannelStats",
    "LocalChannel",
    "Message",
    "MessageError",
    "Responder",
    "StreamChannel",
    "decode_message",
    "encode_message",
    "encode_message_parts",
    "FieldSpec",
    "MessageSchema",
    "field_problem",
    "serve_stream",
]


class MessageError(LabqflError):
    """A protocol message was malformed, unexpected, or failed authentication."""


FieldValue = int | float | str | bytes | np.ndarray


@dataclass(frozen=True, repr=False)
class Message:
    """One typed protocol message.

    ``kind``: protocol and step, e.g. ``"cascade/round"``.  ``fields``: public metadata (ints,
    floats, strings, bytes or 1-D numeric numpy arrays: indices, pass numbers, code parameters).
    ``disclosed``: uint8 array of 0/1, the key-dependent bits carried (parities, syndrome bits).
    ``credit``: how many of the disclosed bits are masked by fresh uniformly random filler
    (see module docstring); ``0 <= credit <= len(disclosed)``.
    """

    kind: str
    fields: dict[str, FieldValue] = field(default_factory=dict)
    disclosed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    credit: int = 0

    def __post_init__(self) -> None:
        d = self.disclosed
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8 or d.ndim != 1:
            raise MessageError(f"message {self.kind!r}: disclosed must be a 1-D uint8 array")
        if not 0 <= self.credit <= d.size:
            raise MessageError(
                f"message {self.kind!r}: credit {self.credit} outside [0, {d.size}]")

    @property
    def leaked_bits(self) -> int:
        """Key bits this message reveals: ``len(disclosed) - credit``."""
        return int(self.disclosed.size) - int(self.credit)

    def get(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            raise MessageError(f"message {self.kind!r} lacks field {name!r}") from None

    def __repr__(self) -> str:  # never print key-dependent bits
        return (f"Message(kind={self.kind!r}, fields={sorted(self.fields)}, "
                f"disclosed=<{self.disclosed.size} bits>, credit={self.credit})")


#: the field types a schema may declare, and the values (decoded, or passed in process) each admits
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int, np.integer),
    "float": (int, float, np.integer, np.floating),
    "str": (str,),
    "bytes": (bytes,),
    "array": (np.ndarray,),
}

#: one message kind's fields: name → type ("int", "float", "str", "bytes" or "array")
FieldSpec = dict[str, str]


@dataclass(frozen=True)
class MessageSchema:
    """The fields of one message kind (in one direction): those it must carry and those it may.

    A protocol lists one per kind it accepts (``dict[kind, MessageSchema]``) and checks every
    message it receives with :func:`field_problem` before any handler reads it: a field no handler
    reads would otherwise ride along into the authenticated transcript (where every byte counts in
    the forgery bound's length) and cost memory (review s32, finite-key F1)."""

    required: FieldSpec = field(default_factory=dict)
    optional: FieldSpec = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, t in {**self.required, **self.optional}.items():
            if t not in _FIELD_TYPES:
                raise MessageError(f"schema field {name!r}: type {t!r} is not one of {sorted(_FIELD_TYPES)}")
        if set(self.required) & set(self.optional):
            raise MessageError(f"schema fields {sorted(set(self.required) & set(self.optional))} are both required "
                               "and optional")


def field_problem(msg: Message, schemas: dict[str, MessageSchema], sender: str = "the peer") -> str:
    """Why ``msg`` does not match its kind's schema in ``schemas`` ('' if it does): an unknown kind,
    an unknown field, a missing field or a field of the wrong type — one sentence naming the kind,
    the field and what was expected."""
    schema = schemas.get(msg.kind)
    if schema is None:
        return f"unexpected message {msg.kind!r} from {sender} (expected one of {', '.join(sorted(schemas))})"
    allowed = {**schema.required, **schema.optional}
    expected = ", ".join(f"{n}: {t}" for n, t in sorted(allowed.items())) or "no fields"
    for name in sorted(msg.fields):
        if name not in allowed:
            return f"message {msg.kind!r} from {sender} carries unknown field {name!r} (expected {expected})"
    for name in sorted(schema.required):
        if name not in msg.fields:
            return f"message {msg.kind!r} from {sender} lacks field {name!r} (expected {expected})"
    for name, v in sorted(msg.fields.items()):
        t = allowed[name]
        if not isinstance(v, _FIELD_TYPES[t]) or (isinstance(v, np.ndarray) and v.ndim != 1):
            return (f"message {msg.kind!r} from {sender}: field {name!r} is a {type(v).__name__}, "
                    f"expected {'a 1-D array' if t == 'array' else t}")
    return ""


class Authenticator(Protocol):
    """Tags and verifies encoded messages (e.g. Wegman–Carter with key from the pair's pool)."""

    def tag(self, payload: bytes) -> bytes: ...

    def verify(self, payload: bytes, tag: bytes) -> None: ...


class Responder(Protocol):
    """Server side of a protocol (Alice): answers each request with one reply."""

    def handle(self, request: Message) -> Message: ...


@dataclass
class ChannelStats:
    """What crossed the channel: messages, round trips, bytes, tags and leaked key bits."""

    round_trips: int = 0
    messages: int = 0
    payload_bytes: int = 0
    tag_bytes: int = 0
    tags: int = 0
    leaked_bits: int = 0
    disclosed_bits: int = 0
    credited_bits: int = 0

    def count(self, msg: Message, nbytes: int, tag_len: int) -> None:
        self.messages += 1
        self.payload_bytes += nbytes
        if tag_len >= 0:
            self.tags += 1
            self.tag_bytes += tag_len
        self.disclosed_bits += int(msg.disclosed.size)
        self.credited_bits += int(msg.credit)
        self.leaked_bits += msg.leaked_bits


# ----------------------------------------------------------------------------------- encoding
_MAGIC = b"LQM1"
_T_INT, _T_FLOAT, _T_STR, _T_BYTES, _T_ARRAY = 1, 2, 3, 4, 5
_DTYPES = {np.dtype(t).str: i for i, t in enumerate(
    ["u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"])}
_DTYPE_BY_CODE = {i: np.dtype(s) for s, i in _DTYPES.items()}


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<H", len(b)) + b


_S_H = struct.Struct("<H")
_S_INT = struct.Struct("<Bq")
_S_FLOAT = struct.Struct("<Bd")
_S_BYTES = struct.Struct("<BQ")
_S_ARRAY = struct.Struct("<BBQ")
_S_TAIL = struct.Struct("<QQ")
_B_STR = bytes([_T_STR])


@functools.lru_cache(maxsize=512)
def _packed_name(s: str) -> bytes:
    """:func:`_pack_str` of a message kind or field name (a small, fixed vocabulary: cached)."""
    return _pack_str(s)


def _array_part(name: str, v: np.ndarray) -> tuple[bytes, memoryview]:
    """An array field's header and its little-endian bytes (a view of the array, or of its converted
    copy: :func:`encode_message_parts` joins them once)."""
    a = np.ascontiguousarray(v)
    code = _DTYPES.get(a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str)
    if code is None or a.ndim != 1:
        raise MessageError(f"field {name!r}: unsupported array {a.dtype}/{a.ndim}-D")
    a = np.ascontiguousarray(a.astype(_DTYPE_BY_CODE[code].newbyteorder("<"), copy=False))
    return _S_ARRAY.pack(_T_ARRAY, code, a.size), a.data.cast("B")


def encode_message(msg: Message) -> bytes:
    """Encode a message to bytes (little-endian, self-describing, no pickle).

    Layout: ``b"LQM1"``, kind, field count, fields (name, type code, value), credit (u64),
    disclosed bit count (u64) and the disclosed bits packed 8 per byte (little bit order).
    The same bytes as :func:`encode_message_reference`, with precompiled structs and cached
    names.
    """
    return b"".join(encode_message_parts(msg))


def encode_message_parts(msg: Message) -> list[bytes | memoryview]:
    """:func:`encode_message` as the pieces it joins, an array field's bytes as a view of the array:
    a transport that puts a header in front joins once (one copy of the bulk data, not three)."""
    fields = msg.fields
    parts: list[bytes | memoryview] = [_MAGIC, _packed_name(msg.kind), _S_H.pack(len(fields))]
    for name in sorted(fields):
        v = fields[name]
        parts.append(_packed_name(name))
        t = type(v)
        if t is int:
            parts.append(_S_INT.pack(_T_INT, v))
        elif t is np.ndarray:
            parts.extend(_array_part(name, cast(np.ndarray, v)))
        elif t is bytes:
            parts.append(_S_BYTES.pack(_T_BYTES, len(cast(bytes, v))) + cast(bytes, v))
        elif t is str:
            parts.append(_B_STR + _pack_str(cast(str, v)))
        elif t is float:
            parts.append(_S_FLOAT.pack(_T_FLOAT, v))
        elif isinstance(v, bool | np.bool_ | int | np.integer):
            parts.append(_S_INT.pack(_T_INT, int(v)))
        elif isinstance(v, float | np.floating):
            parts.append(_S_FLOAT.pack(_T_FLOAT, float(v)))
        elif isinstance(v, str):
            parts.append(_B_STR + _pack_str(v))
        elif isinstance(v, bytes):
            parts.append(_S_BYTES.pack(_T_BYTES, len(v)) + v)
        elif isinstance(v, np.ndarray):
            parts.extend(_array_part(name, v))
        else:
            raise MessageError(f"field {name!r}: unsupported type {type(v).__name__}")
    d = msg.disclosed
    parts.append(_S_TAIL.pack(msg.credit, d.size))
    if d.size:
        parts.append(np.packbits(d, bitorder="little").tobytes())
    return parts


def _truncated() -> MessageError:
    return MessageError("message truncated")


def _read_str(b: bytes | memoryview, pos: int, end: int) -> tuple[str, int]:
    """A u16-length-prefixed UTF-8 string of ``b`` at ``pos``: (string, position after it)."""
    if pos + 2 > end:
        raise _truncated()
    n = b[pos] | (b[pos + 1] << 8)
    pos += 2
    if pos + n > end:
        raise _truncated()
    try:
        return str(b[pos:pos + n], "utf-8"), pos + n
    except UnicodeDecodeError:
        raise MessageError("message has a non-UTF-8 string") from None


def _read_u64(b: bytes | memoryview, pos: int, end: int) -> int:
    if pos + 8 > end:
        raise _truncated()
    return int.from_bytes(b[pos:pos + 8], "little")


def _read_field(b: bytes | memoryview, pos: int, end: int, name: str) -> tuple[FieldValue, int]:
    """One field's type code and value at ``pos`` (:func:`encode_message` layout): (value,
    position after it)."""
    if pos + 1 > end:
        raise _truncated()
    t = b[pos]
    pos += 1
    if t == _T_INT:
        v = _read_u64(b, pos, end)
        return v - (1 << 64) if v >= 1 << 63 else v, pos + 8
    if t == _T_FLOAT:
        if pos + 8 > end:
            raise _truncated()
        return struct.unpack_from("<d", b, pos)[0], pos + 8
    if t == _T_STR:
        return _read_str(b, pos, end)
    if t == _T_BYTES:
        n = _read_u64(b, pos, end)
        pos += 8
        if pos + n > end:
            raise _truncated()
        return bytes(b[pos:pos + n]), pos + n
    if t == _T_ARRAY:
        if pos + 9 > end:
            raise _truncated()
        code = b[pos]
        n = int.from_bytes(b[pos + 1:pos + 9], "little")
        pos += 9
        if code not in _DTYPE_BY_CODE:
            raise MessageError(f"field {name!r}: unknown dtype code {code}")
        dt = _DTYPE_BY_CODE[code].newbyteorder("<")
        nbytes = n * dt.itemsize
        if pos + nbytes > end:
            raise _truncated()
        return np.frombuffer(b, dtype=dt, count=n, offset=pos).astype(dt.newbyteorder("=")), pos + nbytes
    raise MessageError(f"field {name!r}: unknown type code {t}")


def decode_message(buf: bytes | memoryview) -> Message:
    """Inverse of :func:`encode_message`; raises :class:`MessageError` on malformed input.

    The same result (and the same errors) as :func:`decode_message_reference`, reading with
    offsets into the buffer instead of a reader object. A ``memoryview`` (of a received frame) is
    read in place; every array field is a copy that owns its data either way."""
    b = buf if type(buf) is bytes or type(buf) is memoryview else bytes(buf)
    end = len(b)
    if end < 4:
        raise _truncated()
    if b[:4] != _MAGIC:
        raise MessageError("not a labqfl protocol message (bad magic)")
    kind, pos = _read_str(b, 4, end)
    if pos + 2 > end:
        raise _truncated()
    nf = b[pos] | (b[pos + 1] << 8)
    pos += 2
    fields: dict[str, FieldValue] = {}
    for _ in range(nf):
        name, pos = _read_str(b, pos, end)
        fields[name], pos = _read_field(b, pos, end, name)
    if pos + 16 > end:
        raise _truncated()
    credit, nbits = _S_TAIL.unpack_from(b, pos)
    pos += 16
    nb = (nbits + 7) // 8
    if pos + nb > end:
        raise _truncated()
    if pos + nb != end:
        raise MessageError("message has trailing bytes")
    disclosed = (np.unpackbits(np.frombuffer(b, dtype=np.uint8, count=nb, offset=pos), count=nbits, bitorder="little")
                 if nbits else np.zeros(0, np.uint8))
    if credit > nbits:
        raise MessageError("message credit exceeds its disclosed bits")
    return Message(kind, fields, disclosed, int(credit))


def encode_message_reference(msg: Message) -> bytes:
    """:func:`encode_message` as first written (one ``struct.pack`` per item); kept to test the
    fast path against, byte for byte."""
    parts = [_MAGIC, _pack_str(msg.kind), struct.pack("<H", len(msg.fields))]
    for name in sorted(msg.fields):
        v = msg.fields[name]
        parts.append(_pack_str(name))
        if isinstance(v, bool | np.bool_):
            parts.append(struct.pack("<Bq", _T_INT, int(v)))
        elif isinstance(v, int | np.integer):
            parts.append(struct.pack("<Bq", _T_INT, int(v)))
        elif isinstance(v, float | np.floating):
            parts.append(struct.pack("<Bd", _T_FLOAT, float(v)))
        elif isinstance(v, str):
            parts.append(struct.pack("<B", _T_STR) + _pack_str(v))
        elif isinstance(v, bytes):
            parts.append(struct.pack("<BQ", _T_BYTES, len(v)) + v)
        elif isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            code = _DTYPES.get(a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str)
            if code is None or a.ndim != 1:
                raise MessageError(f"field {name!r}: unsupported array {a.dtype}/{a.ndim}-D")
            a = a.astype(_DTYPE_BY_CODE[code].newbyteorder("<"), copy=False)
            parts.append(struct.pack("<BBQ", _T_ARRAY, code, a.size) + a.tobytes())
        else:
            raise MessageError(f"field {name!r}: unsupported type {type(v).__name__}")
    d = msg.disclosed
    parts.append(struct.pack("<QQ", msg.credit, d.size))
    parts.append(np.packbits(d, bitorder="little").tobytes())
    return b"".join(parts)


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise MessageError("message truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<H")
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError("message has a non-UTF-8 string") from None


def decode_message_reference(buf: bytes) -> Message:
    """:func:`decode_message` as first written (a reader object); kept to test the fast path against."""
    r = _Reader(buf)
    if bytes(r.take(4)) != _MAGIC:
        raise MessageError("not a labqfl protocol message (bad magic)")
    kind = r.string()
    (nf,) = r.unpack("<H")
    fields: dict[str, FieldValue] = {}
    for _ in range(nf):
        name = r.string()
        (t,) = r.unpack("<B")
        if t == _T_INT:
            fields[name] = r.unpack("<q")[0]
        elif t == _T_FLOAT:
            fields[name] = r.unpack("<d")[0]
        elif t == _T_STR:
            fields[name] = r.string()
        elif t == _T_BYTES:
            (n,) = r.unpack("<Q")
            fields[name] = bytes(r.take(n))
        elif t == _T_ARRAY:
            code, n = r.unpack("<BQ")
            if code not in _DTYPE_BY_CODE:
                raise MessageError(f"field {name!r}: unknown dtype code {code}")
            dt = _DTYPE_BY_CODE[code].newbyteorder("<")
            fields[name] = np.frombuffer(r.take(n * dt.itemsize), dtype=dt).astype(dt.newbyteorder("="))
        else:
            raise MessageError(f"field {name!r}: unknown type code {t}")
    credit, nbits = r.unpack("<QQ")
    packed = np.frombuffer(r.take((nbits + 7) // 8), dtype=np.uint8)
    if r.pos != len(r.buf):
        raise MessageError("message has trailing bytes")
    disclosed = np.unpackbits(packed, count=nbits, bitorder="little") if nbits else np.zeros(0, np.uint8)
    if credit > nbits:
        raise MessageError("message credit exceeds its disclosed bits")
    return Message(kind, fields, disclosed, int(credit))


def _encoded_size(msg: Message) -> int:
    """Size :func:`encode_message` would produce, computed without encoding (fast path)."""
    size = 4 + 2 + len(msg.kind.encode()) + 2 + 16 + (msg.disclosed.size + 7) // 8
    for name, v in msg.fields.items():
        size += 2 + len(name.encode()) + 1
        if isinstance(v, np.ndarray):
            size += 9 + v.nbytes
        elif isinstance(v, str):
            size += 2 + len(v.encode())
        elif isinstance(v, bytes):
            size += 8 + len(v)
        else:
            size += 8
    return size


# ----------------------------------------------------------------------------------- channels
class Channel(ABC):
    """Client end of a two-party request/response channel, counting leakage and tag cost.

    Subclasses implement :meth:`_exchange`; :meth:`request` does the accounting.
    """

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self.authenticator = authenticator
        self.stats = ChannelStats()

    def request(self, msg: Message) -> Message:
        """Send ``msg`` to the peer, return its reply; both are counted in :attr:`stats`."""
        reply = self._exchange(msg)
        self.stats.round_trips += 1
        return reply

    @abstractmethod
    def _exchange(self, msg: Message) -> Message: ...

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release the transport (no-op for in-process channels)."""


class LocalChannel(Channel):
    """In-process channel: the responder (Alice) is called directly.

    Without an authenticator no bytes are produced (sizes are computed); with one, every message is
    encoded, tagged by the sender's authenticator and verified (after decoding) by the receiver's —
    ``peer_authenticator`` defaults to the same object.
    """

    def __init__(self, responder: Responder, authenticator: Authenticator | None = None,
                 peer_authenticator: Authenticator | None = None) -> None:
        super().__init__(authenticator)
        self.responder = responder
        self.peer_authenticator = peer_authenticator or authenticator

    def _transfer(self, msg: Message, sender: Authenticator | None,
                  receiver: Authenticator | None) -> Message:
        if sender is None or receiver is None:
            self.stats.count(msg, _encoded_size(msg), -1)
            return msg
        payload = encode_message(msg)
        tag = sender.tag(payload)
        receiver.verify(payload, tag)
        self.stats.count(msg, len(payload), len(tag))
        return decode_message(payload)

    def _exchange(self, msg: Message) -> Message:
        req = self._transfer(msg, self.authenticator, self.peer_authenticator)
        reply = self.responder.handle(req)
        return self._transfer(reply, self.peer_authenticator, self.authenticator)


class _Stream(Protocol):
    def sendall(self, data: bytes) -> Any: ...

    def recv(self, n: int) -> bytes: ...


def _send_frame(sock: _Stream, payload: bytes, tag: bytes) -> None:
    sock.sendall(struct.pack("<QH", len(payload), len(tag)) + payload + tag)


def _recv_exact(sock: _Stream, n: int) -> bytes:
    chunks = []
    while n:
        c = sock.recv(min(n, 1 << 20))
        if not c:
            raise MessageError("peer closed the connection mid-message")
        chunks.append(c)
        n -= len(c)
    return b"".join(chunks)


def _recv_frame(sock: _Stream, max_bytes: int) -> tuple[bytes, bytes] | None:
    head = sock.recv(10)
    if not head:
        return None
    if len(head) < 10:
        head += _recv_exact(sock, 10 - len(head))
    n, t = struct.unpack("<QH", head)
    if n > max_bytes:
        raise MessageError(f"incoming message of {n} bytes exceeds the {max_bytes}-byte limit")
    return _recv_exact(sock, n), _recv_exact(sock, t)


def _check_tag(auth: Authenticator | None, payload: bytes, tag: bytes) -> None:
    if auth is not None:
        auth.verify(payload, tag)
    elif tag:
        raise MessageError("received a tagged message but no authenticator is configured")


class StreamChannel(Channel):
    """Client end over a connected stream socket (``sendall``/``recv``), e.g. TCP.

    Frames are ``u64 payload length, u16 tag length, payload, tag``.  Alice runs
    :func:`serve_stream` on the other end.
    """

    def __init__(self, sock: _Stream, authenticator: Authenticator | None = None,
                 max_bytes: int = 1 << 30) -> None:
        super().__init__(authenticator)
        self.sock = sock
        self.max_bytes = max_bytes

    def _exchange(self, msg: Message) -> Message:
        payload = encode_message(msg)
        tag = self.authenticator.tag(payload) if self.authenticator else b""
        _send_frame(self.sock, payload, tag)
        self.stats.count(msg, len(payload), len(tag) if self.authenticator else -1)
        got = _recv_frame(self.sock, self.max_bytes)
        if got is None:
            raise MessageError("peer closed the connection before replying")
        rpayload, rtag = got
        _check_tag(self.authenticator, rpayload, rtag)
        reply = decode_message(rpayload)
        self.stats.count(reply, len(rpayload), len(rtag) if self.authenticator else -1)
        return reply


def serve_stream(sock: _Stream, responder: Responder, authenticator: Authenticator | None = None,
                 *, max_bytes: int = 1 << 30, stop_kinds: tuple[str, ...] = ()) -> ChannelStats:
    """Serve requests on ``sock`` with ``responder`` until the peer closes (or a request whose
    kind is in ``stop_kinds`` has been answered).  Returns Alice's own count of the traffic."""
    stats = ChannelStats()
    while True:
        got = _recv_frame(sock, max_bytes)
        if got is None:
            return stats
        payload, tag = got
        _check_tag(authenticator, payload, tag)
        req = decode_message(payload)
        stats.count(req, len(payload), len(tag) if authenticator else -1)
        reply = responder.handle(req)
        rpayload = encode_message(reply)
        rtag = authenticator.tag(rpayload) if authenticator else b""
        _send_frame(sock, rpayload, rtag)
        stats.count(reply, len(rpayload), len(rtag) if authenticator else -1)
        stats.round_trips += 1
        if req.kind in stop_kinds:
            return stats
