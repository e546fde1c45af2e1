"""Kernels of the CSPRNG clients' generator ``aes256-ctr-slot8-v2``: 8 keystream bits per slot, and 24
more only for the slots whose 8 bits do not decide their category.

**Definition** (key K: 256 bits from the OS's CSPRNG per acquisition; AES-256, FIPS 197, as a
counter-mode keystream, NIST SP 800-38A §6.5; the counters are 128-bit big-endian integers):

* coarse byte ``y_s`` = byte ``s mod 16`` of ``E_K(⌊s/16⌋)`` (counters below 2^64);
* fine word ``w_s`` = little-endian 32-bit word ``s mod 4`` of ``E_K(2^64 + ⌊s/4⌋)`` (counters at or
  above 2^64: no block of one stream is a block of the other);
* ``x_s = (y_s mod 128)·2^25 + (w_s mod 2^24)·2 + ⌊y_s/128⌋``, mapped to the drive code exactly as the
  32-bit keystream word of ``aes256-ctr-slot32-v1`` (:func:`labqfl.sim_backends.qrng._word_code`):
  ``bit = x & 1``, joint category c = the number of thresholds ``thr_c ≤ v``, ``v = x >> 1``.

``v = (y mod 128)·2^24 + (w mod 2^24)`` is the concatenation of 7 and 24 independent uniform bits (two
different AES blocks, AES taken as a pseudorandom permutation), so it is uniform on 31 bits and the
bit ``⌊y/128⌋`` is independent of it: every code has exactly the probability it has under v1,
``(thr_c − thr_{c−1})/2^31``. Only the slots whose 2^24-wide coarse bin ``[u·2^24, (u + 1)·2^24)``,
``u = y mod 128``, holds a threshold strictly inside need ``w`` at all: on the default station's
probabilities 4 of the 128 bins, 3.1 % of slots. Every other slot costs one keystream byte instead of
four, and its mapping is one 128-entry byte table (:func:`coarse_map`): 64 bytes per ``vpermi2b`` where the
CPU has AVX-512 VBMI, else the same table computed from the thresholds in 8-bit lanes.

The kernels here map coarse bytes to codes (:func:`bytes_to_codes`, :data:`AMBIGUOUS` where the fine
word decides), find those (:func:`ambiguous_positions`, :func:`gather_bit_codes`, :func:`coarse_pass`) and
build their 32-bit words (:func:`slot_word`); :class:`labqfl.sim_backends.qrng.CsprngChoiceLog` runs the AES,
calls them and maps the finished words as v1's.
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np

from labqfl.bitops import (
    HAS_BYTE_COMPRESS,
    HAS_BYTE_LUT,
    bswap64,
    compress_bytes64,
    cttz64,
    eq_mask64,
    lut128_bytes64,
    popcount64,
)

#: Name of the generator (stored in a CSPRNG client's private log).
NAME = "aes256-ctr-slot8-v2"
#: The code a coarse byte maps to when its fine word decides the category (drive codes are k·4 + a < 32).
AMBIGUOUS = 0xFF
_AMB = np.uint8(AMBIGUOUS)
#: High 64 bits of the fine stream's counters, as the first 8 bytes of the block (big-endian 1).
FINE_HI = np.uint64(1 << 56)

_U8 = np.uint8
_U32 = np.uint32

CoarseMap = tuple[np.ndarray, tuple[np.uint8, ...], tuple[np.uint8, ...]]


def coarse_map(thr: np.ndarray) -> CoarseMap:
    """What :func:`bytes_to_codes` takes for the thresholds ``thr`` of
    :func:`labqfl.sim_backends.qrng.joint_thresholds` (its last, 2^31, left out): the table of the 128 coarse
    values u — code k·4 + b of the category all of u's bin falls in (the bit's 2 added per byte), or
    :data:`AMBIGUOUS` where a threshold lies strictly inside the bin — computed with Python integers; and
    ``(⌈t/2^24⌉ …, ⌊t/2^24⌋ …)`` as uint8 (≤ 128), from which the 8-bit-lane path computes the same table
    entry: u has at least ``#{⌈t/2^24⌉ ≤ u}`` and at most ``#{⌊t/2^24⌋ ≤ u}`` thresholds at or below its v.
    Kept per thresholds (a function of them only; the table is read-only): every acquisition arms new client
    logs, and building it costs ≈ 0.25 ms a client (1 ms per simulated second of the default station)."""
    return _coarse_map(tuple(int(x) for x in thr[:-1]))


@functools.lru_cache(maxsize=64)
def _coarse_map(t: tuple[int, ...]) -> CoarseMap:
    table = np.empty(128, np.uint8)
    for u in range(128):
        c_lo, c_hi = sum(x <= u << 24 for x in t), sum(x <= (u << 24) + (1 << 24) - 1 for x in t)
        table[u] = AMBIGUOUS if c_lo != c_hi else (c_lo >> 1) * 4 + (c_lo & 1)
    table.setflags(write=False)
    return table, tuple(_U8(-(-x >> 24)) for x in t), tuple(_U8(x >> 24) for x in t)


@nb.njit(inline="always")
def _byte_code(y: np.uint8, lo: tuple[np.uint8, ...], hi: tuple[np.uint8, ...]) -> np.uint8:
    """The drive code of coarse byte ``y`` (:func:`coarse_map`'s ``lo``, ``hi``), or :data:`AMBIGUOUS`.
    In 8-bit lanes: for u ≤ 127 and t ≤ 128, ``(u − t) mod 2^8 >> 7`` is 1 exactly when u < t, so the
    counts are len − Σ [u < t]; ``lo``/``hi`` are tuples, so the loops unroll and the loop over bytes that
    inlines this vectorises."""
    u = _U8(y & _U8(127))
    below_lo = _U8(0)
    below_hi = _U8(0)
    for t in lo:
        below_lo = _U8(below_lo + _U8(_U8(u - t) >> _U8(7)))
    for t in hi:
        below_hi = _U8(below_hi + _U8(_U8(u - t) >> _U8(7)))
    c = _U8(_U8(len(lo)) - below_lo)
    code = _U8(_U8(_U8(_U8(c >> _U8(1)) << _U8(2)) + _U8(c & _U8(1))) + _U8(_U8(y >> _U8(7)) << _U8(1)))
    undecided = _U8(_U8(0) - _U8(below_lo != below_hi))  # 0xFF where a threshold splits the bin
    return _U8(code | undecided)


@nb.njit(cache=True, nogil=True)
def bytes_to_codes_lanes(y: np.ndarray, lo: tuple[np.uint8, ...], hi: tuple[np.uint8, ...], out: np.ndarray) -> None:
    """Coarse bytes → drive codes k·4 + a (:data:`AMBIGUOUS` where the fine word decides) in 8-bit lanes from
    the thresholds: :func:`bytes_to_codes`' path on CPUs without AVX-512 VBMI."""
    for n in range(np.uint64(y.shape[0])):
        out[n] = _byte_code(y[n], lo, hi)


@nb.njit(cache=True, nogil=True)
def bytes_to_codes(y: np.ndarray, table: np.ndarray, lo: tuple[np.uint8, ...], hi: tuple[np.uint8, ...],
                   out: np.ndarray) -> None:
    """Coarse bytes → drive codes k·4 + a, :data:`AMBIGUOUS` where the fine word decides (:func:`coarse_map`'s
    table, lo, hi): ``table[y mod 128] | 2·⌊y/128⌋`` 64 bytes at a time (:func:`labqfl.bitops.lut128_bytes64`)
    where :data:`labqfl.bitops.HAS_BYTE_LUT`, else :func:`bytes_to_codes_lanes` (the same codes; tested)."""
    if not HAS_BYTE_LUT:
        bytes_to_codes_lanes(y, lo, hi, out)
        return
    n = y.shape[0]
    for g in range(n >> 6):
        lut128_bytes64(table, y, g << 6, out)  # type: ignore[call-arg]
    for i in range((n >> 6) << 6, n):
        out[i] = table[y[i] & 127] | ((y[i] >> 7) << 1)


@nb.njit(cache=True, nogil=True)
def ambiguous_positions(codes: np.ndarray, pos: np.ndarray) -> int:
    """The positions of :data:`AMBIGUOUS` in ``codes`` into ``pos[:m]`` (ascending; ``pos`` as long as
    ``codes``); returns m. 64 codes a step: one 64-byte compare gives their mask (:func:`eq_mask64`), whose
    set bits (≈ 2 per step on the default station) are taken in order."""
    m = 0
    n = codes.shape[0]
    for g in range(n >> 6):
        msk: np.uint64 = eq_mask64(codes, g << 6, _AMB)  # type: ignore[call-arg]
        while msk != np.uint64(0):
            pos[m] = (g << 6) + np.int64(cttz64(msk))  # type: ignore[call-arg]
            m += 1
            msk &= msk - np.uint64(1)
    for i in range((n >> 6) << 6, n):
        if codes[i] == _AMB:
            pos[m] = i
            m += 1
    return m


@nb.njit(cache=True, nogil=True)
def coarse_pass(y: np.ndarray, table: np.ndarray, lo: tuple[np.uint8, ...], hi: tuple[np.uint8, ...],
                out: np.ndarray, s0: int, pos: np.ndarray, ctr: np.ndarray) -> int:
    """A dense piece in one call: the codes of the coarse bytes ``y`` of slots s0 … into ``out``
    (:func:`bytes_to_codes`), then for each :data:`AMBIGUOUS` one its position into ``pos[m]`` and its fine
    stream's counter block into ``ctr[2m]``, ``ctr[2m + 1]`` (high word :data:`FINE_HI`, low word the
    byte-swapped ⌊s/4⌋: one block per ambiguous slot, word s mod 4 of it); returns m. ``pos``: room for
    len(y), ``ctr`` for 2·len(y)."""
    bytes_to_codes(y, table, lo, hi, out)
    m = ambiguous_positions(out, pos)
    for j in range(m):
        ctr[2 * j] = FINE_HI
        ctr[2 * j + 1] = bswap64(np.uint64((s0 + pos[j]) >> 2))  # type: ignore[call-arg]
    return m


@nb.njit(cache=True, nogil=True)
def fine_counters(slots: np.ndarray, ctr: np.ndarray) -> None:
    """The fine stream's counter block of each of ``slots`` (≥ 0) into ``ctr[2j]``, ``ctr[2j + 1]``: one
    block per slot, as :func:`coarse_pass` writes them."""
    for j in range(slots.shape[0]):
        ctr[2 * j] = FINE_HI
        ctr[2 * j + 1] = bswap64(np.uint64(slots[j] >> 2))  # type: ignore[call-arg]


@nb.njit(inline="always")
def slot_word(y: np.uint8, w: np.uint32) -> np.uint32:
    """``x`` of the module docstring from the coarse byte ``y`` and the fine word ``w`` (mapped to the code by
    :func:`labqfl.sim_backends.qrng._word_code`, as a v1 keystream word)."""
    return _U32(_U32(_U32(y & _U8(127)) << _U32(25)) | _U32(_U32(w & _U32(0xFFFFFF)) << _U32(1)) | _U32(y >> _U8(7)))


@nb.njit(cache=True, nogil=True)
def block_bytes(ks: np.ndarray, slots: np.ndarray, y: np.ndarray) -> None:
    """The coarse byte of each of ``slots`` from the keystream ``ks`` (uint8) of their counter blocks laid
    out as :func:`labqfl.sim_backends.qrng._counter_blocks` (shift 4) wrote them: one 16-byte block per
    run of slots sharing ⌊s/16⌋, byte ``s mod 16`` of it."""
    blocks = np.uint64(0)
    prev = np.int64(-1)
    for n in range(np.uint64(slots.shape[0])):
        s = slots[n]
        b = s >> 4
        blocks += np.uint64(b != prev)
        prev = b
        y[n] = ks[np.uint64(16) * blocks - np.uint64(16) + np.uint64(s & 15)]


@nb.njit(cache=True, nogil=True)
def gather_bit_codes(codes: np.ndarray, y: np.ndarray, words: np.ndarray, q: int, nw: int, s0: int,
                     out: np.ndarray, k: int, amb_k: np.ndarray, amb_s: np.ndarray, amb_y: np.ndarray,
                     m: int) -> tuple[int, int]:
    """For each set bit b of ``words[q + i]`` (i < ``nw``, in order), ``codes[64·i + b]`` into ``out[k]``,
    ``out[k + 1]`` … (``codes``/``y``: the coarse codes and bytes of the slots s0 … of those words), and each
    :data:`AMBIGUOUS` one's place k, slot and coarse byte into ``amb_k/amb_s/amb_y[m]``, ``[m + 1]`` …
    Returns the next (k, m). A word's 64 codes go out in one compress store where the CPU has one
    (:data:`labqfl.bitops.HAS_BYTE_COMPRESS`), else set bit by set bit; its ambiguous asked slots are the set
    bits of its 64-byte compare with :data:`AMBIGUOUS` and-ed with the word (≈ 0.5 per word)."""
    one = np.uint64(1)
    for i in range(np.uint64(nw)):
        w = words[np.uint64(q) + i]
        base = np.uint64(64) * i
        amb = eq_mask64(codes, base, _AMB) & w  # type: ignore[call-arg]
        k0 = k
        if HAS_BYTE_COMPRESS:
            k = compress_bytes64(out, k, codes, base, w)  # type: ignore[call-arg]
        else:
            rest = w
            while rest != np.uint64(0):
                out[k] = codes[base + np.uint64(cttz64(rest))]  # type: ignore[call-arg]
                k += 1
                rest &= rest - one
        while amb != np.uint64(0):
            b = np.uint64(cttz64(amb))  # type: ignore[call-arg]
            amb_k[m] = k0 + np.int64(popcount64(w & ((one << b) - one)))  # type: ignore[call-arg]
            amb_s[m] = s0 + np.int64(base + b)
            amb_y[m] = y[base + b]
            m += 1
            amb &= amb - one
    return k, m
