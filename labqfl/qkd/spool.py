"""Compact hold-back of a pair end's transcript entries until they can be absorbed.

A pair end (:class:`labqfl.qkd.twoparty.TranscriptEnd`) must keep two kinds of transcript entries
until its block closes: the detector's announcements as it received them (local entries, absorbed
after the block's last message, docs/protocol.md §2.1) and, before the pair's hash key is drawn
(its first block), every sifting message. The whole-minute block of the block-size rule made
this the bulk of ``labqfl run``'s memory: 9 bytes per announced slot and end for the local
entries (int64 slot + outcome), about 2.3 more for the held messages.

:class:`TranscriptSpool` keeps each entry packed and gives back the exact same bytes, in
order, when the entries are absorbed, so the transcript (and every tag) is unchanged:

* an announcement entry (``b"ann/"``, five int64 header words, ``count`` int64 slots, ``count``
  outcome bytes; :func:`labqfl.qkd.twoparty.announcement_entry`) is stored with its slots as
  differences (invertible modulo 2^64), each difference in one byte when it lies in 0 … 254 and
  otherwise as the byte 255 and its eight bytes, and its outcomes two bits each when they are all
  below 4 (else one byte each): about 1.3 bytes per announced slot instead of 9, by two Numba
  passes (:func:`_pack_ann`, :func:`_unpack_ann`). Until 2026-12-04 the differences' byte planes
  went through zlib level 1 (1.3 bytes per slot too, but 37 ns per slot to pack and 21 to unpack
  against about 3 and 2 now: ``labqfl bench`` is not needed to see it, the figures are in
  docs/memory.md);
* any other entry is stored as it is. Until 2026-12-04 these went through zlib level 1: in process,
  on the default station, 9.1·10^6 bytes per simulated second (``test/bases`` then two uint8 arrays)
  compressed to 0.33 of their size for ≈ 0.1 CPU s, a fifth of the streaming stages' CPU (``labqfl
  bench pipeline``). ``test/bases`` now carries nibbles (:func:`labqfl.qkd.twoparty.pack_test_bases`):
  3.5·10^6 bytes as they are, which zlib would shrink only to 0.70 for 0.086 CPU s (the rest is packed
  bits: ``sift/flags`` to 0.84, ``test/bits`` 1.01 of its size).

Beyond ``ram_bytes`` of packed entries the spool moves them to an anonymous temporary file
(:func:`tempfile.TemporaryFile`: unlinked at once, gone when closed or when the process ends) and
reads them back in order when drained, so the memory an end holds stays bounded however long the
block. Only public data is ever spooled: the announcements and the sifting messages that crossed
the channel in the clear (flags, test bases and bits); key bits are never handed to a spool.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

import numba
import numpy as np

__all__ = ["TranscriptSpool", "pack_entry", "unpack_entry", "DEFAULT_RAM_BYTES"]

#: packed bytes a spool keeps in memory before it moves them to its temporary file
DEFAULT_RAM_BYTES = 1 << 20

_PLAIN, _ANN = 3, 2  # 0 was a zlib'd entry, 1 the zlib'd byte planes of an announcement (before 2026-12-04)
_ANN_HEAD = 4 + 5 * 8
_ESC = 255  # a slot difference outside 0 … 254 follows this byte as eight little-endian bytes


def _ann_count(payload: bytes) -> int:
    """Slots of an announcement entry, or -1 if ``payload`` is not one (layout checked exactly)."""
    if len(payload) < _ANN_HEAD or payload[:4] != b"ann/":
        return -1
    head = np.frombuffer(payload, dtype="<i8", count=5, offset=4)
    n = int(head[3])
    if n < 0 or int(head[4]) != n or len(payload) != _ANN_HEAD + 9 * n:
        return -1
    return n


@numba.njit(cache=True, nogil=True)
def _pack_ann(slots: np.ndarray, outcomes: np.ndarray, out: np.ndarray) -> int:
    """Slot differences (one byte, or :data:`_ESC` and eight bytes) then the outcomes (two bits each
    when all are below 4, flagged by the first byte, else one byte each) into ``out``; bytes written.
    ``out`` must hold ``1 + 9·n + n`` bytes (the worst case)."""
    n = slots.shape[0]
    small = 1
    for i in range(n):
        if outcomes[i] > 3:
            small = 0
            break
    out[0] = small
    w = 1
    prev = np.int64(0)
    for i in range(n):
        d = np.uint64(slots[i] - prev)  # modulo 2^64, undone by the wrapping sum of _unpack_ann
        prev = slots[i]
        if d < np.uint64(_ESC):
            out[w] = np.uint8(d)
            w += 1
        else:
            out[w] = _ESC
            for b in range(8):
                out[w + 1 + b] = np.uint8((d >> np.uint64(8 * b)) & np.uint64(255))
            w += 9
    if small:
        for i in range(0, n, 4):
            v = np.int64(0)
            for j in range(min(4, n - i)):
                v |= np.int64(outcomes[i + j]) << (2 * j)
            out[w] = np.uint8(v)
            w += 1
    else:
        for i in range(n):
            out[w] = outcomes[i]
            w += 1
    return w


@numba.njit(cache=True, nogil=True)
def _unpack_ann(buf: np.ndarray, n: int, slots: np.ndarray, outcomes: np.ndarray) -> int:
    """The inverse of :func:`_pack_ann` for ``n`` slots; bytes read, or -1 if ``buf`` is too short or
    too long for them (a corrupt spool)."""
    m = buf.shape[0]
    if m < 1:
        return -1
    small = buf[0]
    r = 1
    acc = np.uint64(0)
    for i in range(n):
        if r >= m:
            return -1
        g = buf[r]
        if g != _ESC:
            acc += np.uint64(g)
            r += 1
        else:
            if r + 9 > m:
                return -1
            d = np.uint64(0)
            for b in range(8):
                d |= np.uint64(buf[r + 1 + b]) << np.uint64(8 * b)
            acc += d
            r += 9
        slots[i] = np.int64(acc)
    if small == 1:
        if r + (n + 3) // 4 != m:
            return -1
        for i in range(n):
            outcomes[i] = (buf[r + i // 4] >> (2 * (i % 4))) & 3
        return m
    if small != 0 or r + n != m:
        return -1
    for i in range(n):
        outcomes[i] = buf[r + i]
    return m


def pack_entry(payload: bytes) -> bytes:
    """Compact, exactly invertible form of one transcript entry (:func:`unpack_entry`)."""
    n = _ann_count(payload)
    if n < 0:
        return bytes([_PLAIN]) + payload
    slots = np.frombuffer(payload, dtype="<i8", count=n, offset=_ANN_HEAD)
    outcomes = np.frombuffer(payload, dtype=np.uint8, count=n, offset=_ANN_HEAD + 8 * n)
    out = np.empty(1 + 10 * n, np.uint8)
    w = _pack_ann(slots, outcomes, out)
    return bytes([_ANN]) + payload[:_ANN_HEAD] + out[:w].tobytes()


def unpack_entry(packed: bytes) -> bytes:
    """The entry :func:`pack_entry` was given, byte for byte."""
    if packed[0] == _PLAIN:
        return packed[1:]
    if packed[0] != _ANN or len(packed) < 1 + _ANN_HEAD:
        raise ValueError(f"spool: entry of unknown kind {packed[0]} or truncated ({len(packed)} bytes)")
    head = packed[1:1 + _ANN_HEAD]
    n = int(np.frombuffer(head, dtype="<i8", count=1, offset=4 + 3 * 8)[0])
    raw = np.empty(_ANN_HEAD + 9 * n, np.uint8)
    raw[:_ANN_HEAD] = np.frombuffer(head, np.uint8)
    slots = raw[_ANN_HEAD:_ANN_HEAD + 8 * n].view("<i8")
    if _unpack_ann(np.frombuffer(packed, np.uint8, offset=1 + _ANN_HEAD), n, slots, raw[_ANN_HEAD + 8 * n:]) < 0:
        raise ValueError(f"spool: announcement entry of {n} slots is corrupt")
    return raw.tobytes()


class TranscriptSpool:
    """FIFO of (direction, payload) transcript entries held compactly (module docstring).

    ``ram_bytes``: packed bytes kept in memory before they go to the temporary file (default
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
