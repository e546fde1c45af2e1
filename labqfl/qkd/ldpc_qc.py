"""Quasi-cyclic LDPC codes: 4-cycle-free shifts and vectorised layered min-sum / A-min* decoders.

Codes
-----
A quasi-cyclic (QC) code of length n = n_b·Z is the lifting of a *base graph* of m_b × n_b
entries: each base edge (r, c) with shift s stands for the Z × Z cyclic permutation that joins
check r·Z + i to variable c·Z + (i + s) mod Z (Fossorier, "Quasi-cyclic LDPC codes from circulant
permutation matrices", IEEE TIT 50, 1788 (2004)).  :func:`labqfl.qkd.ldpc.build_code` (``z`` > 0)
takes the base variable degrees from the BSC-optimised tables (Elkouss et al., arXiv:0901.2140,
Table I), places base edges with its greedy progressive-edge-growth routine, and
:func:`qc_shifts` picks each shift at random among those that close no 4-cycle in the lifted
graph: a 4-cycle through base rows r1, r2 and columns c1, c2 exists exactly when
s(r1,c1) − s(r1,c2) + s(r2,c2) − s(r2,c1) ≡ 0 (mod Z) (Fossorier 2004, Theorem 2).

Decoders
--------
Layered schedule (Hocevar, SiPS 2004).  One *layer* is one base row: its Z checks touch disjoint
variables, and the variables of one base edge are a cyclic shift of a contiguous range, so every
operation runs over Z contiguous floats (the "intra-frame" SIMD layout of QC decoders, e.g.
Le Gal & Jego, IEEE TPDS 27, 1373 (2016)).  For check c with syndrome bit s_c and edges e::

    t_e = L_v − R_e
    R_e = w_e · (−1)^s_c · Π_{e'≠e} sgn t_e' · m_e                          (sgn 0 = +1)
    L_v = t_e + R_e

:func:`qc_minsum`: m_e = min_{e'≠e} |t_e'| and w_e = α·γ_v — normalised min-sum (Chen &
Fossorier, IEEE Trans. Commun. 50, 406 (2002)) with a second, variable-degree factor γ_v
("2-D normalisation", Zhang, Wang & Fossorier, IEEE Commun. Lett. 10, 1 (2006)).
:func:`qc_aminstar`: A-min* (Jones, Valles, Smith & Villasenor, IEEE MILCOM 2003) — m_e is the
box-plus ⊞ of all |t| for every edge but the one holding the minimum, which gets the ⊞ of the
others; ⊞ uses a piecewise-linear correction (:func:`_bpx`).

While sweeping, each check compares the parity of the current posteriors' signs with s_c; after a
sweep in which no check disagreed, the hard decision (L < 0 → 1) is verified against the whole
syndrome and the decoder stops if it matches.  L and R hold the whole state (warm start: the
caller may change priors in L between calls).  :func:`qc_decode_reference` is a plain numpy
version of both (same arithmetic, check by check) used by the tests.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["qc_aminstar", "qc_aminstar_frames", "qc_decode_reference", "qc_deg2_long_cycles", "qc_minsum",
           "qc_minsum_frames", "qc_shifts",
           "qc_attempt_frames", "qc_syndrome", "qc_unsatisfied_frames"]


@numba.njit(cache=True, nogil=True)
def qc_shifts(mb: int, nb: int, Z: int, ev: np.ndarray, ec: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, int]:
    """A shift per base edge (ev[k] = column, ec[k] = row) that closes no 4-cycle when possible.

    ``draws`` (len(ev),) uniform integers: the random start of each edge's search over shifts.
    Returns (shifts, edges whose every shift closed a 4-cycle).
    """
    E = ev.size
    S = np.full((mb, nb), -1, np.int64)
    rows = np.zeros((mb, nb), np.int64)  # columns present per row, packed
    rcnt = np.zeros(mb, np.int64)
    cols = np.zeros((nb, mb), np.int64)  # rows present per column, packed
    ccnt = np.zeros(nb, np.int64)
    bad = np.zeros(Z, np.uint8)
    out = np.empty(E, np.int64)
    forced = 0
    for k in range(E):
        c1 = ev[k]
        r1 = ec[k]
        bad[:] = 0
        nb_bad = 0
        for a in range(rcnt[r1]):
            c2 = rows[r1, a]
            s12 = S[r1, c2]
            for b in range(ccnt[c1]):
                r2 = cols[c1, b]
                if S[r2, c2] < 0:
                    continue
                # s(r1,c1) = s(r1,c2) − s(r2,c2) + s(r2,c1) closes a 4-cycle
                f = (s12 - S[r2, c2] + S[r2, c1]) % Z
                if bad[f] == 0:
                    bad[f] = 1
                    nb_bad += 1
        s = draws[k] % Z
        if nb_bad >= Z:
            forced += 1
        else:
            while bad[s]:
                s += 1
                if s == Z:
                    s = 0
        S[r1, c1] = s
        out[k] = s
        rows[r1, rcnt[r1]] = c1
        rcnt[r1] += 1
        cols[c1, ccnt[c1]] = r1
        ccnt[c1] += 1
    return out, forced


@numba.njit(cache=True, nogil=True)
def qc_deg2_long_cycles(mb: int, nb: int, Z: int, ev: np.ndarray, ec: np.ndarray, shifts: np.ndarray,
                        draws: np.ndarray) -> tuple[np.ndarray, int]:
    """Re-pick the shift of the second edge of each degree-2 base column whose two rows the degree-2 columns
    before it already join (it closes a base cycle of degree-2 columns), so that the shortest cycle of lifted
    degree-2 variables through it is as long as possible, among shifts that close no 4-cycle.

    A cycle of degree-2 variables is a codeword, a path of them a near-codeword (two unsatisfied checks); a
    base cycle of length L with shift sum σ lifts to cycles of length L·Z/gcd(σ, Z) (Fossorier 2004), so the
    shifts decide how short they are.  Column c's variable j joins checks (r1, j − s1) and (r2, j − s2), i.e.
    check (r1, a) to (r2, a + s1 − s2): one breadth-first search from (r1, 0) over the lifted degree-2 graph of
    the columns placed so far gives, for every s2, the shortest cycle it would close (by circulant symmetry the
    same from every (r1, a)).  Columns in edge order (``ev``, ``ec`` as for :func:`qc_shifts`); among equally
    long choices the first from ``draws[k]`` on.  A column that closes no base cycle keeps its shift.  (Keeping
    also the shifts that already close no cycle shorter than 20 left frame errors at rates 0.80–0.82,
    docs/reconciliation.md session 41.)
    Returns (shifts, the shortest cycle closed; 2^29 if none).
    """
    E = ev.size
    deg = np.zeros(nb, np.int64)
    for k in range(E):
        deg[ev[k]] += 1
    S = np.full((mb, nb), -1, np.int64)
    for k in range(E):
        S[ec[k], ev[k]] = shifts[k]
    out = shifts.copy()
    first = np.full(nb, -1, np.int64)
    second = np.full(nb, -1, np.int64)
    for k in range(E):
        c = ev[k]
        if deg[c] == 2:
            if first[c] < 0:
                first[c] = k
            else:
                second[c] = k
    order = np.argsort(second)  # degree-2 columns in the order of their second edges
    nbr_r = np.zeros((mb, 2 * nb), np.int64)  # base rows joined by the placed degree-2 columns
    nbr_d = np.zeros((mb, 2 * nb), np.int64)  # ... check (r, a) to (nbr_r, a + nbr_d)
    nbr_c = np.zeros(mb, np.int64)
    dist = np.full(mb * Z, -1, np.int64)
    q = np.empty(mb * Z, np.int64)
    bad = np.zeros(Z, np.uint8)
    inf = 1 << 29
    worst = inf
    for o in range(nb):
        c = order[o]
        if second[c] < 0:
            continue
        k2 = second[c]
        r1 = ec[first[c]]
        r2 = ec[k2]
        s1 = S[r1, c]
        dist[:] = -1
        dist[r1 * Z] = 0
        q[0] = r1 * Z
        h = 0
        t = 1
        while h < t:
            u = q[h]
            h += 1
            r = u // Z
            a = u - r * Z
            for j in range(nbr_c[r]):
                v = nbr_r[r, j] * Z + (a + nbr_d[r, j]) % Z
                if dist[v] < 0:
                    dist[v] = dist[u] + 1
                    q[t] = v
                    t += 1
        joined = False
        for a in range(Z):
            if dist[r2 * Z + a] >= 0:
                joined = True
                break
        if joined:
            bad[:] = 0  # 4-cycles through column c and a column c2 on both rows r1, r2
            for c2 in range(nb):
                if c2 != c and S[r1, c2] >= 0 and S[r2, c2] >= 0:
                    bad[(S[r2, c2] - S[r1, c2] + s1) % Z] = 1
            best = -1
            pick = S[r2, c]
            start = draws[k2] % Z
            for i in range(Z):
                s2 = (start + i) % Z
                if bad[s2]:
                    continue
                dd = dist[r2 * Z + (s1 - s2) % Z]
                g = inf if dd < 0 else dd + 1
                if g > best:
                    best = g
                    pick = s2
                    if g >= inf:
                        break
            if best > 0:
                S[r2, c] = pick
                out[k2] = pick
                worst = min(worst, best)
        d = (s1 - S[r2, c]) % Z
        nbr_r[r1, nbr_c[r1]] = r2
        nbr_d[r1, nbr_c[r1]] = d
        nbr_c[r1] += 1
        nbr_r[r2, nbr_c[r2]] = r1
        nbr_d[r2, nbr_c[r2]] = (Z - d) % Z
        nbr_c[r2] += 1
    return out, worst


@numba.njit(cache=True, nogil=True)
def qc_syndrome(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, bits: np.ndarray) -> np.ndarray:
    """H·bits over GF(2) (uint8, m_b·Z) for a QC code: check r·Z + i is the XOR over base row r's edges of
    variable col·Z + (i + s) mod Z, so each base edge adds two contiguous XOR segments (what the CSR loop of
    :meth:`labqfl.qkd.ldpc.LdpcCode.syndrome` does one random read per edge)."""
    mb = row_ptr.size - 1
    out = np.zeros(mb * Z, np.uint8)
    for r in range(mb):
        par = out[r * Z:(r + 1) * Z]
        for k in range(row_ptr[r], row_ptr[r + 1]):
            base = bcol[k] * Z
            s = bshift[k]
            va = bits[base + s:base + Z]
            pa = par[0:Z - s]
            for i in range(Z - s):
                pa[i] ^= va[i]
            vb = bits[base:base + s]
            pb = par[Z - s:Z]
            for i in range(s):
                pb[i] ^= vb[i]
    return out


@numba.njit(cache=True, nogil=True)
def _row_mismatch(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                  L: np.ndarray, par: np.ndarray, r: int) -> None:
    """``par`` (uint8 of Z) ← the syndrome of layer ``r`` XOR the hard decision's parity (L < 0 → 1) of its
    checks (vectorised over the layer): 1 where a check is unsatisfied."""
    zero = np.float32(0.0)
    sy = synd[r * Z:(r + 1) * Z]
    for i in range(Z):
        par[i] = sy[i]
    for k in range(row_ptr[r], row_ptr[r + 1]):
        base = bcol[k] * Z
        s = bshift[k]
        La = L[base + s:base + Z]
        pa = par[0:Z - s]
        for i in range(Z - s):
            pa[i] = pa[i] ^ (La[i] < zero)
        Lb = L[base:base + s]
        pb = par[Z - s:Z]
        for i in range(s):
            pb[i] = pb[i] ^ (Lb[i] < zero)


@numba.njit(cache=True, nogil=True)
def _syndrome_ok(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                 L: np.ndarray) -> bool:
    """Whether the hard decision L < 0 → 1 reproduces ``synd`` (:func:`_row_mismatch` layer by layer, stopping at
    the first unsatisfied check's layer)."""
    par = np.empty(Z, np.uint8)
    for r in range(row_ptr.size - 1):
        _row_mismatch(row_ptr, bcol, bshift, Z, synd, L, par, r)
        for i in range(Z):
            if par[i]:
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _unsatisfied(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                 L: np.ndarray, par: np.ndarray) -> int:
    """Checks whose hard-decision parity (L < 0 → 1) differs from ``synd`` (:func:`_row_mismatch` over every
    layer); ``par``: uint8 scratch of Z."""
    cnt = 0
    for r in range(row_ptr.size - 1):
        _row_mismatch(row_ptr, bcol, bshift, Z, synd, L, par, r)
        for i in range(Z):
            cnt += par[i]
    return cnt


@numba.njit(cache=True, nogil=True, parallel=True)
def qc_unsatisfied_frames(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                          L: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per frame in ``frames`` (rows of ``synd`` (F, m) and ``L`` (F, n)): the number of checks the
    hard decision L < 0 → 1 leaves unsatisfied.  The blind protocol's stall test
    (:class:`labqfl.qkd.ldpc.LdpcBob`) ends an attempt when this count stops falling."""
    out = np.empty(frames.size, np.int64)
    for i in numba.prange(frames.size):
        par = np.empty(Z, np.uint8)
        out[i] = _unsatisfied(row_ptr, bcol, bshift, Z, synd[frames[i]], L[frames[i]], par)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _pass1(L: np.ndarray, R: np.ndarray, src: np.ndarray, dst: np.ndarray, i0: int, i1: int, loff: int,
           roff: int) -> None:
    """One contiguous segment of a base edge: t = L − R; min, second min and the two sign
    parities, read from ``src`` and written to ``dst`` (rows m1, m2, sign of t, sign of L).

    State is double-buffered on purpose: an in-place ``x = min(x, a)`` is turned by LLVM into a
    masked store (``vmaskmovps``), which is microcoded and 5× slower on AMD Zen."""
    zero = np.float32(0.0)
    Ls = L[loff + i0:loff + i1]
    Rs = R[roff + i0:roff + i1]
    s1 = src[0, i0:i1]
    s2 = src[1, i0:i1]
    sp = src[2, i0:i1]
    sl = src[3, i0:i1]
    d1 = dst[0, i0:i1]
    d2 = dst[1, i0:i1]
    dp = dst[2, i0:i1]
    dl = dst[3, i0:i1]
    for i in range(i1 - i0):
        lv = Ls[i]
        t = lv - Rs[i]
        a = abs(t)
        x1 = s1[i]
        hi = a if a > x1 else x1
        x2 = s2[i]
        d2[i] = hi if hi < x2 else x2
        d1[i] = a if a < x1 else x1
        p = sp[i]
        q = sl[i]
        mp = -p
        mq = -q
        dp[i] = mp if t < zero else p
        dl[i] = mq if lv < zero else q


@numba.njit(cache=True, nogil=True, inline="always")
def _pass2(L: np.ndarray, R: np.ndarray, st: np.ndarray, i0: int, i1: int, loff: int, roff: int,
           w: np.float32) -> None:
    """R = w·sign·(min over the other edges), L = t + R on one contiguous segment of a base edge."""
    zero = np.float32(0.0)
    Ls = L[loff + i0:loff + i1]
    Rs = R[roff + i0:roff + i1]
    s1 = st[0, i0:i1]
    s2 = st[1, i0:i1]
    sp = st[2, i0:i1]
    for i in range(i1 - i0):
        t = Ls[i] - Rs[i]
        a = abs(t)
        x1 = s1[i]
        x2 = s2[i]
        mag = x2 if a == x1 else x1  # the edge holding the minimum gets the second minimum
        p = sp[i]
        mp = -p
        s = mp if t < zero else p
        r = s * mag * w
        Rs[i] = r
        Ls[i] = t + r


@numba.njit(cache=True, nogil=True, error_model="numpy")
def qc_minsum(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
              L: np.ndarray, R: np.ndarray, weight: np.ndarray, max_iter: int, scratch: np.ndarray) -> int:
    """Layered 2-D normalised min-sum on a QC code, in place on (L, R); sweeps to convergence or −1.

    ``row_ptr`` (m_b+1) / ``bcol`` / ``bshift``: base edges grouped by base row; base edge k owns
    R[k·Z : (k+1)·Z], entry i belonging to check row·Z + i.  ``synd`` (m,) uint8.  ``L`` (n,)
    float32 posteriors, ``R`` (E,) float32 check messages.  ``weight`` (E_b,) float32: α·γ of each
    base edge (check normalisation × variable-degree correction).  ``scratch``: float32 (2, 4, Z).
    """
    mb = row_ptr.size - 1
    zero = np.float32(0.0)
    one = np.float32(1.0)
    two = np.float32(2.0)
    big = np.float32(3.0e38)
    for it in range(max_iter):
        bad = 0
        for r in range(mb):
            k0 = row_ptr[r]
            k1 = row_ptr[r + 1]
            st = scratch[0]
            sy = synd[r * Z:(r + 1) * Z]
            s1 = st[0]
            s2 = st[1]
            sp = st[2]
            sl = st[3]
            for i in range(Z):
                s1[i] = big
                s2[i] = big
                s0 = one - two * np.float32(sy[i])
                sp[i] = s0
                sl[i] = s0
            p = 0
            for k in range(k0, k1):
                base = bcol[k] * Z
                s = bshift[k]
                # i in [0, Z−s): variable base + s + i;  i in [Z−s, Z): variable base + i − (Z − s)
                _pass1(L, R, scratch[p], scratch[1 - p], 0, Z - s, base + s, k * Z)
                _pass1(L, R, scratch[p], scratch[1 - p], Z - s, Z, base + s - Z, k * Z)
                p = 1 - p
            st = scratch[p]
            sl = st[3]
            for i in range(Z):
                bad += 1 if sl[i] < zero else 0
            for k in range(k0, k1):
                base = bcol[k] * Z
                s = bshift[k]
                w = weight[k]
                _pass2(L, R, st, 0, Z - s, base + s, k * Z, w)
                _pass2(L, R, st, Z - s, Z, base + s - Z, k * Z, w)
        if bad == 0 and _syndrome_ok(row_ptr, bcol, bshift, Z, synd, L):
            return it + 1
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _bpx(x: np.float32, y: np.float32) -> np.float32:
    """|x ⊞ y| for x, y ≥ 0: min(x, y) + f(x + y) − f(|x − y|), f(u) = ln(1 + e^−u) replaced by the
    piecewise-linear max(0.6931 − 0.38·u, 0.445 − 0.132·u, 0) (exact at u = 0, 1, 3)."""
    zero = np.float32(0.0)
    c0 = np.float32(0.6931)
    c1 = np.float32(0.38)
    c2 = np.float32(0.445)
    c3 = np.float32(0.132)
    lo = x if x < y else y
    u = x + y
    d = abs(x - y)
    fu = c0 - c1 * u
    gu = c2 - c3 * u
    fu = fu if fu > gu else gu
    fu = fu if fu > zero else zero
    fd = c0 - c1 * d
    gd = c2 - c3 * d
    fd = fd if fd > gd else gd
    fd = fd if fd > zero else zero
    r = lo + fu - fd
    return r if r > zero else zero


@numba.njit(cache=True, nogil=True, inline="always")
def _am1(L: np.ndarray, R: np.ndarray, src: np.ndarray, dst: np.ndarray, i0: int, i1: int, loff: int,
         roff: int) -> None:
    """A-min* pass 1 on one segment (rows: min, ⊞ of all, ⊞ of all but the min, sign of t, sign of L)."""
    zero = np.float32(0.0)
    Ls = L[loff + i0:loff + i1]
    Rs = R[roff + i0:roff + i1]
    s1 = src[0, i0:i1]
    sa = src[1, i0:i1]
    sb = src[2, i0:i1]
    sp = src[3, i0:i1]
    sl = src[4, i0:i1]
    d1 = dst[0, i0:i1]
    da = dst[1, i0:i1]
    db = dst[2, i0:i1]
    dp = dst[3, i0:i1]
    dl = dst[4, i0:i1]
    for i in range(i1 - i0):
        lv = Ls[i]
        t = lv - Rs[i]
        a = abs(t)
        x1 = s1[i]
        A = sa[i]
        B = sb[i]
        An = _bpx(A, a)
        Bn = _bpx(B, a)
        lo = a < x1
        db[i] = A if lo else Bn
        da[i] = An
        d1[i] = a if lo else x1
        p = sp[i]
        q = sl[i]
        mp = -p
        mq = -q
        dp[i] = mp if t < zero else p
        dl[i] = mq if lv < zero else q


@numba.njit(cache=True, nogil=True, inline="always")
def _am2(L: np.ndarray, R: np.ndarray, st: np.ndarray, i0: int, i1: int, loff: int, roff: int,
         w: np.float32) -> None:
    """A-min* pass 2: the min edge gets ⊞ of the others, every other edge ⊞ of all."""
    zero = np.float32(0.0)
    Ls = L[loff + i0:loff + i1]
    Rs = R[roff + i0:roff + i1]
    s1 = st[0, i0:i1]
    sa = st[1, i0:i1]
    sb = st[2, i0:i1]
    sp = st[3, i0:i1]
    for i in range(i1 - i0):
        t = Ls[i] - Rs[i]
        a = abs(t)
        x1 = s1[i]
        A = sa[i]
        B = sb[i]
        mag = B if a == x1 else A
        p = sp[i]
        mp = -p
        s = mp if t < zero else p
        r = s * mag * w
        Rs[i] = r
        Ls[i] = t + r


@numba.njit(cache=True, nogil=True, error_model="numpy")
def qc_aminstar(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                L: np.ndarray, R: np.ndarray, weight: np.ndarray, max_iter: int, scratch: np.ndarray) -> int:
    """Layered A-min* (Jones et al., IEEE MILCOM 2003) on a QC code: like :func:`qc_minsum`, but
    the edge holding the smallest |t| gets the ⊞ (box-plus, log-domain sum-product) of the others
    and every other edge the ⊞ of all inputs, each ⊞ with a piecewise-linear correction
    (:func:`_bpx`).  ``scratch``: float32 (2, 5, Z)."""
    mb = row_ptr.size - 1
    zero = np.float32(0.0)
    one = np.float32(1.0)
    two = np.float32(2.0)
    big = np.float32(3.0e38)
    for it in range(max_iter):
        bad = 0
        for r in range(mb):
            k0 = row_ptr[r]
            k1 = row_ptr[r + 1]
            st = scratch[0]
            sy = synd[r * Z:(r + 1) * Z]
            s1 = st[0]
            sa = st[1]
            sb = st[2]
            sp = st[3]
            sl = st[4]
            for i in range(Z):
                s1[i] = big
                sa[i] = big
                sb[i] = big
                s0 = one - two * np.float32(sy[i])
                sp[i] = s0
                sl[i] = s0
            p = 0
            for k in range(k0, k1):
                base = bcol[k] * Z
                s = bshift[k]
                _am1(L, R, scratch[p], scratch[1 - p], 0, Z - s, base + s, k * Z)
                _am1(L, R, scratch[p], scratch[1 - p], Z - s, Z, base + s - Z, k * Z)
                p = 1 - p
            st = scratch[p]
            sl = st[4]
            for i in range(Z):
                bad += 1 if sl[i] < zero else 0
            for k in range(k0, k1):
                base = bcol[k] * Z
                s = bshift[k]
                w = weight[k]
                _am2(L, R, st, 0, Z - s, base + s, k * Z, w)
                _am2(L, R, st, Z - s, Z, base + s - Z, k * Z, w)
        if bad == 0 and _syndrome_ok(row_ptr, bcol, bshift, Z, synd, L):
            return it + 1
    return -1


@numba.njit(cache=True, nogil=True, parallel=True)
def qc_aminstar_frames(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                       L: np.ndarray, R: np.ndarray, frames: np.ndarray, weight: np.ndarray,
                       max_iter: int) -> np.ndarray:
    """:func:`qc_aminstar` on rows ``frames`` of (synd, L, R), frames in parallel threads."""
    out = np.empty(frames.size, np.int64)
    for i in numba.prange(frames.size):
        f = frames[i]
        scratch = np.empty((2, 5, Z), np.float32)
        out[i] = qc_aminstar(row_ptr, bcol, bshift, Z, synd[f], L[f], R[f], weight, max_iter, scratch)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def qc_minsum_frames(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                     L: np.ndarray, R: np.ndarray, frames: np.ndarray, weight: np.ndarray,
                     max_iter: int) -> np.ndarray:
    """:func:`qc_minsum` on rows ``frames`` of (synd, L, R), frames in parallel threads; sweeps
    per frame or −1.  Each frame's arithmetic is independent of the thread count."""
    out = np.empty(frames.size, np.int64)
    for i in numba.prange(frames.size):
        f = frames[i]
        scratch = np.empty((2, 4, Z), np.float32)
        out[i] = qc_minsum(row_ptr, bcol, bshift, Z, synd[f], L[f], R[f], weight, max_iter, scratch)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def qc_attempt_frames(amin: bool, row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int,
                      synd: np.ndarray, L: np.ndarray, R: np.ndarray, frames: np.ndarray, weight: np.ndarray,
                      max_iter: int, every: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """One attempt of the blind protocol on rows ``frames``: :func:`qc_aminstar` (``amin``) or
    :func:`qc_minsum`, at most ``max_iter`` sweeps, run ``every`` at a time; after each chunk the
    checks left unsatisfied are counted, and from sweep max(2·every, 3) on the attempt ends once the
    count is above ``ratio`` × the count one chunk before (the decoder has stalled: more sweeps at
    this rate rarely help, more revealed values do).  ``every`` ≤ 0: one call of ``max_iter``.
    Returns per frame (sweeps to convergence or −1, sweeps spent).  Frame after frame, chunks
    inside, so a frame's messages stay in cache; the same arithmetic as chunked calls of the kernel
    (the decoder state lives in L and R), tested against such calls."""
    res = np.empty(frames.size, np.int64)
    used = np.empty(frames.size, np.int64)
    for i in numba.prange(frames.size):
        f = frames[i]
        sy = synd[f]
        Lf = L[f]
        Rf = R[f]
        scratch = np.empty((2, 5, Z), np.float32)
        par = np.empty(Z, np.uint8)
        step = max_iter if every <= 0 else every
        j = 0
        prev = -1
        out = -1
        while j < max_iter:
            k = min(step, max_iter - j)
            if amin:
                r = qc_aminstar(row_ptr, bcol, bshift, Z, sy, Lf, Rf, weight, k, scratch)
            else:
                r = qc_minsum(row_ptr, bcol, bshift, Z, sy, Lf, Rf, weight, k, scratch)
            if r > 0:
                out = j + r
                j += r
                break
            j += k
            if j >= max_iter:
                break
            cnt = _unsatisfied(row_ptr, bcol, bshift, Z, sy, Lf, par)
            if prev >= 0 and j >= max(2 * step, 3) and cnt > ratio * prev:
                break
            prev = cnt
        res[i] = out
        used[i] = j
    return res, used


def _bpx_reference(x: np.float32, y: np.float32) -> np.float32:
    f32 = np.float32

    def f(u: np.float32) -> np.float32:
        return max(f32(0.6931) - f32(0.38) * u, f32(0.445) - f32(0.132) * u, f32(0.0))

    r = min(x, y) + f(x + y) - f(abs(x - y))
    return max(r, f32(0.0))


def qc_decode_reference(row_ptr: np.ndarray, bcol: np.ndarray, bshift: np.ndarray, Z: int, synd: np.ndarray,
                        llr: np.ndarray, weight: np.ndarray, max_iter: int, *, rule: str = "minsum"
                        ) -> tuple[np.ndarray, int]:
    """Plain numpy, one check at a time, in layer order: the update and stopping rules of
    :func:`qc_minsum` (``rule="minsum"``) or :func:`qc_aminstar` (``rule="amin"``).

    Each check c = r·Z + i gathers its variables v_k = col_k·Z + (i + shift_k) mod Z, computes
    t = L_v − R_e, and writes R_e = w_k·(−1)^s_c·Π_{e'≠e} sgn t_e'·m_e with m_e the min of the
    other |t| (min-sum) or the ⊞ of all |t| in edge order, the min edge getting the ⊞ of the
    others (A-min*).  Returns (hard decision uint8, sweeps) or (hard decision, −1).
    """
    f32 = np.float32
    big = f32(3.0e38)
    mb = row_ptr.size - 1
    L = np.asarray(llr, dtype=f32).copy()
    R = np.zeros(int(row_ptr[-1]) * Z, f32)
    for it in range(max_iter):
        bad = False
        for r in range(mb):
            ks = np.arange(row_ptr[r], row_ptr[r + 1])
            for i in range(Z):
                vs = bcol[ks] * Z + (i + bshift[ks]) % Z
                es = ks * Z + i
                lv = L[vs]
                t = (lv - R[es]).astype(f32)
                s0 = int(synd[r * Z + i])
                bad = bad or bool((int((lv < 0).sum()) + s0) & 1)
                sgn = f32(-1.0) if (int((t < 0).sum()) + s0) & 1 else f32(1.0)
                a = np.abs(t)
                m1 = a.min()
                if rule == "minsum":
                    rest = np.sort(a)
                    m2 = rest[1] if a.size > 1 else big
                    mag = np.where(a == m1, m2, m1).astype(f32)
                else:
                    A = B = big
                    x1 = big
                    for x in a:  # the kernel's running updates, in edge order
                        An, Bn = _bpx_reference(A, x), _bpx_reference(B, x)
                        B = A if x < x1 else Bn
                        A = An
                        x1 = min(x1, x)
                    mag = np.where(a == m1, B, A).astype(f32)
                sig = np.where(t < 0, -sgn, sgn).astype(f32)
                rr = (sig * mag * weight[ks]).astype(f32)
                R[es] = rr
                L[vs] = t + rr
        hard = (L < 0).astype(np.uint8)
        if not bad:
            ok = True
            for r in range(mb):
                ks = np.arange(row_ptr[r], row_ptr[r + 1])
                for i in range(Z):
                    vs = bcol[ks] * Z + (i + bshift[ks]) % Z
                    ok = ok and not (int(hard[vs].sum()) + int(synd[r * Z + i])) & 1
            if ok:
                return hard, it + 1
    return hard, -1
