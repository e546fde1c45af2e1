"""Rate-adaptive LDPC syndrome reconciliation: blind protocol with untainted puncturing.

Codes
-----
:func:`build_code` constructs, locally and deterministically from a seed, an irregular binary LDPC
code of length n and mother rate R (m = round((1−R)·n) checks).  Variable-node degrees follow the
edge-perspective distribution λ(x) = 0.30013x + 0.28395x² + 0.41592x⁷ (Richardson, Shokrollahi &
Urbanke, IEEE Trans. IT 47, 619 (2001), rate-½ design; used here at every rate); check degrees are
as equal as possible.  Edges come from a seeded random socket matching with parallel edges removed
(no 4-cycle removal, no downloads).  Codes are cached per (n, R, seed).

Protocol (blind reconciliation, Kiktenko et al., arXiv:1612.03673, with untainted puncturing,
Elkouss et al., arXiv:1006.2660 / IEEE TIT 2012)
--------------------------------------------------------------------------------------------------
Each frame of the code holds ``n − d`` key bits and ``d`` *filler* symbols placed on untainted
positions (no two filler symbols share a check neighbourhood).  Alice fills them with fresh random
bits from the OS and sends the syndrome s = H·z (m bits).  Because every filler column has private
checks, the filler bits mask d syndrome bits: the message is counted as m disclosed bits with a
credit of d, i.e. leakage m − d (counted at the channel).  Bob decodes with the filler symbols
*punctured* (LLR 0).  If the decoded word's syndrome differs from Alice's, Bob asks for the values
of the next Δ = ⌈d/steps⌉ filler symbols (each revealed value leaks one bit and is then *shortened*,
LLR ±∞) and decodes again, until success or all d are revealed (leakage m).  A frame that still
fails is reported (``frame_errors``, ``details['frame_ok']``) and left uncorrected — never silent.
Bits of the last partial frame are padded with shortened zeros (known to both, no leakage).

Decoder: normalised min-sum (α = 0.8) belief propagation in the log-likelihood domain, flooding
schedule, stopping as soon as the hard decision reproduces Alice's syndrome.  Efficiency
f = leaked / (N·h(Q)); Shannon's bound is f ≥ 1.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np

from labqfl.qkd.cascade import (
    ReconciliationInputError,
    ReconciliationResult,
    binary_entropy,
    validate_reconciliation_input,
)
from labqfl.qkd.messaging import Channel, LocalChannel, Message, MessageError

__all__ = [
    "MOTHER_RATES",
    "LdpcAlice",
    "LdpcBob",
    "LdpcCode",
    "LdpcPlan",
    "build_code",
    "decode_syndrome",
    "decode_syndrome_reference",
    "plan_ldpc",
    "reconcile_ldpc",
]

MOTHER_RATES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94)
"""Mother code rates available to :func:`plan_ldpc`."""

_LAMBDA = {2: 0.30013, 3: 0.28395, 8: 0.41592}  # edge perspective
_ALPHA = 0.8
_BIG = 40.0


@dataclass(frozen=True)
class LdpcCode:
    """Parity-check matrix H (m × n) in two sparse layouts plus untainted puncturing positions.

    ``check_ptr`` (m+1) / ``check_var`` (E): variable index of each edge, edges grouped by check.
    ``var_ptr`` (n+1) / ``var_edge`` (E): edge ids grouped by variable.  ``untainted``: variable
    indices, in the order they are used as filler, whose check neighbourhoods are disjoint.
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

    @property
    def edges(self) -> int:
        return int(self.check_var.size)

    def syndrome(self, bits: np.ndarray) -> np.ndarray:
        """H·bits over GF(2) (uint8, length m)."""
        return _syndrome(self.check_ptr, self.check_var, bits)


def _degree_counts(n: int) -> dict[int, int]:
    inv = {d: lam / d for d, lam in _LAMBDA.items()}
    tot = sum(inv.values())
    counts = {d: int(round(n * v / tot)) for d, v in inv.items()}
    counts[2] += n - sum(counts.values())
    return counts


