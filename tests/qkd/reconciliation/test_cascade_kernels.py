"""Cascade's Numba kernels are compiled without reference counting (``_nrt=False``), which is only
safe while no kernel that Python calls returns an array: Python would then wrap a view whose
owner was never increfed, and free it twice.  Numba itself refuses allocations in such a kernel at compile time."""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.core.registry import CPUDispatcher

import labqfl.qkd.cascade as cascade
from labqfl.qkd import reconcile_cascade


def _kernels() -> dict[str, CPUDispatcher]:
    return {name: obj for name, obj in vars(cascade).items() if isinstance(obj, CPUDispatcher)}


def test_every_cascade_kernel_is_compiled_without_reference_counting() -> None:
    kernels = _kernels()
    assert {"_cascade_round", "_bob_step", "_alice_round", "_range_parity"} <= set(kernels)
    counted = sorted(name for name, d in kernels.items() if d.targetoptions.get("_nrt", True))
    assert counted == [], f"kernels compiled with reference counting (use _NO_REFCOUNT): {counted}"


def test_no_cascade_kernel_returns_an_array(frame) -> None:  # type: ignore[no-untyped-def]
    x, y = frame(20_000, 0.04, 3)
    r = reconcile_cascade(x, y, 0.04, seed=5, frame_bits=8_000)  # every kernel runs, frames interleaved
    assert np.array_equal(r.corrected, x)
    compiled = {name: d for name, d in _kernels().items() if d.signatures}  # the kernels Python calls
    assert {"_bob_step", "_alice_round"} <= set(compiled)
    for name, d in compiled.items():
        for sig in d.signatures:
            ret = d.overloads[sig].signature.return_type
            arrays = [t for t in getattr(ret, "types", (ret,)) if isinstance(t, types.Array)]
            assert not arrays, f"{name}{sig} returns {ret}: an array leaving a kernel without reference counting"


def test_numba_refuses_an_allocation_without_reference_counting() -> None:
    """What the rule above relies on: a kernel that allocates does not compile under ``_nrt=False``."""

    def allocates(n: int) -> float:
        return float(np.zeros(n).sum())

    kernel = numba.njit(**{**cascade._NO_REFCOUNT, "cache": False})(allocates)
    try:
        kernel(3)
    except numba.core.errors.TypingError:
        return
    raise AssertionError("Numba compiled an allocation under _nrt=False")


def test_a_pass_order_row_holds_key_bit_c_plus_a_j_mod_n_at_position_j() -> None:
    """The scattered row against its definition, for lengths on and off a word boundary; bits of the
    packed key at or beyond n (none in a frame's words, set here) must not reach the row."""
    rng = np.random.default_rng(11)
    for n in (1, 2, 63, 64, 65, 1000, 4096, 10_007):
        x = rng.integers(0, 2, n, dtype=np.uint8)
        a = int(rng.integers(1, max(n, 2)))
        while n > 1 and np.gcd(a, n) != 1:
            a += 1
        a %= n
        c = int(rng.integers(0, n))
        ai_s = (pow(a, -1, n) * np.arange(65, dtype=np.int64)) % n
        row = np.full((n + 63) // 64, np.uint64(0xFFFFFFFFFFFFFFFF))  # stale content must not survive
        packed = cascade._pack(x)
        if n % 64:
            packed[-1] |= ~((np.uint64(1) << np.uint64(n % 64)) - np.uint64(1))
        cascade._materialize_packed(packed, n, c, row, ai_s)
        bits = np.unpackbits(row.view(np.uint8), bitorder="little")
        expect = x[(c + a * np.arange(n, dtype=np.int64)) % n]
        assert np.array_equal(bits[:n], expect), n
        assert not bits[n:].any(), n


def test_bipartition_keys_are_numpys_default_rng_draws() -> None:
    """The vectorised key derivation against the call it replaces, on seeds of one and two 32-bit
    words (and the edges 0, 2^32 − 1, 2^32, 2^64 − 1) and passes 0 … 39."""
    rng = np.random.default_rng(5)
    seeds = ([int(rng.integers(0, 1 << 63)) for _ in range(40)] + [int(rng.integers(0, 1 << 32)) for _ in range(20)]
             + [0, 1, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, (1 << 64) - 1])
    s = np.repeat(np.array(seeds, np.uint64), 40)
    q = np.tile(np.arange(40), len(seeds))
    expect = np.array([np.random.default_rng([int(a), int(b)]).integers(0, 1 << 63) for a, b in zip(s, q, strict=True)],
                      np.uint64)
    assert np.array_equal(cascade.bipartition_keys(s, q), expect)
    assert cascade.bipartition_keys(np.zeros(0, np.uint64), np.zeros(0, np.int64)).size == 0
