"""Pairwise one-time-pad masks, mask graphs, server-side modular sum and dropout recovery.

Masks (QuNetQFL, arXiv 2501.12709; Bonawitz et al. 2017):

    m_i = Σ_{j>i, (i,j)∈G} k_ij − Σ_{j<i, (j,i)∈G} k_ji      (mod 2^q, element-wise)

where "i < j" is the order on the loop (the pair's first client is its *master*), G the mask
graph and k_ij a vector of n_params q-bit words made from q·n_params fresh key bits of pair
"Ci-Cj". Every pair's key appears once with + and once with −, so Σ_i m_i = 0 mod 2^q and the
server's sum of masked uploads y_i = v_i + m_i is the plain sum Σ v_i.

Graphs: ``"all"`` (every pair, N(N−1)/2 keys per round, as in the paper) or ``"ring-k"`` (the
Harary graph H_{k,N}: each client is paired with its k/2 nearest neighbours on each side of the
loop order, N·k/2 keys per round; SecAgg+-style, Bell et al. 2020, Flower ``secaggplus``).

Key bits → words: bits ``b[t·q : (t+1)·q]`` read most-significant bit first give word t
(``words_from_bits``). All arithmetic is on ``uint{q}`` arrays, whose wrap-around is mod 2^q;
there is no Python loop over parameters (one vector operation per pair).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence

import numba
import numpy as np

from labqfl.errors import SecureAggregationError
from labqfl.fl.quantize import uint_dtype

_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders "C2" before "C10" (digits compared as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in _NUM.split(name))


def order_clients(names: Iterable[str]) -> list[str]:
    """Client names in loop order (natural/numeric order: C1, C2, …, C10)."""
    out = sorted(set(names), key=natural_key)
    for n in out:
        if "-" in n or not n:
            raise ValueError(f"client name {n!r} must be non-empty and contain no '-'")
    return out


def pair_name(first: str, second: str) -> str:
    """Pair name "Ci-Cj" with Ci first on the loop (the master)."""
    return f"{first}-{second}"


def split_pair(pair: str) -> tuple[str, str]:
    """("Ci", "Cj") from "Ci-Cj"."""
    a, sep, b = pair.partition("-")
    if not sep or not a or not b:
        raise ValueError(f"pair name {pair!r} is not of the form 'Ci-Cj'")
    return a, b


def parse_graph(graph: str, k: int) -> tuple[str, int]:
    """Validate a graph spec: ``"all"`` or ``"ring-k"`` with k even >= 2 (also accepts "ring-8")."""
    m = re.fullmatch(r"ring-(\d+)", graph)
    if m:
        k = int(m.group(1))
        graph = "ring-k"
    if graph == "all":
        return "all", 0
    if graph == "ring-k":
        if k < 2 or k % 2:
            raise ValueError(f"graph 'ring-k' needs an even k >= 2 neighbours, got k={k}")
        return "ring-k", int(k)
    raise ValueError(f"graph must be 'all' or 'ring-k', got {graph!r}")


def mask_graph(clients: Sequence[str], graph: str = "all", k: int = 0) -> list[str]:
    """Pair names of the mask graph over ``clients`` (given in loop order).

    ``"all"``: every pair. ``"ring-k"``: Harary graph H_{k,N} — client at position p is paired
    with positions p±1 … p±k/2 (mod N); when k >= N−1 this is every pair. Each pair is named with
    its earlier client first. Returned in a deterministic order.
    """
    kind, k = parse_graph(graph, k)
    n = len(clients)
    if len(set(clients)) != n:
        raise ValueError("client names must be distinct")
    if kind == "all" or k >= n - 1:
        return [pair_name(clients[a], clients[b]) for a in range(n) for b in range(a + 1, n)]
    edges: set[tuple[int, int]] = set()
    for p in range(n):
        for d in range(1, k // 2 + 1):
            o = (p + d) % n
            edges.add((min(p, o), max(p, o)))
    return [pair_name(clients[a], clients[b]) for a, b in sorted(edges)]


def mask_pair_count(n_clients: int, graph: str = "all", k: int = 0) -> int:
    """Number of pairs :func:`mask_graph` gives over ``n_clients`` clients, without listing them:
    N(N−1)/2 for ``"all"`` (or ``ring-k`` with k ≥ N − 1), N·k/2 for the Harary graph H_{k,N}."""
    kind, k = parse_graph(graph, k)
    if kind == "all" or k >= n_clients - 1:
        return n_clients * (n_clients - 1) // 2
    return n_clients * k // 2


def pairs_of(client: str, pairs: Iterable[str]) -> list[str]:
    """The pairs that contain ``client``."""
    return [p for p in pairs if client in split_pair(p)]


def pair_sign(client: str, pair: str) -> int:
    """+1 if ``client`` is the pair's first (master) end, −1 if the second; error otherwise."""
    a, b = split_pair(pair)
    if client == a:
        return 1
    if client == b:
        return -1
    raise ValueError(f"client {client!r} is not an end of pair {pair!r}")


