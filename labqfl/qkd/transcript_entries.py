"""The transcript's local entry for the detector's announcements, in a compact injective encoding.

Each end of a pair absorbs the announcements *as it received them* into its Wegman–Carter transcript
as a local, never-sent entry (docs/protocol.md §2.1): the two final tags match only if the detector
told both clients the same. Any injective encoding of (slot range, measured slots, slots, outcomes)
gives that guarantee — the transcript frames every entry with its direction and byte length, so the
entries of a block are read back unambiguously — and a shorter one costs less to hash and to hold and
lowers the forgery bound, which grows with the transcript's length in 64-bit words
(:func:`labqfl.qkd.authentication.forgery_probability`).

Layout (:func:`announcement_entry`), little-endian::

    b"ann2" | lo, hi, n_slots, count (int64 each) | flag | slot differences | outcomes

* slot differences: slot[i] − slot[i−1] (slot[−1] = 0) modulo 2^64, each in one byte when it lies in
  0 … 254, otherwise the byte 255 and its eight bytes;
* flag 1: every outcome is below 4 and they follow two bits each (four per byte, the first in the low
  bits); flag 0: one byte each.

About 1.3 bytes per announced slot on the default station (gaps of ≈ 45 slots) instead of the
9 bytes of the int64 slots and uint8 outcomes this replaced on 2026-12-05 (the layout ``b"ann/"``,
which :mod:`labqfl.qkd.spool` then packed into this same form to hold it and unpacked again to hash
it). :func:`read_announcement_entry` is the exact inverse (tested on every boundary of the
encoding), which is what makes the encoding injective.
"""

from __future__ import annotations

import numba
import numpy as np

from labqfl.contracts.types import Announcements

__all__ = ["announcement_entry", "read_announcement_entry", "ANN_MAGIC"]

#: first four bytes of an announcement entry
ANN_MAGIC = b"ann2"
_HEAD = 4 + 4 * 8
_ESC = 255  # a slot difference outside 0 … 254 follows this byte as eight little-endian bytes


@numba.njit(cache=True, nogil=True)
def _pack_ann(slots: np.ndarray, outcomes: np.ndarray, out: np.ndarray, w: int) -> int:
    """The flag, the slot differences and the outcomes (module docstring) into ``out`` from byte
    ``w``; the end. ``out`` must hold ``w + 1 + 9·n + n`` bytes (the worst case)."""
    n = slots.shape[0]
    mx = np.uint8(0)
    for i in range(n):  # a reduction without an early exit: vectorised
        mx = max(mx, outcomes[i])
    small = 1 if mx <= 3 else 0
    out[w] = small
    w += 1
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
        q = n >> 2
        for k in range(q):  # whole groups of four: vectorised
            i = 4 * k
            out[w + k] = outcomes[i] | (outcomes[i + 1] << 2) | (outcomes[i + 2] << 4) | (outcomes[i + 3] << 6)
        w += q
        if n & 3:
            v = np.int64(0)
            for j in range(n & 3):
                v |= np.int64(outcomes[4 * q + j]) << (2 * j)
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
    too long for them."""
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


def announcement_entry(ann: Announcements, lo: int, hi: int, n_slots: int) -> bytes:
    """The transcript's local entry for the detector's announcements of slots ``[lo, hi)`` as one end
    received them, with ``n_slots`` of the pair's slots measured there (module docstring)."""
    slots = np.ascontiguousarray(ann.slots, dtype=np.int64)
    outcomes = np.ascontiguousarray(ann.outcomes, dtype=np.uint8)
    n = int(slots.size)
    out = np.empty(_HEAD + 1 + 10 * n, np.uint8)
    out[:4] = np.frombuffer(ANN_MAGIC, np.uint8)
    out[4:_HEAD] = np.array([lo, hi, n_slots, n], dtype="<i8").view(np.uint8)
    w = _pack_ann(slots, outcomes, out, _HEAD)
    return out[:w].tobytes()


def read_announcement_entry(entry: bytes) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """(lo, hi, n_slots, slots, outcomes) of an :func:`announcement_entry`; ``ValueError`` naming what
    is wrong when ``entry`` is not exactly one."""
    if len(entry) < _HEAD + 1 or entry[:4] != ANN_MAGIC:
        raise ValueError(f"not an announcement entry: expected {ANN_MAGIC!r} and a {_HEAD}-byte header, "
                         f"got {len(entry)} bytes starting {bytes(entry[:4])!r}")
    lo, hi, n_slots, n = (int(v) for v in np.frombuffer(entry, dtype="<i8", count=4, offset=4))
    if not 0 <= n <= len(entry):
        raise ValueError(f"announcement entry is corrupt: count {n} for {len(entry)} bytes")
    slots, outcomes = np.empty(n, np.int64), np.empty(n, np.uint8)
    if _unpack_ann(np.frombuffer(entry, np.uint8, offset=_HEAD), n, slots, outcomes) < 0:
        raise ValueError(f"announcement entry of {n} slots is corrupt (its body does not hold exactly them)")
    return lo, hi, n_slots, slots, outcomes
