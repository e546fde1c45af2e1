"""One-call secure round: exactness at scale, dropouts, uniform uploads, key use, starvation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from labqfl.errors import BitBudgetError, KeyStarvationError, SecureAggregationError
from labqfl.fl import (
    CsprngKeySource,
    KeySource,
    KeyStoreKeySource,
    SecAggConfig,
    StarvationProgress,
    key_words,
    make_key_source,
    mask_update,
    secure_round,
)
from labqfl.fl.masks import components, mask_graph, pairs_of, words_from_bits
from labqfl.fl.quantize import dequantize_sum, quantize, weight_ranges


class SeededBitsSource:
    """Deterministic test source without the words fast path (exercises bits → words)."""

    name = "seeded-test"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def shared_keys(self, pair: str, nbits: int, *, round_index: int) -> np.ndarray:
        return self.rng.integers(0, 2, nbits, dtype=np.uint8)


def _updates(n_clients: int, n: int, seed: int, scale: float = 0.4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"C{i}": rng.normal(0, scale, n).astype(np.float32) for i in range(1, n_clients + 1)}


def _expected(updates, weights, cfg, survivors):  # type: ignore[no-untyped-def]
    clients = list(updates)
    b = cfg.check_bit_budget(len(clients))
    m = dict(zip(clients, weight_ranges([weights[c] for c in clients], b).tolist(), strict=True))
    total = np.zeros(next(iter(updates.values())).size, dtype=np.uint64)
    for c in survivors:
        total += quantize(updates[c], clip=cfg.clip, levels=m[c], q=cfg.q)[0]
    assert int(total.max(initial=0)) < (1 << cfg.q)  # the bit budget: no wrap in plain integers
    return total, dequantize_sum(total, clip=cfg.clip, total_levels=sum(m[c] for c in survivors))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    q=st.sampled_from([8, 16, 32]),
    n_clients=st.one_of(st.integers(2, 12), st.integers(13, 200)),
    graph=st.sampled_from(["all", "ring-2", "ring-4", "ring-8"]),
    n_drop=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_masked_sum_equals_plain_quantized_sum_exactly(q: int, n_clients: int, graph: str, n_drop: int,
                                                       seed: int) -> None:
    cfg = SecAggConfig(q=q, clip=1.0, graph=graph)
    if q - int(np.ceil(np.log2(n_clients))) < 2:
        with pytest.raises(BitBudgetError):
            cfg.check_bit_budget(n_clients)
        q = 16 if n_clients <= 2**14 else 32
        cfg = SecAggConfig(q=q, clip=1.0, graph=graph)
    n_params = 3 if n_clients > 50 else 17
    ups = _updates(n_clients, n_params, seed)
    rng = np.random.default_rng(seed)
    weights = {c: float(rng.integers(1, 500)) for c in ups}
    dropped = list(rng.choice(list(ups), size=min(n_drop, n_clients), replace=False))
    survivors = [c for c in ups if c not in dropped]
    pairs = mask_graph(list(ups), graph)
    if len(survivors) < 2 or len(components(survivors, pairs)) > 1:
        with pytest.raises(SecureAggregationError, match="aborted"):
            secure_round(ups, weights, cfg, CsprngKeySource(), round_index=0, rng=rng, dropped=dropped)
        return
    src: KeySource = SeededBitsSource(seed) if n_clients <= 12 else CsprngKeySource()
    r = secure_round(ups, weights, cfg, src, round_index=3, rng=rng, dropped=dropped, debug=True)
    plain, agg = _expected(ups, weights, cfg, survivors)
    assert r.plain_quantized_sum is not None
    assert r.plain_quantized_sum.astype(np.uint64).tolist() == plain.tolist()
    assert np.array_equal(r.aggregate, agg)  # exact: the server's unmasked sum is the plain sum
    # accounting
    assert set(r.key_bits_per_pair) == set(pairs)
    assert all(v == q * n_params for v in r.key_bits_per_pair.values())
    assert r.key_bits_total == len(pairs) * q * n_params
    assert r.upload_bits_per_client == q * n_params
    assert r.baseline_upload_bits_per_client == 32 * n_params
    assert r.communication_saving == 1 - q / 32
    assert r.dropped == tuple(c for c in ups if c in dropped) and r.key_source == src.name
    assert r.reveal_bits_total == q * n_params * sum(
        1 for p in pairs if (p.split("-")[0] in dropped) != (p.split("-")[1] in dropped))


@pytest.mark.parametrize(("q", "graph", "dropped"), [
    (16, "all", ["C7", "C150"]),
    (32, "ring-16", ["C1", "C2", "C100", "C200"]),
    (16, "ring-8", []),
])
def test_exact_at_200_clients(q: int, graph: str, dropped: list[str]) -> None:
    ups = _updates(200, 5, 7)
    w = {c: float(i % 7 + 1) for i, c in enumerate(ups)}
    cfg = SecAggConfig(q=q, clip=1.0, graph=graph)
    r = secure_round(ups, w, cfg, CsprngKeySource(), round_index=0, rng=np.random.default_rng(0),
                     dropped=dropped, debug=True)
    survivors = [c for c in ups if c not in dropped]
    plain, agg = _expected(ups, w, cfg, survivors)
    assert np.array_equal(r.aggregate, agg)
    assert len(r.key_bits_per_pair) == (19_900 if graph == "all" else 200 * int(graph[5:]) // 2)
    assert r.key_saving_vs_all_pairs == pytest.approx(1 - len(r.key_bits_per_pair) / 19_900)


def test_weighted_average_and_shapes() -> None:
    rng = np.random.default_rng(0)
    ups = {"C1": np.full((2, 3), 0.5), "C2": np.full((2, 3), -0.25), "C3": np.full((2, 3), 0.0)}
    w = {"C1": 3.0, "C2": 1.0, "C3": 0.0}
    r = secure_round(ups, w, SecAggConfig(q=32, clip=1.0), CsprngKeySource(), round_index=0, rng=rng)
    assert r.aggregate.shape == (2, 3) and r.aggregate.dtype == np.float64
    np.testing.assert_allclose(r.aggregate, (3 * 0.5 - 0.25) / 4, atol=1e-6)
    assert r.plain_quantized_sum is None  # production mode never carries the plain sum
    assert "plain" not in str(r.accounting())
    assert r.effective_weights["C3"] == 0.0


def test_stochastic_rounding_round_is_unbiased_on_average() -> None:
    ups = {f"C{i}": np.full(20_000, 0.0123) for i in range(1, 5)}
    r = secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8, clip=1.0, rounding="stochastic"),
                     CsprngKeySource(), round_index=0, rng=np.random.default_rng(1))
    step = 2.0 / (4 * 63)
    assert abs(r.aggregate.mean() - 0.0123) < 6 * step / np.sqrt(4 * 20_000)


def test_bit_budget_refusal_and_too_few_survivors() -> None:
    ups = _updates(200, 4, 0)
    with pytest.raises(BitBudgetError, match=r"N=200.*q=8"):
        secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8), CsprngKeySource(), round_index=0,
                     rng=np.random.default_rng(0))
    ups = _updates(3, 4, 0)
    with pytest.raises(SecureAggregationError, match="1 survivor"):
        secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8), CsprngKeySource(), round_index=0,
                     rng=np.random.default_rng(0), dropped=["C1", "C2"])
    with pytest.raises(SecureAggregationError, match="not among the clients"):
        secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8), CsprngKeySource(), round_index=0,
                     rng=np.random.default_rng(0), dropped=["C9"])


def test_disconnecting_dropouts_abort_before_reveal() -> None:
    ups = _updates(8, 4, 0)
    with pytest.raises(SecureAggregationError, match="split the survivors into 2 groups"):
        secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=16, graph="ring-2"), CsprngKeySource(),
                     round_index=0, rng=np.random.default_rng(0), dropped=["C2", "C6"])


@pytest.mark.parametrize("q", [8, 16, 32])
def test_masked_uploads_are_uniform_mod_2q(q: int) -> None:
    """Chi-square on 256 bins (top and bottom byte of each word) of one client's masked upload.

    Input is the worst case (a constant update). Threshold: the chi-square quantile at
    1 − 1e-6, so a correct implementation fails this test with probability ≈ 2e-6 per run.
    """
    n = 64 * 256
    clients = ["C1", "C2", "C3"]
    pairs = mask_graph(clients)
    src = CsprngKeySource()
    keys = {p: key_words(src, p, n, q, round_index=0) for p in pairs}
    v = np.full(n, 7, dtype=np.dtype(f"uint{q}"))
    y = mask_update("C2", v, {p: keys[p] for p in pairs_of("C2", pairs)}, q).astype(np.uint64)
    bound = stats.chi2.ppf(1 - 1e-6, df=255)
    for byte in (y >> np.uint64(q - 8), y & np.uint64(0xFF)):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        chi2 = float(((counts - n / 256) ** 2 / (n / 256)).sum())
        assert chi2 < bound, f"masked upload not uniform: chi2={chi2:.1f} >= {bound:.1f}"
    assert not np.array_equal(y, v.astype(np.uint64))


def test_csprng_words_follow_the_bits_convention() -> None:
    src = CsprngKeySource()
    w = src.shared_words("C1-C2", 10, 16, round_index=0)
    assert w.dtype == np.uint16 and w.shape == (10,)
    b = src.shared_keys("C1-C2", 160, round_index=0)
    assert b.dtype == np.uint8 and set(np.unique(b)) <= {0, 1}
    assert src.bits_used == {"C1-C2": 320}
    assert isinstance(src, KeySource)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(src)


def test_csprng_rekeys_every_round_and_never_repeats_a_segment() -> None:
    src = CsprngKeySource()
    a = src.shared_words("C1-C2", 4096, 16, round_index=1)
    enc = src._enc
    b = src.shared_words("C2-C3", 4096, 16, round_index=1)
    assert src._enc is enc and src._enc_bytes == 2 * 8192  # one stream per round, read on
    assert np.count_nonzero(a == b) < 20  # distinct segments (≈ 4096/65536 equal by chance)
    src.shared_words("C1-C2", 4096, 16, round_index=2)
    assert src._enc is not enc and src._enc_bytes == 8192  # a new round: a fresh OS seed


# -- QKD key source over a key store ----------------------------------------------------------


def test_qkd_rounds_use_every_key_bit_once(key_network) -> None:  # type: ignore[no-untyped-def]
    clients = [f"C{i}" for i in range(1, 6)]
    cfg = SecAggConfig(q=8, clip=1.0, graph="all")
    n = 40
    pairs = mask_graph(clients)
    for p in pairs:
        key_network.add_key(p, 3 * 8 * n + 5)
    src = KeyStoreKeySource(key_network.stores(clients), starvation="fail")
    total = 0
    for rnd in range(3):
        ups = _updates(5, n, rnd)
        r = secure_round(ups, dict.fromkeys(ups, 1.0), cfg, src, round_index=rnd,
                         rng=np.random.default_rng(rnd), dropped=["C4"] if rnd == 1 else (), debug=True)
        plain, agg = _expected(ups, dict.fromkeys(ups, 1.0), cfg, r.survivors)
        assert np.array_equal(r.aggregate, agg)
        total += r.key_bits_total
    assert src.bits_used == dict.fromkeys(pairs, 3 * 8 * n)
    # both ends of every pair handed out exactly the bits used, no bit twice
    assert key_network.assert_no_bit_used_twice() == 2 * total
    assert all(src.available_bits(p) == 5 for p in pairs)
    with pytest.raises(KeyStarvationError, match=r"pair C1-C2 needs 320 key bits for this round, 5 available") as ei:
        secure_round(_updates(5, n, 9), dict.fromkeys(clients, 1.0), cfg, src, round_index=3,
                     rng=np.random.default_rng(0))
    assert ei.value.pair == "C1-C2" and ei.value.needed_bits == 320 and ei.value.available_bits == 5
    assert key_network.assert_no_bit_used_twice() == 2 * total  # the failed round took nothing


def test_qkd_source_bits_match_words(key_network) -> None:  # type: ignore[no-untyped-def]
    bits = key_network.add_key("C1-C2", 64)
    src = KeyStoreKeySource(key_network.stores(["C1", "C2"]))
    w = key_words(src, "C1-C2", 4, 16, round_index=0)
    assert np.array_equal(w, words_from_bits(bits, 16))


def test_starvation_waits_with_progress_then_proceeds(key_network) -> None:  # type: ignore[no-untyped-def]
    clients = ["C1", "C2", "C3"]
    for p in mask_graph(clients):
        if p != "C1-C3":
            key_network.add_key(p, 8 * 10)
    key_network.add_key("C1-C3", 8)  # far too little for a round
    seen: list[StarvationProgress] = []
    now = [0.0]

    def fake_sleep(dt: float) -> None:
        now[0] += dt
        if now[0] >= 2.0 and key_network.store("C1").available_bits("C1-C3", "fl") < 80:
            key_network.add_key("C1-C3", 8 * 10)  # new QKD key arrives at both ends

    src = KeyStoreKeySource(key_network.stores(clients), starvation="wait", wait_timeout_s=30,
                            poll_interval_s=0.5, progress=seen.append, sleep=fake_sleep, clock=lambda: now[0])
    ups = _updates(3, 10, 0)
    r = secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8), src, round_index=0,
                     rng=np.random.default_rng(0))
    assert r.key_source == "qkd"
    assert seen and all(s.pair == "C1-C3" and s.needed_bits == 80 and s.available_bits == 8 for s in seen)
    assert seen[-1].waited_s >= 1.5
    assert key_network.assert_no_bit_used_twice() == 2 * 3 * 80


def test_starvation_wait_times_out_with_clear_error(key_network) -> None:  # type: ignore[no-untyped-def]
    key_network.add_key("C1-C2", 10)
    now = [0.0]

    def fake_sleep(dt: float) -> None:
        now[0] += dt

    src = KeyStoreKeySource(key_network.stores(["C1", "C2"]), wait_timeout_s=5, poll_interval_s=1,
                            sleep=fake_sleep, clock=lambda: now[0])
    with pytest.raises(KeyStarvationError, match=r"after waiting 5.0 s: pair C1-C2 needs 16 key bits"):
        src.shared_keys("C1-C2", 16, round_index=0)


def test_key_mismatch_between_ends_aborts(key_network) -> None:  # type: ignore[no-untyped-def]
    bits = key_network.add_key("C1-C2", 64)
    # the slave's copy of the block differs in one bit (e.g. a corrupted import)
    key_network.store("C1").add_block("C1-C2", bits, block_id="blk-x", purpose="fl")
    flipped = bits.copy()
    flipped[3] ^= 1
    key_network.store("C2").add_block("C1-C2", flipped, block_id="blk-x", purpose="fl")
    src = KeyStoreKeySource(key_network.stores(["C1", "C2"]))
    src.shared_keys("C1-C2", 64, round_index=0)  # first block: identical at both ends
    with pytest.raises(SecureAggregationError, match="key mismatch for pair C1-C2"):
        src.shared_keys("C1-C2", 64, round_index=1)
    assert src.available_bits("C1-C2") == 0  # spent either way, never reused


def test_the_master_s_copy_is_wiped_when_the_slave_end_fails(key_network, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A failure at the slave's store (here: its store refuses the refs) leaves no copy of the master's
    bits in memory: the array the master end returned is zeroed before the error propagates."""
    from labqfl.errors import KeyStoreError
    from labqfl.fl import keysource

    key_network.add_key("C1-C2", 256)
    taken: list[np.ndarray] = []

    def master(*args, **kwargs):  # type: ignore[no-untyped-def]
        bits, refs = take_master_keys(*args, **kwargs)
        taken.append(bits)
        return bits, refs

    def slave(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert taken[0].any()  # the master's bits, still there when the slave end is asked
        raise KeyStoreError("store of C2: refs unknown")

    take_master_keys = keysource.take_master_keys
    monkeypatch.setattr(keysource, "take_master_keys", master)
    monkeypatch.setattr(keysource, "take_slave_keys", slave)
    src = KeyStoreKeySource(key_network.stores(["C1", "C2"]))
    with pytest.raises(KeyStoreError, match="refs unknown"):
        src.shared_keys("C1-C2", 128, round_index=1)
    assert len(taken) == 1 and taken[0].size == 128 and not taken[0].any()


@pytest.mark.parametrize("dropped", [[], ["C3"]])
def test_no_key_words_stay_in_memory_after_a_round(dropped: list[str]) -> None:
    """Every pair's mask words are zeroed once applied, and a dropped client's revealed ones once the
    server has used them (in-process engine, with and without a dropout)."""
    handed: list[np.ndarray] = []

    class Recording(CsprngKeySource):
        def shared_words(self, pair: str, n_words: int, q: int, *, round_index: int) -> np.ndarray:
            w = super().shared_words(pair, n_words, q, round_index=round_index)
            handed.append(w)
            return w

    clients = ["C1", "C2", "C3", "C4"]
    ups = {c: np.full(16, 0.1 * i) for i, c in enumerate(clients)}
    r = secure_round(ups, dict.fromkeys(clients, 1.0), SecAggConfig(q=16), Recording(), round_index=1,
                     rng=np.random.default_rng(0), dropped=dropped)
    assert len(handed) == 6 and all(not w.any() for w in handed)
    assert np.allclose(r.aggregate, np.mean([ups[c] for c in clients if c not in dropped], axis=0), atol=1e-3)


def test_make_key_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert make_key_source("csprng").name == "csprng"
    src = make_key_source("qkd", keystore_dir=tmp_path, nodes=["C1", "C2"], starvation="fail")
    assert src.name == "qkd" and isinstance(src, KeyStoreKeySource) and src.available_bits("C1-C2") == 0
    with pytest.raises(SecureAggregationError, match="needs keystore_dir"):
        make_key_source("qkd")
    with pytest.raises(SecureAggregationError, match="unknown key source"):
        make_key_source("prng")


def test_bad_updates_and_weights_are_refused_before_any_key_is_drawn() -> None:
    src = CsprngKeySource()
    ups = _updates(3, 4, 0)
    ups["C2"][1] = np.nan
    with pytest.raises(SecureAggregationError, match="update of client C2: .*NaN"):
        secure_round(ups, dict.fromkeys(ups, 1.0), SecAggConfig(q=8), src, round_index=0,
                     rng=np.random.default_rng(0))
    ups = _updates(3, 4, 0)
    with pytest.raises(SecureAggregationError, match="weights"):
        secure_round(ups, {"C1": 1.0, "C2": -1.0, "C3": 1.0}, SecAggConfig(q=8), src, round_index=0,
                     rng=np.random.default_rng(0))
    with pytest.raises(SecureAggregationError, match="no FedAvg weight"):
        secure_round(ups, {"C1": 1.0}, SecAggConfig(q=8), src, round_index=0, rng=np.random.default_rng(0))
    assert src.bits_used == {}


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="q must be one of"):
        SecAggConfig(q=12)
    with pytest.raises(ValueError, match="clip"):
        SecAggConfig(clip=0.0)
    with pytest.raises(ValueError, match="rounding"):
        SecAggConfig(rounding="up")  # type: ignore[arg-type]
    assert SecAggConfig(graph="ring-6").k == 6
    assert SecAggConfig(graph="ring-k", k=4).as_dict()["graph"] == "ring-k"


