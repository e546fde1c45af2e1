"""Rate-adaptive LDPC syndrome reconciliation: blind protocol with untainted puncturing.

Codes
-----
:func:`build_code` constructs, locally and deterministically from a seed, an irregular binary LDPC
code of length n and mother rate R (m = round((1−R)·n) checks).  Variable-node degrees follow the
edge-perspective distributions λ(x) optimised for the BSC by Elkouss, Leverrier, Alléaume &
Boutros, "Efficient reconciliation protocol for discrete-variable QKD", ISIT 2009
(arXiv:0901.2140, Table I, rates 0.5, 0.55, …, 0.9; a rate between two table rates uses the
nearest one, rates above 0.9 the 0.9 one); check degrees are concentrated (two consecutive values,
as the paper's ρ(x)).  Edges are placed by a greedy progressive-edge-growth construction (Hu,
Eleftheriou & Arnold, IEEE TIT 51, 386 (2005)) truncated at depth one: variables in order of
decreasing degree, each edge goes to the least-filled check not within distance 2 of the variable,
so the graph has **no 4-cycles** (girth ≥ 6) whenever such a check exists — at n = 16384 for
every mother rate up to 0.93 (``LdpcCode.forced_4cycles`` counts the exceptions; 19 edges at
0.94; short codes, n ≲ 4096, at high rate have many).  With ``z`` > 0 the same degrees and
PEG routine build an n/z-column base graph that is lifted by z × z circulants whose shifts close
no 4-cycle (quasi-cyclic codes, :mod:`labqfl.qkd.ldpc_qc`; the default for the ``amin16``, ``amin`` and
``minsum`` decoders is n = 65536, z = 256).  Codes are cached per (n, R, seed, z, construction); new plans of
the quasi-cyclic decoders take construction 3 (:data:`DEFAULT_CONSTRUCTION`; construction 2 from 2026-12-07,
3 — heavier high-rate codes — since session 43).

Protocol (blind reconciliation, Martinez-Mateo, Elkouss & Martin, QIC 12, 791 (2012); Kiktenko
et al., arXiv:1612.03673; untainted puncturing, Elkouss et al., IEEE WCL 1, 585 (2012))
--------------------------------------------------------------------------------------------------
Each frame of the code holds ``n − d`` key bits and ``d`` *filler* symbols placed on untainted
positions (no two filler symbols share a check neighbourhood).  Alice fills them with fresh random
bits from the OS and sends the syndrome s = H·z (m bits).  Because every filler column has private
checks, the filler bits mask d syndrome bits: the message is counted as m disclosed bits with a
credit of d, i.e. leakage m − d (counted at the channel).  Bob decodes with the filler symbols
*punctured* (LLR 0).  While a frame's decoded word does not reproduce Alice's syndrome, Bob asks
for the values of the next ``step`` positions of the frame's public *reveal order* — first the d
filler symbols, then (a fallback that keeps the frame-error rate low) key positions in a fixed
pseudo-random order — each revealed value leaks one bit and is then *shortened* (LLR ±∞).  The
decoder is **warm-started**: its messages are kept between attempts and only the revealed symbols'
priors change.  A frame that still fails after ``max_reveal`` values is reported
(``frame_errors``, ``details['frame_ok']``) and left uncorrected — never silent.  Bits of the last
partial frame are padded with shortened zeros (known to both, no leakage).

Decoders (``plan_ldpc(Q, decoder=...)``, Bob's side only: the messages do not depend on them)
----------------------------------------------------------------------------------------------
* ``amin16`` (default since 2026-12-07: ``amin`` in 16-bit fixed point, frames interleaved in SIMD lanes,
  :mod:`labqfl.qkd.ldpc_batch`; CPU only, a ``device`` runs ``amin``), ``amin`` and ``minsum``: **quasi-cyclic** codes (``build_code(n, R, seed, z)``,
  n = 65536, z = 256: a PEG base graph with the same degree table, lifted by z × z circulants
  whose shifts close no 4-cycle) decoded by the vectorised layered kernels of
  :mod:`labqfl.qkd.ldpc_qc` — one layer is z checks on z contiguous variables per base edge, so
  every operation runs over z floats (AVX2).  ``amin``: A-min* (Jones et al., MILCOM 2003: the
  edge with the smallest input gets the box-plus of the others, every other edge the box-plus of
  all, with a piecewise-linear correction), messages × :data:`AMIN_ALPHA`.  ``minsum``: 2-D
  normalised min-sum (α per check, γ per variable degree: Zhang, Wang & Fossorier 2006; plain
  normalised min-sum fails with these distributions, whose variable degrees reach 73).
* ``bp``: the previous engine — random PEG codes, n = 16384, layered sum-product belief
  propagation (layered schedule: Hocevar, SiPS 2004) with Gallager's φ(x) = −ln tanh(x/2) from a
  table, in float32 log-likelihood ratios; kept as the benchmark baseline.

All stop as soon as the hard decision reproduces Alice's syndrome; the frames of a block are
decoded in parallel threads.  ``preset`` (:data:`PRESETS`) trades f against speed.  Efficiency
f = leaked / (N·h(Q)); Shannon's bound is f ≥ 1.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import numba
import numpy as np

from labqfl.qkd.ldpc_batch import LANES, BatchState
from labqfl.qkd.ldpc_qc import (
    qc_aminstar_frames,
    qc_attempt_frames,
    qc_deg2_long_cycles,
    qc_minsum_frames,
    qc_shifts,
    qc_syndrome,
    qc_unsatisfied_frames,
)
from labqfl.qkd.messaging import Channel, FieldValue, LocalChannel, Message, MessageError
from labqfl.qkd.reconciliation import (
    ReconciliationInputError,
    ReconciliationResult,
    binary_entropy,
    validate_reconciliation_input,
)

__all__ = [
    "CONSTRUCTIONS",
    "DECODERS",
    "DEGREE_DISTRIBUTIONS",
    "MOTHER_RATES",
    "PRESETS",
    "LdpcAlice",
    "LdpcBob",
    "LdpcCode",
    "LdpcPlan",
    "build_code",
    "decode_syndrome",
    "decode_syndrome_reference",
    "minsum_weights",
    "plan_ldpc",
    "reconcile_ldpc",
]

# Elkouss, Leverrier, Alléaume, Boutros, arXiv:0901.2140, Table I: edge-perspective λ_i keyed by
# variable degree i (the paper writes λ_i x^(i−1)).  Rate 0.85: the paper prints 0.094274 for λ_5,
# which makes the coefficients sum to 1.0515; 0.04274 (sum 1.0000) is evidently meant.
DEGREE_DISTRIBUTIONS: dict[float, dict[int, float]] = {
    0.90: {2: 0.07689, 3: 0.28096, 5: 0.08933, 9: 0.19620, 12: 0.30631, 21: 0.05031},
    0.85: {2: 0.04528, 3: 0.20537, 4: 0.05878, 5: 0.04274, 6: 0.08454, 7: 0.01176, 9: 0.05137,
           21: 0.50015},
    0.80: {2: 0.09420, 3: 0.18088, 6: 0.11972, 7: 0.08550, 8: 0.09816, 17: 0.07194, 26: 0.34960},
    0.75: {2: 0.10805, 3: 0.09511, 4: 0.01449, 5: 0.13764, 6: 0.10667, 7: 0.05288, 28: 0.01107,
           31: 0.47408},
    0.70: {2: 0.05343, 3: 0.29406, 6: 0.00896, 9: 0.15571, 12: 0.12189, 25: 0.19872, 46: 0.09572,
           62: 0.02741, 65: 0.04056, 73: 0.00354},
    0.65: {2: 0.10451, 3: 0.15652, 4: 0.08057, 5: 0.00056, 9: 0.12151, 13: 0.10485, 15: 0.10719,
           21: 0.00771, 51: 0.31656},
    0.60: {2: 0.11040, 3: 0.20804, 8: 0.14163, 9: 0.14858, 26: 0.14438, 27: 0.08909, 46: 0.00748,
           71: 0.15038},
    0.55: {2: 0.16880, 3: 0.20994, 6: 0.18095, 15: 0.03846, 16: 0.02635, 18: 0.23454, 19: 0.05815,
           31: 0.08280},
    0.50: {2: 0.14438, 3: 0.19026, 4: 0.01836, 5: 0.00233, 6: 0.04697, 8: 0.053943, 9: 0.05590,
           10: 0.01290, 11: 0.00162, 14: 0.06159, 15: 0.13115, 17: 0.01481, 47: 0.00879,
           49: 0.00650, 55: 0.00210, 56: 0.00099, 57: 0.11178, 58: 0.06238, 59: 0.05094,
           66: 0.02230},
}
"""Edge-perspective variable-degree distributions per design rate (arXiv:0901.2140, Table I)."""

MOTHER_RATES = tuple(round(0.50 + 0.01 * k, 2) for k in range(45))
"""Mother code rates :func:`plan_ldpc` may choose (0.50 … 0.94 in steps of 0.01)."""

_BIG = 50.0
_DTYPE = np.float32


@dataclass(frozen=True)
class LdpcCode:
    """Parity-check matrix H (m × n) in two sparse layouts plus untainted puncturing positions.

    ``check_ptr`` (m+1) / ``check_var`` (E): variable index of each edge, edges grouped by check.
    ``var_ptr`` (n+1) / ``var_edge`` (E): edge ids grouped by variable.  ``untainted``: variable
    indices, in the order they are used as filler, whose check neighbourhoods are disjoint.
    ``forced_4cycles``: edges the construction could only place by closing a 4-cycle (0 normally).
    Quasi-cyclic codes (``z`` > 0) also carry their base graph: ``base_ptr`` (m/z + 1) /
    ``base_col`` / ``base_shift``, base edges grouped by base row (see :mod:`labqfl.qkd.ldpc_qc`).
    """

    n: int
    m: int
    rate: float
    seed: int
    check_ptr: np.ndarray
    check_var: np.ndarray
    var_ptr: np.ndarray
    var_edge: np.ndarray
    untainted: np.ndarray
    forced_4cycles: int = 0
    z: int = 0
    base_ptr: np.ndarray | None = None
    base_col: np.ndarray | None = None
    base_shift: np.ndarray | None = None
    construction: int = 0

    @property
    def edges(self) -> int:
        return int(self.check_var.size)

    @property
    def quasi_cyclic(self) -> bool:
        """True for a lifted base graph (``z`` > 0), decoded by :mod:`labqfl.qkd.ldpc_qc`."""
        return self.z > 0

    def syndrome(self, bits: np.ndarray) -> np.ndarray:
        """H·bits over GF(2) (uint8, length m); a quasi-cyclic code's by contiguous segments per base edge
        (:func:`~labqfl.qkd.ldpc_qc.qc_syndrome`, the same bits)."""
        if self.z and self.base_ptr is not None and self.base_col is not None and self.base_shift is not None:
            return qc_syndrome(self.base_ptr, self.base_col, self.base_shift, self.z, np.ascontiguousarray(bits))
        return _syndrome(self.check_ptr, self.check_var, bits)


def _distribution(rate: float) -> dict[int, float]:
    key = min(DEGREE_DISTRIBUTIONS, key=lambda r: (abs(r - min(rate, 0.9)), r))
    return DEGREE_DISTRIBUTIONS[key]


def _degree_counts(n: int, rate: float) -> dict[int, int]:
    """Node counts per variable degree for length n (node fractions ∝ λ_i / i)."""
    lam = _distribution(rate)
    inv = {d: v / d for d, v in lam.items()}
    tot = sum(inv.values())
    counts = {d: int(round(n * v / tot)) for d, v in inv.items()}
    counts[min(counts)] += n - sum(counts.values())
    return counts


@numba.njit(cache=True, nogil=True, inline="always")
def _least_filled(start: int, v: int, excluded: np.ndarray, cap: np.ndarray, ccnt: np.ndarray, maxc: int,
                  stop_at: int) -> int:
    """Check with the most remaining capacity, scanning cyclically from ``start``, skipping checks
    with ``excluded[c] == v`` and full ones; stops early once a check reaches ``stop_at`` (the
    global maximum, offset by ``maxc``). −1 if none qualifies."""
    m = cap.size
    best = -1
    bestr = -(1 << 40)
    for j in range(m):
        c = start + j
        if c >= m:
            c -= m
        if excluded[c] == v or ccnt[c] >= maxc:
            continue
        r = cap[c] - ccnt[c]
        if r > bestr:
            best = c
            bestr = r
            if r + maxc >= stop_at:
                break
    return best


@numba.njit(cache=True, nogil=True, inline="always")
def _root(parent: np.ndarray, c: int) -> int:
    """Union-find root of ``c`` (no path compression: the base graphs have ≤ a few hundred checks)."""
    while parent[c] != c:
        c = parent[c]
    return c


@numba.njit(cache=True, nogil=True)
def _peg_edges(vdeg: np.ndarray, cap: np.ndarray, offs: np.ndarray, forest2: bool = False
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy depth-1 PEG: returns (edge variable, edge check, edges that closed a 4-cycle).

    ``vdeg``: degree per variable, processed in index order.  ``cap``: target degree per check.
    ``offs``: one random scan offset per edge (ties between equally filled checks).
    ``forest2``: the second edge of a degree-2 variable never joins two checks already connected
    through degree-2 variables, so those variables form a forest (no cycle of degree-2 variables, i.e.
    no codeword made of them alone; needs fewer degree-2 variables than checks).  False: the plain PEG,
    and with True the same edges wherever that rule does not bind.
    """
    n = vdeg.size
    m = cap.size
    E = 0
    for v in range(n):
        E += vdeg[v]
    ev = np.empty(E, np.int64)
    ec = np.empty(E, np.int64)
    maxc = 0
    for c in range(m):
        maxc = max(maxc, cap[c])
    maxc = maxc + 64
    cadj = np.empty((m, maxc), np.int64)
    ccnt = np.zeros(m, np.int64)
    vptr = np.zeros(n + 1, np.int64)
    for v in range(n):
        vptr[v + 1] = vptr[v] + vdeg[v]
    vadj = np.empty(E, np.int64)
    vcnt = np.zeros(n, np.int64)
    mark = np.full(m, -1, np.int64)  # checks within distance 2 of the current variable
    own = np.full(m, -1, np.int64)  # checks already adjacent to the current variable
    comp = np.arange(m)  # forest2: union-find of checks joined by degree-2 variables
    same = np.full(m, -1, np.int64)  # forest2: checks in the first check's degree-2 component
    forced = 0
    # histogram of remaining capacities (offset by maxc) so a scan can stop at the global maximum
    hist = np.zeros(2 * maxc + 2, np.int64)
    for c in range(m):
        hist[cap[c] + maxc] += 1
    top = maxc + maxc
    while top > 0 and hist[top] == 0:
        top -= 1
    e = 0
    for v in range(n):
        for j in range(vdeg[v]):
            tree = forest2 and vdeg[v] == 2 and j == 1
            if tree:
                r0 = _root(comp, ec[e - 1])
                for c in range(m):
                    if _root(comp, c) == r0:
                        mark[c] = v
                        same[c] = v
            best = _least_filled(offs[e], v, mark, cap, ccnt, maxc, top)
            if best < 0:  # every check is within distance 2: accept a 4-cycle, avoid parallel edges
                forced += 1  # (and, forest2, a cycle of degree-2 variables while there is another way)
                best = _least_filled(offs[e], v, same if tree else own, cap, ccnt, maxc, 1 << 62)
                if best < 0:
                    best = _least_filled(offs[e], v, own, cap, ccnt, maxc, 1 << 62)
            c = best
            if tree:
                comp[_root(comp, ec[e - 1])] = _root(comp, c)
            ev[e] = v
            ec[e] = c
            e += 1
            own[c] = v
            mark[c] = v
            for t in range(ccnt[c]):
                u = cadj[c, t]
                for s in range(vcnt[u]):
                    mark[vadj[vptr[u] + s]] = v
            cadj[c, ccnt[c]] = v
            hist[cap[c] - ccnt[c] + maxc] -= 1
            ccnt[c] += 1
            hist[cap[c] - ccnt[c] + maxc] += 1
            while top > 0 and hist[top] == 0:
                top -= 1
            vadj[vptr[v] + vcnt[v]] = c
            vcnt[v] += 1
    return ev, ec, forced


