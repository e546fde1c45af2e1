"""Bit operations for Numba kernels that LLVM has as single instructions."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["HAS_BYTE_COMPRESS", "HAS_BYTE_LUT", "bswap64", "compress_bytes64", "cttz64", "eq_mask64",
           "lut128_bytes64", "popcount64", "target_features"]


def target_features() -> set[str]:
    """The CPU features Numba compiles for: those of ``NUMBA_CPU_FEATURES`` where it is set (the ``+name``
    entries: a portable cache built for a named CPU), else the host's, as Numba's own code generator takes
    them. Kernels that emit an instruction only some CPUs have check this, never the host alone, so that a
    build for another CPU never emits an instruction its target lacks."""
    from numba.core import config

    wanted = getattr(config, "CPU_FEATURES", None)
    if wanted is not None:
        return {f[1:] for f in str(wanted).split(",") if f.startswith("+")}
    try:
        from llvmlite import binding

        return {name for name, on in binding.get_host_cpu_features().items() if on}
    except Exception:  # noqa: BLE001 - no feature query on this platform: take the portable paths
        return set()


def _host_has(*features: str) -> bool:
    return set(features) <= target_features()


HAS_BYTE_COMPRESS: bool = _host_has("avx512vbmi2", "avx512bw", "avx512vl")
"""True where the CPU compresses bytes under a mask in one instruction (AVX-512 VBMI2 ``vpcompressb``:
Intel Ice Lake and later, AMD Zen 4 and later). Kernels use :func:`compress_bytes64` only then: elsewhere
LLVM expands the compress store into 64 conditional stores, slower than taking the set bits in order."""

HAS_BYTE_LUT: bool = _host_has("avx512vbmi", "avx512bw")
"""True where the CPU looks up 64 bytes in a 128-byte table in one instruction (AVX-512 VBMI ``vpermi2b``:
Intel Ice Lake and later, AMD Zen 4 and later): :func:`lut128_bytes64`. Kernels use it only then."""


@intrinsic
def cttz64(typingctx, x):  # type: ignore[no-untyped-def]
    """The index of the lowest set bit of the uint64 ``x`` ≠ 0 (LLVM's ``cttz``: one instruction), for
    taking the set bits of a mask in order (``b = cttz64(m); m &= m - 1``)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@intrinsic
def bswap64(typingctx, x):  # type: ignore[no-untyped-def]
    """The byte-swapped uint64 ``x`` (LLVM's ``bswap``: one instruction; the shift-and-mask expression took
    ~2 ns per slot where AES counters are built)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bswap(args[0])

    return sig, codegen


@intrinsic
def popcount64(typingctx, x):  # type: ignore[no-untyped-def]
    """The number of set bits of the uint64 ``x`` (LLVM's ``ctpop``: one instruction with POPCNT)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


def _byte_vector_at(context, builder, sig_arr, arr, off):  # type: ignore[no-untyped-def]
    """Pointer to the 64 bytes of the uint8 array ``arr`` from index ``off``, as ``<64 x i8>*``."""
    data = context.make_array(sig_arr)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [off]), ir.VectorType(ir.IntType(8), 64).as_pointer())


@intrinsic
def eq_mask64(typingctx, a, off, value):  # type: ignore[no-untyped-def]
    """Bit j set where ``a[off + j] == value`` (j < 64; uint8 array, unchecked: the caller keeps
    ``off + 64 ≤ len(a)``): a 64-byte compare whose lanes become the bits of a uint64 (AVX-512: one
    ``vpcmpeqb`` into a mask register; AVX2: two compares and ``vpmovmskb``)."""
    sig = types.uint64(a, types.intp, types.uint8)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        v64 = ir.VectorType(ir.IntType(8), 64)
        vec = builder.load(_byte_vector_at(context, builder, signature.args[0], args[0], args[1]), align=1)
        splat = builder.shuffle_vector(builder.insert_element(ir.Constant(v64, None), args[2], ir.Constant(ir.IntType(32), 0)),
                                       ir.Constant(v64, None), ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
        return builder.bitcast(builder.icmp_unsigned("==", vec, splat), ir.IntType(64))

    return sig, codegen


@intrinsic
def compress_bytes64(typingctx, out, k, a, off, mask):  # type: ignore[no-untyped-def]
    """``a[off + j]`` for each set bit j of ``mask`` (in order) into ``out[k]``, ``out[k + 1]`` …; returns
    k + popcount(mask). Unchecked (the caller keeps ``off + 64 ≤ len(a)`` and room in ``out``); one
    ``vpcompressb`` where :data:`HAS_BYTE_COMPRESS` (LLVM's ``masked.compressstore``, LLVM LangRef)."""
    sig = types.intp(out, types.intp, a, types.intp, types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i1, i8 = ir.IntType(1), ir.IntType(8)
        v64 = ir.VectorType(i8, 64)
        vec = builder.load(_byte_vector_at(context, builder, signature.args[2], args[2], args[3]), align=1)
        dst = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
        fn = builder.module.declare_intrinsic(
            "llvm.masked.compressstore.v64i8",
            fnty=ir.FunctionType(ir.VoidType(), [v64, i8.as_pointer(), ir.VectorType(i1, 64)]))
        builder.call(fn, [vec, dst, builder.bitcast(args[4], ir.VectorType(i1, 64))])
        return builder.add(args[1], builder.ctpop(args[4]))

    return sig, codegen


@intrinsic
def lut128_bytes64(typingctx, table, y, off, out):  # type: ignore[no-untyped-def]
    """``out[off + j] = table[y[off + j] mod 128] | 2·⌊y[off + j]/128⌋`` for j < 64 (uint8 arrays; ``table``
    128 entries; unchecked: the caller keeps ``off + 64`` within ``y`` and ``out``): one ``vpermi2b`` (its index
    bytes' bit 7 is ignored, Intel SDM vol. 2C "VPERMI2B") and a shift of bit 7 to bit 1. Only where
    :data:`HAS_BYTE_LUT`."""
    sig = types.void(table, y, types.intp, out)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        v64 = ir.VectorType(ir.IntType(8), 64)
        half = ir.Constant(ir.IntType(64), 64)
        lo = builder.load(_byte_vector_at(context, builder, signature.args[0], args[0], ir.Constant(ir.IntType(64), 0)), align=1)
        hi = builder.load(_byte_vector_at(context, builder, signature.args[0], args[0], half), align=1)
        vy = builder.load(_byte_vector_at(context, builder, signature.args[1], args[1], args[2]), align=1)
        fn = builder.module.declare_intrinsic("llvm.x86.avx512.vpermi2var.qi.512", fnty=ir.FunctionType(v64, [v64, v64, v64]))
        bit = builder.lshr(builder.and_(vy, ir.Constant(v64, [0x80] * 64)), ir.Constant(v64, [6] * 64))
        builder.store(builder.or_(builder.call(fn, [lo, vy, hi]), bit),
                      _byte_vector_at(context, builder, signature.args[3], args[3], args[2]), align=1)
        return context.get_dummy_value()

    return sig, codegen
