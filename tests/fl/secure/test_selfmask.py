"""Self-masks with Shamir sharing: a late upload stays hidden, exact sums, one kind of secret per
peer (client-side guard), key pads consumed once from the real key stores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from labqfl.errors import SecureAggregationError
from labqfl.fl import CsprngKeySource, KeyStoreKeySource, SecAggConfig, secure_round
from labqfl.fl.masks import components, mask_graph, pair_sign, split_pair
from labqfl.fl.quantize import dequantize_sum, quantize, weight_ranges
from labqfl.fl.selfmask import (
    SHARE_PRIME,
    UnmaskGuard,
    holders_of,
    key_cost,
    pad_words_from_bits,
    shamir_reconstruct,
    shamir_share,
    share_bits,
)


def _updates(n_clients: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"C{i}": rng.normal(0, 0.4, n) for i in range(1, n_clients + 1)}


def _expected(updates, weights, cfg, survivors):  # type: ignore[no-untyped-def]
    clients = list(updates)
    b = cfg.check_bit_budget(len(clients))
    m = dict(zip(clients, weight_ranges([weights[c] for c in clients], b).tolist(), strict=True))
    total = np.zeros(next(iter(updates.values())).size, dtype=np.uint64)
    for c in survivors:
        total += quantize(updates[c], clip=cfg.clip, levels=m[c], q=cfg.q)[0]
    return dequantize_sum(total, clip=cfg.clip, total_levels=sum(m[c] for c in survivors))


def _server_unmasks_late_upload(view, late: str, q: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """What the server computes from a late upload: y_d minus d's pair-mask terms it learnt from
    the reveals (all of d's pairs: one dropout, every partner survived)."""
    y = view["late_uploads"][late].copy()
    for p, k in view["revealed_pair_keys"].items():
        assert late in split_pair(p)
        if pair_sign(late, p) > 0:
            y -= k
        else:
            y += k
    return y


# -- acceptance: a late upload after the reveals ------------------------------------------------


@pytest.mark.parametrize("graph", ["all", "ring-4"])
def test_late_upload_of_a_dropped_client_is_exposed_without_self_masks_and_uniform_with(graph: str) -> None:
    q, n, trials = 8, 64, 60
    ups = {c: np.full(n, 0.3) for c in (f"C{i}" for i in range(1, 7))}  # a fixed, known update
    w = dict.fromkeys(ups, 1.0)
    exposed, hidden = [], []
    for trial in range(trials):
        for self_masks, sink in ((False, exposed), (True, hidden)):
            cfg = SecAggConfig(q=q, clip=1.0, graph=graph, self_masks=self_masks)
            r = secure_round(ups, w, cfg, CsprngKeySource(), round_index=trial, rng=np.random.default_rng(trial),
                             dropped=["C3"], debug=True)
            assert r.server_view is not None
            seen = _server_unmasks_late_upload(r.server_view, "C3", q)
            if not self_masks:  # the paper's scheme: the server recovers C3's quantised update exactly
                assert np.array_equal(seen, r.server_view["quantized"]["C3"])
            sink.append(seen)
    v = np.full(n, exposed[0][0])
    assert all(np.array_equal(e, v) for e in exposed)
    h = np.concatenate(hidden).astype(np.int64)
    counts = np.bincount(h, minlength=1 << q)
    assert stats.chisquare(counts).pvalue > 1e-4  # uniform on [0, 2^q) whatever the update
    u = (h + np.random.default_rng(1).random(h.size)) / (1 << q)
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert np.mean(h == int(v[0])) < 0.05  # the update's value is no more likely than any other


# -- property: exact sums with self-masks, any graph, dropouts up to n − t ------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    q=st.sampled_from([8, 16, 32]),
    n_clients=st.integers(3, 10),
    graph=st.sampled_from(["all", "ring-2", "ring-4", "ring-6"]),
    t_frac=st.floats(0.0, 1.0),
    drop_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_masked_sum_is_exact_with_self_masks(q: int, n_clients: int, graph: str, t_frac: float, drop_frac: float,
                                             seed: int) -> None:
    names = [f"C{i}" for i in range(1, n_clients + 1)]
    pairs = mask_graph(names, graph)
    h_min = min(len(holders_of(c, names, pairs)) for c in names)
    t = 1 + int(t_frac * (h_min - 1))
    n_drop = int(drop_frac * (n_clients - t))  # up to n − t
    rng = np.random.default_rng(seed)
    ups = _updates(n_clients, 7, seed)
    weights = {c: float(rng.integers(1, 50)) for c in ups}
    dropped = sorted(rng.choice(names, size=n_drop, replace=False).tolist())
    survivors = [c for c in names if c not in dropped]
    cfg = SecAggConfig(q=q, clip=1.0, graph=graph, self_masks=True, threshold=t)
    recoverable = all(sum(h not in dropped for h in holders_of(c, names, pairs)) >= t for c in survivors)
    ok = len(survivors) >= 2 and len(components(survivors, pairs)) == 1 and recoverable
    if graph == "all" or len(pairs) == n_clients * (n_clients - 1) // 2:
        assert recoverable  # complete graph: every survivor's holders are all survivors (>= t)
    if not ok:
        with pytest.raises(SecureAggregationError, match="aborted"):
            secure_round(ups, weights, cfg, CsprngKeySource(), round_index=0, rng=rng, dropped=dropped)
        return
    r = secure_round(ups, weights, cfg, CsprngKeySource(), round_index=0, rng=np.random.default_rng(seed),
                     dropped=dropped)
    assert np.array_equal(r.aggregate, _expected(ups, weights, cfg, survivors))
    cost = key_cost(n_clients, len(pairs), 7, q, self_masks=True)
    assert r.key_bits_total == cost["key_bits_total"] == len(pairs) * (q + 2 * (q + 1)) * 7
    assert r.share_key_bits_total == cost["share_pad_key_bits"]
    assert r.paper_all_pairs_key_bits == cost["paper_all_pairs_key_bits"]
    assert r.threshold == t and r.accounting()["self_masks"] is True


def test_too_many_dropouts_for_the_threshold_abort_before_any_reveal() -> None:
    ups = _updates(6, 5, 0)
    cfg = SecAggConfig(q=8, clip=1.0, graph="all", self_masks=True, threshold=5)
    with pytest.raises(SecureAggregationError, match=r"surviving share holder\(s\).*t=5"):
        secure_round(ups, dict.fromkeys(ups, 1.0), cfg, CsprngKeySource(), round_index=0,
                     rng=np.random.default_rng(0), dropped=["C1", "C2"])
    with pytest.raises(SecureAggregationError, match=r"must lie in \[1, 3\]"):
        secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8, graph="ring-2", self_masks=True, threshold=4),
                     CsprngKeySource(), round_index=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs self_masks=True"):
        SecAggConfig(q=8, threshold=2)


