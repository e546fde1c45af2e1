"""Bit operations for Numba kernels that LLVM has as single instructions."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["cttz64", "popcount64"]


@intrinsic
def cttz64(typingctx, x):  # type: ignore[no-untyped-def]
    """The index of the lowest set bit of the uint64 ``x`` ≠ 0 (LLVM's ``cttz``: one instruction), for
    taking the set bits of a mask in order (``b = cttz64(m); m &= m - 1``)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@intrinsic
def popcount64(typingctx, x):  # type: ignore[no-untyped-def]
    """The number of set bits of the uint64 ``x`` (LLVM's ``ctpop``: one instruction with POPCNT)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen
