"""The layered quasi-cyclic LDPC decoders of :mod:`labqfl.qkd.ldpc_qc` as one CUDA kernel, bit-exact.

:func:`qc_decode_frames_cuda` has the contract of :func:`~labqfl.qkd.ldpc_qc.qc_minsum_frames` /
:func:`~labqfl.qkd.ldpc_qc.qc_aminstar_frames` (layered 2-D normalised min-sum, Chen & Fossorier,
IEEE Trans. Commun. 50, 406 (2002), Zhang, Wang & Fossorier, IEEE Commun. Lett. 10, 1 (2006);
A-min*, Jones, Valles, Smith & Villasenor, IEEE MILCOM 2003; layered schedule, Hocevar, SiPS 2004)
and gives the same L, R and sweep counts to the bit.

Layout. One launch decodes every frame: a thread block per frame, a thread per lane i of the
lifting (Z threads). In a layer (base row r) thread i owns check r·Z + i; its variables
``bcol[k]·Z + (i + bshift[k]) mod Z`` are disjoint from every other thread's, so a layer needs no
atomics, and a ``syncthreads`` between layers gives the layered schedule. Each thread runs the
CPU kernel's two passes for its check in the same edge order (running min / second min, or the
running A-min* ⊞ values, and the two sign parities; then R = (s·mag)·w and L = t + R). The sweep's
disagreeing checks and the final syndrome check are block reductions in shared memory, and each
frame stops on its own, exactly when the per-frame CPU kernel stops — all sweeps of all frames
in one launch, no host round trip per sweep or per layer.

Exactness. Every float32 operation is rounded on its own, as the CPU kernels (compiled without
fast-math) do: on a GPU through libdevice's ``__nv_fadd_rn`` / ``__nv_fsub_rn`` / ``__nv_fmul_rn``,
which the compiler never contracts into fused multiply-adds; comparisons and selections are exact.
The tests run the kernel in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, plain float32
arithmetic there) against the CPU kernels; ``labqfl bench gpu`` compares the GPU's output with
the CPU's on every run.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from numba import cuda

from labqfl.qkd.reconciliation import ReconciliationInputError

__all__ = ["MAX_LANES", "cuda_decoder_available", "cuda_decoder_problem", "qc_decode_frames_cuda"]

MAX_LANES = 1024
"""Largest lifting size Z (one thread per lane, at most 1024 threads per block)."""

# Numba picks its CUDA simulator from this variable at import; the simulator has no libdevice, and
# its float32 arithmetic (numpy scalars) rounds every operation on its own.
_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

if _SIMULATOR:

    @cuda.jit(device=True)
    def _add(x, y):  # type: ignore[no-untyped-def]
        return x + y

    @cuda.jit(device=True)
    def _sub(x, y):  # type: ignore[no-untyped-def]
        return x - y

    @cuda.jit(device=True)
    def _mul(x, y):  # type: ignore[no-untyped-def]
        return x * y

else:  # pragma: no cover - compiled only where a CUDA toolchain is present
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def _add(x, y):  # type: ignore[no-untyped-def]
        return libdevice.fadd_rn(x, y)

    @cuda.jit(device=True)
    def _sub(x, y):  # type: ignore[no-untyped-def]
        return libdevice.fsub_rn(x, y)

    @cuda.jit(device=True)
    def _mul(x, y):  # type: ignore[no-untyped-def]
        return libdevice.fmul_rn(x, y)


@cuda.jit(device=True)
def _f(u):  # type: ignore[no-untyped-def]
    """max(0.6931 − 0.38·u, 0.445 − 0.132·u, 0) op by op (ldpc_qc._bpx)."""
    a = _sub(np.float32(0.6931), _mul(np.float32(0.38), u))
    b = _sub(np.float32(0.445), _mul(np.float32(0.132), u))
    a = a if a > b else b
    return a if a > np.float32(0.0) else np.float32(0.0)


@cuda.jit(device=True)
def _bpx(x, y):  # type: ignore[no-untyped-def]
    """|x ⊞ y| with the piecewise-linear correction, exactly as labqfl.qkd.ldpc_qc._bpx."""
    lo = x if x < y else y
    r = _sub(_add(lo, _f(_add(x, y))), _f(abs(_sub(x, y))))
    return r if r > np.float32(0.0) else np.float32(0.0)


@cuda.jit(device=True)
def _pass1(amin, row_ptr, bcol, bshift, Z, r, i, Lf, Rf, s0):  # type: ignore[no-untyped-def]
    """Check r·Z + i: (min, second min or ⊞ of all, ⊞ of all but the min, sign of t, sign of L)."""
    big = np.float32(3.0e38)
    x1 = big
    x2 = big
    A = big
    p = s0
    q = s0
    for k in range(row_ptr[r], row_ptr[r + 1]):
        v = bcol[k] * Z + (i + bshift[k]) % Z
        lv = Lf[v]
        t = _sub(lv, Rf[k * Z + i])
        a = abs(t)
        if amin:
            an = _bpx(A, a)
            bn = _bpx(x2, a)
            x2 = A if a < x1 else bn
            A = an
        else:
            hi = a if a > x1 else x1
            x2 = hi if hi < x2 else x2
        x1 = a if a < x1 else x1
        p = -p if t < np.float32(0.0) else p
        q = -q if lv < np.float32(0.0) else q
    # min-sum: the min edge gets x2 (second min), the others x1; A-min*: x2 (⊞ of the others), A
    other = A if amin else x1
    return x1, x2, other, p, q


@cuda.jit(device=True)
def _pass2(row_ptr, bcol, bshift, weight, Z, r, i, Lf, Rf, x1, x2, other, p):  # type: ignore[no-untyped-def]
    for k in range(row_ptr[r], row_ptr[r + 1]):
        v = bcol[k] * Z + (i + bshift[k]) % Z
        e = k * Z + i
        t = _sub(Lf[v], Rf[e])
        mag = x2 if abs(t) == x1 else other
        s = -p if t < np.float32(0.0) else p
        rr = _mul(_mul(s, mag), weight[k])
        Rf[e] = rr
        Lf[v] = _add(t, rr)


@cuda.jit(device=True)
def _syndrome_mismatch(row_ptr, bcol, bshift, Z, i, Lf, sy):  # type: ignore[no-untyped-def]
    """1 when one of this thread's checks disagrees with the hard decision L < 0 → 1."""
    for r in range(row_ptr.size - 1):
        par = sy[r * Z + i]
        for k in range(row_ptr[r], row_ptr[r + 1]):
            if Lf[bcol[k] * Z + (i + bshift[k]) % Z] < np.float32(0.0):
                par ^= 1
        if par:
            return 1
    return 0