# -- the client-side rule: never both kinds of secret about one peer ---------------------------


def test_guard_refuses_both_kinds_about_the_same_peer() -> None:
    g = UnmaskGuard("C1")
    with pytest.raises(SecureAggregationError, match=r"both the pairwise key and the self-mask share about \['C3'\]"):
        g.authorize(key_peers=["C3"], share_peers=["C3"], dropped=["C3"], survivors=["C1", "C2"])
    assert g.as_dict() == {}  # a refused request records nothing
    g.authorize(key_peers=["C3"], share_peers=["C2", "C1"], dropped=["C3"], survivors=["C1", "C2", "C4"])
    # a second request of the same round claiming C3 survived: its share would unmask C3's late upload
    with pytest.raises(SecureAggregationError, match="already revealed its pairwise key with C3"):
        g.authorize(key_peers=[], share_peers=["C3"], dropped=[], survivors=["C1", "C2", "C3"])
    with pytest.raises(SecureAggregationError, match="already revealed its self-mask share of C2"):
        g.authorize(key_peers=["C2"], share_peers=[], dropped=["C2"], survivors=["C1"])
    with pytest.raises(SecureAggregationError, match="only for surviving clients"):
        UnmaskGuard("C1").authorize(key_peers=[], share_peers=["C5"], dropped=["C5"], survivors=["C1"])
    with pytest.raises(SecureAggregationError, match="only for dropped partners"):
        UnmaskGuard("C1").authorize(key_peers=["C2"], share_peers=[], dropped=[], survivors=["C1", "C2"])
    assert UnmaskGuard.from_dict("C1", g.as_dict()).as_dict() == {"C3": "key", "C2": "share", "C1": "share"}


