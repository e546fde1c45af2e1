"""The layered quasi-cyclic LDPC decoders of :mod:`labqfl.qkd.ldpc_qc` on a torch device, bit-exact.

:func:`qc_decode_frames_torch` runs the same decoders as the Numba kernels
:func:`~labqfl.qkd.ldpc_qc.qc_minsum_frames` (2-D normalised min-sum: Chen & Fossorier, IEEE Trans.
Commun. 50, 406 (2002); Zhang, Wang & Fossorier, IEEE Commun. Lett. 10, 1 (2006)) and
:func:`~labqfl.qkd.ldpc_qc.qc_aminstar_frames` (A-min*: Jones, Valles, Smith & Villasenor, IEEE
MILCOM 2003) with the layered schedule (Hocevar, SiPS 2004), on any torch device — a CUDA GPU when
one is present; ``"cpu"`` is how the tests check it without one.

Layout: all frames × the Z lanes × the d edges of one layer (base row) are one tensor (F, d, Z).
The layer's variables are gathered through a precomputed index (variable of base edge k, lane i:
``bcol[k]·Z + (i + bshift[k]) mod Z``), its messages are the slice ``R[:, k0·Z : k1·Z]`` viewed
(F, d, Z); a layer's variables are disjoint (no base column twice in a base row, checked), so the
new posteriors are scattered back with one ``index_copy_``.

Exactness: every float32 operation of the Numba kernels is done in the same order —
t = L − R, r = (s·mag)·w (a sign flip of mag, then one rounding), L = t + r; min-sum's m1, m2 are
the two smallest of {|t|} ∪ {3e38, 3e38} (order-free); A-min*'s running ⊞ values are updated edge
after edge in the kernel's edge order, each :func:`~labqfl.qkd.ldpc_qc._bpx` term op by op in
float32 (no fused multiply-add: each op is its own kernel).  The only deviation would come from
NaN inputs (``torch.minimum``/``maximum`` propagate NaN where the kernels' comparisons pick the
other operand), so NaN in L or R is rejected.  The stopping rule is the kernels': a sweep with no
check whose posterior sign parity (L before each layer's update) disagrees with its syndrome bit,
followed by a full syndrome check of the hard decision; a frame that stops is taken out of the
batch, so it is left exactly as the per-frame kernel leaves it.  One host synchronisation per
sweep (the frames that stopped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labqfl.accel import torch_device
from labqfl.qkd.reconciliation import ReconciliationInputError

__all__ = ["RULES", "qc_decode_frames_torch"]

RULES = ("minsum", "amin")
"""``minsum``: as :func:`~labqfl.qkd.ldpc_qc.qc_minsum_frames`; ``amin``: as
:func:`~labqfl.qkd.ldpc_qc.qc_aminstar_frames`."""

_BIG = 3.0e38  # the kernels' initial min / ⊞ value (np.float32(3.0e38))
# _bpx's piecewise-linear f(u) = max(0.6931 − 0.38·u, 0.445 − 0.132·u, 0) (labqfl.qkd.ldpc_qc)
_C0, _C1, _C2, _C3 = 0.6931, 0.38, 0.445, 0.132


@dataclass(frozen=True)
class _Layer:
    idx: torch.Tensor  # (d·Z,) int64: variable of base edge k0 + j, lane i at j·Z + i
    e0: int  # R columns [e0, e1) = base edges [k0, k1) × Z
    e1: int
    d: int
    s0: int  # syndrome columns [s0, s0 + Z)
    w: torch.Tensor  # (1, d, 1) float32: weight of each base edge


@dataclass(frozen=True)
class _Graph:
    layers: tuple[_Layer, ...]
    pad_idx: torch.Tensor  # (mb·dmax·Z,) int64: every layer's variables, padded with column n
    mb: int
    dmax: int
    Z: int


_GRAPHS: dict[tuple, _Graph] = {}


def _graph(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, n: int, weight: np.ndarray,
           dev: torch.device) -> _Graph:
    """Index tensors of every layer on ``dev`` (cached per code, weights and device)."""
    key = (row_ptr.tobytes(), bcol.tobytes(), bshift.tobytes(), Z, n, weight.tobytes(), str(dev))
    if key in _GRAPHS:
        return _GRAPHS[key]
    mb = row_ptr.size - 1
    lane = np.arange(Z, dtype=np.int64)
    var = (bcol[:, None] * Z + (lane[None, :] + bshift[:, None]) % Z).astype(np.int64)  # (E_b, Z)
    deg = np.diff(row_ptr)
    dmax = int(deg.max()) if mb else 0
    pad = np.full((mb, max(dmax, 1), Z), n, np.int64)
    layers = []
    for r in range(mb):
        k0, k1 = int(row_ptr[r]), int(row_ptr[r + 1])
        pad[r, :k1 - k0] = var[k0:k1]
        layers.append(_Layer(torch.from_numpy(var[k0:k1].reshape(-1)).to(dev), k0 * Z, k1 * Z, k1 - k0, r * Z,
                             torch.from_numpy(weight[k0:k1].astype(np.float32)).to(dev).view(1, -1, 1)))
    g = _Graph(tuple(layers), torch.from_numpy(pad.reshape(-1)).to(dev), mb, max(dmax, 1), Z)
    if len(_GRAPHS) >= 8:
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[key] = g
    return g


def _check_code(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, weight: np.ndarray) -> int:
    """Validate the base graph; returns the number of base edges."""
    for name, a in (("row_ptr", row_ptr), ("bcol", bcol), ("bshift", bshift)):
        if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in "iu":
            raise ReconciliationInputError(f"qc_decode_frames_torch: {name} must be a 1-D integer numpy array")
    if isinstance(Z, bool) or not isinstance(Z, (int, np.integer)) or Z < 1:
        raise ReconciliationInputError(f"qc_decode_frames_torch: Z must be a positive integer, got {Z!r}")
    Eb = bcol.size
    if (row_ptr.size < 2 or row_ptr[0] != 0 or row_ptr[-1] != Eb or np.any(np.diff(row_ptr) < 1)
            or bshift.size != Eb):
        raise ReconciliationInputError("qc_decode_frames_torch: row_ptr must rise from 0 to len(bcol) = "
                                       "len(bshift), every base row holding at least one edge")
    if Eb and (bshift.min() < 0 or bshift.max() >= Z or bcol.min() < 0):
        raise ReconciliationInputError(f"qc_decode_frames_torch: shifts must lie in [0, {Z}) and base columns >= 0")
    rows = np.repeat(np.arange(row_ptr.size - 1), np.diff(row_ptr))
    if np.unique(rows * (int(bcol.max()) + 1) + bcol).size != Eb:
        raise ReconciliationInputError("qc_decode_frames_torch: a base column appears twice in one base row "
                                       "(a layer's variables must be disjoint)")
    if not isinstance(weight, np.ndarray) or weight.dtype != np.float32 or weight.shape != (Eb,):
        raise ReconciliationInputError(f"qc_decode_frames_torch: weight must be float32 of shape ({Eb},)")
    return Eb


def _check_state(synd: np.ndarray, L: np.ndarray, R: np.ndarray, frames: np.ndarray, m: int, n_min: int,
                 E: int) -> np.ndarray:
    """Validate (synd, L, R, frames); returns frames as int64."""
    if not isinstance(synd, np.ndarray) or synd.dtype != np.uint8 or synd.ndim != 2 or synd.shape[1] != m:
        raise ReconciliationInputError(f"qc_decode_frames_torch: synd must be uint8 of shape (frames, {m})")
    nf = synd.shape[0]
    for name, a, cols in (("L", L, None), ("R", R, E)):
        if (not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 2 or a.shape[0] != nf
                or (cols is not None and a.shape[1] != cols) or a.shape[1] < (n_min if cols is None else 0)):
            want = f"({nf}, {E})" if cols is not None else f"({nf}, >= {n_min})"
            raise ReconciliationInputError(f"qc_decode_frames_torch: {name} must be float32 of shape {want}, "
                                           f"got {getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if not isinstance(frames, np.ndarray) or frames.ndim != 1 or frames.dtype.kind not in "iu":
        raise ReconciliationInputError("qc_decode_frames_torch: frames must be a 1-D integer numpy array")
    fr = frames.astype(np.int64)
    if fr.size and (fr.min() < 0 or fr.max() >= nf or np.unique(fr).size != fr.size):
        raise ReconciliationInputError(f"qc_decode_frames_torch: frames must be distinct rows in [0, {nf})")
    if fr.size and (np.isnan(L[fr]).any() or np.isnan(R[fr]).any()):
        raise ReconciliationInputError("qc_decode_frames_torch: L and R must not hold NaN")
    return fr


def _signs(t: torch.Tensor, Lg: torch.Tensor, sy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(whether each edge's message is negative (F, d, Z), disagreeing checks per frame (F,)).

    Message sign: (−1)^s_c · Π_{e'≠e} sgn t_e' = (−1)^(s_c + #{t < 0}) · sgn t_e (sgn 0 = +1).
    A check disagrees when the parity of its posteriors' signs (L before the update) differs from s_c."""
    neg = t < 0
    par = (neg.sum(1) + sy) & 1  # (F, Z): the kernels' sign p < 0
    bad = ((Lg < 0).sum(1) + sy) & 1
    return neg ^ par.bool().unsqueeze(1), bad.sum(1)


