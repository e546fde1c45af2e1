"""Mask graphs, key words, client masks vs reference, server sum and dropout recovery."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqfl.errors import SecureAggregationError
from labqfl.fl.masks import (
    aggregate,
    aggregate_reference,
    bits_from_words,
    components,
    dangling_pairs,
    mask_graph,
    mask_reference,
    mask_update,
    order_clients,
    pair_mask,
    pairs_of,
    split_pair,
    words_from_bits,
)


def _clients(n: int) -> list[str]:
    return [f"C{i}" for i in range(1, n + 1)]


def test_clients_are_ordered_numerically() -> None:
    assert order_clients(["C10", "C2", "C1"]) == ["C1", "C2", "C10"]
    assert mask_graph(order_clients(["C10", "C2"]))[0] == "C2-C10"
    with pytest.raises(ValueError, match="'-'"):
        order_clients(["C1-C2"])


@pytest.mark.parametrize("n", [2, 3, 5, 12, 200])
def test_all_pairs_graph_has_n_choose_2_pairs_first_client_first(n: int) -> None:
    pairs = mask_graph(_clients(n), "all")
    assert len(pairs) == len(set(pairs)) == n * (n - 1) // 2
    for p in pairs:
        a, b = split_pair(p)
        assert int(a[1:]) < int(b[1:])


@pytest.mark.parametrize(("n", "k"), [(10, 2), (10, 4), (200, 16), (201, 8), (7, 6), (5, 8)])
def test_ring_graph_is_k_regular_and_connected(n: int, k: int) -> None:
    clients = _clients(n)
    pairs = mask_graph(clients, "ring-k", k)
    deg = min(k, n - 1)
    assert len(pairs) == n * deg // 2
    assert all(len(pairs_of(c, pairs)) == deg for c in clients)
    assert len(components(clients, pairs)) == 1
    assert mask_graph(clients, f"ring-{k}") == pairs


def test_graph_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="even"):
        mask_graph(_clients(5), "ring-k", 3)
    with pytest.raises(ValueError, match="'all' or 'ring-k'"):
        mask_graph(_clients(5), "star")


@pytest.mark.parametrize("q", [8, 16, 32])
def test_words_from_bits_reads_msb_first_and_round_trips(q: int) -> None:
    bits = np.zeros(2 * q, np.uint8)
    bits[0] = 1  # MSB of word 0
    bits[2 * q - 1] = 1  # LSB of word 1
    w = words_from_bits(bits, q)
    assert w.dtype == np.dtype(f"uint{q}")
    assert w.tolist() == [1 << (q - 1), 1]
    rnd = np.random.default_rng(q).integers(0, 2, 40 * q, dtype=np.uint8)
    assert np.array_equal(bits_from_words(words_from_bits(rnd, q), q), rnd)
    with pytest.raises(ValueError, match="multiple of q"):
        words_from_bits(np.zeros(q + 1, np.uint8), q)


@settings(max_examples=40, deadline=None)
@given(q=st.sampled_from([8, 16, 32]), n_clients=st.integers(2, 9), n=st.integers(1, 20),
       ring=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_masks_match_reference_and_cancel(q: int, n_clients: int, n: int, ring: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clients = _clients(n_clients)
    pairs = mask_graph(clients, "ring-k" if ring else "all", 2)
    dt = np.dtype(f"uint{q}")
    keys = {p: rng.integers(0, 1 << q, n, dtype=np.uint64).astype(dt) for p in pairs}
    vals = {c: rng.integers(0, 1 << (q - 4), n, dtype=np.uint64).astype(dt) for c in clients}
    masked = {}
    total_mask = np.zeros(n, dt)
    for c in clients:
        mine = {p: keys[p] for p in pairs_of(c, pairs)}
        m = pair_mask(c, mine, n, q)
        assert m.tolist() == mask_reference(c, mine, n, q)
        total_mask += m
        masked[c] = mask_update(c, vals[c], mine, q)
    assert not total_mask.any()
    assert aggregate(masked, q).tolist() == aggregate_reference(vals, q)


def test_dropout_recovery_with_low_level_api() -> None:
    q, n = 16, 50
    rng = np.random.default_rng(3)
    clients = _clients(6)
    pairs = mask_graph(clients, "ring-k", 4)
    keys = {p: rng.integers(0, 1 << q, n).astype(np.uint16) for p in pairs}
    vals = {c: rng.integers(0, 1000, n).astype(np.uint16) for c in clients}
    masked = {c: mask_update(c, vals[c], {p: keys[p] for p in pairs_of(c, pairs)}, q) for c in clients}
    dropped = {"C2", "C5"}
    survivors = {c: masked[c] for c in clients if c not in dropped}
    need = dangling_pairs(pairs, survivors, dropped)
    assert need and all(set(split_pair(p)) & dropped for p in need)
    with pytest.raises(SecureAggregationError, match="needs the keys of pairs"):
        aggregate(survivors, q, dropped=dropped, revealed={}, pairs=pairs)
    total = aggregate(survivors, q, dropped=dropped, revealed={p: keys[p] for p in need}, pairs=pairs)
    assert total.tolist() == aggregate_reference({c: vals[c] for c in survivors}, q)
    bad = {p: keys[p] for p in pairs if not set(split_pair(p)) & dropped}
    with pytest.raises(SecureAggregationError, match="does not join a survivor"):
        aggregate(survivors, q, dropped=dropped, revealed=dict(list(bad.items())[:1]))


def test_aggregate_refuses_inconsistent_uploads() -> None:
    with pytest.raises(SecureAggregationError, match="dtype"):
        aggregate({"C1": np.zeros(3, np.uint8)}, 16)
    with pytest.raises(SecureAggregationError, match="shapes"):
        aggregate({"C1": np.zeros(3, np.uint8), "C2": np.zeros(4, np.uint8)}, 8)
    with pytest.raises(SecureAggregationError, match="marked dropped but uploaded"):
        aggregate({"C1": np.zeros(3, np.uint8)}, 8, dropped=["C1"])


@pytest.mark.parametrize(("n", "graph", "k"), [(2, "all", 0), (7, "all", 0), (9, "ring-k", 2), (10, "ring-k", 4),
                                               (5, "ring-k", 4), (6, "ring-k", 6), (31, "ring-k", 8)])
def test_the_pair_count_is_the_graph_s_without_listing_it(n: int, graph: str, k: int) -> None:
    from labqfl.fl.masks import mask_pair_count

    assert mask_pair_count(n, graph, k) == len(mask_graph([f"C{i}" for i in range(1, n + 1)], graph, k))
