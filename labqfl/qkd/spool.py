"""Hold-back of a pair end's transcript entries until they can be absorbed.

A pair end (:class:`labqfl.qkd.twoparty.TranscriptEnd`) must keep two kinds of transcript entries
until its block closes, or (from the pair's first block on, once its hash key is drawn) only the
second: the detector's announcements as it received them (local entries, absorbed after the block's
last message, docs/protocol.md §2.1) and, before the pair's hash key is drawn (its first block),
every sifting message. The block-size rule's one block per pair made this the bulk of ``labqfl
run``'s memory.

:class:`TranscriptSpool` keeps the entries as they are and gives back the exact same bytes, in
order. They are compact already: an announcement entry
(:func:`labqfl.qkd.transcript_entries.announcement_entry`) takes about 1.3 bytes per announced slot
(until 2026-12-05 it was 9, int64 slots and outcome bytes, and the spool packed it into that same
form to hold it and unpacked it again to hash it); ``test/bases`` carries nibbles
(:func:`labqfl.qkd.twoparty.pack_test_bases`), the flags and test bits are packed bits. Until
2026-12-04 the sifting messages went through zlib level 1 (0.33 of their size for ≈ 0.1 CPU s per
simulated second, a fifth of the streaming stages' CPU; with ``test/bases`` in nibbles zlib would
shrink them only to 0.70 for 0.086 CPU s).

Beyond ``ram_bytes`` of entries the spool moves them to an anonymous temporary file
(:func:`tempfile.TemporaryFile`: unlinked at once, gone when closed or when the process ends) and
reads them back in order when drained, so the memory an end holds stays bounded however long the
block. Only public data is ever spooled: the announcements and the sifting messages that crossed
the channel in the clear (flags, test bases and bits); key bits are never handed to a spool.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

__all__ = ["TranscriptSpool", "DEFAULT_RAM_BYTES"]

#: entry bytes a spool keeps in memory before it moves them to its temporary file
DEFAULT_RAM_BYTES = 1 << 20


class TranscriptSpool:
    """FIFO of (direction, payload) transcript entries (module docstring).

    ``ram_bytes``: entry bytes kept in memory before they go to the temporary file (default
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
        entry = bytes(payload)
        self._ram.append((direction, entry))
        self._ram_size += len(entry)
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
                    n = int.from_bytes(head[1:], "little")
                    entry = f.read(n)
                    if len(entry) != n:
                        raise ValueError(f"spool: temporary file truncated ({len(entry)} of an entry's {n} bytes)")
                    yield head[0], entry
            finally:
                f.close()
        ram.reverse()  # pop from the end: each entry is freed as soon as it is handed out
        while ram:
            yield ram.pop()

    def clear(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._ram, self._ram_size, self._spilled, self._n = None, [], 0, 0, 0
