"""Compact, exactly invertible encodings of the node pipeline's bulk arrays (the one gap codec, and the
slot bitmap of the optics' questions).

The nodes' high-rate messages carry int64 sequences that ascend in small steps: the optics' asked
slots asked one by one (``mod/query``, :mod:`labqfl.nodes.optics`; a window's questions travel as the
Monte-Carlo's candidate bitmap instead, :func:`slot_bits_fields`), the tagger's timestamps (``tags/block``, optics →
detector) and each pair's announced slots (``ann/chunks``, detector → client,
:mod:`labqfl.nodes.detector`). They travel as their differences d_n = v_n − v_{n−1} (v_{−1} = the
``base`` both ends know) in the narrowest unsigned width — ``uint8``, ``uint16`` or ``uint32``, the
one giving the fewest bytes — with every difference outside that width (negative, or too large: a
frame jump, a pair boundary, the first timestamp) exactly apart: its position (``…big_at``, int64,
ascending) and value (``…big``, int64). The arithmetic is int64 modulo 2^64 at both ends, so any
int64 array — descending, repeated, spanning the whole range — comes back as it was
(:func:`decode_gaps`); decoding checks the fields before it uses them and refuses a malformed
message with one :class:`~labqfl.qkd.messaging.MessageError` naming the message and the field.

The fields are ``<prefix>gaps``, ``<prefix>big_at`` and ``<prefix>big``; a message that carries the
array plainly (the field ``plain``, int64) is read as it is.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from labqfl.bitops import cttz64, popcount64
from labqfl.qkd.messaging import Message, MessageError

__all__ = ["decode_channels", "decode_gaps", "decode_slot_bits", "encode_channels", "encode_gaps", "gap_fields",
           "slot_bits", "slot_bits_fields", "warm_codec"]

#: The widths a difference may travel in, narrowest first.
GAP_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
#: Bytes an escaped difference costs: its position and its value, int64 each.
_ESCAPE_BYTES = 16


@numba.njit(cache=True, nogil=True)
def _escape_counts(values: np.ndarray, base: np.int64, counts: np.ndarray) -> None:
    """``counts[w]``: how many differences d_n = v_n − v_{n−1} (v_{−1} = ``base``; int64 modulo 2^64, read
    as uint64 so that a negative one is above every width) exceed 2^8 − 1, 2^16 − 1, 2^32 − 1 (w = 0, 1, 2).
    One pass that LLVM vectorises (each difference from two loads, no carried value), no array of
    differences."""
    n = values.shape[0]
    if n == 0:
        counts[:] = 0
        return
    u0 = np.uint64(values[0] - base)
    c8, c16, c32 = np.int64(u0 > np.uint64(0xFF)), np.int64(u0 > np.uint64(0xFFFF)), np.int64(u0 > np.uint64(0xFFFFFFFF))
    for i in range(np.uint64(1), np.uint64(n)):
        u = np.uint64(values[i] - values[i - np.uint64(1)])  # int64 subtraction wraps modulo 2^64, as the decoder's sum
        c8 += np.int64(u > np.uint64(0xFF))
        c16 += np.int64(u > np.uint64(0xFFFF))
        c32 += np.int64(u > np.uint64(0xFFFFFFFF))
    counts[0], counts[1], counts[2] = c8, c16, c32


@numba.njit(cache=True, nogil=True)
def _fill_gaps(values: np.ndarray, base: np.int64, limit: np.uint64, gaps: np.ndarray, big_at: np.ndarray,
               big: np.ndarray) -> None:
    """The differences of ``values`` from ``base`` (:func:`_escape_counts`) into ``gaps``, each one above
    ``limit`` (the width's maximum) as 0 there and as (position, value) in ``big_at``, ``big`` (sized to
    the count of such differences). The gaps in a vectorised pass; the escapes, if any, in a second."""
    n = values.shape[0]
    if n == 0:
        return
    u0 = np.uint64(values[0] - base)
    gaps[0] = u0 if u0 <= limit else 0
    for i in range(np.uint64(1), np.uint64(n)):
        u = np.uint64(values[i] - values[i - np.uint64(1)])
        gaps[i] = u if u <= limit else np.uint64(0)
    k = 0
    if u0 > limit:
        big_at[0], big[0] = 0, values[0] - base
        k = 1
    m = big_at.shape[0]
    lo = 1
    while k < m and lo < n:  # 64 differences at a time: a vectorised test, the scalar search only where one escapes
        hi = min(lo + 64, n)
        hit = False
        for i in range(lo, hi):
            hit |= bool(np.uint64(values[i] - values[i - 1]) > limit)
        if hit:
            for i in range(lo, hi):
                d = values[i] - values[i - 1]
                if np.uint64(d) > limit:
                    big_at[k], big[k] = i, d
                    k += 1
        lo = hi


@numba.njit(cache=True, nogil=True)
def _sum_gaps(gaps: np.ndarray, big_at: np.ndarray, big: np.ndarray, base: np.int64, out: np.ndarray) -> None:
    """The inverse of :func:`_fill_gaps`: v_n = v_{n−1} + d_n (v_{−1} = ``base``, int64 modulo 2^64), d_n the
    escaped value at the positions ``big_at`` (ascending, checked by the caller), else ``gaps[n]``."""
    v = base
    k = np.uint64(0)
    nxt = big_at[0] if big_at.shape[0] > 0 else np.int64(-1)
    for n in range(np.uint64(gaps.shape[0])):
        if np.int64(n) == nxt:
            v += big[k]
            k += np.uint64(1)
            nxt = big_at[k] if k < np.uint64(big_at.shape[0]) else np.int64(-1)
        else:
            v += np.int64(gaps[n])
        out[n] = v


def encode_gaps(values: np.ndarray, *, base: int = 0, prefix: str = "",
                dtype: np.dtype[Any] | type | None = None) -> dict[str, np.ndarray]:
    """The fields carrying ``values`` (any 1-D int64 array) as differences from ``base`` (module
    docstring): ``dtype`` (``uint8``/``uint16``/``uint32``) fixes the width, else the one with the
    fewest bytes (n·width + 16 per escaped difference) is taken. The inverse is :func:`decode_gaps`.
    Two passes over ``values`` (the escapes per width, then the chosen width's fields), no array of
    differences."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    if v.ndim != 1:
        raise ValueError(f"encode_gaps: expected a 1-D array, got shape {v.shape}")
    widths = GAP_DTYPES if dtype is None else (np.dtype(dtype),)
    if widths[0] not in GAP_DTYPES:
        raise ValueError(f"encode_gaps: width {widths[0]} is not one of {[str(t) for t in GAP_DTYPES]}")
    b = np.int64(int(base))
    counts = np.empty(3, np.int64)
    _escape_counts(v, b, counts)
    best: tuple[int, np.dtype[Any], int] | None = None
    for t in widths:
        if best is not None and best[0] <= v.size * t.itemsize:
            break  # this width and the wider ones cost at least as much
        escaped = int(counts[GAP_DTYPES.index(t)])
        cost = v.size * t.itemsize + _ESCAPE_BYTES * escaped
        if best is None or cost < best[0]:
            best = (cost, t, escaped)
    assert best is not None
    _, t, escaped = best
    gaps = np.empty(v.size, t)
    big_at, big = np.empty(escaped, np.int64), np.empty(escaped, np.int64)
    _fill_gaps(v, b, np.uint64(np.iinfo(t).max), gaps, big_at, big)
    return {f"{prefix}gaps": gaps, f"{prefix}big_at": big_at, f"{prefix}big": big}


def gap_fields(prefix: str = "") -> dict[str, str]:
    """The fields :func:`encode_gaps` writes with ``prefix``, as a message schema declares them
    (:class:`~labqfl.qkd.messaging.MessageSchema`): each a 1-D array."""
    return {f"{prefix}gaps": "array", f"{prefix}big_at": "array", f"{prefix}big": "array"}


def decode_gaps(msg: Message, *, base: int = 0, prefix: str = "", plain: str | None = None) -> np.ndarray:
    """The int64 values of :func:`encode_gaps`'s fields in ``msg`` (a field ``plain``, if given and
    present, is read as it is). A ``…gaps`` field not of an unsigned width, escape positions not
    ascending inside the array, or escape values not one per position raise :class:`MessageError`
    naming the message and the field."""
    if plain is not None and plain in msg.fields:
        return _int_array(msg, plain, np.int64)
    g_name, at_name, big_name = f"{prefix}gaps", f"{prefix}big_at", f"{prefix}big"
    gaps = msg.get(g_name)
    if not isinstance(gaps, np.ndarray) or gaps.ndim != 1 or gaps.dtype not in GAP_DTYPES:
        raise MessageError(f"{msg.kind}: field {g_name!r} is {_what(gaps)} "
                           f"(expected a 1-D array of {', '.join(str(t) for t in GAP_DTYPES)})")
    big_at = _int_array(msg, at_name, np.int64)
    big = _int_array(msg, big_name, np.int64)
    n = gaps.size
    if big_at.shape != big.shape:
        raise MessageError(f"{msg.kind}: {big.size} large gaps ({big_name!r}) at {big_at.size} positions "
                           f"({at_name!r}); expected one value per position")
    if big_at.size and (int(big_at[0]) < 0 or int(big_at[-1]) >= n or (np.diff(big_at) <= 0).any()):
        raise MessageError(f"{msg.kind}: field {at_name!r}: large gaps at positions from {int(big_at.min())} to "
                           f"{int(big_at.max())} of {n} values; expected ascending positions inside 0 … {n - 1}")
    if not -(1 << 63) <= base < (1 << 63):
        raise MessageError(f"{msg.kind}: base {base} of {g_name!r} is not an int64")
    out = np.empty(n, np.int64)
    _sum_gaps(np.ascontiguousarray(gaps), np.ascontiguousarray(big_at), np.ascontiguousarray(big), np.int64(base),
              out)
    return out


@numba.njit(cache=True, nogil=True)
def _bits_count(runs: np.ndarray, words: np.ndarray) -> np.int64:
    """The number of slots of :func:`decode_slot_bits`'s fields, or a negative code: −1 runs not ascending,
    disjoint and non-empty from slot 0 on, −2 the words not those the runs span, −3 a bit outside its run."""
    n_words = 0
    prev = np.int64(0)
    for r in range(runs.shape[0] // 2):
        lo, hi = runs[2 * r], runs[2 * r + 1]
        if lo < prev or hi <= lo:
            return np.int64(-1)
        prev = hi
        n_words += ((hi - 1) >> 6) - (lo >> 6) + 1
    if n_words != words.shape[0]:
        return np.int64(-2)
    n = np.int64(0)
    q = 0
    for r in range(runs.shape[0] // 2):
        lo, hi = runs[2 * r], runs[2 * r + 1]
        nw = ((hi - 1) >> 6) - (lo >> 6) + 1
        outside = words[q] & ~(~np.uint64(0) << np.uint64(lo & 63))
        outside |= words[q + nw - 1] & ~(~np.uint64(0) >> np.uint64(63 - ((hi - 1) & 63)))
        if outside != 0:
            return np.int64(-3)
        for k in range(q, q + nw):
            n += np.int64(popcount64(words[k]))  # type: ignore[call-arg]
        q += nw
    return n


@numba.njit(cache=True, nogil=True)
def _bits_slots(runs: np.ndarray, words: np.ndarray, out: np.ndarray) -> None:
    """The slots of the set bits, ascending, into ``out`` (checked by :func:`_bits_count`; room for 3 more):
    bit b of the k-th word of run [lo, hi) is slot 64·(lo // 64 + k) + b. Four bits per step, each by
    ``cttz`` of the word with bit 63 forced (a step past the word's last bit writes junk past its slots,
    overwritten by the next word's or left beyond ``n``): 0.66 against 0.90 ms for a window's 690 000
    slots one bit per step (Zen 3)."""
    n = np.uint64(0)
    q = 0
    top = np.uint64(1) << np.uint64(63)
    one = np.uint64(1)
    for r in range(runs.shape[0] // 2):
        lo, hi = runs[2 * r], runs[2 * r + 1]
        w0 = lo >> 6
        for k in range(((hi - 1) >> 6) - w0 + 1):
            w = words[q + k]
            base = (w0 + k) << 6
            c: np.uint64 = popcount64(w)  # type: ignore[call-arg]
            i = np.uint64(0)
            while i < c:
                out[n + i] = base + np.int64(cttz64(w | top))  # type: ignore[call-arg]
                w &= w - one
                out[n + i + one] = base + np.int64(cttz64(w | top))  # type: ignore[call-arg]
                w &= w - one
                out[n + i + np.uint64(2)] = base + np.int64(cttz64(w | top))  # type: ignore[call-arg]
                w &= w - one
                out[n + i + np.uint64(3)] = base + np.int64(cttz64(w | top))  # type: ignore[call-arg]
                w &= w - one
                i += np.uint64(4)
            n += c
        q += ((hi - 1) >> 6) - w0 + 1


def slot_bits_fields(runs: np.ndarray, words: np.ndarray, n: int) -> dict[str, Any]:
    """The fields carrying ``n`` ascending slots as a bitmap: ``runs`` (int64 rows [lo, hi), ascending and
    disjoint) and ``words`` (uint64: for each run, the words lo // 64 … (hi − 1) // 64, bit s mod 64 set for
    each slot s, no bit outside the run), as ``runs`` (flat), ``bits`` and ``n``. At the optics' candidate
    density (≈ 27 % of a client's slots) one bit per slot of its frames is ≈ 0.46 bytes per slot against
    the gaps' one byte. The inverse is :func:`decode_slot_bits`."""
    return {"runs": np.ascontiguousarray(runs, dtype=np.int64).reshape(-1),
            "bits": np.ascontiguousarray(words, dtype=np.uint64), "n": int(n)}


def slot_bits(slots: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """The words of :func:`slot_bits_fields` for ``slots`` (ascending, each inside one of ``runs``)."""
    s = np.asarray(slots, dtype=np.int64)
    r = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    spans = [np.arange(lo >> 6, ((hi - 1) >> 6) + 1) for lo, hi in r.tolist()]
    first = np.cumsum([0] + [a.size for a in spans])
    words = np.zeros(int(first[-1]), dtype=np.uint64)
    run = np.searchsorted(r[:, 0], s, side="right") - 1
    if s.size and (int(run.min()) < 0 or bool((s >= r[run, 1]).any())):
        raise ValueError("slot_bits: a slot outside every run")
    at = first[run] + (s >> 6) - (r[run, 0] >> 6)
    np.bitwise_or.at(words, at, np.left_shift(np.uint64(1), (s & 63).astype(np.uint64)))
    return words


def decode_slot_bits(msg: Message) -> np.ndarray:
    """The ascending slots (int64) of :func:`slot_bits_fields`'s fields in ``msg``, checked by
    :func:`slot_bits_of`."""
    runs, words, n = slot_bits_of(msg)
    out = np.empty(n + 3, np.int64)
    _bits_slots(runs, words, out)
    return out[:n]


def slot_bits_of(msg: Message) -> tuple[np.ndarray, np.ndarray, int]:
    """(runs as flat int64 pairs lo, hi; words; n) of :func:`slot_bits_fields`'s fields in ``msg``, checked
    without decoding the slots (a client answers from the bitmap itself:
    :func:`labqfl.nodes.optics.answer_codes`). Runs not ascending and disjoint, words not the ones the runs
    span, a bit outside its run, or a count other than ``n`` raise :class:`MessageError` naming the message
    and the field."""
    runs = _int_array(msg, "runs", np.int64)
    words = msg.get("bits")
    if not isinstance(words, np.ndarray) or words.ndim != 1 or words.dtype != np.uint64:
        raise MessageError(f"{msg.kind}: field 'bits' is {_what(words)} (expected a 1-D array of uint64)")
    n_said = msg.get("n")
    if runs.size % 2:
        raise MessageError(f"{msg.kind}: field 'runs' has {runs.size} values (expected pairs lo, hi)")
    n = int(_bits_count(np.ascontiguousarray(runs), np.ascontiguousarray(words)))
    if n == -1:
        raise MessageError(f"{msg.kind}: field 'runs' is not ascending, disjoint, non-empty runs [lo, hi) of slots >= 0")
    if n == -2:
        raise MessageError(f"{msg.kind}: field 'bits' has {words.size} words (expected the words its runs span)")
    if n == -3:
        raise MessageError(f"{msg.kind}: field 'bits' sets a bit outside its run (expected slots inside the runs only)")
    if not isinstance(n_said, int) or n_said != n:
        raise MessageError(f"{msg.kind}: field 'n' is {n_said!r} but the bits hold {n} slots")
    return np.ascontiguousarray(runs), np.ascontiguousarray(words), n


def warm_codec() -> None:
    """Load the codec's kernels for every width (tiny public arrays), so that a node's first message of
    an acquisition does not load (or, on a cold Numba cache, compile) them mid-protocol."""
    for t in GAP_DTYPES:
        f = encode_gaps(np.array([1, 3, 1 << 40], np.int64), dtype=t)
        decode_gaps(Message("warm", dict(f)))
    runs = np.array([[1, 70]], np.int64)
    decode_slot_bits(Message("warm", slot_bits_fields(runs, slot_bits(np.array([1, 69], np.int64), runs), 2)))


def encode_channels(channels: np.ndarray) -> np.ndarray:
    """Tagger channels (int16) as ``uint8`` when all are 0 … 255, else as they are (int16): the inverse
    is :func:`decode_channels`."""
    ch = np.ascontiguousarray(channels, dtype=np.int16)
    if ch.size == 0 or (int(ch.min()) >= 0 and int(ch.max()) <= 255):
        return ch.astype(np.uint8)
    return ch


def decode_channels(msg: Message, name: str) -> np.ndarray:
    """The int16 channels of field ``name`` (``uint8`` or ``int16`` on the wire, else :class:`MessageError`)."""
    return _int_array(msg, name, np.int16, allowed=(np.dtype(np.uint8), np.dtype(np.int16)))


def _int_array(msg: Message, name: str, dtype: type, allowed: tuple[np.dtype[Any], ...] | None = None) -> np.ndarray:
    v = msg.get(name)
    ok = isinstance(v, np.ndarray) and v.ndim == 1 and (v.dtype == np.dtype(dtype) if allowed is None
                                                         else v.dtype in allowed)
    if not ok:
        want = np.dtype(dtype) if allowed is None else " or ".join(str(t) for t in allowed)
        raise MessageError(f"{msg.kind}: field {name!r} is {_what(v)} (expected a 1-D array of {want})")
    return np.asarray(v).astype(dtype, copy=False)


def _what(v: object) -> str:
    return f"a {v.ndim}-D array of {v.dtype}" if isinstance(v, np.ndarray) else f"a {type(v).__name__}"
