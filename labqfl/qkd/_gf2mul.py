"""Products of binary polynomials on packed 64-bit words, with hardware carry-less multiplication.

A polynomial of degree < 64·N over GF(2) is N little-endian ``uint64`` words (bit j of word i is the
coefficient of x^{64i+j}). :func:`gf2_mul` computes ``out[0:2N] = a · b`` by Karatsuba's split
(A. Karatsuba, Yu. Ofman, Dokl. Akad. Nauk SSSR 145 (1962); for GF(2)[x] on words see R. P. Brent,
P. Gaudry, E. Thomé, P. Zimmermann, "Faster multiplication in GF(2)[x]", ANTS VIII, LNCS 5011
(2008), §2): with ``a = a0 + a1·X``, ``b = b0 + b1·X``, ``X = x^{64h}``,

    a·b = p0 + (p0 + p1 + p2)·X + p2·X²,   p0 = a0·b0,  p2 = a1·b1,  p1 = (a0 + a1)(b0 + b1),

down to products of at most :data:`BASE_MAX` words, which are straight-line code generated here
(one LLVM intrinsic, a ``switch`` on N): every product of two words is one carry-less multiply,
``pclmulqdq`` (Intel SDM vol. 2B, "PCLMULQDQ"), two per instruction with the 256-bit
``vpclmulqdq`` form where the CPU has VPCLMULQDQ + AVX2 (e.g. AMD Zen 3, Intel Ice Lake).

Base case, 256-bit form. For word pairs ``A_p = [a_{2p}, ·, a_{2p+1}, ·]`` and
``B_q = [b_{2q}, b_{2q+1}, b_{2q}, b_{2q+1}]`` the selector 0x00 gives the 128-bit products
``(a_{2p}·b_{2q}, a_{2p+1}·b_{2q})`` at word offsets (2d, 2d+1), d = p + q, and 0x10 gives
``(a_{2p}·b_{2q+1}, a_{2p+1}·b_{2q+1})`` at (2d+1, 2d+2); they are summed per d in registers and
folded into words once. The 128-bit form uses ``[a_{2p}, a_{2p+1}]·[b_{2q}, b_{2q+1}]`` with the
four selectors 0x00, 0x11 (offsets 2d, 2d+2) and 0x01, 0x10 (offset 2d+1).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["BASE_MAX", "HAS_CLMUL", "YMM_CLMUL", "gf2_mul", "gf2_mul_ws_words"]

BASE_MAX = 12
"""Products of at most this many words are unrolled straight-line code (Karatsuba above it)."""


def _host_features() -> set[str]:
    try:
        from llvmlite import binding

        feats = binding.get_host_cpu_features()
        return {name for name, on in feats.items() if on}
    except Exception:  # noqa: BLE001 - no feature query on this platform: no carry-less paths
        return set()


FEATURES = _host_features()
HAS_CLMUL: bool = "pclmul" in FEATURES
"""True where the CPU has ``pclmulqdq`` (the carry-less paths may be used)."""
WIDE_CLMUL: bool = HAS_CLMUL and {"vpclmulqdq", "avx512f"} <= FEATURES
YMM_CLMUL: bool = HAS_CLMUL and {"vpclmulqdq", "avx2"} <= FEATURES


def _emit_base(builder: ir.IRBuilder, pa: ir.Value, pb: ir.Value, po: ir.Value, n: int, ymm: bool) -> None:
    """Straight-line ``po[0:2n] = pa[0:n] · pb[0:n]`` (module docstring, base case)."""
    i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
    v2, v4 = ir.VectorType(i64, 2), ir.VectorType(i64, 4)
    zero = ir.Constant(i64, 0)

    def word(p: ir.Value, i: int) -> ir.Value:
        return builder.load(builder.gep(p, [ir.Constant(i64, i)]), align=8) if i < n else zero

    def vec(vals: list[ir.Value], vt: ir.VectorType) -> ir.Value:
        v = ir.Constant(vt, None)
        for lane, x in enumerate(vals):
            v = builder.insert_element(v, x, ir.Constant(i32, lane))
        return v

    npair = (n + 1) // 2
    aw = [word(pa, i) for i in range(2 * npair)]
    bw = [word(pb, i) for i in range(2 * npair)]
    acc: list[ir.Value | None] = [None] * (4 * npair + 1)  # 128-bit sums by word offset

    def add(off: int, v: ir.Value) -> None:
        cur = acc[off]
        acc[off] = v if cur is None else builder.xor(cur, v)

    if ymm:
        fn = builder.module.declare_intrinsic("llvm.x86.pclmulqdq.256", fnty=ir.FunctionType(v4, [v4, v4, i8]))
        A = [vec([aw[2 * p], zero, aw[2 * p + 1], zero], v4) for p in range(npair)]
        B = [vec([bw[2 * q], bw[2 * q + 1], bw[2 * q], bw[2 * q + 1]], v4) for q in range(npair)]
        lo_idx = ir.Constant(ir.VectorType(i32, 2), [0, 1])
        hi_idx = ir.Constant(ir.VectorType(i32, 2), [2, 3])
        for d in range(2 * npair - 1):
            e = o = None
            for p in range(max(0, d - npair + 1), min(d, npair - 1) + 1):
                q = d - p
                pe = builder.call(fn, [A[p], B[q], ir.Constant(i8, 0x00)])
                pq = builder.call(fn, [A[p], B[q], ir.Constant(i8, 0x10)])
                e = pe if e is None else builder.xor(e, pe)
                o = pq if o is None else builder.xor(o, pq)
            assert e is not None and o is not None
            add(2 * d, builder.shuffle_vector(e, e, lo_idx))
            add(2 * d + 1, builder.xor(builder.shuffle_vector(e, e, hi_idx), builder.shuffle_vector(o, o, lo_idx)))
            add(2 * d + 2, builder.shuffle_vector(o, o, hi_idx))
    else:
        fn = builder.module.declare_intrinsic("llvm.x86.pclmulqdq", fnty=ir.FunctionType(v2, [v2, v2, i8]))
        A = [vec([aw[2 * p], aw[2 * p + 1]], v2) for p in range(npair)]
        B = [vec([bw[2 * q], bw[2 * q + 1]], v2) for q in range(npair)]
        for d in range(2 * npair - 1):
            for p in range(max(0, d - npair + 1), min(d, npair - 1) + 1):
                q = d - p
                add(2 * d, builder.call(fn, [A[p], B[q], ir.Constant(i8, 0x00)]))
                add(2 * d + 1, builder.call(fn, [A[p], B[q], ir.Constant(i8, 0x01)]))
                add(2 * d + 1, builder.call(fn, [A[p], B[q], ir.Constant(i8, 0x10)]))
                add(2 * d + 2, builder.call(fn, [A[p], B[q], ir.Constant(i8, 0x11)]))
    prev_hi: ir.Value = zero
    for w in range(2 * n):
        v = acc[w]
        lo = builder.extract_element(v, ir.Constant(i32, 0)) if v is not None else zero
        builder.store(builder.xor(lo, prev_hi), builder.gep(po, [ir.Constant(i64, w)]), align=8)
        prev_hi = builder.extract_element(v, ir.Constant(i32, 1)) if v is not None else zero


def _base_function(module: ir.Module, ymm: bool) -> ir.Function:
    """``void f(i64* a, i64* b, i64* out, i64 n)``: ``out[0:2n] = a[0:n]·b[0:n]`` for
    1 ≤ n ≤ BASE_MAX, one ``switch`` over the unrolled sizes; defined once per LLVM module
    (internal linkage) so that every call site is a plain call, not another copy of the code."""
    name = "labqfl_gf2_base_ymm" if ymm else "labqfl_gf2_base_xmm"
    if name in module.globals:
        fn = module.get_global(name)
        assert isinstance(fn, ir.Function)
        return fn
    i64 = ir.IntType(64)
    p64 = i64.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [p64, p64, p64, i64]), name)
    fn.linkage = "internal"
    pa, pb, po, n = fn.args
    entry = fn.append_basic_block("entry")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    sw = b.switch(n, done)
    for nn in range(1, BASE_MAX + 1):
        blk = fn.append_basic_block(f"n{nn}")
        sw.add_case(ir.Constant(i64, nn), blk)
        b.position_at_end(blk)
        _emit_base(b, pa, pb, po, nn, ymm)
        b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return fn


def _make_base(ymm: bool):  # type: ignore[no-untyped-def]
    @intrinsic
    def _base(typingctx, a, ao, b, bo, out, oo, n):  # type: ignore[no-untyped-def]
        """``out[oo:oo+2n] = a[ao:ao+n] · b[bo:bo+n]``, 1 ≤ n ≤ BASE_MAX (unchecked indices)."""
        sig = types.void(a, types.intp, b, types.intp, out, types.intp, types.intp)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            def ptr(k: int, off: ir.Value) -> ir.Value:
                data = context.make_array(signature.args[k])(context, builder, args[k]).data
                return builder.gep(data, [off])

            fn = _base_function(builder.module, ymm)
            builder.call(fn, [ptr(0, args[1]), ptr(2, args[3]), ptr(4, args[5]), args[6]])
            return context.get_dummy_value()

        return sig, codegen

    return _base


_base_ymm = _make_base(True)
_base_xmm = _make_base(False)


@numba.njit(cache=True, nogil=True, inline="always")
def _base_product(a, ao, b, bo, out, oo, n, ymm):  # type: ignore[no-untyped-def]
    if ymm:
        _base_ymm(a, ao, b, bo, out, oo, n)
    else:
        _base_xmm(a, ao, b, bo, out, oo, n)


def gf2_mul_ws_words(n: int) -> int:
    """Scratch words :func:`gf2_mul` needs for N-word operands."""
    total = 1
    if n > 4 * BASE_MAX:
        n = -(-n // -(-n // (4 * BASE_MAX)))  # block size of _kblocks
        total += 4 * n
    while n > BASE_MAX:
        h = (n + 1) // 2
        total += 4 * h
        n = h
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _kara_step(a, ao, b, bo, out, oo, n, ws, wo):  # type: ignore[no-untyped-def]
    """One Karatsuba level around products already in place: ``out[oo:oo+2h]`` = p0,
    ``out[oo+2h:oo+2n]`` = p2, ``ws[wo+2h:wo+4h]`` = p1; adds p0 + p1 + p2 at X = x^{64h}."""
    h = (n + 1) // 2
    p1 = wo + 2 * h
    hu = np.uint64(h)
    lu = np.uint64(n - h)
    for i in range(hu + hu):
        ws[p1 + i] ^= out[oo + i]
    for i in range(lu + lu):
        ws[p1 + i] ^= out[oo + 2 * h + i]
    for i in range(hu + hu):
        out[oo + h + i] ^= ws[p1 + i]


@numba.njit(cache=True, nogil=True, inline="always")
def _kara_sums(a, ao, b, bo, n, ws, wo):  # type: ignore[no-untyped-def]
    """``ws[wo:wo+h] = a0 + a1``, ``ws[wo+h:wo+2h] = b0 + b1`` (h = ⌈n/2⌉, a1, b1 zero-extended)."""
    h = (n + 1) // 2
    lo = n - h
    for i in range(np.uint64(lo)):
        ws[wo + i] = a[ao + i] ^ a[ao + h + i]
        ws[wo + h + i] = b[bo + i] ^ b[bo + h + i]
    if lo < h:
        ws[wo + lo] = a[ao + lo]
        ws[wo + h + lo] = b[bo + lo]


@numba.njit(cache=True, nogil=True, inline="always")
def _k1(a, ao, b, bo, out, oo, n, ws, wo, ymm):  # type: ignore[no-untyped-def]
    """n ≤ 2·BASE_MAX: at most one Karatsuba level over the unrolled base products."""
    if n <= BASE_MAX:
        _base_product(a, ao, b, bo, out, oo, n, ymm)
        return
    h = (n + 1) // 2
    _base_product(a, ao, b, bo, out, oo, h, ymm)
    _base_product(a, ao + h, b, bo + h, out, oo + 2 * h, n - h, ymm)
    _kara_sums(a, ao, b, bo, n, ws, wo)
    _base_product(ws, wo, ws, wo + h, ws, wo + 2 * h, h, ymm)
    _kara_step(a, ao, b, bo, out, oo, n, ws, wo)


@numba.njit(cache=True, nogil=True, inline="always")
def _k2(a, ao, b, bo, out, oo, n, ws, wo, ymm):  # type: ignore[no-untyped-def]
    """n ≤ 4·BASE_MAX: at most two Karatsuba levels, no function calls (all inlined)."""
    if n <= 2 * BASE_MAX:
        _k1(a, ao, b, bo, out, oo, n, ws, wo, ymm)
        return
    h = (n + 1) // 2
    nxt = wo + 4 * h
    _k1(a, ao, b, bo, out, oo, h, ws, nxt, ymm)
    _k1(a, ao + h, b, bo + h, out, oo + 2 * h, n - h, ws, nxt, ymm)
    _kara_sums(a, ao, b, bo, n, ws, wo)
    _k1(ws, wo, ws, wo + h, ws, wo + 2 * h, h, ws, nxt, ymm)
    _kara_step(a, ao, b, bo, out, oo, n, ws, wo)


@numba.njit(cache=True, nogil=True)
def _kblocks(a, ao, b, bo, out, oo, n, ws, ymm):  # type: ignore[no-untyped-def]
    """n > 4·BASE_MAX: schoolbook over blocks of s ≤ 4·BASE_MAX words (zero-padded copies),
    each block product by :func:`_k2` (no recursion: Numba's cache cannot hold recursive calls
    from parallel kernels)."""
    nb = -(-n // (4 * BASE_MAX))
    sz = -(-n // nb)
    ca = 0
    cb = sz
    pr = 2 * sz
    kw = 4 * sz
    for i in range(2 * n):
        out[oo + i] = 0
    for bi in range(nb):
        li = min(sz, n - bi * sz)
        for t in range(sz):
            ws[ca + t] = a[ao + bi * sz + t] if t < li else np.uint64(0)
        for bj in range(nb):
            lj = min(sz, n - bj * sz)
            for t in range(sz):
                ws[cb + t] = b[bo + bj * sz + t] if t < lj else np.uint64(0)
            _k2(ws, ca, ws, cb, ws, pr, sz, ws, kw, ymm)
            base = oo + (bi + bj) * sz
            for t in range(min(2 * sz, 2 * n - (bi + bj) * sz)):
                out[base + t] ^= ws[pr + t]


@numba.njit(cache=True, nogil=True, inline="always")
def gf2_mul(a, ao, b, bo, out, oo, n, ws, ymm):  # type: ignore[no-untyped-def]
    """``out[oo:oo+2n] = a[ao:ao+n] · b[bo:bo+n]`` over GF(2) (uint64 words; ``ws``: at least
    :func:`gf2_mul_ws_words` (n) scratch words; ``ymm``: use the 256-bit ``vpclmulqdq`` form)."""
    if n <= 4 * BASE_MAX:
        _k2(a, ao, b, bo, out, oo, n, ws, 0, ymm)
    else:
        _kblocks(a, ao, b, bo, out, oo, n, ws, ymm)