def _minsum_mag(a: torch.Tensor) -> torch.Tensor:
    """Min-sum magnitudes: the second smallest |t| for the edge(s) equal to the smallest, else the
    smallest — both taken over {|t|} ∪ {3e38, 3e38} as the kernel's running (m1, m2)."""
    m1 = a.amin(1, keepdim=True)
    eq = a == m1
    m2 = torch.where(eq, torch.inf, a).amin(1, keepdim=True)
    m2 = torch.where(eq.sum(1, keepdim=True) >= 2, m1, m2).clamp_max_(_BIG)
    x1 = m1.clamp_max_(_BIG)
    return torch.where(a == x1, m2, x1)


def _bpx2(S: torch.Tensor, y: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """:func:`labqfl.qkd.ldpc_qc._bpx` of both rows of S (2, F, Z) with y (F, Z), op by op in float32:
    r = max(min(x, y) + f(x + y) − f(|x − y|), 0), f(u) = max(0.6931 − 0.38·u, 0.445 − 0.132·u, 0).
    ``buf``: (2, 2, F, Z) scratch for (u, |x − y|)."""
    lo = torch.minimum(S, y)
    torch.add(S, y, out=buf[0])
    torch.sub(S, y, out=buf[1]).abs_()
    f = torch.mul(buf, -_C1).add_(_C0)  # (−c1)·u + c0 rounds exactly as c0 − c1·u
    g = torch.mul(buf, -_C3).add_(_C2)
    f = torch.maximum(f, g).clamp_min_(0.0)
    return lo.add_(f[0]).sub_(f[1]).clamp_min_(0.0)


def _amin_mag(a: torch.Tensor) -> torch.Tensor:
    """A-min* magnitudes: running (min, ⊞ of all, ⊞ of all but the min) in edge order as the
    kernel's pass 1; the edge equal to the min gets ⊞ of the others, every other ⊞ of all."""
    F, d, Z = a.shape
    S = torch.full((2, F, Z), _BIG, dtype=a.dtype, device=a.device)  # rows: A, B
    x1 = torch.full((F, Z), _BIG, dtype=a.dtype, device=a.device)
    buf = torch.empty((2, 2, F, Z), dtype=a.dtype, device=a.device)
    for j in range(d):
        aj = a[:, j]
        new = _bpx2(S, aj, buf)
        torch.where(aj < x1, S[0], new[1], out=new[1])  # B = A if a < x1 else B ⊞ a
        torch.minimum(x1, aj, out=x1)
        S = new
    return torch.where(a == x1.unsqueeze(1), S[1].unsqueeze(1), S[0].unsqueeze(1))


def _layer_math(Lg: torch.Tensor, Rg: torch.Tensor, sy: torch.Tensor, w: torch.Tensor,
                amin: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's check update on (F, d, Z) posteriors Lg and messages Rg with syndrome bits sy
    (F, Z) and weights w (1, d, 1): (new messages, new posteriors, disagreeing checks per frame)."""
    t = Lg - Rg
    a = t.abs()
    neg, bad = _signs(t, Lg, sy)
    mag = _amin_mag(a) if amin else _minsum_mag(a)
    r = torch.where(neg, -mag, mag).mul_(w)  # r = (s·mag)·w
    return r, t + r, bad


def _sweep(g: _Graph, L: torch.Tensor, R: torch.Tensor, synd: torch.Tensor, amin: bool) -> torch.Tensor:
    """One layered sweep in place on (L, R) of the active frames; disagreeing checks per frame."""
    F, Z = L.shape[0], g.Z
    bad = torch.zeros(F, dtype=torch.int64, device=L.device)
    for ly in g.layers:
        Rg = R[:, ly.e0:ly.e1].view(F, ly.d, Z)
        r, Ln, bad_r = _layer_math(L.index_select(1, ly.idx).view(F, ly.d, Z), Rg, synd[:, ly.s0:ly.s0 + Z],
                                   ly.w, amin)
        Rg.copy_(r)
        L.index_copy_(1, ly.idx, Ln.view(F, -1))
        bad += bad_r
    return bad


def _syndrome_ok(g: _Graph, L: torch.Tensor, synd: torch.Tensor) -> torch.Tensor:
    """Per frame, whether the hard decision L < 0 → 1 reproduces the syndrome."""
    F = L.shape[0]
    hard = torch.cat([L < 0, torch.zeros((F, 1), dtype=torch.bool, device=L.device)], 1)
    cnt = hard.index_select(1, g.pad_idx).view(F, g.mb, g.dmax, -1).sum(2)
    return ((cnt + synd.view(F, g.mb, -1)) & 1).view(F, -1).amax(1) == 0


def qc_decode_frames_torch(rule: str, row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int,
                           synd: np.ndarray, L: np.ndarray, R: np.ndarray, frames: np.ndarray,
                           weight: np.ndarray, max_iter: int, *, device: str) -> np.ndarray:
    """:func:`~labqfl.qkd.ldpc_qc.qc_minsum_frames` (``rule="minsum"``) or
    :func:`~labqfl.qkd.ldpc_qc.qc_aminstar_frames` (``rule="amin"``) on the torch ``device``.

    Same arguments and result, bit for bit: rows ``frames`` (distinct) of ``synd`` (F, m) uint8,
    ``L`` (F, n) float32 and ``R`` (F, E) float32 are decoded and updated in place (copied to the
    device and back); returns int64 sweeps to convergence per frame, or −1.
    """
    if rule not in RULES:
        raise ReconciliationInputError(f"qc_decode_frames_torch: rule must be one of {RULES}, got {rule!r}")
    dev = torch_device(device, what="LDPC device", error=ReconciliationInputError)
    Eb = _check_code(row_ptr, bcol, bshift, Z, weight)
    mb = row_ptr.size - 1
    fr = _check_state(synd, L, R, frames, mb * Z, (int(bcol.max()) + 1) * Z, Eb * Z)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)):
        raise ReconciliationInputError(f"qc_decode_frames_torch: max_iter must be an integer, got {max_iter!r}")
    out = np.full(fr.size, -1, np.int64)
    if fr.size == 0 or max_iter < 1:
        return out
    g = _graph(row_ptr, bcol, bshift, int(Z), L.shape[1], weight, dev)
    Ld = torch.from_numpy(L[fr]).to(dev)
    Rd = torch.from_numpy(R[fr]).to(dev)
    Sd = torch.from_numpy(synd[fr].astype(np.int64)).to(dev)
    Lout, Rout = torch.empty_like(Ld), torch.empty_like(Rd)
    pos = np.arange(fr.size)  # active row → position in frames
    for it in range(int(max_iter)):
        bad = _sweep(g, Ld, Rd, Sd, rule == "amin")
        done = ((bad == 0) & _syndrome_ok(g, Ld, Sd)).cpu().numpy()  # the sweep's one host sync
        if not done.any():
            continue
        out[pos[done]] = it + 1
        dt, kt = torch.from_numpy(done).to(dev), torch.from_numpy(~done).to(dev)
        pd = torch.from_numpy(pos[done]).to(dev)
        Lout.index_copy_(0, pd, Ld[dt])
        Rout.index_copy_(0, pd, Rd[dt])
        pos = pos[~done]
        if pos.size == 0:
            break
        kept = Ld[kt], Rd[kt]
        _wipe(Ld, Rd)
        (Ld, Rd), Sd = kept, Sd[kt]
    if pos.size:
        pt = torch.from_numpy(pos).to(dev)
        Lout.index_copy_(0, pt, Ld)
        Rout.index_copy_(0, pt, Rd)
    L[fr] = Lout.cpu().numpy()  # copies into the caller's arrays before the device state is wiped
    R[fr] = Rout.cpu().numpy()
    _wipe(Ld, Rd, Lout, Rout)
    return out


def _wipe(*state: torch.Tensor) -> None:
    """Zero the decoder's state tensors (posteriors whose signs are Bob's corrected key) before
    torch's allocator can reuse their memory. The per-layer temporaries are not wiped."""
    for t in state:
        t.zero_()
