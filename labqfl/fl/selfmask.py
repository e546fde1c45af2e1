"""Self-masks with information-theoretic Shamir sharing: dropouts that never expose a late upload.

The paper's pairwise masks (QuNetQFL, arXiv 2501.12709) leave one timing hole: when client d
drops, its surviving partners reveal the keys they shared with it, and if d's upload then arrives
late the server holds y_d and every mask that covers it. Bonawitz et al. ("Practical Secure
Aggregation for Privacy-Preserving Machine Learning", CCS 2017, §4) close it with a second,
*self* mask s_i per client that is secret-shared among the other clients; at unmasking the server
asks each survivor for exactly one kind of secret per other client — the pairwise key with a
dropped client, or its share of a *surviving* client's self-mask, never both. A dropped client's
self-mask is then never reconstructed, so its late upload y_d = v_d + m_d + s_d stays a one-time
pad even after m_d is known.

labqfl keeps the whole scheme information-theoretic (no key agreement, no PRG expansion of key
material):

* **Self-mask.** s_i: n uniform q-bit words drawn from the client's own randomness, the OS CSPRNG
  (``secrets``; provenance ``SELF_MASK_RANDOMNESS``). Upload y_i = v_i + m_i + s_i mod 2^q.
* **Shamir sharing over GF(p)** (Shamir, "How to share a secret", CACM 1979), one polynomial per
  word: f(x) = s + a_1 x + … + a_{t−1} x^{t−1} mod p, a_j uniform in GF(p), with p the smallest
  prime above 2^q (``SHARE_PRIME``: 257, 65537, 2^32 + 15). Holder j (x-coordinate = its 1-based
  position in the round's loop order, < p) receives f(x_j). Any t shares give s back by Lagrange
  interpolation at 0; any t − 1 are independent of s (perfect secrecy). **Exactness mod 2^q:** the
  secret word is an integer s ∈ [0, 2^q) ⊂ [0, p), interpolation returns the field element s, i.e.
  the same integer, and s mod 2^q = s — the server subtracts exactly what the client added.
* **Holders** of client i's shares: i itself and its neighbours in the mask graph (its closed
  neighbourhood, ``holders_of``). Threshold t: 1 ≤ t ≤ the smallest neighbourhood (default: a
  majority of it, ``default_threshold``).
* **Transport.** Each share word is an element of GF(p), w = ⌈log2 p⌉ = q + 1 bits. The share
  i → j travels XOR-ed with w fresh key bits of pair (i, j) per word (a one-time pad over w-bit
  strings: the ciphertext is uniform on [0, 2^w) whatever the share). Per pair and round that is
  2·w·n key bits (one pad per direction) on top of the q·n bits of the pairwise mask; the client's
  own share does not travel. Key bits come from the same consume-once key source as the masks.
* **Unmasking.** The server asks each survivor j for (a) the pairwise keys of its dropped partners
  and (b) its shares of surviving clients' self-masks (t holders per survivor). Each client guards
  its answers (:class:`UnmaskGuard`): within a round it refuses any request that would give the
  server both kinds of secret about the same peer, a share of a peer it was told dropped, or a key
  of a peer it was told survived.

Reconstruction arithmetic is in uint64 with every product < 2^64 (p < 2^34, x-coordinates
< 2^20; Lagrange products split into 17-bit limbs, :func:`_mulmod`).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numba
import numpy as np
from numba.extending import register_jitable

from labqfl.errors import SecureAggregationError
from labqfl.fl.masks import natural_key, split_pair
from labqfl.fl.quantize import uint_dtype

#: The smallest prime above 2^q (2^8 + 1, 2^16 + 1 are Fermat primes; 2^32 + 15 is the first prime
#: after 2^32). Shares live in GF(p); a secret word (< 2^q) is a field element as it is.
SHARE_PRIME: dict[int, int] = {8: 257, 16: 65537, 32: 4_294_967_311}
#: Where the self-masks and the sharing polynomials' coefficients come from.
SELF_MASK_RANDOMNESS = "os-csprng (python secrets: the operating system's CSPRNG)"
_MAX_X = 1 << 20  # x-coordinates (client positions) stay below 2^20 so Horner products fit uint64


def share_prime(q: int) -> int:
    """The prime p of the share field for modulus 2^q (``SHARE_PRIME``)."""
    uint_dtype(q)
    return SHARE_PRIME[q]


def share_bits(q: int) -> int:
    """Bits w of one share word (an element of GF(p)): ⌈log2 p⌉ = q + 1; also the pad size per word."""
    return (share_prime(q) - 1).bit_length()


def share_dtype(q: int) -> np.dtype:
    """Storage dtype of share words: uint32 when p < 2^32 (q ≤ 16), else uint64."""
    return np.dtype(np.uint32) if share_prime(q) < (1 << 32) else np.dtype(np.uint64)


# -- randomness ---------------------------------------------------------------------------------


def draw_self_mask(n: int, q: int) -> np.ndarray:
    """n uniform q-bit words (``uint{q}``) from the OS CSPRNG (``secrets.token_bytes``)."""
    dt = uint_dtype(q)
    return np.frombuffer(secrets.token_bytes(n * dt.itemsize), dtype=dt).copy()


def uniform_mod_p(count: int, p: int) -> np.ndarray:
    """``count`` independent uniform elements of GF(p) (uint64) from the OS CSPRNG.

    Exact uniformity by rejection: draw B-bit integers r from ``secrets`` (B = 16, 32 or 64, the
    smallest with 2^B ≥ 256·p), keep r < ⌊2^B/p⌋·p and return r mod p — every residue has exactly
    ⌊2^B/p⌋ preimages; acceptance ≥ 1 − p/2^B > 0.99.
    """
    dt: np.dtype[Any] = np.dtype(np.uint16 if p < (1 << 8) else np.uint32 if p < (1 << 24) else np.uint64)
    limit = ((1 << (8 * dt.itemsize)) // p) * p  # values >= limit are rejected
    out = np.empty(count, dtype=np.uint64)
    filled = 0
    while filled < count:
        need = count - filled
        draw = need + need // 64 + 16
        raw = np.frombuffer(secrets.token_bytes(draw * dt.itemsize), dtype=dt)
        if limit < (1 << (8 * dt.itemsize)):
            raw = raw[raw < dt.type(limit)]
        take = min(raw.size, need)
        out[filled:filled + take] = raw[:take] % dt.type(p)
        filled += take
    return out


# -- Shamir sharing over GF(p) ------------------------------------------------------------------


# Kernels per prime, with the prime a typed global (frozen as a compile-time constant, so "% p"
# is a multiply-shift rather than a division) and cached on disk like every labqfl kernel.
_P257 = np.uint32(257)
_P65537 = np.uint32(65537)
_P2_32_15 = np.uint64(4_294_967_311)
_LO17 = np.uint64(0x1FFFF)
_SH17 = np.uint64(17)


@register_jitable
def _horner_impl(coefs, xs, out, pc):  # type: ignore[no-untyped-def]
    """out[h, i] = Σ_j coefs[j, i] · xs[h]^j mod p (Horner); the caller picks a dtype in which
    (p − 1)·(x_max + 1) fits."""
    t, n = coefs.shape
    for h in range(xs.size):
        x = xs[h]
        row = out[h]
        for i in range(n):
            row[i] = coefs[t - 1, i]
        for j in range(t - 2, -1, -1):
            c = coefs[j]
            for i in range(n):
                row[i] = (row[i] * x + c[i]) % pc


@numba.njit(cache=True, nogil=True)
def _horner_257(coefs, xs, out):  # type: ignore[no-untyped-def]
    _horner_impl(coefs, xs, out, _P257)


@numba.njit(cache=True, nogil=True)
def _horner_65537(coefs, xs, out):  # type: ignore[no-untyped-def]
    _horner_impl(coefs, xs, out, _P65537)


@numba.njit(cache=True, nogil=True)
def _horner_2_32_15(coefs, xs, out):  # type: ignore[no-untyped-def]
    _horner_impl(coefs, xs, out, _P2_32_15)


@register_jitable
def _lagrange_small_impl(shares, lambdas, out, pc):  # type: ignore[no-untyped-def]
    """out[i] = Σ_k λ_k · shares[k, i] mod p for p < 2^32 (each product < 2^64)."""
    m, n = shares.shape
    for i in range(n):
        out[i] = 0
    for k in range(m):
        lam = lambdas[k]
        row = shares[k]
        for i in range(n):
            out[i] = (out[i] + np.uint64(row[i]) * lam) % pc


@numba.njit(cache=True, nogil=True)
def _lagrange_257(shares, lambdas, out):  # type: ignore[no-untyped-def]
    _lagrange_small_impl(shares, lambdas, out, _P257)


@numba.njit(cache=True, nogil=True)
def _lagrange_65537(shares, lambdas, out):  # type: ignore[no-untyped-def]
    _lagrange_small_impl(shares, lambdas, out, _P65537)


@numba.njit(cache=True, nogil=True)
def _lagrange_2_32_15(shares, lambdas, out):  # type: ignore[no-untyped-def]
    """p = 2^32 + 15: a·λ could reach 2^66, so λ is split into two 17-bit limbs (a < 2^33:
    every partial product < 2^50)."""
    m, n = shares.shape
    for i in range(n):
        out[i] = 0
    for k in range(m):
        lam = lambdas[k]
        b0 = lam & _LO17
        b1 = lam >> _SH17
        row = shares[k]
        for i in range(n):
            a = np.uint64(row[i])
            r = ((((a * b1) % _P2_32_15) << _SH17) % _P2_32_15 + a * b0) % _P2_32_15
            out[i] = (out[i] + r) % _P2_32_15


_HORNER = {257: _horner_257, 65537: _horner_65537, 4_294_967_311: _horner_2_32_15}
_LAGRANGE = {257: _lagrange_257, 65537: _lagrange_65537, 4_294_967_311: _lagrange_2_32_15}


def _check_xs(xs: Sequence[int], p: int) -> np.ndarray:
    arr = np.asarray([int(x) for x in xs], dtype=np.uint64)
    if arr.size == 0 or len(set(arr.tolist())) != arr.size:
        raise ValueError(f"Shamir x-coordinates must be distinct and non-empty, got {list(xs)}")
    if int(arr.min()) < 1 or int(arr.max()) >= min(p, _MAX_X):
        raise ValueError(f"Shamir x-coordinates must lie in [1, {min(p, _MAX_X) - 1}], got {list(xs)}")
    return arr


def shamir_share(secret: np.ndarray, xs: Sequence[int], t: int, q: int) -> np.ndarray:
    """Shares f(x) of every word of ``secret`` (``uint{q}``, shape (n,)) at the points ``xs``.

    f(x) = secret + Σ_{j=1}^{t−1} a_j x^j over GF(p), a_j uniform (OS CSPRNG), one polynomial per
    word. Returns shape (len(xs), n) in :func:`share_dtype`. Needs 1 ≤ t ≤ len(xs).
    """
    p = share_prime(q)
    s = np.asarray(secret)
    if s.dtype != uint_dtype(q) or s.ndim != 1:
        raise ValueError(f"secret must be 1-D {uint_dtype(q)}, got {s.dtype} shape {s.shape}")
    x = _check_xs(xs, p)
    if not 1 <= t <= x.size:
        raise ValueError(f"Shamir threshold t must lie in [1, {x.size}] (the number of holders), got {t}")
    n = s.size
    # uint32 arithmetic (vectorisable) when every acc·x + c stays below 2^32, else uint64
    dt = share_dtype(q) if (p - 1) * (int(x.max()) + 1) < (1 << 32) else np.dtype(np.uint64)
    coefs = np.empty((t, n), dtype=dt)
    coefs[0] = s
    if t > 1:
        coefs[1:] = uniform_mod_p((t - 1) * n, p).reshape(t - 1, n)
    out = np.empty((x.size, n), dtype=dt)
    _HORNER[p](coefs, x.astype(dt), out)
    coefs[:] = 0
    return out.astype(share_dtype(q), copy=False)


def lagrange_at_zero(xs: Sequence[int], p: int) -> list[int]:
    """Lagrange coefficients λ_k = Π_{m≠k} x_m / (x_m − x_k) mod p (interpolation at x = 0)."""
    out = []
    for k, xk in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != k:
                num = num * xm % p
                den = den * (xm - xk) % p
        out.append(num * pow(den, -1, p) % p)
    return out


def shamir_reconstruct(xs: Sequence[int], shares: np.ndarray, q: int) -> np.ndarray:
    """The secret words (``uint{q}``) from shares at ``xs`` (shape (len(xs), n)); needs ≥ t shares.

    Raises :class:`SecureAggregationError` if the interpolated value is not below 2^q (inconsistent
    or too few shares — a correct reconstruction of a q-bit secret is always below 2^q).
    """
    p = share_prime(q)
    x = _check_xs(xs, p)
    sh = np.asarray(shares)
    if sh.ndim != 2 or sh.shape[0] != x.size:
        raise ValueError(f"shares must have shape ({x.size}, n), got {sh.shape}")
    lam = np.asarray(lagrange_at_zero(x.tolist(), p), dtype=np.uint64)
    out = np.empty(sh.shape[1], dtype=np.uint64)
    _LAGRANGE[p](np.ascontiguousarray(sh), lam, out)
    if out.size and int(out.max()) >= (1 << q):
        raise SecureAggregationError(
            "self-mask reconstruction gave a value >= 2^q: the shares are inconsistent or fewer than the threshold")
    return out.astype(uint_dtype(q))


# -- pads: key bits → w-bit words ----------------------------------------------------------------


def pad_words_from_bits(bits: np.ndarray, w: int) -> np.ndarray:
    """Key bits (uint8 0/1, length w·n) → n pad words of w bits, MSB first (uint64)."""
    b = np.asarray(bits)
    if b.dtype != np.uint8 or b.ndim != 1 or b.size % w or not 1 <= w <= 64:
        raise ValueError(f"pad bits must be 1-D uint8 with a multiple of w={w} entries, got {b.dtype} {b.shape}")
    out = np.empty(b.size // w, dtype=np.uint64)
    _pack_kernel(b, w, out)
    return out


@numba.njit(cache=True, nogil=True)
def _pack_kernel(bits, w, out):  # type: ignore[no-untyped-def]
    for i in range(out.size):
        v = np.uint64(0)
        base = i * w
        for j in range(w):
            v = (v << np.uint64(1)) | np.uint64(bits[base + j] & 1)
        out[i] = v


def encrypt_share(share: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """One-time pad: share words XOR pad words (both < 2^w); decryption is the same operation."""
    s = np.asarray(share)
    k = np.asarray(pad, dtype=np.uint64)
    if s.shape != k.shape:
        raise ValueError(f"share and pad must have the same shape, got {s.shape} and {k.shape}")
    return np.bitwise_xor(s, k.astype(s.dtype))  # pads are < 2^w, which the share dtype holds


# -- graph helpers -------------------------------------------------------------------------------


def holders_of(client: str, clients: Sequence[str], pairs: Iterable[str]) -> list[str]:
    """Holders of ``client``'s self-mask shares: itself and its mask-graph neighbours, loop order."""
    return holder_sets(clients, pairs)[client]