@cuda.jit
def _decode(amin, row_ptr, bcol, bshift, Z, synd, L, R, frames, weight, max_iter, out):  # type: ignore[no-untyped-def]
    """Block b decodes frame frames[b]; thread i owns lane i of every layer (module docstring)."""
    f = frames[cuda.blockIdx.x]
    i = cuda.threadIdx.x
    Lf = L[f]
    Rf = R[f]
    sy = synd[f]
    flags = cuda.shared.array(2, np.int32)  # disagreeing checks this sweep, syndrome mismatches
    result = -1
    for it in range(max_iter):
        if i == 0:
            flags[0] = 0
            flags[1] = 0
        cuda.syncthreads()
        bad = 0
        for r in range(row_ptr.size - 1):
            s0 = np.float32(1.0) - np.float32(2.0) * np.float32(sy[r * Z + i])
            x1, x2, other, p, q = _pass1(amin, row_ptr, bcol, bshift, Z, r, i, Lf, Rf, s0)
            if q < np.float32(0.0):
                bad += 1
            _pass2(row_ptr, bcol, bshift, weight, Z, r, i, Lf, Rf, x1, x2, other, p)
            cuda.syncthreads()  # layer r's posteriors are written before layer r + 1 reads them
        if bad:
            cuda.atomic.add(flags, 0, bad)
        cuda.syncthreads()
        if flags[0] == 0:
            if _syndrome_mismatch(row_ptr, bcol, bshift, Z, i, Lf, sy):
                cuda.atomic.add(flags, 1, 1)
            cuda.syncthreads()
            if flags[1] == 0:
                result = it + 1
                break
        cuda.syncthreads()  # every thread has read the flags before they are reset
    if i == 0:
        out[cuda.blockIdx.x] = result