def components(clients: Collection[str], pairs: Iterable[str]) -> list[set[str]]:
    """Connected components of the graph restricted to ``clients`` (union–find)."""
    parent = {c: c for c in clients}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = split_pair(p)
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
    groups: dict[str, set[str]] = {}
    for c in clients:
        groups.setdefault(find(c), set()).add(c)
    return list(groups.values())


# -- key words ---------------------------------------------------------------------------------


def words_from_bits(bits: np.ndarray, q: int) -> np.ndarray:
    """Pack key bits (uint8 0/1, length q·n) into n words of q bits, MSB first (``uint{q}``)."""
    dt = uint_dtype(q)
    b = np.asarray(bits)
    if b.ndim != 1 or b.size % q:
        raise ValueError(f"key bits must be 1-D with a multiple of q={q} entries, got shape {b.shape}")
    if b.dtype != np.uint8:
        raise ValueError(f"key bits must be uint8 0/1, got dtype {b.dtype}")
    packed = np.packbits(b)  # q is a multiple of 8, so words are whole bytes
    return packed.view(np.dtype(f">u{q // 8}")).astype(dt)


def bits_from_words(words: np.ndarray, q: int) -> np.ndarray:
    """Inverse of :func:`words_from_bits` (uint8 0/1, length q·n)."""
    w = np.asarray(words, dtype=uint_dtype(q))
    return np.unpackbits(w.astype(np.dtype(f">u{q // 8}")).view(np.uint8))


def apply_pair_key(first: np.ndarray, second: np.ndarray, key: np.ndarray) -> None:
    """In place: ``first += key``, ``second -= key`` (mod 2^q), one fused pass (Numba).

    The two ends' mask terms of one pair, as used by the in-process simulation. All three arrays
    must be 1-D of the same ``uint{q}`` dtype and length, and ``first``/``second`` distinct.
    """
    if not (first.dtype == second.dtype == key.dtype) or not (first.shape == second.shape == key.shape):
        raise ValueError("apply_pair_key needs three arrays of the same dtype and shape")
    if first.ndim != 1 or np.may_share_memory(first, second):
        raise ValueError("apply_pair_key needs two distinct 1-D arrays")
    _add_sub_kernel(first, second, key)


@numba.njit(cache=True, nogil=True)
def _add_sub_kernel(a, b, k):  # type: ignore[no-untyped-def]
    for t in range(k.size):
        a[t] += k[t]
        b[t] -= k[t]


# -- client side -------------------------------------------------------------------------------


def pair_mask(client: str, pair_keys: Mapping[str, np.ndarray], n: int, q: int) -> np.ndarray:
    """m_client = Σ (+k over pairs where client is first) − Σ (k where second), mod 2^q."""
    dt = uint_dtype(q)
    m = np.zeros(n, dtype=dt)
    for pair, k in pair_keys.items():
        kw = np.asarray(k)
        if kw.dtype != dt or kw.shape != (n,):
            raise ValueError(f"key words of pair {pair!r} must be {dt} of shape ({n},), got {kw.dtype} {kw.shape}")
        if pair_sign(client, pair) > 0:
            m += kw
        else:
            m -= kw
    return m