def test_secure_round_goes_through_the_clients_guards() -> None:
    ups = _updates(5, 4, 3)
    cfg = SecAggConfig(q=8, clip=1.0, graph="all", self_masks=True, threshold=2)
    guard = UnmaskGuard("C2")
    guard.authorize(key_peers=[], share_peers=["C1"], dropped=[], survivors=["C1", "C2"])  # earlier request
    with pytest.raises(SecureAggregationError, match="C2 refuses the unmask request"):
        secure_round(ups, dict.fromkeys(ups, 1.0), cfg, CsprngKeySource(), round_index=0,
                     rng=np.random.default_rng(0), dropped=["C1"], unmask_guards={"C2": guard})


# -- Shamir over GF(p), pads --------------------------------------------------------------------


def test_share_primes_are_prime_and_just_above_2q() -> None:
    def is_prime(m: int) -> bool:
        return m > 1 and all(m % d for d in range(2, int(m**0.5) + 1))

    for q, p in SHARE_PRIME.items():
        assert is_prime(p) and p > 2**q and not any(is_prime(m) for m in range(2**q + 1, p))
        assert share_bits(q) == q + 1


@pytest.mark.parametrize("q", [8, 16, 32])
def test_shamir_reconstruction_is_exact_mod_2q_from_any_t_shares(q: int) -> None:
    rng = np.random.default_rng(q)
    secret = rng.integers(0, 2**q, 500, dtype=np.uint64).astype(f"uint{q}")
    secret[:3] = [0, 2**q - 1, 1]
    xs = [1, 2, 3, 4, 5, 6, 7]
    sh = shamir_share(secret, xs, 4, q)
    for _ in range(5):
        pick = sorted(rng.choice(7, 4, replace=False).tolist())
        assert np.array_equal(shamir_reconstruct([xs[i] for i in pick], sh[pick], q), secret)
    assert np.array_equal(shamir_reconstruct(xs, sh, q), secret)  # more than t shares: same polynomial


def test_fewer_than_t_shares_are_independent_of_the_secret() -> None:
    # t = 2 over GF(257): one share is uniform on GF(257) whatever the secret
    for value in (0, 200):
        sh = shamir_share(np.full(20_000, value, dtype=np.uint8), [3, 9], 2, 8)[0]
        assert int(sh.max()) < 257
        assert stats.chisquare(np.bincount(sh.astype(np.int64), minlength=257)).pvalue > 1e-4


def test_pad_words_read_bits_msb_first() -> None:
    bits = np.random.default_rng(0).integers(0, 2, 17 * 30, dtype=np.uint8)
    ref = [int("".join(map(str, bits[i * 17:(i + 1) * 17])), 2) for i in range(30)]
    assert pad_words_from_bits(bits, 17).tolist() == ref


# -- QKD keys: every pad and mask bit consumed once, from the real key stores --------------------


def test_self_mask_rounds_use_every_key_bit_once(key_network) -> None:  # type: ignore[no-untyped-def]
    clients = [f"C{i}" for i in range(1, 6)]
    cfg = SecAggConfig(q=8, clip=1.0, graph="ring-2", self_masks=True, threshold=2)
    n = 20
    pairs = mask_graph(clients, "ring-2")
    per_round = cfg.key_bits_per_pair(n)
    assert per_round == (8 + 2 * 9) * n
    for p in pairs:
        key_network.add_key(p, 3 * per_round + 7)
    src = KeyStoreKeySource(key_network.stores(clients), starvation="fail")
    total = 0
    for rnd in range(3):
        ups = _updates(5, n, rnd)
        r = secure_round(ups, dict.fromkeys(ups, 1.0), cfg, src, round_index=rnd,
                         rng=np.random.default_rng(rnd), dropped=["C4"] if rnd == 1 else ())
        assert np.array_equal(r.aggregate, _expected(ups, dict.fromkeys(ups, 1.0), cfg, r.survivors))
        assert r.key_bits_per_pair == dict.fromkeys(pairs, per_round)
        total += r.key_bits_total
    assert src.bits_used == dict.fromkeys(pairs, 3 * per_round)
    assert key_network.assert_no_bit_used_twice() == 2 * total
    assert all(src.available_bits(p) == 7 for p in pairs)