def holder_sets(clients: Sequence[str], pairs: Iterable[str]) -> dict[str, list[str]]:
    """Every client's holders (itself and its graph neighbours, in loop order), in one pass."""
    out: dict[str, set[str]] = {c: {c} for c in clients}
    for p in pairs:
        a, b = split_pair(p)
        if a in out and b in out:
            out[a].add(b)
            out[b].add(a)
    pos = {c: i for i, c in enumerate(clients)}
    return {c: sorted(hs, key=lambda x: pos[x]) for c, hs in out.items()}


def default_threshold(clients: Sequence[str], pairs: Sequence[str]) -> int:
    """A majority of the smallest holder set: ⌊h_min/2⌋ + 1 (h_min = smallest closed neighbourhood)."""
    h = min(len(hs) for hs in holder_sets(clients, pairs).values())
    return h // 2 + 1


def check_threshold(clients: Sequence[str], pairs: Sequence[str], t: int, q: int) -> None:
    """Refuse a threshold outside [1, h_min] (h_min: the smallest holder set of any client), and
    more clients than the share field has non-zero x-coordinates."""
    bound = min(share_prime(q), _MAX_X)
    if len(clients) >= bound:
        raise SecureAggregationError(
            f"self-masks with q={q}: shares live in GF({share_prime(q)}), which has x-coordinates for at "
            f"most {bound - 1} clients, got {len(clients)}; use a larger q")
    h = min(len(hs) for hs in holder_sets(clients, pairs).values())
    if not 1 <= t <= h:
        raise SecureAggregationError(
            f"self-mask threshold t={t} is invalid for this mask graph: it must lie in [1, {h}] "
            f"(a client's shares go to itself and its {h - 1} graph neighbours at the least)")


