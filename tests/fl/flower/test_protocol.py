"""Flower engine protocol on an in-process Grid: same aggregate as the in-process engine, bit for bit;
qkd keys from each node's own store; dropout recovery; refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from labqfl.errors import ConfigError, SecureAggregationError
from labqfl.fl.flower.client import make_client_app
from labqfl.fl.flower.keys import REFS_TAG_BITS, ecdh_words, new_ecdh_key, stochastic_rng
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.keysource import CsprngKeySource, make_key_source
from labqfl.fl.masks import mask_graph, words_from_bits
from labqfl.fl.secure import secure_round
from labqfl.fl.training import local_updates, run_federated
from labqfl.keystore import KeyStore


def _in_process(spec: FlowerSpec) -> np.ndarray:
    res = run_federated(spec.model(), spec.data(), rounds=spec.rounds, local=spec.local(), secagg=spec.secagg(),
                        key_source=make_key_source("csprng"), seed=spec.seed)
    return res.final_params


def test_flower_engine_matches_in_process_engine_bit_for_bit_with_csprng_ecdh(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=5, q=16, rounds=2, keys="csprng", seed=4, graph="ring-2")
    srv = LabqflServer(spec)
    res = srv.run(local_grid(make_client_app(), spec.names))
    assert np.array_equal(res.final_params, _in_process(spec))
    assert res.key_source == "csprng"
    assert all(not r.dropped_after_masking and not r.dropped_before_masking for r in srv.rounds)


def test_flower_engine_qkd_keys_from_each_node_store_are_consumed_once_at_both_ends(make_stores, local_grid, mnist_dir) -> None:
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=2, keys="qkd", seed=2)
    n_params = spec0.model().n_params
    per_round = spec0.q * n_params + REFS_TAG_BITS  # mask key + the refs tag key
    kdir = make_stores(spec0.names, 3 * per_round)
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=2, keys="qkd", seed=2, keystore_dir=str(kdir))
    res = LabqflServer(spec).run(local_grid(make_client_app(), spec.names))
    assert np.array_equal(res.final_params, _in_process(spec))
    for p in mask_graph(spec.names):
        for node in p.split("-"):
            with KeyStore.for_node(node, kdir) as st:
                assert st.available_bits(p, "fl") == per_round  # 3 rounds stored, 2 spent
    assert res.rounds[0].key_bits_per_pair == per_round


def _reserved_rounds(kdir: object, node: str) -> set[int]:
    """Rounds of the FL mask reservations still pending in ``node``'s store (no key bits read)."""
    import json
    import sqlite3

    from labqfl.keystore.store import node_store_path

    with sqlite3.connect(node_store_path(node, kdir)) as con:  # type: ignore[arg-type]
        rows = con.execute("SELECT info FROM deliveries WHERE state = 'reserved'").fetchall()
    return {int(json.loads(r[0]).get("round", -1)) for r in rows}


def test_rounds_of_a_run_send_no_end_message_between_them_and_keys_finishes_the_previous_round(
        make_stores, local_grid, mnist_dir) -> None:
    """Between two rounds the next round's keys message ends the previous one at every node (one
    exchange less per round); the run's last round still gets its end message, and after the run no
    reservation is left pending anywhere."""
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=3, keys="qkd", seed=2)
    per_round = spec0.q * spec0.model().n_params + REFS_TAG_BITS
    kdir = make_stores(spec0.names, 3 * per_round)
    spec = dataclasses.replace(spec0, keystore_dir=str(kdir))
    seen: list[tuple[str, str, int, set[int]]] = []  # (node, stage, round, rounds still reserved after it)

    class Watching(local_grid):  # type: ignore[misc, valid-type]
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            messages = list(messages)
            out = super().send_and_receive(messages, timeout=timeout)
            for m in messages:
                cfg = m.content.config_records.get("labqfl")
                if cfg is not None:
                    node = self.nodes[m.metadata.dst_node_id]
                    seen.append((node, str(cfg["stage"]), int(cfg["round"]), _reserved_rounds(kdir, node)))
            return out

    res = LabqflServer(spec).run(Watching(make_client_app(), spec.names))
    assert np.array_equal(res.final_params, _in_process(spec))
    for node in spec.names:
        mine = [(stage, r) for n, stage, r, _ in seen if n == node]
        refs = [("refs", r) for r in (1, 2, 3)] if node != "C3" else [(), (), ()]  # C3 masters no pair
        expected = [("setup", 0), ("keys", 1), refs[0], ("mask", 1), ("keys", 2), refs[1], ("mask", 2), ("keys", 3),
                    refs[2], ("mask", 3), ("end", 3)]
        assert mine == [x for x in expected if x]
        for n, stage, r, reserved in seen:
            if n == node and stage == "keys":
                assert reserved <= {r}, f"{node}: rounds {reserved} still reserved after keys of round {r}"
        assert _reserved_rounds(kdir, node) == set()
    for p in mask_graph(spec.names):
        for node in p.split("-"):
            with KeyStore.for_node(node, kdir) as st:
                assert st.available_bits(p, "fl") == 0  # 3 rounds stored, 3 spent