def mask_update(client: str, quantized: np.ndarray, pair_keys: Mapping[str, np.ndarray], q: int) -> np.ndarray:
    """Client side: the masked upload y = v + m_client mod 2^q (``uint{q}``, shape (n,)).

    ``quantized``: the client's ``uint{q}`` values (flattened); ``pair_keys``: for each pair of
    the mask graph containing ``client``, its key words (see :func:`words_from_bits`). Both ends
    of a pair must pass the same words.
    """
    dt = uint_dtype(q)
    v = np.asarray(quantized)
    if v.dtype != dt or v.ndim != 1:
        raise ValueError(f"quantized update must be 1-D {dt}, got {v.dtype} with shape {v.shape}")
    return v + pair_mask(client, pair_keys, v.size, q)


# -- server side -------------------------------------------------------------------------------


def aggregate(
    masked: Mapping[str, np.ndarray],
    q: int,
    *,
    dropped: Collection[str] = (),
    revealed: Mapping[str, np.ndarray] | None = None,
    pairs: Iterable[str] | None = None,
) -> np.ndarray:
    """Server side: Σ masked uploads mod 2^q, with dangling masks of dropped clients removed.

    ``masked``: uploads of the surviving clients. ``dropped``: clients that masked but whose
    upload never arrived. ``revealed``: for every graph pair between a survivor s and a dropped
    client d, the pair's key words, revealed by s after the drop (spent either way). The server
    subtracts s's term (+k if s is the pair's first end, −k otherwise). If ``pairs`` (the mask
    graph) is given, a missing reveal is an error instead of a silently wrong sum.

    Returns the exact sum Σ_{survivors} v_i mod 2^q as ``uint{q}``.
    """
    dt = uint_dtype(q)
    if not masked:
        raise SecureAggregationError("no masked uploads to aggregate")
    dropped = set(dropped)
    both = dropped & set(masked)
    if both:
        raise SecureAggregationError(f"clients {sorted(both, key=natural_key)} are marked dropped but uploaded")
    shapes = {np.asarray(v).shape for v in masked.values()}
    if len(shapes) != 1:
        raise SecureAggregationError(f"masked uploads have different shapes: {sorted(shapes)}")
    for c, v in masked.items():
        if np.asarray(v).dtype != dt:
            raise SecureAggregationError(f"upload of {c!r} has dtype {np.asarray(v).dtype}, expected {dt}")
    total = np.zeros(shapes.pop(), dtype=dt)
    for v in masked.values():
        total += v
    revealed = dict(revealed or {})
    if pairs is not None:
        need = dangling_pairs(pairs, masked.keys(), dropped)
        missing = [p for p in need if p not in revealed]
        if missing:
            raise SecureAggregationError(
                f"dropout recovery needs the keys of pairs {missing}; survivors revealed {sorted(revealed)}")
    for pair, k in revealed.items():
        a, b = split_pair(pair)
        if a in masked and b in dropped:
            survivor = a
        elif b in masked and a in dropped:
            survivor = b
        else:
            raise SecureAggregationError(
                f"revealed key of pair {pair!r} does not join a survivor to a dropped client")
        kw = np.asarray(k)
        if kw.dtype != dt or kw.shape != total.shape:
            raise SecureAggregationError(f"revealed key of pair {pair!r} has wrong dtype/shape")
        if pair_sign(survivor, pair) > 0:
            total -= kw
        else:
            total += kw
    return total


def dangling_pairs(pairs: Iterable[str], survivors: Collection[str], dropped: Collection[str]) -> list[str]:
    """Pairs of the graph joining a survivor and a dropped client (their keys must be revealed)."""
    s, d = set(survivors), set(dropped)
    out = []
    for p in pairs:
        a, b = split_pair(p)
        if (a in s and b in d) or (b in s and a in d):
            out.append(p)
    return out


def aggregate_reference(values: Mapping[str, Sequence[int]], q: int) -> list[int]:
    """Slow, obviously-correct reference: element-wise Σ values mod 2^q with Python integers."""
    vals = list(values.values())
    n = len(vals[0])
    return [sum(int(v[t]) for v in vals) % (1 << q) for t in range(n)]


def mask_reference(client: str, pair_keys: Mapping[str, Sequence[int]], n: int, q: int) -> list[int]:
    """Slow reference of :func:`pair_mask` with Python integers (for tests)."""
    out = [0] * n
    for pair, k in pair_keys.items():
        s = pair_sign(client, pair)
        for t in range(n):
            out[t] = (out[t] + s * int(k[t])) % (1 << q)
    return out