def choose_share_holders(survivors: Sequence[str], clients: Sequence[str], pairs: Sequence[str],
                         t: int) -> dict[str, list[str]]:
    """For each survivor, the first t surviving holders of its shares (loop order) the server asks.

    Raises :class:`SecureAggregationError` — before anything is revealed — if a survivor has fewer
    than t surviving holders (its self-mask could not be removed).
    """
    alive = set(survivors)
    out: dict[str, list[str]] = {}
    sets = holder_sets(clients, pairs)
    for c in survivors:
        hs = [h for h in sets[c] if h in alive]
        if len(hs) < t:
            raise SecureAggregationError(
                f"round aborted before any reveal: survivor {c} has {len(hs)} surviving share holder(s) "
                f"{hs}, the self-mask threshold is t={t}; too many dropouts for this graph and threshold")
        out[c] = hs[:t]
    return out


# -- the client-side rule: one kind of secret per peer -------------------------------------------


#: :func:`consistency_need` as the one-line errors of the consistency stage state it
CONSISTENCY_NEED_RULE = "max(t, min_survivors, ⌊(N + c)/2⌋ + 1)"


def consistency_need(n_clients: int, t: int, min_survivors: int, colluders: int) -> int:
    """Signatures a deployed node requires over one (survivors, dropped) story before it unmasks (and the fewest
    survivors a deployed self-mask round may have): ``max(t, min_survivors, ⌊(N + c)/2⌋ + 1)`` with N the signed
    spec's number of clients and c the clients colluding with the server that the run tolerates (signed
    ``colluders``; by default t − 1, :meth:`~labqfl.fl.flower.spec.FlowerSpec.tolerated_colluders`). Bonawitz,
    Ivanov, Kreuter et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017,
    round 3 *ConsistencyCheck*, with the bound made explicit.

    Each honest node signs one story per (job, round) (:func:`labqfl.fl.flower.specsig.pin_survivors`); the c
    colluders sign anything. Two different stories each need ``need`` signers, at most N + c signatures exist
    (honest nodes once, colluders twice), so both can be unmasked only if 2·need ≤ N + c: need =
    ⌊(N + c)/2⌋ + 1 is the smallest with 2·need > N + c (review s36 F1: with the former ⌊N/2⌋ + 1, one
    colluder in a 5-client ring gave two stories and a client's update). No further ``c + 2`` term (a story
    must keep two honest inputs, or its sum less the colluders' inputs is one client's update) is needed:
    for c ≤ N − 2 (:class:`~labqfl.fl.flower.spec.FlowerSpec` refuses more) ⌊(N + c)/2⌋ + 1 ≥ ⌊(2c + 2)/2⌋ + 1
    = c + 2 already. Liveness cost: ``need`` survivors must sign; N = 3, t = 2 (c = 1) gives need = 3, no
    dropout tolerated unless the operator signs ``colluders`` 0 (need 2)."""
    c = max(0, int(colluders))
    return max(int(t), int(min_survivors), (int(n_clients) + c) // 2 + 1)


class UnmaskGuard:
    """One client's record, per round, of what it revealed about each peer.

    ``authorize(key_peers=…, share_peers=…, dropped=…, survivors=…)`` is called before a client
    answers an unmasking request; it raises :class:`SecureAggregationError` (and records nothing)
    if the request asks for the pairwise key *and* the self-mask share about the same peer — in
    this request or together with an earlier one of the same round — a share of a peer announced
    dropped, or a key of a peer announced surviving. Otherwise it records the request.
    """

    def __init__(self, client: str) -> None:
        self.client = client
        self.kind: dict[str, str] = {}  # peer -> "key" | "share"

    def authorize(self, *, key_peers: Collection[str], share_peers: Collection[str],
                  dropped: Collection[str], survivors: Collection[str]) -> None:
        kp, sp, dr, sv = set(key_peers), set(share_peers), set(dropped), set(survivors)
        bad = sorted(kp & sp, key=natural_key)
        if bad:
            raise SecureAggregationError(
                f"{self.client} refuses the unmask request: it asks for both the pairwise key and the "
                f"self-mask share about {bad}; one kind of secret per peer only")
        if dr & sv:
            raise SecureAggregationError(
                f"{self.client} refuses the unmask request: {sorted(dr & sv, key=natural_key)} announced "
                f"both dropped and surviving")
        if sp & dr or (sp - sv - {self.client}):
            raise SecureAggregationError(
                f"{self.client} refuses the unmask request: self-mask shares are revealed only for "
                f"surviving clients, asked for {sorted(sp - sv, key=natural_key)}")
        if kp - dr:
            raise SecureAggregationError(
                f"{self.client} refuses the unmask request: pairwise keys are revealed only for dropped "
                f"partners, asked for {sorted(kp - dr, key=natural_key)}")
        for peer in kp:
            if self.kind.get(peer, "key") != "key":
                raise SecureAggregationError(
                    f"{self.client} refuses the unmask request: it already revealed its self-mask share "
                    f"of {peer} this round; the pairwise key with {peer} would unmask it")
        for peer in sp:
            if self.kind.get(peer, "share") != "share":
                raise SecureAggregationError(
                    f"{self.client} refuses the unmask request: it already revealed its pairwise key "
                    f"with {peer} this round; a self-mask share of {peer} would unmask its upload")
        for peer in kp:
            self.kind[peer] = "key"
        for peer in sp:
            self.kind[peer] = "share"

    def as_dict(self) -> dict[str, str]:
        return dict(self.kind)

    @classmethod
    def from_dict(cls, client: str, kinds: Mapping[str, str]) -> UnmaskGuard:
        g = cls(client)
        g.kind = {str(k): str(v) for k, v in kinds.items()}
        return g


# -- key cost ------------------------------------------------------------------------------------


def key_cost(n_clients: int, pairs: int, n_params: int, q: int, *, self_masks: bool) -> dict[str, int]:
    """Key bits per round: pairwise masks, share pads, total, and the paper's all-pairs cost.

    Pairwise masks: q·n per graph pair. Share pads (self-masks on): 2·w·n per graph pair (one
    pad per direction, w = q + 1). Paper: every one of N(N−1)/2 pairs masks with q·n bits.
    """
    mask = pairs * q * n_params
    pads = pairs * 2 * share_bits(q) * n_params if self_masks else 0
    return {"mask_key_bits": mask, "share_pad_key_bits": pads, "key_bits_total": mask + pads,
            "paper_all_pairs_key_bits": n_clients * (n_clients - 1) // 2 * q * n_params}