def test_distributed_clients_mask_with_their_own_stores(key_network) -> None:  # type: ignore[no-untyped-def]
    """Each client touches only its own store; refs travel, bits do not; the sum is exact."""
    from labqfl.fl import aggregate, take_master_keys, take_slave_keys

    clients = ["C1", "C2", "C3", "C4"]
    q, n = 8, 25
    pairs = mask_graph(clients)
    for p in pairs:
        key_network.add_key(p, q * n)
    stores = key_network.stores(clients)
    words: dict[tuple[str, str], np.ndarray] = {}
    for p in pairs:
        a, b = p.split("-")
        bits_a, refs = take_master_keys(stores[a], p, q * n, round_index=1)
        bits_b = take_slave_keys(stores[b], p, refs, round_index=1)
        words[(a, p)] = words_from_bits(bits_a, q)
        words[(b, p)] = words_from_bits(bits_b, q)
    rng = np.random.default_rng(0)
    vals = {c: rng.integers(0, 60, n).astype(np.uint8) for c in clients}
    masked = {c: mask_update(c, vals[c], {p: words[(c, p)] for p in pairs_of(c, pairs)}, q) for c in clients}
    assert aggregate(masked, q).tolist() == np.sum([v.astype(np.int64) for v in vals.values()], axis=0).tolist()
    assert key_network.assert_no_bit_used_twice() == 2 * len(pairs) * q * n