def build_code(n: int, rate: float, seed: int = 0, z: int = 0, construction: int = 0) -> LdpcCode:
    """Irregular LDPC code of length ``n`` and mother rate ``rate`` (see module docstring).

    ``z`` = 0: random PEG construction.  ``z`` > 0: quasi-cyclic lifting of an n/z-column base
    graph by z × z circulants (:func:`labqfl.qkd.ldpc_qc.qc_shifts`); ``n`` must be a multiple of
    ``z`` and the base graph needs at least 16 columns.  ``construction`` (:data:`CONSTRUCTIONS`): 0,
    the default, the codes of before; 1 (quasi-cyclic only) changes the codes above rate 0.875: the
    rate-0.85 degree table instead of the rate-0.9 one, at most m_b − 1 degree-2 base columns (the
    table's others get degree 3), placed so that they form a forest in the base graph, hence in the
    lifted graph (the lift of a tree is z trees) — no codeword of degree-2 variables alone
    (:func:`_build_qc`).  At and below 0.875 construction 1 is construction 0 (the same code object,
    ``construction`` 0).  2: construction 1 above 0.875; at and below it the default base graph with the
    shifts of its degree-2 columns re-picked so that their cycles in the lift are long (weight 14–16 instead of
    7–8 at rates 0.80–0.82; :func:`~labqfl.qkd.ldpc_qc.qc_deg2_long_cycles`).
    """
    if n < 64 or not 0.05 <= rate <= 0.95:
        raise ReconciliationInputError(f"LDPC code needs n >= 64 and rate in [0.05, 0.95], got n={n}, rate={rate}")
    if z < 0 or (z and (n % z or n // z < 16)):
        raise ReconciliationInputError(f"LDPC lifting size z={z} must divide n={n} into at least 16 base columns")
    if construction not in CONSTRUCTIONS or (construction and not z):
        raise ReconciliationInputError(f"LDPC construction must be one of {CONSTRUCTIONS} (other than 0 only for a "
                                       f"quasi-cyclic code, z > 0), got construction={construction!r}, z={z}")
    if construction == 1 and rate <= _C1_ABOVE:
        construction = 0  # the same code
    if construction == 3 and _c3_heavier(rate) == 0:
        construction = 2  # the same code
    return _build_code(n, rate, seed, z, int(construction))


CONSTRUCTIONS = (0, 1, 2, 3)
"""Code constructions of :func:`build_code`: 0 (:func:`build_code`'s default) the codes of before; 1 above mother
rate 0.875 quasi-cyclic codes from the rate-0.85 degree table whose degree-2 variables form a forest; 2 as 1, and
at and below 0.875 long lifted cycles of degree-2 variables (docs/reconciliation.md session 41); 3 as 2, with
heavier variable degrees above 0.875 (:data:`_C3_HEAVIER`; session 43).  New plans of the quasi-cyclic decoders
take :data:`DEFAULT_CONSTRUCTION`."""
DEFAULT_CONSTRUCTION = 3
"""The construction :func:`plan_ldpc` / :func:`reconcile_ldpc` take for a quasi-cyclic decoder when none is given
(random PEG codes, ``decoder="bp"`` or z = 0: 0, the only one).  3 since session 43 (2026-12-08): construction 2's
codes at and below mother rate 0.875 (QBER above ≈ 1.35 %), heavier ones above (:data:`_C3_HEAVIER`).  Construction
2 (the default from session 41) against construction 0 on the same frames (docs/reconciliation.md, session 41): at
QBER 0.5–1.4 % f 1.15–1.30 instead of 1.18–1.43 and no frame decoded to a wrong codeword (construction 0: 3); at
2.25 / 2.6 % 0 of 288 frames undecoded each (4 and 2); 1.5–3.5 % f within ±0.008; at 2, 4, 6 % the same codes;
8 % within noise."""
_C3_HEAVIER = ((0.925, 16), (0.915, 12), (0.895, 8), (0.875, 4))
"""Construction 3 above mother rate 0.875, as (lowest rate, k): per 256 base columns, k degree-3 columns become
degree 21 and k more become degree 6, and there are 25 degree-2 columns (:data:`_C3_DEG2`; construction 2: the
table's 35 less what the forest's cap of m_b − 1 moves to degree 3) — the rate-0.85 table made heavier: k = 16 at
rates 0.93–0.94, 12 at 0.92 (QBER below 0.55 %, :func:`c3_highest_rate`), 8 at 0.90–0.91, 4 at 0.88–0.89.  Chosen on
the blind protocol's f (amin16, efficient preset, 48 frames per point, frame seeds 300–800; about 30 count tables at QBER 0.4–1.35 %, docs/reconciliation.md, session
43): lighter tables (more degree 3, as the rate-0.9 table) decoded worse everywhere; heavier ones better where the
plan punctures much (low QBER for the rate) and worse near the top of a rate's QBER range (frames left undecoded at
0.9 % on rate 0.91 and at 1.35 % on 0.88 with k = 12–16).  On fresh frames (seed 700, 96 per point), construction
2 → 3: f 1.2827 → 1.2237, 1.2727 → 1.2055, 1.2502 → 1.1897, 1.2105 → 1.1717, 1.1835 → 1.1732, 1.1802 → 1.1634 at
0.5, 0.6, 0.7, 0.8, 0.9, 1.0 %, no frame undecoded in either, 35–50 % fewer sweeps below 0.9 %.  At rates 0.92–0.94
k = 8 / 12 / 16 gave f 1.2217 / 1.2063 / 1.2083 at 0.5 % on rate 0.92 and 1.242 / 1.2271 / 1.222 at 0.4 % on 0.93
(seed 760)."""
_C3_DEG2 = 25
"""Construction 3's degree-2 base columns per 256 above rate 0.875 (:data:`_C3_HEAVIER`), before the forest's cap."""


def _c3_heavier(rate: float) -> int:
    """k of :data:`_C3_HEAVIER` for mother rate ``rate`` (0 at and below 0.875: construction 2's code)."""
    if rate <= _C1_ABOVE:
        return 0
    return next((k for lowest, k in _C3_HEAVIER if rate >= lowest - 1e-9), 0)


_C1_ABOVE = 0.875
"""Constructions 1 and 2 take the rate-0.85 table and the degree-2 forest above this mother rate only.
Below, the forest removed the frame errors of rates 0.80–0.82 (QBER ≈ 2.2–2.6 %: 6 of 576 frames left 4–7
bits from Alice's word, against 0) but cost f ≈ +0.007–0.01 at 0.78–0.80 (docs/reconciliation.md, session 41);
construction 2 lengthens those cycles instead."""


@lru_cache(maxsize=24)
def _build_code(n: int, rate: float, seed: int, z: int, construction: int) -> LdpcCode:
    """:func:`build_code` after its checks, cached per (n, rate, seed, z, construction)."""
    if z:
        return _build_qc(n, rate, seed, z, construction)
    rng = np.random.default_rng([seed, n, int(round(rate * 10000)), 2])
    m = int(round((1.0 - rate) * n))
    counts = _degree_counts(n, rate)
    # a variable cannot have more distinct checks than there are (tiny codes only)
    vdeg = np.concatenate([np.full(c, min(d, m), np.int64) for d, c in sorted(counts.items(), reverse=True) if c])
    E = int(vdeg.sum())
    cap = np.full(m, E // m, np.int64)
    cap[rng.permutation(m)[: E - int(cap.sum())]] += 1
    offs = rng.integers(0, m, E).astype(np.int64)
    ev, ec, forced = _peg_edges(vdeg, cap, offs)
    # node labels: shuffle so filler/key positions are not tied to the construction order
    relabel = rng.permutation(n).astype(np.int64)
    return _finish_code(n, m, rate, seed, relabel[ev], ec, rng, int(forced))


def _finish_code(n: int, m: int, rate: float, seed: int, vs: np.ndarray, ec: np.ndarray,
                 rng: np.random.Generator, forced: int, **qc: object) -> LdpcCode:
    """Sparse layouts and untainted puncturing positions from an edge list (variable, check)."""
    order = np.lexsort((vs, ec))
    check_var = np.ascontiguousarray(vs[order])
    cs = ec[order]
    check_ptr = np.zeros(m + 1, np.int64)
    np.add.at(check_ptr, cs + 1, 1)
    check_ptr = np.cumsum(check_ptr)
    var_edge = np.argsort(check_var, kind="stable").astype(np.int64)
    var_ptr = np.zeros(n + 1, np.int64)
    np.add.at(var_ptr, check_var + 1, 1)
    var_ptr = np.cumsum(var_ptr)
    # untainted puncturing candidates: low degree first, random within a degree
    deg = np.diff(var_ptr)
    cand = np.lexsort((rng.random(n), deg))
    tainted = np.zeros(m, bool)
    chosen = []
    for v in cand:
        checks = cs[var_edge[var_ptr[v]:var_ptr[v + 1]]]
        if deg[v] == 0 or tainted[checks].any():
            continue
        tainted[checks] = True  # these checks now belong to v alone
        chosen.append(int(v))
    return LdpcCode(n, m, rate, seed, check_ptr, check_var, var_ptr, var_edge,
                    np.array(chosen, dtype=np.int64), forced, **qc)  # type: ignore[arg-type]


def _build_qc(n: int, rate: float, seed: int, z: int, construction: int = 0) -> LdpcCode:
    """Quasi-cyclic code: PEG base graph with the table's degrees, shifts free of 4-cycles.

    ``construction`` 1 (:func:`build_code` passes it above rate 0.875 only), and 2 above 0.875: the
    rate-0.85 table; its degree-2 columns above m_b − 1 become degree 3 and the PEG keeps the degree-2
    columns a forest (:func:`_peg_edges`).  ``construction`` 2 at and below 0.875: the rate's own table and
    PEG, and the shifts of the degree-2 columns that close base cycles re-picked for long lifted cycles
    (:func:`~labqfl.qkd.ldpc_qc.qc_deg2_long_cycles`).  Construction 0's
    rate-0.9 table gives 49 degree-2 columns (of 256), more than the 15–31 base rows of mother rates
    0.88–0.94: the base graph has 19–35 independent cycles of them, and the lift short ones — codewords of
    weight 5 at rates 0.92 and 0.94, 7–8 at 0.88–0.90 (docs/reconciliation.md, LDPC round of 2026-12-07,
    session 41).  A cycle-free set of
    degree-2 columns is what IRA / accumulator (dual-diagonal) base graphs guarantee by construction
    (Richardson & Urbanke, Modern Coding Theory (2008), §7; 5G NR base graphs, 3GPP TS 38.212 §5.3.2).
    """
    nb = n // z
    rng = np.random.default_rng([seed, n, int(round(rate * 10000)), z, 3])
    mb = max(1, int(round((1.0 - rate) * nb)))
    high = construction >= 1 and rate > _C1_ABOVE
    deg2_forest = high or construction == 1
    counts = _degree_counts(nb, 0.85 if high else rate)
    if construction == 3 and high:
        counts = _c3_counts(counts, nb, rate)
    if deg2_forest and counts.get(2, 0) > mb - 1:
        counts[3] = counts.get(3, 0) + counts[2] - (mb - 1)
        counts[2] = mb - 1
    vdeg = np.concatenate([np.full(c, min(d, mb), np.int64) for d, c in sorted(counts.items(), reverse=True) if c])
    E = int(vdeg.sum())
    cap = np.full(mb, E // mb, np.int64)
    cap[rng.permutation(mb)[: E - int(cap.sum())]] += 1
    ev, ec, _ = _peg_edges(vdeg, cap, rng.integers(0, mb, E).astype(np.int64), deg2_forest)
    # base columns in random order, so the high-degree columns are spread over the frame
    perm = rng.permutation(nb).astype(np.int64)
    ev = perm[ev]
    draws = rng.integers(0, z, E).astype(np.int64)
    shifts, forced = qc_shifts(mb, nb, z, ev, ec, draws)
    if construction >= 2:  # long lifted cycles of degree-2 variables (a no-op on a forest)
        shifts, _ = qc_deg2_long_cycles(mb, nb, z, ev, ec, shifts, draws[::-1].copy())
    order = np.lexsort((ev, ec))
    bcol, brow, bshift = ev[order], ec[order], shifts[order]
    base_ptr = np.zeros(mb + 1, np.int64)
    np.add.at(base_ptr, brow + 1, 1)
    base_ptr = np.cumsum(base_ptr)
    i = np.tile(np.arange(z, dtype=np.int64), bcol.size)
    chk = np.repeat(brow, z) * z + i
    var = np.repeat(bcol, z) * z + (i + np.repeat(bshift, z)) % z
    for a in (base_ptr, bcol, bshift):
        a.setflags(write=False)
    return _finish_code(n, mb * z, rate, seed, var, chk, rng, int(forced) * z, z=z,
                        base_ptr=base_ptr, base_col=np.ascontiguousarray(bcol),
                        base_shift=np.ascontiguousarray(bshift), construction=construction)


def _c3_counts(counts: dict[int, int], nb: int, rate: float) -> dict[int, int]:
    """Construction 3's base-column counts above rate 0.875 from the rate-0.85 table's ``counts`` for ``nb``
    columns (:data:`_C3_HEAVIER`, :data:`_C3_DEG2`; both scaled by nb/256)."""
    out = dict(counts)
    k = int(round(_c3_heavier(rate) * nb / 256))
    two = min(out.get(2, 0), int(round(_C3_DEG2 * nb / 256)))
    out[3] = out.get(3, 0) + out.get(2, 0) - two - 2 * k
    out[2] = two
    out[6] = out.get(6, 0) + k
    out[21] = out.get(21, 0) + k
    return out


# ----------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def _syndrome(check_ptr: np.ndarray, check_var: np.ndarray, bits: np.ndarray) -> np.ndarray:
    m = check_ptr.size - 1
    out = np.zeros(m, np.uint8)
    for c in range(m):
        s = 0
        for e in range(check_ptr[c], check_ptr[c + 1]):
            s ^= bits[check_var[e]]
        out[c] = s
    return out


def _phi_table() -> np.ndarray:
    """φ(x) = −ln tanh(x/2) sampled at x = k/PHI_SCALE, k = 0 … PHI_SIZE−1 (float32).

    φ is its own inverse on (0, ∞); φ(0) is capped at φ(1/(4·PHI_SCALE)) ≈ 8.3.
    """
    x = np.arange(_PHI_SIZE, dtype=np.float64) / _PHI_SCALE
    x[0] = 0.25 / _PHI_SCALE
    return (-np.log(np.tanh(0.5 * x))).astype(np.float32)


_PHI_SCALE = 256
_PHI_SIZE = 24 * _PHI_SCALE  # φ(24) ≈ 7.6e-11: zero beyond the table
_PHI = _phi_table()


@numba.njit(cache=True, nogil=True, inline="always")
def _phi(x: np.float32, tab: np.ndarray) -> np.float32:
    """Linear interpolation of the φ table at x ≥ 0 (float32 throughout)."""
    v = x * np.float32(_PHI_SCALE) + np.float32(0.5)
    if v >= np.float32(_PHI_SIZE - 1):
        return np.float32(0.0)
    return tab[int(v)]


@numba.njit(cache=True, nogil=True)
def _layered_bp(check_ptr: np.ndarray, check_var: np.ndarray, synd: np.ndarray, L: np.ndarray,
                R: np.ndarray, max_iter: int, tab: np.ndarray) -> int:
    """Layered sum-product decoding in the log domain, in place on (L, R); iterations or −1.

    :func:`_layered_bp_stall` with the stall test off (every sweep the same arithmetic)."""
    it = _layered_bp_stall(check_ptr, check_var, synd, L, R, max_iter, tab, 0, 0, 0.0)
    return it if it > 0 else -1


@numba.njit(cache=True, nogil=True)
def _layered_bp_stall(check_ptr: np.ndarray, check_var: np.ndarray, synd: np.ndarray, L: np.ndarray,
                      R: np.ndarray, max_iter: int, tab: np.ndarray, stall_from: int, stall_every: int,
                      stall_ratio: float) -> int:
    """Layered sum-product decoding in the log domain, in place on (L, R); iterations, or −(sweeps
    spent) when the syndrome was not matched.

    ``L`` (n, float32): posterior LLR log P(0)/P(1) = prior + Σ incoming check messages.
    ``R`` (E, float32): check-to-variable messages (zeros for a cold start).  Both carry the
    decoder state, so a later call continues (warm start) after the caller changes priors in L.
    Check update (Gallager's φ form): |R_e| = φ(Σ_{e'≠e} φ(|t_e'|)), sign = (−1)^s_c·Π_{e'≠e}
    sign t_e', with t_e = L_v − R_e.  Convergence: after each sweep over all checks the hard
    decision (L < 0 → 1) reproduces ``synd``.  Stall test (``stall_every`` > 0): after sweep
    ``stall_from`` and every ``stall_every`` sweeps from there the unsatisfied checks of the hard
    decision are counted, and the attempt stops once the count is above ``stall_ratio`` × the count
    ``stall_every`` sweeps before (as the A-min* attempts', :class:`LdpcPlan`).
    """
    m = check_ptr.size - 1
    dmax = 0
    for c in range(m):
        dmax = max(dmax, check_ptr[c + 1] - check_ptr[c])
    tmp = np.empty(dmax, np.float32)
    ph = np.empty(dmax, np.float32)
    prev = -1
    for it in range(max_iter):
        for c in range(m):
            e0 = check_ptr[c]
            e1 = check_ptr[c + 1]
            tot = np.float32(0.0)
            sgn = synd[c]
            for e in range(e0, e1):
                t = L[check_var[e]] - R[e]
                tmp[e - e0] = t
                if t < 0:
                    sgn ^= 1
                p = _phi(abs(t), tab)
                ph[e - e0] = p
                tot += p
            for e in range(e0, e1):
                t = tmp[e - e0]
                rest = tot - ph[e - e0]
                if rest < 0:
                    rest = np.float32(0.0)
                mag = _phi(rest, tab)
                s = sgn ^ (1 if t < 0 else 0)
                r = -mag if s else mag
                R[e] = r
                L[check_var[e]] = t + r
        count = stall_every > 0 and it + 1 >= stall_from and (it + 1 - stall_from) % stall_every == 0
        bad = 0
        for c in range(m):
            s = synd[c]
            for e in range(check_ptr[c], check_ptr[c + 1]):
                if L[check_var[e]] < 0:
                    s ^= 1
            if s:
                bad += 1
                if not count:
                    break
        if bad == 0:
            return it + 1
        if count:
            if prev >= 0 and bad > stall_ratio * prev:
                return -(it + 1)
            prev = bad
    return -max_iter


@numba.njit(cache=True, nogil=True, parallel=True)
def _decode_frames(check_ptr: np.ndarray, check_var: np.ndarray, synd: np.ndarray, L: np.ndarray,
                   R: np.ndarray, frames: np.ndarray, max_iter: int, tab: np.ndarray, stall_from: int = 0,
                   stall_every: int = 0, stall_ratio: float = 0.0) -> np.ndarray:
    """Run :func:`_layered_bp_stall` on rows ``frames`` of (synd, L, R); iterations per frame, or
    −(sweeps spent) where it failed.

    Frames are independent (own rows of L and R), so they are decoded in parallel threads; each
    frame's arithmetic is unchanged, so results do not depend on the thread count."""
    out = np.empty(frames.size, np.int64)
    for i in numba.prange(frames.size):
        f = frames[i]
        out[i] = _layered_bp_stall(check_ptr, check_var, synd[f], L[f], R[f], max_iter, tab, stall_from,
                                   stall_every, stall_ratio)
    return out


def _check_decode_args(code: LdpcCode, syndrome: np.ndarray, llr: np.ndarray) -> None:
    if not isinstance(syndrome, np.ndarray) or syndrome.dtype != np.uint8 or syndrome.shape != (code.m,):
        raise ReconciliationInputError(f"decode_syndrome expects a uint8 syndrome of {code.m} bits")
    if not isinstance(llr, np.ndarray) or llr.shape != (code.n,):
        raise ReconciliationInputError(f"decode_syndrome expects {code.n} LLRs")


def decode_syndrome(code: LdpcCode, syndrome: np.ndarray, llr: np.ndarray, *,
                    max_iter: int = 60) -> tuple[np.ndarray, int]:
    """Find x with H·x = ``syndrome`` near the prior ``llr`` (log P(0)/P(1), length n).

    Layered sum-product in float32 (see :func:`_layered_bp`).  Returns (hard decision uint8,
    iterations); iterations = −1 when the syndrome was not matched within ``max_iter`` — the
    caller must treat that frame as failed.
    """
    _check_decode_args(code, syndrome, llr)
    L = np.array(llr, dtype=_DTYPE)
    R = np.zeros(code.edges, _DTYPE)
    it = _layered_bp(code.check_ptr, code.check_var, syndrome, L, R, int(max_iter), _PHI)
    return (L < 0).astype(np.uint8), int(it)


def _phi_reference(x: np.ndarray) -> np.ndarray:
    v = x * np.float32(_PHI_SCALE) + np.float32(0.5)
    k = np.minimum(v, np.float32(_PHI_SIZE - 1)).astype(np.int64)
    return np.where(v >= np.float32(_PHI_SIZE - 1), np.float32(0.0), _PHI[k]).astype(_DTYPE)


def decode_syndrome_reference(code: LdpcCode, syndrome: np.ndarray, llr: np.ndarray, *,
                              max_iter: int = 60) -> tuple[np.ndarray, int]:
    """Plain numpy layered sum-product (same schedule and float32 arithmetic as the kernel).

    For each check c in order: t_e = L_v − R_e on its edges; R_e = (−1)^s_c·Π_{e'≠e} sign t_e' ·
    φ(Σ_{e'≠e} φ(|t_e'|)); L_v = t_e + R_e.  After each sweep, stop if the hard decision's
    syndrome equals ``syndrome``.
    """
    _check_decode_args(code, syndrome, llr)
    cv, cptr = code.check_var, code.check_ptr
    L = np.array(llr, dtype=_DTYPE)
    R = np.zeros(code.edges, _DTYPE)
    for it in range(max_iter):
        for c in range(code.m):
            sl = slice(cptr[c], cptr[c + 1])
            vs = cv[sl]
            t = L[vs] - R[sl]
            neg = (t < 0).astype(np.int64)
            sgn = (int(neg.sum()) + int(syndrome[c])) & 1
            ph = _phi_reference(np.abs(t))
            tot = np.add.accumulate(ph, dtype=_DTYPE)[-1]  # sequential sum, as in the kernel
            mag = _phi_reference(np.maximum(tot - ph, np.float32(0.0)))
            r = np.where((sgn ^ neg) == 1, -mag, mag).astype(_DTYPE)
            R[sl] = r
            L[vs] = t + r
        hard = (L < 0).astype(np.uint8)
        if np.array_equal(code.syndrome(hard), syndrome):
            return hard, it + 1
    return (L < 0).astype(np.uint8), -1


MINSUM_ALPHA = 0.8
"""Check-node normalisation α of the min-sum decoder (Chen & Fossorier 2002)."""
MINSUM_GAMMA = {2: 1.0, 3: 1.0}
"""Variable-degree correction γ_d (2-D normalised min-sum, Zhang, Wang & Fossorier 2006) for the
degrees listed; :data:`MINSUM_GAMMA_HIGH` for every higher degree."""
MINSUM_GAMMA_HIGH = 0.6
AMIN_ALPHA = 1.1
"""Normalisation of the A-min* decoder's messages (1: none)."""
AMIN_GAMMA_HIGH = 1.0


def minsum_weights(code: LdpcCode, alpha: float | None = None, gamma: dict[int, float] | None = None,
                   gamma_high: float | None = None) -> np.ndarray:
    """α·γ_d per base edge of a quasi-cyclic code (d: degree of the edge's variable), float32."""
    if not code.quasi_cyclic:
        raise ReconciliationInputError("min-sum weights need a quasi-cyclic code (z > 0)")
    a = MINSUM_ALPHA if alpha is None else alpha
    g = MINSUM_GAMMA if gamma is None else gamma
    gh = MINSUM_GAMMA_HIGH if gamma_high is None else gamma_high
    col = code.base_col
    assert col is not None
    deg = np.bincount(col, minlength=code.n // code.z)[col]
    gam = np.array([g.get(int(d), gh) for d in range(int(deg.max()) + 1)], np.float32)
    return (np.float32(a) * gam[deg]).astype(np.float32)


# ----------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class LdpcPlan:
    """Chosen code and rate-adaptation parameters for a QBER.

    ``d``: filler (punctured, then shortened when revealed) symbols per frame.
    ``start_revealed``: reveal-order values disclosed before the first decoding attempt.
    ``step``: values revealed per retry.  ``max_reveal``: reveal-order length (filler first, then
    key positions); a frame still failing after that is a frame error.  ``first_iter`` /
    ``retry_iter``: decoder iterations for the first attempt / each warm-started retry (at most).
    ``stall_every`` / ``stall_ratio`` (quasi-cyclic decoders; 0: off): every ``stall_every`` sweeps
    of an attempt Bob counts the checks his hard decision leaves unsatisfied, and ends the attempt
    (asks for the next values) once that count is above ``stall_ratio`` × the count
    ``stall_every`` sweeps before — from sweep max(2·stall_every, 3) on.
    ``sum_product_from`` (quasi-cyclic decoders; −1: the reveal limit): once this many values are
    revealed, a frame still failing restarts cold with sum-product (``bp``, the last chance), and
    goes on with warm-started sum-product retries up to the reveal limit.
    ``construction``: the code construction (:data:`CONSTRUCTIONS`, :func:`build_code`).
    """

    code_n: int
    rate: float
    code_seed: int
    d: int
    start_revealed: int
    step: int
    max_reveal: int = -1
    first_iter: int = 60
    retry_iter: int = 20
    stall_every: int = 0
    stall_ratio: float = 0.0
    sum_product_from: int = -1
    z: int = 0
    decoder: str = "bp"
    construction: int = 0

    @property
    def key_bits_per_frame(self) -> int:
        return self.code_n - self.d

    @property
    def reveal_limit(self) -> int:
        return self.d if self.max_reveal < 0 else self.max_reveal


# Design points measured at n = 16384 (see docs/reconciliation.md): the mother code's syndrome is
# F_MOTHER·h(Q) per key bit (more at low QBER, where the high-rate codes are further from capacity);
# fully punctured, the frame discloses F_MIN·h(Q); decoding starts at F_START·h(Q) and each retry
# adds F_STEP·h(Q); the key-bit fallback extends the range by F_EXTRA·h(Q).
_F_MOTHER = 1.20
_F_MOTHER_LOW_Q = 15.0  # + (0.02 − Q)·15 below Q = 2 %
_F_MIN = 1.0
_F_START = 1.08
_F_STEP = 0.02
_F_EXTRA = 0.12


DECODERS = ("amin", "minsum", "bp", "amin16")
"""``amin16`` (:data:`DEFAULT_DECODER`, since 2026-12-07): the quasi-cyclic A-min* in 16-bit fixed point, several
frames interleaved in SIMD lanes (:mod:`labqfl.qkd.ldpc_batch`), CPU only; the same design points as ``amin``.
``amin`` (the default before): quasi-cyclic codes, vectorised layered A-min* in float — the decoder of the
device path (``device=``: :class:`LdpcBob` runs ``amin`` there in place of ``amin16``).  ``minsum``: the same
codes, vectorised layered 2-D normalised min-sum (faster per sweep, ≈ 0.05 worse in f).  ``bp``: random
PEG codes, scalar layered sum-product (the previous engine, kept as the benchmark baseline)."""
DEFAULT_DECODER = "amin16"
"""The decoder of :func:`plan_ldpc` / :func:`reconcile_ldpc` when none is given: 2.4–2.5× fewer ns per edge-sweep
than ``amin`` on a 2-vCPU EPYC (0.81–0.98 against 1.9–2.05 ns) and the same frames decoded (``labqfl bench
ldpc-fer``'s frame-by-frame pairing ``amin16_vs_amin``: corrected blocks equal, f within ±0.01;
docs/reconciliation.md sessions 39 and 41)."""
_QC_DECODERS = ("amin", "minsum", "amin16")

# min-sum design points (quasi-cyclic codes, n = 65536, z = 256), measured as in
# docs/reconciliation.md: mother code F_MOTHER·h(Q) (+ low-QBER term), fully punctured F_MIN·h(Q),
# first attempt at F_START·h(Q), steps of F_STEP·h(Q), fallback F_EXTRA·h(Q) beyond the mother code.
_MS_N = 65536
_MS_Z = 256
_MS_F_MOTHER = 1.15
_MS_F_MOTHER_LOW_Q = 5.0
_MS_F_MIN = 1.0
_MS_F_START = 1.08
_MS_F_START_LOW_Q = 6.0  # + (0.02 − Q)·6 below Q = 2 %, as the fast preset
_MS_F_STEP = 0.01
_MS_F_EXTRA = 0.12
# sweeps of the first attempt / each retry (at most), and the stall test (every 3 sweeps, ≥ 5 % fewer
# unsatisfied checks to go on): against fixed 30 / 10-sweep attempts, 120 frames per QBER at 1–8 %
# (docs/reconciliation.md, 2026-12-07), f 0.007–0.017 lower and 13–34 % fewer sweeps, same frame errors
_MS_ITER = (100, 30)
_MS_STALL = (3, 0.95)
_LAST_CHANCE_ITER = 60
"""Sum-product sweeps of a quasi-cyclic frame's last-chance attempt (cold, at ``sum_product_from``)."""
_LAST_CHANCE_STALL = (38, 3, 0.95)
"""Stall test of a last-chance attempt (from sweep, every, ratio; :func:`_layered_bp_stall`): each
is cold, so a failed one's sweeps change nothing but time.  Not before sweep 38: one attempt (2 %, frame 95
of ``ldpc-fer``'s data) stalls at ≈ 3 000 unsatisfied checks from sweep 12 to 37 and then decodes at 55;
each of the 19 that converge among the 37 last-chance attempts of the default engine at 1–8 % and
2.25 / 2.6 % (docs/reconciliation.md session 41) passes this test with ≥ 6 % to spare; the 18 that fail stop
at sweep 41."""
_LATE_STEP_FACTOR = 3
"""Retries after the last chance reveal this many ``step``s each (a cold sum-product costs ≈ 60 × 5
A-min* sweeps)."""
# a quasi-cyclic frame still failing after F_EXTRA·h(Q) key values beyond the mother code (the
# sum-product last chance) goes on, each retry a cold sum-product, up to F_EXTRA_SP·h(Q): frames with
# ≈ 2σ more errors than the mean (1 354 and 1 368 where 1 282 are expected at 2 %) failed at the
# former, and a frame trapped a few bits from Alice's word (8–12 wrong after 200 A-min* sweeps at some
# reveal counts, decoded cold at others) failed in every warm retry (docs/reconciliation.md)
_MS_F_EXTRA_SP = 0.30
# preset "fast": start where nearly every frame decodes at once, fewer sweeps per attempt
_FAST_F_START = 1.14
_FAST_F_START_LOW_Q = 6.0  # + (0.02 − Q)·6 below Q = 2 %
_FAST_F_STEP = 0.02
_FAST_ITER = (60, 20)
_FAST_STALL = (3, 0.95)
PRESETS = ("efficient", "fast", "long")
"""Design-point presets of :func:`plan_ldpc` for the quasi-cyclic decoders: ``efficient`` starts at
1.08·h(Q) in steps of 0.01·h(Q) (lowest f, several attempts of up to 100 / 30 sweeps, each ended
early once the decoder stalls: :class:`LdpcPlan`); ``fast`` starts at 1.14·h(Q)
in steps of 0.02·h(Q) (f ≈ 0.02–0.03 higher, ≈ 3× fewer sweeps); all start 6·(0.02 − Q)·h(Q)
higher below Q = 2 %.  ``long``: ``efficient`` on codes of n = 262 144 (z = 256, 1 024 base columns) in steps
of 0.005·h(Q) — f 0.01–0.02 lower (1.096 at 4 %, 1.103–1.115 at 2–8 %, amin16, about 40 frames per QBER,
docs/reconciliation.md session 39) at about half the throughput; a frame holds ≈ 4× the key bits."""
_RANGE_STEPS = 6
"""With ``qber_low`` (:func:`plan_ldpc`), the step is at least 1/6 of the way from the first attempt at ``qber_low`` to
where one at ``qber`` would start: a frame at the top of the range needs about six more attempts, not
(f_start/f_step)·(1 − h(qber_low)/h(qber)) — 30 at the efficient preset's 0.01 for a range of 30 %."""
_LONG_N = 262144
_LONG_Z = 256
_LONG_F_STEP = 0.005


#: above this wanted mother rate (QBER below ≈ 1.2 %) the rate is taken with a margin, at most the cap:
#: measured with the quasi-cyclic A-min* decoder, 96 frames per point (2026-12-06), the nearest rate
#: (0.92–0.94 there) left 53–93 of 96 frames undecoded at QBER 0.5–0.8 % (11 at 0.9 %, 10 at 1.1 %) —
#: the decoder converged to another codeword, so revealing more bits did not help — while the rate
#: 0.03 lower, at most 0.91, decoded all 96 at every QBER from 0.4 to 1.2 % with f 1.20–1.50
_HIGH_RATE = 0.88
_HIGH_RATE_MARGIN = 0.03
_MAX_MOTHER_RATE = 0.91
#: constructions 1 and 2 (degree-2 forest, rate-0.85 table above 0.875) need no margin: the largest grid rate not
#: above the wanted one (docs/reconciliation.md, session 41)
_C1_HIGH_RATE_MARGIN = 0.0


def mother_rate(want: float, construction: int = 0, highest: float = _MAX_MOTHER_RATE) -> float:
    """The mother code's rate for a wanted rate ``want`` = 1 − f_mother·h(Q): the nearest on the
    :data:`MOTHER_RATES` grid, except above :data:`_HIGH_RATE` (low QBER), where it is the largest at
    least :data:`_HIGH_RATE_MARGIN` below ``want`` (constructions 1–3: at most ``want``, :data:`_C1_HIGH_RATE_MARGIN`)
    and at most ``highest`` (:data:`_MAX_MOTHER_RATE`: the codes' frame errors above it, see the constants;
    construction 3 goes higher at low QBER, :func:`c3_highest_rate`)."""
    if want <= _HIGH_RATE:
        return min(MOTHER_RATES, key=lambda r: abs(r - want))
    margin = _C1_HIGH_RATE_MARGIN if construction else _HIGH_RATE_MARGIN
    ok = [r for r in MOTHER_RATES if r <= min(want - margin, highest) + 1e-9]
    return max(ok) if ok else MOTHER_RATES[0]


_C3_HIGHEST = ((0.0035, 0.94), (0.0045, 0.93), (0.0055, 0.92))
"""(below QBER, highest mother rate) for construction 3: its heavier codes at rates 0.92–0.94 (:data:`_C3_HEAVIER`)
decode where construction 2's did not (:data:`_MAX_MOTHER_RATE`).  Measured (session 43, 48 frames per point, frame
seed 770, amin16 efficient; f of rate 0.91 / 0.92 / 0.93 / 0.94, frames undecoded in brackets): 0.3 % 1.7854 / 1.5473 /
1.3846 / **1.2616**; 0.35 % 1.5658 / 1.3571 / **1.2515** / 1.2526; 0.4 % 1.3995 / 1.2399 / **1.2243** / 1.2330; 0.45 %
1.2752 / **1.2092** / 1.2118 / 1.2156; 0.5 % 1.2101 / 1.2107 / 1.2123 / 1.2226 (1); 0.55 % 1.2259 / 1.2063 / 1.1965 /
1.2843 (10); 0.6 % 1.1991 / **1.1894** / 1.1946 / 1.3495 (34); 0.7 % 1.1888 / 1.1781 / 1.3079 (12) / 1.274 (48).  Each
rate stops at least 1.4 times below the QBER where it starts to leave frames undecoded (seed 810, 48 frames: 0.94 at
0.45 / 0.5 / 0.55 % 0 / 0 / 9 undecoded; 0.92 at 0.75 / 0.8 / 0.9 % 0 / 5 / 40), so a block whose QBER came out 1.4 times
its estimate still decodes (the first block's estimate is one standard deviation above the prediction from few test
clicks, :mod:`labqfl.qkd.first_qber`; later blocks take the previous block's QBER); rate 0.92's gain over 0.91 at
0.55–0.65 % (≈ 0.01) is not worth its margin there (0.8 / 0.65 = 1.23)."""


def c3_highest_rate(qber: float) -> float:
    """The highest mother rate construction 3's plan may take at ``qber`` (:data:`_C3_HIGHEST`; else 0.91)."""
    return next((r for below, r in _C3_HIGHEST if qber < below), _MAX_MOTHER_RATE)


_C2_RATE_Q0 = 0.0475
_C2_RATE_DQ = 0.0025
_C2_RATES = (0.66, 0.65, 0.64, 0.63, 0.62, 0.62, 0.61, 0.60, 0.57, 0.57, 0.57, 0.56, 0.55, 0.52, 0.52, 0.52, 0.51)
"""Mother rate of construction 2's (and 3's, the same codes there) n = 65 536 codes at QBER 4.75 %, 5 %, … 8.75 %
(:data:`_C2_RATE_Q0` + k · :data:`_C2_RATE_DQ`); a QBER from 4.625 % to 8.875 % takes its nearest grid point's (:func:`c2_mother_rate`), and
:func:`plan_ldpc` the lower of it and the f_mother rule's rate.  Each is the rate of lowest f among the rule's rate
and the two below it, measured on the same 96 frames per grid point (amin16, efficient preset, session 42,
docs/reconciliation.md).  The rule took rates 0.63–0.68, 0.58–0.59 and 0.53–0.54 at the high-QBER end of their range,
where these codes decode 0.01–0.06 above a rate or two lower; on fresh frames between the grid points the table
gives f 0.006–0.057 lower at 4.65–5.9 %, 6.65–6.95 % and 8.15 %, within 0.003 at 6.15, 6.4 and 7.9 %.  Below 4.6 %
the grid (steps of 0.25 % QBER against rates every ≈ 0.15 % there) picked rates too low between its points (f up to
0.016 higher at 1.15 %), so the rule stays, except at 1.9–2.05 % (:data:`_C2_RATE_CAPS`)."""


_C2_RATE_CAPS = ((0.019, 0.0205, 0.83),)
"""(from QBER, below QBER, rate) for construction 2's n = 65 536 codes outside the grid of :data:`_C2_RATES`: the f_mother
rule takes rate 0.84 up to 2.01 %, where it decodes worse than 0.83 (session 42, the same 96 frames per point, seeds
970 and 971, rate 0.84 against 0.83): at 2 % efficient preset f 1.1424 against 1.1336, fast 1.1622 against 1.1499
with CPU 1.78 → 1.13 s; at 1.95 % 1.1324 / 1.1322 (fast 1.1559 / 1.1534); at 1.9 % 1.1360 / 1.1368 with 1 of 96
frames undecoded at 0.84 in each preset, none at 0.83; at 1.88 % rate 0.84 is better (1.1247 against 1.1362)."""


_C3_RATE_CAPS = ((0.0135, 0.014, 0.87),)
"""As :data:`_C2_RATE_CAPS`, for construction 3 only: its rate-0.88 code (heavier than construction 2's) decodes
worse at the top of the rule's QBER range for 0.88 (session 43, the same 96 frames per point, seed 750, rate 0.88
against 0.87): f 1.1756 with 1 of 96 frames undecoded against 1.1438 at 1.39 %, 1.1521 against 1.1506 at 1.36 %,
1.1447 against 1.1621 at 1.33 % (0.88 kept below 1.35 %)."""


def c2_mother_rate(qber: float, construction: int = 2) -> float | None:
    """The mother rate :data:`_C2_RATE_CAPS` (construction 3 also :data:`_C3_RATE_CAPS`) or :data:`_C2_RATES`
    (nearest grid point) give for ``qber``; None outside their QBERs (1.9–2.05 %, 4.625–8.875 %; construction 3
    also 1.35–1.4 %)."""
    for lo, hi, rate in _C2_RATE_CAPS + (_C3_RATE_CAPS if construction == 3 else ()):
        if lo <= qber < hi:
            return rate
    x = (qber - _C2_RATE_Q0) / _C2_RATE_DQ  # grid position
    return _C2_RATES[round(x)] if -0.5 <= x < len(_C2_RATES) - 0.5 else None


def plan_ldpc(qber: float, *, decoder: str = DEFAULT_DECODER, preset: str = "efficient", code_n: int | None = None,
              code_seed: int = 0,
              f_start: float | None = None, f_step: float | None = None, f_mother: float | None = None,
              f_min: float | None = None, f_extra: float | None = None, z: int | None = None,
              first_iter: int | None = None, retry_iter: int | None = None, stall_every: int | None = None,
              stall_ratio: float | None = None, f_extra_sp: float | None = None,
              construction: int | None = None, qber_low: float | None = None) -> LdpcPlan:
    """Pick the code, filler count, starting point and step for ``qber``.

    Mother rate R = 1 − f_mother·h(Q) on the :data:`MOTHER_RATES` grid (m = (1−R)·n checks; constructions 2 and 3's
    n = 65 536 codes at QBER 1.9–2.05 % and 4.6–8.9 % (construction 3 also 1.35–1.4 %) without an explicit
    ``f_mother``: no higher than :func:`c2_mother_rate`);
    d filler symbols so that the fully punctured frame discloses (m − d) ≈ f_min·h(Q)·(n − d);
    the first attempt discloses f_start·h(Q)·(n − d) bits, each retry f_step·h(Q)·(n − d) more,
    up to m + f_extra·h(Q)·(n − d) (filler first, then key positions).  ``decoder`` picks the
    code family and its design points (:data:`DECODERS`), ``preset`` the trade-off between f and
    speed (:data:`PRESETS`, quasi-cyclic decoders only); any design point may be overridden.
    ``stall_every`` / ``stall_ratio``: Bob's stall test (:class:`LdpcPlan`; 0 turns it off).
    Quasi-cyclic decoders switch to sum-product at f_extra (``sum_product_from``) and may reveal up
    to m + f_extra_sp·h(Q)·(n − d).  ``construction`` (quasi-cyclic decoders): the code
    construction (:data:`CONSTRUCTIONS`; 1, 2 and 3 also take the mother rate by :func:`mother_rate`'s rule for them);
    None: :data:`DEFAULT_CONSTRUCTION` for a quasi-cyclic decoder with z > 0, else 0.  ``qber_low`` (below
    ``qber``; the pipeline's first block, whose estimate is uncertain): plan for a QBER in [qber_low, qber] — the
    mother code, the most disclosed and the sum-product switch of ``qber``, the filler count and the first attempt of
    ``qber_low``, steps at least 1/:data:`_RANGE_STEPS` of the way between the two first attempts.
    """
    if decoder not in DECODERS:
        raise ReconciliationInputError(f"LDPC decoder must be one of {DECODERS}, got {decoder!r}")
    if preset not in PRESETS:
        raise ReconciliationInputError(f"LDPC preset must be one of {PRESETS}, got {preset!r}")
    h = binary_entropy(qber)
    if decoder in _QC_DECODERS and preset == "fast":
        n0, z0, fm, fml, fmin, fx = _MS_N, _MS_Z, _MS_F_MOTHER, _MS_F_MOTHER_LOW_Q, _MS_F_MIN, _MS_F_EXTRA
        fs = _FAST_F_START + _FAST_F_START_LOW_Q * max(0.0, 0.02 - qber)
        fst, (it1, it2), (se, sr) = _FAST_F_STEP, _FAST_ITER, _FAST_STALL
    elif decoder in _QC_DECODERS:
        n0, z0, fm, fml, fmin, fs, fst, fx = (_MS_N, _MS_Z, _MS_F_MOTHER, _MS_F_MOTHER_LOW_Q, _MS_F_MIN,
                                              _MS_F_START, _MS_F_STEP, _MS_F_EXTRA)
        (it1, it2), (se, sr) = _MS_ITER, _MS_STALL
        fs += _MS_F_START_LOW_Q * max(0.0, 0.02 - qber)
        if preset == "long":
            n0, z0, fst = _LONG_N, _LONG_Z, _LONG_F_STEP
    else:
        n0, z0, fm, fml, fmin, fs, fst, fx, it1, it2 = (16384, 0, _F_MOTHER, _F_MOTHER_LOW_Q, _F_MIN,
                                                        _F_START, _F_STEP, _F_EXTRA, 50, 15)
        se, sr = 0, 0.0
    code_n = n0 if code_n is None else code_n
    z = z0 if z is None else z
    explicit_f_mother = f_mother is not None
    if f_mother is None:
        f_mother = fm + fml * max(0.0, 0.02 - qber)
    f_min = fmin if f_min is None else f_min
    f_start = fs if f_start is None else f_start
    f_step = fst if f_step is None else f_step
    f_extra = fx if f_extra is None else f_extra
    if construction is None:
        construction = DEFAULT_CONSTRUCTION if z and decoder in _QC_DECODERS else 0
    if construction not in CONSTRUCTIONS or (construction and not (z and decoder in _QC_DECODERS)):
        raise ReconciliationInputError(f"LDPC construction must be one of {CONSTRUCTIONS} (other than 0 only with a "
                                       f"quasi-cyclic decoder {_QC_DECODERS} and z > 0), got "
                                       f"construction={construction!r}, decoder {decoder!r}, z={z}")
    R = _planned_rate(qber, 1.0 - f_mother * h, construction, code_n, explicit_f_mother)
    code = build_code(code_n, R, code_seed, z, construction)
    m, n = code.m, code.n
    hl = h if qber_low is None else binary_entropy(min(max(float(qber_low), 0.0), qber))
    d = int(max(0, min(code.untainted.size, math.floor((m - f_min * hl * n) / (1.0 - f_min * hl)))))
    kpf = n - d
    start = int(min(d, max(0, math.ceil(f_start * hl * kpf - (m - d)))))
    step = max(1, math.ceil(f_step * h * kpf), math.ceil(f_start * (h - hl) * kpf / _RANGE_STEPS))
    extra = max(step, math.ceil(f_extra * h * kpf))
    sp_from = -1
    if z and decoder in _QC_DECODERS:
        sp_from = min(n, d + extra)
        extra = max(extra, math.ceil((_MS_F_EXTRA_SP if f_extra_sp is None else f_extra_sp) * h * kpf))
    return LdpcPlan(code_n, R, code_seed, d, start, step, max_reveal=min(n, d + extra), sum_product_from=sp_from,
                    first_iter=it1 if first_iter is None else first_iter,
                    retry_iter=it2 if retry_iter is None else retry_iter, z=z,
                    decoder=decoder if z else "bp",
                    stall_every=(se if stall_every is None else int(stall_every)) if z else 0,
                    stall_ratio=sr if stall_ratio is None else float(stall_ratio), construction=construction)


def _planned_rate(qber: float, want: float, construction: int, code_n: int, explicit_f_mother: bool) -> float:
    """:func:`plan_ldpc`'s mother rate for the wanted rate ``want`` = 1 − f_mother·h(Q): :func:`mother_rate` (up to
    :func:`c3_highest_rate` for construction 3, any grid rate with an explicit f_mother), then for constructions 2
    and 3's n = 65 536 codes without an explicit f_mother no higher than :func:`c2_mother_rate`."""
    highest = _MAX_MOTHER_RATE
    if construction == 3:  # an explicit f_mother may take any of its codes
        highest = max(MOTHER_RATES) if explicit_f_mother else c3_highest_rate(qber)
    R = mother_rate(want, construction, highest)
    table_rate = (c2_mother_rate(qber, construction) if (construction >= 2 and code_n == _MS_N and not explicit_f_mother)
                  else None)
    if table_rate is not None:
        R = min(R, table_rate)  # never above the f_mother rule's rate: frames fail there, not merely leak more
    return R


# ----------------------------------------------------------------------------------- parties
def _frames(N: int, kpf: int) -> int:
    return -(-N // kpf)


@lru_cache(maxsize=32)
def _layout(n: int, rate: float, seed: int, d: int, z: int = 0, construction: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """(key positions, reveal order) of a frame: key bits go to the non-filler positions in index
    order; the reveal order is the d filler positions then the key positions in a public
    pseudo-random order."""
    code = build_code(n, rate, seed, z, construction)
    mask = np.ones(code.n, bool)
    mask[code.untainted[:d]] = False
    keypos = np.flatnonzero(mask)
    rng = np.random.default_rng([seed, n, d, 7])
    order = np.concatenate([code.untainted[:d], rng.permutation(keypos)])
    keypos.setflags(write=False)
    order.setflags(write=False)
    return keypos, order


def _filler_bits(frames: int, d: int, rng: np.random.Generator | None) -> np.ndarray:
    """``(frames, d)`` uniform filler bits (uint8 0/1): from ``rng`` if given (tests), else from the
    OS CSPRNG (see :class:`LdpcAlice`)."""
    if rng is not None:
        return rng.integers(0, 2, (frames, d), dtype=np.uint8)
    n = frames * d
    raw = np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw)[:n].reshape(frames, d)


@numba.njit(cache=True, nogil=True)
def _fill_word(word: np.ndarray, bits: np.ndarray, f: int, kpf: int, keypos: np.ndarray, filler_pos: np.ndarray,
               filler: np.ndarray) -> None:
    """Frame ``f`` of ``bits`` into the codeword buffer ``word``: key bits on ``keypos`` (zero past the block's
    end), ``filler`` on ``filler_pos`` — every position written, as ``keypos`` and ``filler_pos`` partition
    the frame (:func:`_layout`), so the buffer is reused without clearing."""
    base = f * kpf
    cnt = min(kpf, bits.size - base)
    for j in range(cnt):
        word[keypos[j]] = bits[base + j]
    for j in range(cnt, kpf):
        word[keypos[j]] = 0
    for j in range(filler_pos.size):
        word[filler_pos[j]] = filler[j]


@numba.njit(cache=True, nogil=True)
def _fill_priors(bits: np.ndarray, L0: np.float32, big: np.float32, keypos: np.ndarray, nf: int, n: int,
                 kpf: int) -> np.ndarray:
    """Bob's ``(nf, n)`` float32 priors (:meth:`LdpcBob._priors`) in one pass: −L0 / +L0 for his bit 1 / 0 on
    the key positions, ``big`` on the last frame's padding, 0 on the filler."""
    prior = np.zeros((nf, n), np.float32)
    tab = np.empty(2, np.float32)  # indexed by (bit == 1): no branch on random bits
    tab[0] = L0
    tab[1] = -L0
    N = bits.size
    for f in range(nf):
        row = prior[f]
        base = f * kpf
        cnt = min(kpf, N - base)
        for j in range(cnt):
            row[keypos[j]] = tab[np.intp(bits[base + j] == 1)]
        for j in range(cnt, kpf):
            row[keypos[j]] = big
    return prior


@numba.njit(cache=True, nogil=True)
def _apply_reveal(L: np.ndarray, prior: np.ndarray, frames: np.ndarray, pos: np.ndarray, vals: np.ndarray,
                  big: np.float32) -> None:
    """Revealed values ``vals`` (frames × len(pos), uint8) become priors ±``big`` on ``pos`` of ``frames``; the
    posteriors ``L`` move by the same step, ``L += new − prior`` in float32 (warm start)."""
    tab = np.empty(2, np.float32)  # indexed by (value == 1), as in _fill_priors
    tab[0] = big
    tab[1] = -big
    for i in range(frames.size):
        f = frames[i]
        Lf = L[f]
        pf = prior[f]
        for j in range(pos.size):
            c = pos[j]
            new = tab[np.intp(vals[i, j] == 1)]
            Lf[c] += new - pf[c]
            pf[c] = new


@numba.njit(cache=True, nogil=True)
def _hard_decisions(out: np.ndarray, frames: np.ndarray, L: np.ndarray, kpf: int, keypos: np.ndarray) -> None:
    """``out``'s bits of each of ``frames`` ← the hard decisions (L < 0) on the frame's key positions."""
    N = out.size
    for i in range(frames.size):
        f = frames[i]
        row = L[f]
        base = f * kpf
        for j in range(min(kpf, N - base)):
            out[base + j] = np.uint8(row[keypos[j]] < 0)


class LdpcAlice:
    """Alice's side (a Responder).  Messages: ``ldpc/init`` {N, code_n, rate, code_seed, d,
    max_reveal} → ``ldpc/ok``; ``ldpc/syndromes`` {frames} → syndromes (disclosed, credit d per
    frame); ``ldpc/reveal`` {frames, start, count} → values at reveal-order positions
    [start, start+count) of each frame (disclosed); ``ldpc/done`` → ``ldpc/ok``.
    """

    def __init__(self, alice_bits: np.ndarray, *, filler_rng: np.random.Generator | None = None) -> None:
        """``filler_rng``: seeded filler for reproducible tests and benchmarks only. Without it (every
        distillation) the filler comes from the OS CSPRNG (:func:`secrets.token_bytes`): the syndrome
        is credited d bits per frame (``credit``) only because the filler is fresh and uniform, and
        the revealed filler values must say nothing about the unrevealed ones — a seeded PRNG's
        revealed outputs determine its stream for an unbounded adversary, so its unrevealed filler
        would then be known and the syndrome would leak up to d bits more than counted."""
        if not isinstance(alice_bits, np.ndarray) or alice_bits.dtype != np.uint8 or alice_bits.ndim != 1:
            raise ReconciliationInputError("alice_bits must be a 1-D uint8 array of 0/1")
        self._x = alice_bits
        self._rng = filler_rng
        self._code: LdpcCode | None = None
        self.disclosed_bits = 0

    def handle(self, request: Message) -> Message:
        kind = request.kind
        if kind == "ldpc/init":
            N = int(request.get("N"))
            if N != self._x.size:
                raise MessageError(f"ldpc/init: Bob has {N} bits, Alice has {self._x.size}")
            z = int(request.get("z")) if "z" in request.fields else 0
            # absent: construction 0, the codes of before (Bob sends the field only for another construction)
            cons = int(request.get("construction")) if "construction" in request.fields else 0
            if cons not in CONSTRUCTIONS or (cons and not z):
                raise MessageError(f"ldpc/init: construction={cons} must be one of {CONSTRUCTIONS} (not 0 only with z > 0)")
            code = build_code(int(request.get("code_n")), float(request.get("rate")), int(request.get("code_seed")), z,
                              cons)
            d = int(request.get("d"))
            if not 0 <= d <= code.untainted.size:
                raise MessageError(f"ldpc/init: d={d} exceeds the code's {code.untainted.size} untainted positions")
            max_reveal = int(request.get("max_reveal"))
            if not d <= max_reveal <= code.n:
                raise MessageError(f"ldpc/init: max_reveal={max_reveal} outside [{d}, {code.n}]")
            self._code, self._d, self._max_reveal = code, d, max_reveal
            self._nf = _frames(N, code.n - d)
            self._filler = _filler_bits(self._nf, d, self._rng)
            keypos, order = _layout(code.n, code.rate, code.seed, d, code.z, code.construction)
            self._keypos, self._order = keypos, order
            # reveal-order index d + j holds key bit _key_at[j] of its frame (order[d + j] = keypos[_key_at[j]]);
            # the block's bits zero-padded to whole frames, so a reveal is one gather (the padding's values are
            # the zeros that _fill_word puts there)
            where = np.empty(code.n, np.int64)
            where[keypos] = np.arange(keypos.size)
            self._key_at = where[order[d:]]
            self._padded = np.zeros(self._nf * (code.n - d), np.uint8)
            self._padded[:N] = self._x
            return Message("ldpc/ok")
        code = self._code  # type: ignore[assignment]
        if code is None:
            raise MessageError("ldpc: request before ldpc/init")
        if kind == "ldpc/syndromes":
            frames = self._frame_list(request)
            out = np.empty(frames.size * code.m, np.uint8)
            word = np.empty(code.n, np.uint8)  # one buffer, rewritten whole per frame (_fill_word)
            unt = code.untainted[:self._d]
            for i, f in enumerate(frames.tolist()):
                _fill_word(word, self._x, f, code.n - self._d, self._keypos, unt, self._filler[f])
                out[i * code.m:(i + 1) * code.m] = code.syndrome(word)
            self.disclosed_bits += out.size - self._d * frames.size
            return Message("ldpc/syndromes", {"m": code.m}, out, credit=self._d * int(frames.size))
        if kind == "ldpc/reveal":
            frames = self._frame_list(request)
            start = int(request.get("start"))
            count = int(request.get("count"))
            if start < 0 or count < 0 or start + count > self._max_reveal:
                raise MessageError("ldpc/reveal: reveal range out of bounds")
            # reveal-order positions [start, start + count): the filler ones (index < d) from the filler, the
            # key ones from the padded block — the values of the frame's codeword there (_fill_word)
            out = np.empty((frames.size, count), np.uint8)
            nfill = max(0, min(self._d, start + count) - start)
            if nfill:
                out[:, :nfill] = self._filler[frames, start:start + nfill]
            if count > nfill:
                kat = self._key_at[start + nfill - self._d:start + count - self._d]
                out[:, nfill:] = self._padded[frames[:, None] * (code.n - self._d) + kat[None, :]]
            out = out.reshape(-1)
            self.disclosed_bits += out.size
            return Message("ldpc/filler", {}, np.ascontiguousarray(out))
        if kind == "ldpc/done":
            return Message("ldpc/ok", {"disclosed": self.disclosed_bits})
        raise MessageError(f"ldpc: unexpected message {kind!r}")

    def _frame_list(self, request: Message) -> np.ndarray:
        frames = np.asarray(request.get("frames"), dtype=np.int64)
        if frames.ndim != 1 or (frames.size and (frames.min() < 0 or frames.max() >= self._nf)):
            raise MessageError(f"{request.kind}: frame index out of range")
        return frames


class LdpcBob:
    """Bob's side: blind rate-adaptive syndrome decoding over a channel to Alice."""

    def __init__(self, bob_bits: np.ndarray, qber: float, *, plan: LdpcPlan | None = None,
                 max_iter: int | None = None, device: str | None = None, lanes: int = LANES) -> None:
        if not isinstance(bob_bits, np.ndarray) or bob_bits.dtype != np.uint8 or bob_bits.ndim != 1:
            raise ReconciliationInputError("bob_bits must be a 1-D uint8 array of 0/1")
        # device None: the Numba kernels; a torch device: the quasi-cyclic decoders run there
        # (labqfl.qkd.ldpc_torch, bit-identical results), the last-chance sum-product stays on the CPU
        self.device = device
        self.backend: str | None = None  # "numba-cuda" or "torch", chosen at the first decode on a device
        self.backend_note: str | None = None  # why a CUDA device runs the torch path, if it does
        self.decoder_note: str | None = None  # why the device runs another decoder than the plan's, if it does
        if device is not None:
            from labqfl.accel import torch_device
            torch_device(device, what="LDPC device", error=ReconciliationInputError)
        self.bits = bob_bits
        self.qber = float(qber)
        self.plan = plan or plan_ldpc(self.qber)
        if device is not None and not (self.plan.z and self.plan.decoder in _QC_DECODERS):
            raise ReconciliationInputError(f"LDPC device={device!r} needs a quasi-cyclic decoder {_QC_DECODERS}, "
                                           f"got decoder {self.plan.decoder!r}; use device=None")
        self.first_iter = int(max_iter) if max_iter is not None else self.plan.first_iter
        self.retry_iter = min(self.first_iter, self.plan.retry_iter)
        self.warm_start = True
        if not isinstance(lanes, (int, np.integer)) or lanes < 1:
            raise ReconciliationInputError(f"LDPC lanes must be a positive number of frames, got {lanes!r}")
        self.lanes = int(lanes)  # decoder "amin16": frames per interleaved lane group (labqfl.qkd.ldpc_batch)

    def _plan_for_device(self) -> None:
        """On a device, ``amin16`` runs as ``amin``: the device kernels are float only, and ``amin`` is amin16's float
        original (the same design points, so the same plan otherwise; the same frames decoded, docs/
        reconciliation.md session 39); :attr:`decoder_note` says so."""
        if self.device is not None and self.plan.decoder == "amin16":
            self.plan = replace(self.plan, decoder="amin")
            self.decoder_note = (f"decoder 'amin16' (16-bit, CPU only) ran as 'amin' (float) on device "
                                 f"{self.device!r}")

    def run(self, channel: Channel) -> ReconciliationResult:
        self._plan_for_device()
        pl = self.plan
        N = int(self.bits.size)
        code = build_code(pl.code_n, pl.rate, pl.code_seed, pl.z, pl.construction)
        d = pl.d
        limit = pl.reveal_limit
        kpf = code.n - d
        nf = _frames(N, kpf)
        init: dict[str, FieldValue] = {"N": N, "code_n": code.n, "rate": pl.rate, "code_seed": pl.code_seed, "z": code.z, "d": d,
                "max_reveal": limit}
        if code.construction:  # only then: construction 0's init message is the one of before
            init["construction"] = code.construction
        channel.request(Message("ldpc/init", init))
        rep = channel.request(Message("ldpc/syndromes", {"frames": np.arange(nf, dtype=np.int64)}))
        if rep.disclosed.size != nf * code.m:
            raise MessageError("ldpc: bad reply to ldpc/syndromes")
        synd = np.ascontiguousarray(rep.disclosed.reshape(nf, code.m))
        keypos, order = _layout(code.n, code.rate, code.seed, d, code.z, code.construction)
        L = np.zeros((nf, code.n), _DTYPE)
        prior = self._priors(nf, code.n, kpf, keypos)
        L[:] = prior
        R = np.zeros((nf, code.edges), _DTYPE)
        revealed = 0
        if pl.start_revealed:
            revealed = self._reveal(channel, np.arange(nf), 0, min(pl.start_revealed, limit), L, prior, order)
        ok = np.zeros(nf, bool)
        iters = np.zeros(nf, np.int64)
        attempts = np.zeros(nf, np.int64)
        leak_at = np.zeros(nf, np.int64)  # revealed values when the frame decoded
        pending = np.arange(nf, dtype=np.int64)
        budget = self.first_iter
        qc = code.quasi_cyclic and pl.decoder in _QC_DECODERS
        attempt, batch = self._attempt_for(qc, code, synd, L, R, prior)
        last = False  # past the sum-product switch: every attempt a cold sum-product
        while True:
            if attempt is not None and not last:
                res, used = attempt(pending, budget)
            else:
                res = _decode_frames(code.check_ptr, code.check_var, synd, L, R, pending, budget, _PHI,
                                     *(_LAST_CHANCE_STALL if last else (0, 0, 0.0)))
                used = np.abs(res)
            attempts[pending] += 1
            done = res > 0
            ok[pending[done]] = True
            leak_at[pending[done]] = revealed
            iters[pending] += used
            pending = pending[~done]
            if pending.size == 0 or revealed >= limit:
                break
            cnt = min(pl.step * (_LATE_STEP_FACTOR if last else 1), limit - revealed)
            revealed = self._reveal(channel, pending, revealed, cnt, L, prior, order)
            if batch is not None:
                batch.revealed(pending, order[revealed - cnt:revealed])
            budget = self.retry_iter
            switch = min(pl.sum_product_from, limit) if qc and pl.sum_product_from >= 0 else limit
            if revealed >= switch or not self.warm_start:
                # last chance (or cold mode): restart from the priors with the full budget, so a
                # decoder trapped in a wrong fixed point (a few bits wrong) gets a clean try; a
                # quasi-cyclic code's last chance runs sum-product (``bp``) on its sparse rows, and so
                # does each retry after it, cold again
                L[pending] = prior[pending]
                R[pending] = 0
                if batch is not None:
                    batch.reset(pending)
                budget = self.first_iter
                if qc and revealed >= switch:
                    last = True
                    budget = _LAST_CHANCE_ITER
        corrected = self._corrected(ok, L, kpf, keypos)
        channel.request(Message("ldpc/done", {"ok": ok.astype(np.uint8)}))
        return self._result(channel, code, corrected, ok, iters, attempts, leak_at)

    def _result(self, channel: Channel, code: LdpcCode, corrected: np.ndarray, ok: np.ndarray, iters: np.ndarray,
                attempts: np.ndarray, leak_at: np.ndarray) -> ReconciliationResult:
        """:meth:`run`'s result: the corrected bits, the channel's counts and the per-frame details."""
        pl = self.plan
        st = channel.stats
        frame_errors = int((~ok).sum())
        return ReconciliationResult(
            corrected=corrected, leaked_bits=int(st.leaked_bits), qber=self.qber,
            method="ldpc-blind", success=frame_errors == 0, frame_errors=frame_errors,
            iterations=int(iters.sum()), round_trips=st.round_trips, messages=st.messages,
            tag_bytes=st.tag_bytes, corrected_errors=int((corrected != self.bits).sum()),
            details={"frames": int(ok.size), "frame_ok": ok, "decode_attempts": attempts.tolist(),
                     "revealed_at_success": leak_at.tolist(),
                     "code_n": code.n, "mother_rate": pl.rate, "filler": pl.d,
                     "start_revealed": pl.start_revealed, "step": pl.step, "max_reveal": pl.reveal_limit,
                     "decoder": pl.decoder, "construction": code.construction,
                     "decoder_backend": self.backend or "numba-cpu",
                     "decoder_backend_note": "; ".join(n for n in (self.decoder_note, self.backend_note) if n) or None,
                     "payload_bytes": st.payload_bytes})

    def _attempt_for(self, qc: bool, code: LdpcCode, synd: np.ndarray, L: np.ndarray, R: np.ndarray,
                     prior: np.ndarray) -> tuple[Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None,
                                                 BatchState | None]:
        """The quasi-cyclic attempt (None: not a quasi-cyclic decoder) and, for ``amin16``, its fixed-point
        state (which :meth:`run` tells about reveals and cold restarts)."""
        if not qc:
            return None, None
        if self.plan.decoder == "amin16":
            batch = BatchState(code, synd, prior, L, self.plan.stall_every, self.plan.stall_ratio, self.lanes)
            return batch, batch
        return self._qc_decoder(code, synd, L, R), None

    def _qc_decoder(self, code: LdpcCode, synd: np.ndarray, L: np.ndarray, R: np.ndarray
                    ) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        """The quasi-cyclic decoder's attempt on (synd, L, R): frames, sweeps → (sweeps to success or
        −1, sweeps spent) per frame (:meth:`_qc_attempt`), on the CPU or ``self.device``."""
        pl = self.plan
        assert code.base_ptr is not None and code.base_col is not None and code.base_shift is not None
        bptr, bcol, bsh = code.base_ptr, code.base_col, code.base_shift
        weight = (minsum_weights(code) if pl.decoder == "minsum"
                  else minsum_weights(code, AMIN_ALPHA, {}, AMIN_GAMMA_HIGH))
        kernel = qc_minsum_frames if pl.decoder == "minsum" else qc_aminstar_frames

        def decode(frames: np.ndarray, sweeps: int) -> np.ndarray:
            if self.device is not None:
                return self._decode_on_device(pl.decoder, bptr, bcol, bsh, code.z, synd, L, R, frames, weight, sweeps)
            return kernel(bptr, bcol, bsh, code.z, synd, L, R, frames, weight, sweeps)

        def unsatisfied(frames: np.ndarray) -> np.ndarray:
            return qc_unsatisfied_frames(bptr, bcol, bsh, code.z, synd, L, frames)

        def cpu_attempt(frames: np.ndarray, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
            return qc_attempt_frames(pl.decoder == "amin", bptr, bcol, bsh, code.z, synd, L, R, frames, weight,
                                     sweeps, pl.stall_every, pl.stall_ratio)

        def attempt(frames: np.ndarray, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
            return self._qc_attempt(decode, unsatisfied, frames, sweeps, cpu_attempt if self.device is None else None)
        return attempt

    def _qc_attempt(self, decode: Callable[[np.ndarray, int], np.ndarray],
                    unsatisfied: Callable[[np.ndarray], np.ndarray], pending: np.ndarray, budget: int,
                    cpu_attempt: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """One attempt of the quasi-cyclic decoder on the frames ``pending``: at most ``budget``
        sweeps, run ``plan.stall_every`` at a time with the stall test in between (:class:`LdpcPlan`;
        chunks continue the same decoder state, so the sweeps are those of one call).  Returns, per
        frame, (sweeps to success or −1, sweeps spent).  ``cpu_attempt``: the same attempt in one
        Numba call (:func:`~labqfl.qkd.ldpc_qc.qc_attempt_frames`, frame after frame, so each
        frame's messages stay in cache); the chunked loop here serves the device backends."""
        every, ratio = self.plan.stall_every, self.plan.stall_ratio
        if every <= 0:
            res = decode(pending, budget)
            return res, np.where(res > 0, res, budget)
        if cpu_attempt is not None:
            return cpu_attempt(pending, budget)
        res = np.full(pending.size, -1, np.int64)
        used = np.zeros(pending.size, np.int64)
        act = np.arange(pending.size)
        prev: np.ndarray | None = None
        j = 0
        while act.size and j < budget:
            step = min(every, budget - j)
            r = decode(pending[act], step)
            conv = r > 0
            res[act[conv]] = j + r[conv]
            used[act] = j + np.where(conv, r, step)
            j += step
            act = act[~conv]
            if prev is not None:
                prev = prev[~conv]
            if not act.size or j >= budget:
                break
            cnt = unsatisfied(pending[act])
            if prev is not None and j >= max(2 * every, 3):
                go = cnt <= ratio * prev  # still falling fast enough: go on
                act, cnt = act[go], cnt[go]
            prev = cnt
        return res, used

    def _decode_on_device(self, rule: str, bptr: np.ndarray, bcol: np.ndarray, bsh: np.ndarray, z: int,
                          synd: np.ndarray, L: np.ndarray, R: np.ndarray, pending: np.ndarray, weight: np.ndarray,
                          budget: int) -> np.ndarray:
        """The quasi-cyclic decoder on ``self.device``: on a CUDA device the one-launch Numba CUDA
        kernel (:mod:`labqfl.qkd.ldpc_cuda`) where Numba can launch it, else the torch path
        (:mod:`labqfl.qkd.ldpc_torch`); both bit-identical to the CPU kernels."""
        from labqfl.qkd.ldpc_cuda import MAX_LANES, cuda_decoder_problem, qc_decode_frames_cuda
        from labqfl.qkd.ldpc_torch import qc_decode_frames_torch

        if self.backend is None:
            # Numba launches on its current device (0); another CUDA index runs through torch
            self.backend = "torch"
            if self.device in ("cuda", "cuda:0") and z <= MAX_LANES:
                self.backend_note = cuda_decoder_problem()
                self.backend = "numba-cuda" if self.backend_note is None else "torch"
        if self.backend == "numba-cuda":
            return qc_decode_frames_cuda(rule, bptr, bcol, bsh, z, synd, L, R, pending, weight, budget)
        return qc_decode_frames_torch(rule, bptr, bcol, bsh, z, synd, L, R, pending, weight, budget,
                                      device=str(self.device))

    def _priors(self, nf: int, n: int, kpf: int, keypos: np.ndarray) -> np.ndarray:
        """Per frame, the log-likelihood priors of the code's ``n`` positions: ±ln((1−q)/q) on the
        key positions from Bob's bits, a large positive value (a known zero) on the shortened
        padding; the d filler positions stay 0 until revealed."""
        L0 = _DTYPE(math.log((1 - self.qber) / self.qber))
        return _fill_priors(self.bits, L0, _DTYPE(_BIG), keypos, nf, n, kpf)  # padding: _BIG, shortened zeros

    def _corrected(self, ok: np.ndarray, L: np.ndarray, kpf: int, keypos: np.ndarray) -> np.ndarray:
        """Bob's bits with each decoded frame's key positions replaced by the decoder's hard decisions."""
        corrected = self.bits.copy()
        _hard_decisions(corrected, np.flatnonzero(ok), L, kpf, keypos)
        return corrected

    @staticmethod
    def _reveal(channel: Channel, frames: np.ndarray, start: int, count: int, L: np.ndarray,
                prior: np.ndarray, order: np.ndarray) -> int:
        rep = channel.request(Message("ldpc/reveal", {"frames": frames.astype(np.int64), "start": start, "count": count}))
        if rep.disclosed.size != frames.size * count:
            raise MessageError("ldpc: bad reply to ldpc/reveal")
        vals = rep.disclosed.reshape(frames.size, count)
        # warm start: L = prior + Σ messages, so swap the prior in place and keep the messages
        _apply_reveal(L, prior, frames.astype(np.int64, copy=False), order[start:start + count], vals, _DTYPE(_BIG))
        return start + count


def reconcile_ldpc(alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float, *,
                   seed: int | None = None, code_n: int | None = None, decoder: str = DEFAULT_DECODER,
                   preset: str = "efficient", channel_authenticator: object = None,
                   device: str | None = None, construction: int | None = None) -> ReconciliationResult:
    """Correct ``bob_bits`` towards ``alice_bits`` with blind rate-adaptive LDPC (in process).

    ``alice_bits``, ``bob_bits``: 1-D uint8 0/1 arrays of equal length N (split into frames of
    ``code_n − d`` key bits).  ``qber`` in (0, 0.5) picks the mother code and starting rate.
    ``decoder``: one of :data:`DECODERS` (``code_n`` None: its default length, 65536 for the
    quasi-cyclic decoders, 16384 for ``bp``); ``preset``: :data:`PRESETS`.  ``seed``: seeds Alice's filler bits (None: the OS
    CSPRNG — use None outside tests and benchmarks: the syndrome's credit of d bits per frame rests
    on the filler being fresh and uniform, :class:`LdpcAlice`); the codes themselves are fixed public constructions.
    Failed frames are reported in ``frame_errors`` / ``details['frame_ok']`` and ``success`` is
    False when any frame failed.  ``device``: None (default) decodes with the Numba kernels; a torch
    device (``"cpu"``, ``"cuda"``, ``"cuda:N"``) runs the quasi-cyclic decoders there — on CUDA
    device 0 as one Numba CUDA kernel (:mod:`labqfl.qkd.ldpc_cuda`), elsewhere through torch
    (:mod:`labqfl.qkd.ldpc_torch`); same results bit for bit as the CPU's float kernels
    (``details["decoder_backend"]``).  The device kernels are float only: ``amin16`` (the default decoder) runs
    there as ``amin`` (``details["decoder"]``, and ``details["decoder_backend_note"]`` says so).
    ``construction``: the code construction (:data:`CONSTRUCTIONS`, :func:`build_code`; None:
    :data:`DEFAULT_CONSTRUCTION` for the quasi-cyclic decoders, :func:`plan_ldpc`).
    """
    alice_bits, bob_bits, q = validate_reconciliation_input(alice_bits, bob_bits, qber)
    rng = np.random.default_rng(seed) if seed is not None else None
    plan = plan_ldpc(q, decoder=decoder, preset=preset, code_n=code_n, construction=construction)
    bob = LdpcBob(bob_bits, q, plan=plan, device=device)
    alice = LdpcAlice(alice_bits, filler_rng=rng)
    return bob.run(LocalChannel(alice, channel_authenticator))  # type: ignore[arg-type]