@lru_cache(maxsize=16)
def build_code(n: int, rate: float, seed: int = 0) -> LdpcCode:
    """Irregular LDPC code of length ``n`` and mother rate ``rate`` (see module docstring)."""
    if n < 64 or not 0.05 <= rate <= 0.95:
        raise ReconciliationInputError(f"LDPC code needs n >= 64 and rate in [0.05, 0.95], got n={n}, rate={rate}")
    rng = np.random.default_rng([seed, n, int(round(rate * 10000))])
    m = int(round((1.0 - rate) * n))
    counts = _degree_counts(n)
    # degree-2 nodes form one accumulator chain (check π(j) — node — check π(j+1)): no cycle made
    # only of degree-2 nodes, hence no low-weight codewords from them; the excess becomes degree 3
    n2 = min(counts.get(2, 0), m - 1)
    counts[3] = counts.get(3, 0) + counts.get(2, 0) - n2
    counts[2] = n2
    vdeg = np.concatenate([np.full(c, d, np.int64) for d, c in sorted(counts.items()) if c])
    E = int(vdeg.sum())
    chain = rng.permutation(m)
    v2 = np.arange(n2, dtype=np.int64)
    chain_v = np.concatenate([v2, v2])
    chain_c = np.concatenate([chain[:n2], chain[1:n2 + 1]]).astype(np.int64)
    cdeg = np.full(m, E // m, np.int64)
    cdeg[: E - cdeg.sum()] += 1
    used = np.bincount(chain_c, minlength=m)
    rest = np.maximum(cdeg - used, 0)
    rest[: (E - 2 * n2) - rest.sum()] += 1 if (E - 2 * n2) > rest.sum() else 0
    vsock = np.repeat(np.arange(n2, n, dtype=np.int64), vdeg[n2:])
    csock = np.repeat(np.arange(m, dtype=np.int64), rest)[: vsock.size]
    if csock.size < vsock.size:
        csock = np.concatenate([csock, rng.integers(0, m, vsock.size - csock.size)])
    rng.shuffle(csock)
    R2 = vsock.size
    for _ in range(100):  # remove parallel edges by swapping check sockets
        key = vsock * m + csock
        order = np.argsort(key, kind="stable")
        dup = np.zeros(R2, bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        bad = np.flatnonzero(dup)
        if bad.size == 0:
            break
        other = rng.integers(0, R2, bad.size)
        csock[bad], csock[other] = csock[other], csock[bad].copy()
    else:
        key = vsock * m + csock
        _, first = np.unique(key, return_index=True)
        vsock, csock = vsock[np.sort(first)], csock[np.sort(first)]
    # node labels: shuffle so filler/key positions are not tied to the degree-2 chain order
    relabel = rng.permutation(n).astype(np.int64)
    vsock = relabel[np.concatenate([chain_v, vsock])]
    csock = np.concatenate([chain_c, csock])
    order = np.lexsort((vsock, csock))
    check_var = vsock[order]
    cs = csock[order]
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
                    np.array(chosen, dtype=np.int64))


# ----------------------------------------------------------------------------------- kernels
@numba.njit(cache=True)
def _syndrome(check_ptr: np.ndarray, check_var: np.ndarray, bits: np.ndarray) -> np.ndarray:
    m = check_ptr.size - 1
    out = np.zeros(m, np.uint8)
    for c in range(m):
        s = 0
        for e in range(check_ptr[c], check_ptr[c + 1]):
            s ^= bits[check_var[e]]
        out[c] = s
    return out


@numba.njit(cache=True)
def _nms_decode(check_ptr: np.ndarray, check_var: np.ndarray, var_ptr: np.ndarray,
                var_edge: np.ndarray, synd: np.ndarray, llr0: np.ndarray, max_iter: int,
                alpha: float, out: np.ndarray) -> int:
    """Normalised min-sum syndrome decoding; returns iterations used, or −1 if not converged.

    ``llr0``: prior log-likelihood ratio log P(bit=0)/P(bit=1) per variable (float64, length n).
    ``out``: hard decision (uint8), valid whatever the return value.
    """
    m = check_ptr.size - 1
    n = var_ptr.size - 1
    E = check_var.size
    c2v = np.zeros(E)
    v2c = np.empty(E)
    L = llr0.copy()
    for it in range(max_iter):
        for c in range(m):
            e0 = check_ptr[c]
            e1 = check_ptr[c + 1]
            min1 = 1e300
            min2 = 1e300
            pos = -1
            sgn = synd[c]
            for e in range(e0, e1):
                x = L[check_var[e]] - c2v[e]
                v2c[e] = x
                ax = abs(x)
                if x < 0:
                    sgn ^= 1
                if ax < min1:
                    min2 = min1
                    min1 = ax
                    pos = e
                elif ax < min2:
                    min2 = ax
            for e in range(e0, e1):
                mag = min2 if e == pos else min1
                s = sgn ^ (1 if v2c[e] < 0 else 0)
                c2v[e] = -alpha * mag if s else alpha * mag
        for v in range(n):
            acc = llr0[v]
            for t in range(var_ptr[v], var_ptr[v + 1]):
                acc += c2v[var_edge[t]]
            L[v] = acc
            out[v] = 1 if acc < 0 else 0
        ok = True
        for c in range(m):
            s = synd[c]
            for e in range(check_ptr[c], check_ptr[c + 1]):
                s ^= out[check_var[e]]
            if s:
                ok = False
                break
        if ok:
            return it + 1
    return -1


def decode_syndrome(code: LdpcCode, syndrome: np.ndarray, llr: np.ndarray, *, max_iter: int = 60,
                    alpha: float = _ALPHA) -> tuple[np.ndarray, int]:
    """Find x with H·x = ``syndrome`` near the prior ``llr`` (float64, length n).

    Returns (hard decision uint8, iterations); iterations = −1 when the syndrome was not matched
    within ``max_iter`` — the caller must treat that frame as failed.
    """
    if syndrome.dtype != np.uint8 or syndrome.size != code.m or llr.size != code.n:
        raise ReconciliationInputError(f"decode_syndrome expects a uint8 syndrome of {code.m} bits and {code.n} LLRs")
    out = np.zeros(code.n, np.uint8)
    it = _nms_decode(code.check_ptr, code.check_var, code.var_ptr, code.var_edge, syndrome,
                     np.ascontiguousarray(llr, dtype=np.float64), max_iter, alpha, out)
    return out, int(it)


def decode_syndrome_reference(code: LdpcCode, syndrome: np.ndarray, llr: np.ndarray, *,
                              max_iter: int = 60, alpha: float = _ALPHA) -> tuple[np.ndarray, int]:
    """Plain numpy normalised min-sum (same schedule and arithmetic as the Numba kernel)."""
    cv = code.check_var
    cptr = code.check_ptr
    llr = np.asarray(llr, dtype=np.float64)
    c2v = np.zeros(cv.size)
    L = llr.copy()
    out = np.zeros(code.n, np.uint8)
    for it in range(max_iter):
        v2c = L[cv] - c2v
        a = np.abs(v2c)
        neg = (v2c < 0).astype(np.int64)
        sgn = (np.bitwise_xor.reduceat(neg, cptr[:-1]) ^ syndrome.astype(np.int64))
        c2v = np.empty_like(v2c)
        for c in range(code.m):  # min and second min, first occurrence is "the" min
            sl = slice(cptr[c], cptr[c + 1])
            seg = a[sl]
            pos = int(np.argmin(seg))
            min1 = seg[pos]
            min2 = np.min(np.delete(seg, pos)) if seg.size > 1 else 1e300
            mag = np.full(seg.size, min1)
            mag[pos] = min2
            s = sgn[c] ^ neg[sl]
            c2v[sl] = np.where(s == 1, -alpha * mag, alpha * mag)
        L = llr + np.bincount(cv, weights=c2v, minlength=code.n)
        out = (L < 0).astype(np.uint8)
        if np.array_equal(np.bitwise_xor.reduceat(out[cv], cptr[:-1]) & 1, syndrome):
            return out, it + 1
    return out, -1


# ----------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class LdpcPlan:
    """Chosen code and rate-adaptation parameters for a QBER."""

    code_n: int
    rate: float
    code_seed: int
    d: int  # filler (punctured/shortened) symbols per frame
    start_revealed: int  # filler values revealed before the first decoding attempt
    step: int  # filler values revealed per retry

    @property
    def key_bits_per_frame(self) -> int:
        return self.code_n - self.d


def plan_ldpc(qber: float, *, code_n: int = 16384, code_seed: int = 0, delta: float = 0.25,
              f_start: float = 1.08, steps: int = 10) -> LdpcPlan:
    """Pick the mother rate and the initial number of revealed filler symbols for ``qber``.

    For mother rate R (m = (1−R)·n checks) and d = δ·m filler symbols the leakage per key bit
    ranges from (m−d)/(n−d) (all punctured) to m/(n−d) (all revealed).  We take the highest rate
    whose upper end reaches 1.3·h(Q) and start at leakage ratio max(lower end, f_start·h(Q)).
    """
    h = binary_entropy(qber)
    best = None
    for R in sorted(MOTHER_RATES, reverse=True):
        m = int(round((1 - R) * code_n))
        d = int(round(delta * m))
        if m / (code_n - d) >= 1.3 * h:
            best = (R, m, d)
            break
    if best is None:
        R = min(MOTHER_RATES)
        m = int(round((1 - R) * code_n))
        best = (R, m, int(round(delta * m)))
    R, m, d = best
    d = min(d, int(build_code(code_n, R, code_seed).untainted.size))
    target = f_start * h * (code_n - d)  # leaked bits wanted: m − d + revealed
    start = int(min(d, max(0, math.ceil(target - (m - d)))))
    return LdpcPlan(code_n, R, code_seed, d, start, max(1, math.ceil(d / steps)))


# ----------------------------------------------------------------------------------- parties
def _frames(N: int, kpf: int) -> int:
    return -(-N // kpf)


class LdpcAlice:
    """Alice's side (a Responder).  Messages: ``ldpc/init`` {N, code_n, rate, code_seed, d} →
    ``ldpc/ok``; ``ldpc/syndromes`` {frames} → syndromes (disclosed, credit d per frame);
    ``ldpc/reveal`` {frames, start, count} → filler values (disclosed); ``ldpc/done`` → ``ldpc/ok``.
    """

    def __init__(self, alice_bits: np.ndarray, *, filler_rng: np.random.Generator | None = None) -> None:
        if not isinstance(alice_bits, np.ndarray) or alice_bits.dtype != np.uint8 or alice_bits.ndim != 1:
            raise ReconciliationInputError("alice_bits must be a 1-D uint8 array of 0/1")
        self._x = alice_bits
        self._rng = filler_rng or np.random.default_rng(secrets.randbits(128))
        self._code: LdpcCode | None = None
        self.disclosed_bits = 0

    def handle(self, request: Message) -> Message:
        kind = request.kind
        if kind == "ldpc/init":
            N = int(request.get("N"))
            if N != self._x.size:
                raise MessageError(f"ldpc/init: Bob has {N} bits, Alice has {self._x.size}")
            code = build_code(int(request.get("code_n")), float(request.get("rate")), int(request.get("code_seed")))
            d = int(request.get("d"))
            if not 0 <= d <= code.untainted.size:
                raise MessageError(f"ldpc/init: d={d} exceeds the code's {code.untainted.size} untainted positions")
            self._code, self._d = code, d
            self._nf = _frames(N, code.n - d)
            self._filler = self._rng.integers(0, 2, (self._nf, d), dtype=np.uint8)
            return Message("ldpc/ok")
        code = self._code  # type: ignore[assignment]
        if code is None:
            raise MessageError("ldpc: request before ldpc/init")
        if kind == "ldpc/syndromes":
            frames = np.asarray(request.get("frames"), dtype=np.int64)
            if frames.size and (frames.min() < 0 or frames.max() >= self._nf):
                raise MessageError("ldpc/syndromes: frame index out of range")
            out = np.concatenate([code.syndrome(self._word(int(f))) for f in frames]) if frames.size else np.zeros(0, np.uint8)
            self.disclosed_bits += out.size - self._d * frames.size
            return Message("ldpc/syndromes", {"m": code.m}, out, credit=self._d * int(frames.size))
        if kind == "ldpc/reveal":
            frames = np.asarray(request.get("frames"), dtype=np.int64)
            start = int(request.get("start"))
            count = int(request.get("count"))
            if frames.size and (frames.min() < 0 or frames.max() >= self._nf) or start < 0 or count < 0 or start + count > self._d:
                raise MessageError("ldpc/reveal: frame or filler range out of bounds")
            out = self._filler[frames, start:start + count].reshape(-1)
            self.disclosed_bits += out.size
            return Message("ldpc/filler", {}, np.ascontiguousarray(out))
        if kind == "ldpc/done":
            return Message("ldpc/ok", {"disclosed": self.disclosed_bits})
        raise MessageError(f"ldpc: unexpected message {kind!r}")

    def _word(self, f: int) -> np.ndarray:
        code = self._code
        assert code is not None
        return _frame_word(code, self._d, self._x, f, self._filler[f])


def _frame_word(code: LdpcCode, d: int, bits: np.ndarray, f: int, filler: np.ndarray) -> np.ndarray:
    """Codeword-length frame: key bits on the non-filler positions (zero padded), filler on
    ``code.untainted[:d]``."""
    kpf = code.n - d
    word = np.zeros(code.n, np.uint8)
    fpos = code.untainted[:d]
    keypos = _key_positions(code, d)
    chunk = bits[f * kpf:(f + 1) * kpf]
    word[keypos[:chunk.size]] = chunk
    word[fpos] = filler
    return word


@lru_cache(maxsize=32)
def _key_positions_cached(n: int, rate: float, seed: int, d: int) -> np.ndarray:
    code = build_code(n, rate, seed)
    mask = np.ones(code.n, bool)
    mask[code.untainted[:d]] = False
    return np.flatnonzero(mask)


def _key_positions(code: LdpcCode, d: int) -> np.ndarray:
    return _key_positions_cached(code.n, code.rate, code.seed, d)


class LdpcBob:
    """Bob's side: blind rate-adaptive syndrome decoding over a channel to Alice."""

    def __init__(self, bob_bits: np.ndarray, qber: float, *, plan: LdpcPlan | None = None,
                 max_iter: int = 60) -> None:
        if not isinstance(bob_bits, np.ndarray) or bob_bits.dtype != np.uint8 or bob_bits.ndim != 1:
            raise ReconciliationInputError("bob_bits must be a 1-D uint8 array of 0/1")
        self.bits = bob_bits
        self.qber = float(qber)
        self.plan = plan or plan_ldpc(self.qber)
        self.max_iter = max_iter

    def run(self, channel: Channel) -> ReconciliationResult:
        pl = self.plan
        N = int(self.bits.size)
        code = build_code(pl.code_n, pl.rate, pl.code_seed)
        d = pl.d
        kpf = code.n - d
        nf = _frames(N, kpf)
        channel.request(Message("ldpc/init", {"N": N, "code_n": code.n, "rate": pl.rate,
                                              "code_seed": pl.code_seed, "d": d}))
        rep = channel.request(Message("ldpc/syndromes", {"frames": np.arange(nf, dtype=np.int64)}))
        if rep.disclosed.size != nf * code.m:
            raise MessageError("ldpc: bad reply to ldpc/syndromes")
        synd = rep.disclosed.reshape(nf, code.m)
        keypos = _key_positions(code, d)
        fpos = code.untainted[:d]
        L0 = math.log((1 - self.qber) / self.qber)
        llr = np.zeros((nf, code.n))
        for f in range(nf):
            chunk = self.bits[f * kpf:(f + 1) * kpf].astype(np.float64)
            llr[f, keypos] = _BIG  # padding: shortened zeros
            llr[f, keypos[:chunk.size]] = L0 * (1.0 - 2.0 * chunk)
        revealed = 0
        if pl.start_revealed:
            revealed = self._reveal(channel, np.arange(nf), 0, pl.start_revealed, llr, fpos)
        corrected = self.bits.copy()
        ok = np.zeros(nf, bool)
        iters = np.zeros(nf, np.int64)
        attempts = np.zeros(nf, np.int64)
        pending = np.arange(nf)
        while True:
            failed = []
            for f in pending:  # type: ignore[assignment]
                out, it = decode_syndrome(code, synd[f], llr[f], max_iter=self.max_iter)
                attempts[f] += 1
                if it > 0:
                    ok[f] = True
                    iters[f] += it
                    chunk = out[keypos[:min(kpf, N - f * kpf)]]
                    corrected[f * kpf:f * kpf + chunk.size] = chunk
                else:
                    iters[f] += self.max_iter
                    failed.append(f)
            if not failed or revealed >= d:
                break
            cnt = min(pl.step, d - revealed)
            self._reveal(channel, np.array(failed), revealed, cnt, llr, fpos)
            revealed += cnt
            pending = np.array(failed)
        channel.request(Message("ldpc/done", {"ok": ok.astype(np.uint8)}))
        st = channel.stats
        frame_errors = int((~ok).sum())
        return ReconciliationResult(
            corrected=corrected, leaked_bits=int(st.leaked_bits), qber=self.qber,
            method="ldpc-blind", success=frame_errors == 0, frame_errors=frame_errors,
            iterations=int(iters.sum()), round_trips=st.round_trips, messages=st.messages,
            tag_bytes=st.tag_bytes, corrected_errors=int((corrected != self.bits).sum()),
            details={"frames": nf, "frame_ok": ok, "decode_attempts": attempts.tolist(),
                     "code_n": code.n, "mother_rate": pl.rate, "filler": d,
                     "start_revealed": pl.start_revealed, "step": pl.step,
                     "payload_bytes": st.payload_bytes})

    @staticmethod
    def _reveal(channel: Channel, frames: np.ndarray, start: int, count: int, llr: np.ndarray,
                fpos: np.ndarray) -> int:
        rep = channel.request(Message("ldpc/reveal", {"frames": frames.astype(np.int64), "start": start, "count": count}))
        if rep.disclosed.size != frames.size * count:
            raise MessageError("ldpc: bad reply to ldpc/reveal")
        vals = rep.disclosed.reshape(frames.size, count).astype(np.float64)
        llr[frames[:, None], fpos[start:start + count][None, :]] = _BIG * (1.0 - 2.0 * vals)
        return start + count


def reconcile_ldpc(alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float, *,
                   seed: int | None = None, code_n: int = 16384,
                   channel_authenticator: object = None) -> ReconciliationResult:
    """Correct ``bob_bits`` towards ``alice_bits`` with blind rate-adaptive LDPC (in process).

    ``alice_bits``, ``bob_bits``: 1-D uint8 0/1 arrays of equal length N (split into frames of
    ``code_n − d`` key bits).  ``qber`` in (0, 0.5) picks the mother code and starting rate.
    ``seed``: seeds Alice's filler bits (None: OS randomness — use None outside tests); the codes
    themselves are fixed public constructions.  Failed frames are reported in ``frame_errors`` /
    ``details['frame_ok']`` and ``success`` is False when any frame failed.
    """
    alice_bits, bob_bits, q = validate_reconciliation_input(alice_bits, bob_bits, qber)
    rng = np.random.default_rng(seed) if seed is not None else None
    plan = plan_ldpc(q, code_n=code_n)
    alice = LdpcAlice(alice_bits, filler_rng=rng)
    return LdpcBob(bob_bits, q, plan=plan).run(LocalChannel(alice, channel_authenticator))  # type: ignore[arg-type]
