"""Key material handed out by the key store: bits plus the references that name them.

A :class:`KeyMaterial` never shows its bits in ``repr``/``str``, refuses to be pickled or
copied, and can be wiped in place once used.  Bits are ``uint8`` 0/1, one per array element;
:meth:`KeyMaterial.to_bytes` packs them MSB-first (bit 0 is the most significant bit of byte 0,
``numpy.packbits`` order), which is also the byte order of ETSI GS QKD 014 keys served by the KME.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import numpy as np

#: A reference to stored bits: ``(block_id, offset, length)``; offset and length in bits within
#: the block named by its UUID (the same block ID at both ends of a pair).
Ref = tuple[str, int, int]


def merge_refs(groups: Sequence[Iterable[Sequence[Any]]]) -> list[Ref]:
    """The refs of ``groups`` (each an iterable of ``(block_id, offset, length)``, most important first:
    e.g. deliveries newest first) as disjoint ranges: overlapping or adjacent refs of a block merged, never
    a bit that no ref names; ordered by the first group each range holds, then by block and offset."""
    seen: dict[str, list[tuple[int, int, int]]] = {}  # block -> (start, end, group) per ref
    for rank, refs in enumerate(groups):
        for block_id, start, length in refs:
            if int(length) > 0:
                seen.setdefault(str(block_id), []).append((int(start), int(start) + int(length), rank))
    out: list[tuple[int, str, int, int]] = []
    for block_id, spans in seen.items():
        spans.sort()
        lo, hi, rank = spans[0]
        for s, e, k in spans[1:]:
            if s <= hi:
                hi, rank = max(hi, e), min(rank, k)
            else:
                out.append((rank, block_id, lo, hi))
                lo, hi, rank = s, e, k
        out.append((rank, block_id, lo, hi))
    out.sort()
    return [(b, lo, hi - lo) for _, b, lo, hi in out]


def normalize_refs(refs: Iterable[Sequence[Any]]) -> list[Ref]:
    """Validate ``refs`` (an iterable of 3-sequences, e.g. from JSON) into a list of :data:`Ref`."""
    out: list[Ref] = []
    for r in refs:
        if len(r) != 3:
            raise ValueError(f"key reference {r!r} is not (block_id, offset, length)")
        block_id, offset, length = r
        if not isinstance(block_id, str) or not block_id:
            raise ValueError(f"key reference {r!r}: block_id must be a non-empty string")
        if isinstance(offset, bool) or isinstance(length, bool):
            raise ValueError(f"key reference {r!r}: offset and length must be integers")
        offset, length = int(offset), int(length)
        if offset < 0 or length <= 0:
            raise ValueError(f"key reference {r!r}: expected offset >= 0 and length > 0")
        out.append((block_id, offset, length))
    if not out:
        raise ValueError("empty list of key references")
    return out


def refs_nbits(refs: Iterable[Ref]) -> int:
    """Total number of bits named by ``refs``."""
    return sum(int(r[2]) for r in refs)


class KeyMaterial:
    """Consumed key bits with their references.

    Attributes: ``bits`` (uint8 0/1, shape (nbits,), read-only view), ``refs`` (list of
    ``(block_id, offset, length)``; the partner node consumes the same bits with
    :meth:`~labqfl.keystore.KeyStore.take_exact`), ``key_id`` (UUID string of this delivery),
    ``pair`` and ``purpose``.
    """

    __slots__ = ("_bits", "refs", "key_id", "pair", "purpose")

    def __init__(self, bits: np.ndarray, refs: list[Ref], key_id: str, pair: str, purpose: str):
        self._bits = np.ascontiguousarray(bits, dtype=np.uint8)
        self.refs = list(refs)
        self.key_id = key_id
        self.pair = pair
        self.purpose = purpose

    @property
    def bits(self) -> np.ndarray:
        v = self._bits.view()
        v.flags.writeable = False
        return v

    @property
    def nbits(self) -> int:
        return int(self._bits.size)

    def __len__(self) -> int:
        return int(self._bits.size)

    def to_bytes(self) -> bytes:
        """The bits packed MSB-first; ``nbits`` must be a multiple of 8."""
        if self._bits.size % 8:
            raise ValueError(f"{self._bits.size} bits is not a whole number of bytes")
        return np.packbits(self._bits).tobytes()

    def wipe(self) -> None:
        """Overwrite the bits in memory with zeros (call when the key has been used)."""
        self._bits[:] = 0

    def __repr__(self) -> str:
        return (f"KeyMaterial(pair={self.pair!r}, purpose={self.purpose!r}, key_id={self.key_id!r}, "
                f"nbits={self.nbits}, blocks={len({r[0] for r in self.refs})})")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # Identity only: comparing key material by value invites timing side channels and logging.
        return self is other

    __hash__ = object.__hash__

    def _refuse(self, *args: Any) -> NoReturn:
        raise TypeError("KeyMaterial cannot be pickled or copied (key material never leaves the key store "
                        "except through its API)")

    __reduce__ = _refuse
    __reduce_ex__ = _refuse
    __getstate__ = _refuse
    __copy__ = _refuse
    __deepcopy__ = _refuse