def test_a_run_that_stops_between_rounds_still_ends_the_completed_round(make_stores, local_grid, mnist_dir) -> None:
    """An error after a round (here the caller's per-round hook) ends the run before the next keys
    message: the server still sends the completed round's end, so no reservation stays pending."""
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=3, keys="qkd", seed=2)
    kdir = make_stores(spec0.names, 3 * (spec0.q * spec0.model().n_params + REFS_TAG_BITS))
    spec = dataclasses.replace(spec0, keystore_dir=str(kdir))

    def stop(fr: object, params: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LabqflServer(spec, on_round=stop).run(local_grid(make_client_app(), spec.names))
    for node in spec.names:
        assert _reserved_rounds(kdir, node) == set()


def test_flower_engine_survives_a_client_lost_after_masking(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=6, q=16, rounds=1, keys="csprng", seed=5, graph="ring-4")
    srv = LabqflServer(spec)
    res = srv.run(local_grid(make_client_app(), spec.names, crash={"C3": 1}))
    fr = srv.rounds[0]
    assert fr.dropped_after_masking == ["C3"] and fr.reveal_bits == 4 * spec.q * spec.model().n_params
    data, model = spec.data(), spec.model()
    g = model.init_params(spec.seed)
    ups, _ = local_updates(model, g, data.clients, spec.local(), spec.seed, 1)
    weights = {c: float(len(y)) for c, (_, y) in data.clients.items()}
    ref = secure_round(ups, weights, spec.secagg(), CsprngKeySource(), round_index=1,
                       rng=np.random.default_rng([spec.seed, 9000, 1]), dropped={"C3"})
    assert np.array_equal(res.final_params, g + ref.aggregate)


def test_flower_engine_qkd_dropout_reveals_the_stored_pair_keys(make_stores, local_grid, mnist_dir) -> None:
    names = [f"C{i}" for i in range(1, 5)]
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=1, keys="qkd", seed=1)
    kdir = make_stores(names, spec0.q * spec0.model().n_params + REFS_TAG_BITS)
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=1, keys="qkd", seed=1, keystore_dir=str(kdir))
    srv = LabqflServer(spec)
    res = srv.run(local_grid(make_client_app(), spec.names, crash={"C2": 1}))
    assert srv.rounds[0].dropped_after_masking == ["C2"]
    data, model = spec.data(), spec.model()
    g = model.init_params(spec.seed)
    ups, _ = local_updates(model, g, data.clients, spec.local(), spec.seed, 1)
    weights = {c: float(len(y)) for c, (_, y) in data.clients.items()}
    ref = secure_round(ups, weights, spec.secagg(), CsprngKeySource(), round_index=1,
                       rng=np.random.default_rng([spec.seed, 9000, 1]), dropped={"C2"})
    assert np.array_equal(res.final_params, g + ref.aggregate)


def test_flower_engine_aborts_when_dropouts_split_the_mask_graph(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=6, q=16, rounds=1, keys="csprng", seed=5, graph="ring-2")
    with pytest.raises(SecureAggregationError, match="split the survivors"):
        LabqflServer(spec).run(local_grid(make_client_app(), spec.names, crash={"C2": 1, "C5": 1}))