@cuda.jit
def _wipe(a):  # type: ignore[no-untyped-def]
    """Zero a 2-D device array: block r clears row r."""
    r = cuda.blockIdx.x
    for j in range(cuda.threadIdx.x, a.shape[1], cuda.blockDim.x):
        a[r, j] = 0


def _probe(x):  # type: ignore[no-untyped-def]
    x[0] = x[0] + np.float32(1.0)


@lru_cache(maxsize=1)
def cuda_decoder_problem() -> str | None:
    """Why the CUDA kernel cannot run here, or None when it can: a CUDA device visible to Numba
    (or the simulator), and Numba's CUDA target able to compile a kernel — which a numba-cuda
    release built for another numpy may not be (seen on a GPU host: numpy 2.5 without
    ``np.row_stack``, which numba-cuda 0.x registers on its first compilation)."""
    try:
        if not cuda.is_available():
            return "Numba sees no CUDA device"
        cuda.jit("void(float32[:])")(_probe)
    except Exception as exc:  # noqa: BLE001 - any failure of the toolchain means "use another path"
        return f"Numba's CUDA target cannot compile here ({type(exc).__name__}: {exc})"
    return None


def cuda_decoder_available() -> bool:
    """Whether :func:`qc_decode_frames_cuda` can run here (:func:`cuda_decoder_problem` is None)."""
    return cuda_decoder_problem() is None


def qc_decode_frames_cuda(rule: str, row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int,
                          synd: np.ndarray, L: np.ndarray, R: np.ndarray, frames: np.ndarray, weight: np.ndarray,
                          max_iter: int) -> np.ndarray:
    """:func:`~labqfl.qkd.ldpc_qc.qc_minsum_frames` (``rule="minsum"``) or
    :func:`~labqfl.qkd.ldpc_qc.qc_aminstar_frames` (``"amin"``) on the GPU: updates ``L[frames]``,
    ``R[frames]`` (numpy float32, rows per frame) in place and returns the sweeps to convergence
    or −1 per frame (int64), bit-identical to the CPU kernels. The rows travel to the GPU and back
    once per call."""
    if rule not in ("minsum", "amin"):
        raise ReconciliationInputError(f"LDPC rule must be 'minsum' or 'amin', got {rule!r}")
    if not 1 <= int(Z) <= MAX_LANES:
        raise ReconciliationInputError(f"CUDA LDPC decoder: lifting size Z must be 1..{MAX_LANES}, got {Z}")
    problem = cuda_decoder_problem()
    if problem is not None:
        raise ReconciliationInputError(f"CUDA LDPC decoder: {problem}")
    fr = np.ascontiguousarray(frames, dtype=np.int64)
    out = np.empty(fr.size, np.int64)
    if fr.size == 0:
        return out
    stream = cuda.stream()
    code = [cuda.to_device(np.ascontiguousarray(a, dtype=np.int64), stream=stream) for a in (row_ptr, bcol, bshift)]
    w = cuda.to_device(np.ascontiguousarray(weight, dtype=np.float32), stream=stream)
    d_synd = cuda.to_device(np.ascontiguousarray(synd[fr]), stream=stream)
    d_L = cuda.to_device(np.ascontiguousarray(L[fr]), stream=stream)
    d_R = cuda.to_device(np.ascontiguousarray(R[fr]), stream=stream)
    d_rows = cuda.to_device(np.arange(fr.size, dtype=np.int64), stream=stream)
    d_out = cuda.device_array(fr.size, np.int64, stream=stream)
    _decode[fr.size, int(Z), stream](rule == "amin", *code, int(Z), d_synd, d_L, d_R, d_rows, w,
                                     int(max_iter), d_out)
    h_L = d_L.copy_to_host(stream=stream)
    h_R = d_R.copy_to_host(stream=stream)
    d_out.copy_to_host(out, stream=stream)
    for a in (d_L, d_R):  # the posteriors' signs are Bob's corrected key: zero them before the memory is freed
        _wipe[a.shape[0], 256, stream](a)
    stream.synchronize()  # the copies above are asynchronous on a stream: read them only after this
    L[fr] = h_L
    R[fr] = h_R
    return out

