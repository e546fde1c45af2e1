"""Compact, exactly invertible encodings of the node pipeline's bulk arrays (the one gap codec).

The nodes' high-rate messages carry int64 sequences that ascend in small steps: the optics' asked
slots (``mod/query``, :mod:`labqfl.nodes.optics`), the tagger's timestamps (``tags/block``, optics →
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

import numpy as np

from labqfl.qkd.messaging import Message, MessageError

__all__ = ["decode_channels", "decode_gaps", "encode_channels", "encode_gaps"]

#: The widths a difference may travel in, narrowest first.
GAP_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
#: Bytes an escaped difference costs: its position and its value, int64 each.
_ESCAPE_BYTES = 16


def _differences(values: np.ndarray, base: int) -> np.ndarray:
    """d_n = v_n − v_{n−1} with v_{−1} = ``base`` (int64, wrapping modulo 2^64 like the decoder's sum)."""
    d = np.empty(values.size, np.int64)
    if values.size:
        np.subtract(values[:1], np.array([base], np.int64), out=d[:1])
        np.subtract(values[1:], values[:-1], out=d[1:])
    return d


def encode_gaps(values: np.ndarray, *, base: int = 0, prefix: str = "",
                dtype: np.dtype[Any] | type | None = None) -> dict[str, np.ndarray]:
    """The fields carrying ``values`` (any 1-D int64 array) as differences from ``base`` (module
    docstring): ``dtype`` (``uint8``/``uint16``/``uint32``) fixes the width, else the one with the
    fewest bytes (n·width + 16 per escaped difference) is taken. The inverse is :func:`decode_gaps`."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    if v.ndim != 1:
        raise ValueError(f"encode_gaps: expected a 1-D array, got shape {v.shape}")
    d = _differences(v, int(base))
    u = d.view(np.uint64)  # a negative difference is above every width's maximum here
    widths = GAP_DTYPES if dtype is None else (np.dtype(dtype),)
    if widths[0] not in GAP_DTYPES:
        raise ValueError(f"encode_gaps: width {widths[0]} is not one of {[str(t) for t in GAP_DTYPES]}")
    best: tuple[int, np.dtype[Any], np.ndarray] | None = None
    for t in widths:
        if best is not None and best[0] <= v.size * t.itemsize:
            break  # this width and the wider ones cost at least as much
        big = u > np.iinfo(t).max
        cost = v.size * t.itemsize + _ESCAPE_BYTES * int(np.count_nonzero(big))
        if best is None or cost < best[0]:
            best = (cost, t, big)
    assert best is not None
    _, t, big = best
    big_at = np.flatnonzero(big).astype(np.int64)
    gaps = d.astype(t)  # wraps where escaped; those entries are set to 0 and never read
    gaps[big_at] = 0
    return {f"{prefix}gaps": gaps, f"{prefix}big_at": big_at, f"{prefix}big": d[big_at]}


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
    d = gaps.astype(np.int64)
    d[big_at] = big
    d[:1] += np.int64(base)  # an array operation: wraps modulo 2^64 as the encoder's difference did
    return np.cumsum(d, out=d)


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
