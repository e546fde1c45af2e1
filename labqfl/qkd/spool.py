"""Compact hold-back of a pair end's transcript entries until they can be absorbed.

A pair end (:class:`labqfl.qkd.twoparty.TranscriptEnd`) must keep two kinds of transcript entries
until its block closes: the detector's announcements as it received them (local entries, absorbed
after the block's last message, docs/protocol.md §2.1) and, before the pair's hash key is drawn
(its first block), every sifting message. The whole-minute block of the block-size rule made
this the bulk of ``labqfl run``'s memory: 9 bytes per announced slot and end for the local
entries (int64 slot + outcome), about 2.3 more for the held messages.

:class:`TranscriptSpool` keeps each entry compressed and gives back the exact same bytes, in
order, when the entries are absorbed, so the transcript (and every tag) is unchanged:

* an announcement entry (``b"ann/"``, five int64 header words, ``count`` int64 slots, ``count``
  outcome bytes; :func:`labqfl.qkd.twoparty.announcement_entry`) is stored with its slots as
  differences (invertible modulo 2^64), the eight byte planes of the differences one after the
  other, then zlib level 1 (RFC 1950/1951): about 1.65 bytes per announced slot instead of 9;
* any other entry is stored zlib-compressed (level 1).

Beyond ``ram_bytes`` of compressed entries the spool moves them to an anonymous temporary file
(:func:`tempfile.TemporaryFile`: unlinked at once, gone when closed or when the process ends) and
reads them back in order when drained, so the memory an end holds stays bounded however long the
block. Only public data is ever spooled: the announcements and the sifting messages that crossed
the channel in the clear (flags, test bases and bits); key bits are never handed to a spool.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from typing import IO

import numpy as np

__all__ = ["TranscriptSpool", "pack_entry", "unpack_entry", "DEFAULT_RAM_BYTES"]

#: compressed bytes a spool keeps in memory before it moves them to its temporary file
DEFAULT_RAM_BYTES = 1 << 20

_PLAIN, _ANN = 0, 1
_ANN_HEAD = 4 + 5 * 8


def _ann_count(payload: bytes) -> int:
    """Slots of an announcement entry, or -1 if ``payload`` is not one (layout checked exactly)."""
    if len(payload) < _ANN_HEAD or payload[:4] != b"ann/":
        return -1
    head = np.frombuffer(payload, dtype="<i8", count=5, offset=4)
    n = int(head[3])
    if n < 0 or int(head[4]) != n or len(payload) != _ANN_HEAD + 9 * n:
        return -1
    return n


def pack_entry(payload: bytes) -> bytes:
    """Compact, exactly invertible form of one transcript entry (:func:`unpack_entry`)."""
    n = _ann_count(payload)
    if n < 0:
        return bytes([_PLAIN]) + zlib.compress(payload, 1)
    slots = np.frombuffer(payload, dtype="<i8", count=n, offset=_ANN_HEAD)
    d = np.empty(n, dtype="<i8")
    if n:
        d[0] = slots[0]
        np.subtract(slots[1:], slots[:-1], out=d[1:])  # wraps modulo 2^64 like the cumsum that undoes it
    planes = d.view(np.uint8).reshape(n, 8).T.tobytes()
    return bytes([_ANN]) + zlib.compress(payload[:_ANN_HEAD] + planes + payload[_ANN_HEAD + 8 * n:], 1)


def unpack_entry(packed: bytes) -> bytes:
    """The entry :func:`pack_entry` was given, byte for byte."""
    raw = zlib.decompress(packed[1:])
    if packed[0] == _PLAIN:
        return raw
    n = (len(raw) - _ANN_HEAD) // 9
    planes = np.frombuffer(raw, dtype=np.uint8, count=8 * n, offset=_ANN_HEAD).reshape(8, n)
    d = np.ascontiguousarray(planes.T).view("<i8").ravel()
    slots = np.cumsum(d, dtype=np.int64).astype("<i8")
    return raw[:_ANN_HEAD] + slots.tobytes() + raw[_ANN_HEAD + 8 * n:]


class TranscriptSpool:
    """FIFO of (direction, payload) transcript entries held compactly (module docstring).

    ``ram_bytes``: compressed bytes kept in memory before they go to the temporary file (default
    :data:`DEFAULT_RAM_BYTES`). ``append`` stores one entry; ``drain`` yields them all back in order (exact bytes) and empties
    the spool; ``clear`` forgets them. ``held_bytes`` is the memory the entries take now,
    ``spilled_bytes`` what lies in the temporary file.
    """

    def __init__(self, ram_bytes: int | None = None) -> None:
        if ram_bytes is None:
            ram_bytes = DEFAULT_RAM_BYTES
        if ram_bytes < 0:
            raise ValueError(f"ram_bytes must be >= 0, got {ram_bytes}")
        self.ram_bytes = int(ram_bytes)
        self._ram: list[tuple[int, bytes]] = []
        self._ram_size = 0
        self._file: IO[bytes] | None = None
        self._spilled = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def held_bytes(self) -> int:
        return self._ram_size

    @property
    def spilled_bytes(self) -> int:
        return self._spilled

    def append(self, direction: int, payload: bytes) -> None:
        packed = pack_entry(bytes(payload))
        self._ram.append((direction, packed))
        self._ram_size += len(packed)
        self._n += 1
        if self._ram_size > self.ram_bytes:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="labqfl-transcript-")
        f = self._file
        for d, p in self._ram:
            f.write(bytes([d]) + len(p).to_bytes(8, "little"))
            f.write(p)
            self._spilled += 9 + len(p)
        self._ram, self._ram_size = [], 0

    def drain(self) -> Iterator[tuple[int, bytes]]:
        """Every entry, oldest first, as it was appended; the spool is empty afterwards."""
        f, ram = self._file, self._ram
        self._file, self._ram, self._ram_size, self._spilled, self._n = None, [], 0, 0, 0
        if f is not None:
            try:
                f.seek(0)
                while head := f.read(9):
                    packed = f.read(int.from_bytes(head[1:], "little"))
                    yield head[0], unpack_entry(packed)
            finally:
                f.close()
        ram.reverse()  # pop from the end: each entry is freed as soon as it is handed out
        while ram:
            d, p = ram.pop()
            yield d, unpack_entry(p)

    def clear(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._ram, self._ram_size, self._spilled, self._n = None, [], 0, 0, 0