def test_ecdh_words_agree_at_both_ends_and_follow_the_msb_first_convention() -> None:
    sk_a, pk_a = new_ecdh_key()
    sk_b, pk_b = new_ecdh_key()
    for q in (8, 16, 32):
        wa = ecdh_words(sk_a, pk_b, "C1-C2", 1000, q, round_index=3, run_tag="t")
        wb = ecdh_words(sk_b, pk_a, "C1-C2", 1000, q, round_index=3, run_tag="t")
        assert np.array_equal(wa, wb) and wa.dtype == np.dtype(f"uint{q}")
        other = ecdh_words(sk_a, pk_b, "C1-C2", 1000, q, round_index=4, run_tag="t")
        assert not np.array_equal(wa, other)
    # words from the big-endian stream == words_from_bits of the same bits
    w8 = ecdh_words(sk_a, pk_b, "C1-C2", 64, 8, round_index=1, run_tag="t")
    w16 = ecdh_words(sk_a, pk_b, "C1-C2", 32, 16, round_index=1, run_tag="t")
    assert np.array_equal(words_from_bits(np.unpackbits(w8), 16), w16)


def test_stochastic_rng_reproduces_the_in_process_stream_per_client() -> None:
    rng = np.random.default_rng([3, 9000, 2])
    blocks = [rng.random(50) for _ in range(3)]
    for i in range(3):
        assert np.array_equal(stochastic_rng(3, 2, i, 50).random(50), blocks[i])


def test_clients_named_in_any_loop_order_draw_their_stores_pairs_and_train_their_partitions(
        make_stores, local_grid, mnist_dir) -> None:
    """A station whose clients are C2, C1, C3 in loop order: the pairs are named as its stores name
    them (C2-C1, ...), and position i trains partition i with seed index i — the same final model
    as clients C1..C3 (the masks cancel either way)."""
    names = ["C2", "C1", "C3"]
    base = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="csprng", seed=3)
    kdir = make_stores(names, base.q * base.model().n_params + REFS_TAG_BITS)
    assert sorted(make_stores.bits) == ["C1-C3", "C2-C1", "C2-C3"]
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=3,
                               keystore_dir=str(kdir), client_names="C2,C1,C3")
    assert spec.names == names and spec.index_of("C1") == 1
    res = LabqflServer(spec).run(local_grid(make_client_app(), names))
    assert np.array_equal(res.final_params, _in_process(base))
    for p in mask_graph(names):
        for node in p.split("-"):
            with KeyStore.for_node(node, kdir) as st:
                assert st.available_bits(p, "fl") == 0  # each pair's stored key was spent at both ends
    with pytest.raises(ConfigError, match="client_names 'C1,C1'"):
        FlowerSpec(clients=2, client_names="C1,C1")
    with pytest.raises(ConfigError, match="no '-'"):
        FlowerSpec(clients=2, client_names="C1,C-2")


def test_noisy_qnn_clients_train_under_the_same_noise_model_as_in_process(mnist_dir) -> None:
    """Gate and readout noise with exact expectations: a ClientApp's local update is the in-process
    local training of the noisy model, bit for bit (not the ideal one); with shots every client
    and round draws its own shots."""
    from labqfl.fl.flower.client import train_update
    from labqfl.fl.models.noisy import NoiseModel, NoisyQNNModel, noisy_qnn
    from labqfl.fl.training import local_train

    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=16, q=16, rounds=1, keys="csprng", seed=1,
                               noise="depolarizing=0.02,readout=0.05")  # 16 clients: 50 samples each
    nm = NoiseModel.parse("depolarizing=0.02,readout=0.05")
    assert spec.noise_model() == nm and isinstance(spec.model(), NoisyQNNModel)
    g = spec.model().init_params(spec.seed)
    upd, n, _ = train_update(spec, "C3", g, 1)
    ref, _ = local_train(noisy_qnn(spec.model().base, nm, spec.seed), g, [spec.client_data("C3")], spec.local(),
                         [[spec.seed, 1, 2]])
    assert n == len(spec.client_data("C3")[1]) and np.array_equal(upd, ref[0] - g)
    assert not np.allclose(upd, train_update(dataclasses.replace(spec, noise=""), "C3", g, 1)[0])
    shots = dataclasses.replace(spec, shots=32)
    draws = [torch.rand(4, generator=shots.model(s).generator) for s in ((1, 0), (1, 1), (2, 0), (1, 0))]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(draws[0], draws[3])
    with pytest.raises(ConfigError, match="noise/shots/shot_grad"):
        FlowerSpec(noise="depolarizing=2")
