"""qkd keys on Flower: the key store's reserve / read_reserved, the node's reservation life cycle
(mask, reveal, end, abort) and the rule that no key bit is ever placed in Flower's node state
(``Context.state``, which crosses process boundaries and is pickled by Ray) or in a message —
except the keys a survivor reveals after a dropout."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from labqfl.errors import KeyStoreError, SecureAggregationError
from labqfl.fl.flower.client import make_client_app
from labqfl.fl.flower.keys import REFS_TAG_BITS, NodeKeyStore
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import mask_graph, words_from_bits
from labqfl.keystore import KeyStore


def _leaks(blob: bytes, keys: dict[str, np.ndarray]) -> list[str]:
    """Pairs whose key bits appear in ``blob``: any 8 consecutive key bytes (packed MSB first, =
    the q = 8 mask words) or 64 consecutive bits as uint8 0/1."""
    hits = []
    for pair, bits in keys.items():
        packed, raw = np.packbits(bits).tobytes(), bits.astype(np.uint8).tobytes()
        if any(packed[i:i + 8] in blob for i in range(0, len(packed) - 8, 4)) or \
                any(raw[i:i + 64] in blob for i in range(0, len(raw) - 64, 32)):
            hits.append(pair)
    return hits


def _store(tmp_path, node: str = "C1", pair: str = "C1-C2", nbits: int = 64, bid: str | None = None) -> KeyStore:
    st = KeyStore.for_node(node, tmp_path)
    st.add_block(pair, np.random.default_rng(1).integers(0, 2, nbits, dtype=np.uint8), block_id=bid or str(uuid.uuid4()),
                 purpose="fl")
    return st


def test_store_reserve_picks_the_bits_take_would_pick_without_reading_them(tmp_path) -> None:
    bid = str(uuid.uuid4())
    with _store(tmp_path / "a", bid=bid) as a, _store(tmp_path / "b", bid=bid) as b:
        refs = a.reserve("C1-C2", 24, "fl", "k1")
        assert refs == [(bid, 0, 24)] and a.available_bits("C1-C2", "fl") == 40
        assert a.accounting()["C1-C2"]["reserved"] == {"fl": 24}
        km = b.take("C1-C2", 24, "fl")  # the same bits at the other end
        got = a.read_reserved("k1")
        assert np.array_equal(got.bits, km.bits)
        assert np.array_equal(a.read_reserved("k1").bits, km.bits)  # still reserved, readable again
        with pytest.raises(KeyStoreError, match="was read"):
            a.release("k1")  # bits that were read never return to the pool
        assert np.array_equal(a.take_exact("C1-C2", refs, "fl", key_id="k1").bits, km.bits)
        with pytest.raises(KeyStoreError):
            a.read_reserved("k1")
        assert a.accounting()["C1-C2"]["consumed"] == {"fl": 24}
        a.reserve("C1-C2", 8, "fl", "k2")
        assert a.release("k2") == 8 and a.available_bits("C1-C2", "fl") == 40  # unread: released


def test_node_key_store_life_cycle_spends_read_keys_and_releases_unread_ones(tmp_path) -> None:
    bid = str(uuid.uuid4())
    _store(tmp_path, "C1", bid=bid, nbits=96).close()
    _store(tmp_path, "C2", bid=bid, nbits=96).close()
    with NodeKeyStore("C1", tmp_path) as m, NodeKeyStore("C2", tmp_path) as s:
        refs = m.reserve_master("C1-C2", 32, "m1", round_index=1, run_tag="t")
        s.reserve_slave("C1-C2", refs, 32, "s1", round_index=1, run_tag="t")
        wm, ws = m.words("m1", 4, 8), s.words("s1", 4, 8)
        assert np.array_equal(wm, ws) and wm.dtype == np.uint8
        assert np.array_equal(s.take_words("s1", 4, 8), ws)  # reveal: consumed now
        assert m.finish("m1") == "consumed" and s.finish("s1") == "none"
        m.reserve_master("C1-C2", 32, "m2", round_index=2, run_tag="t")
        assert m.finish("m2", release=True) == "released"  # never read, refs never sent
        m.reserve_master("C1-C2", 32, "m3", round_index=3, run_tag="t")
        m.words("m3", 4, 8)
        assert m.finish("m3", release=True) == "consumed"  # read: spent, never released
        with pytest.raises(KeyStoreError):
            s.reserve_slave("C1-C2", refs, 32, "s2", round_index=1, run_tag="t")  # those bits are spent
        assert m.store.accounting()["C1-C2"]["available"] == {"fl": 32}


def test_no_key_bits_in_node_state_or_messages_and_only_dangling_keys_revealed(make_stores, local_grid, mnist_dir) -> None:
    names = [f"C{i}" for i in range(1, 5)]
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=2, keys="qkd", seed=3)
    per_round = spec0.q * spec0.model().n_params
    kdir = make_stores(names, 2 * (per_round + REFS_TAG_BITS))
    keys = dict(make_stores.bits)
    # the detector sees the words as the old engine kept them in Context.state
    st = RecordDict({"labqfl.words": ArrayRecord({"C1-C2": Array(words_from_bits(keys["C1-C2"][:per_round], 8))})})
    assert _leaks(recorddict_to_proto(st).SerializeToString(), keys) == ["C1-C2"]
    assert _leaks(pickle.dumps(st), keys) == ["C1-C2"]

    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=2, keys="qkd", seed=3, keystore_dir=str(kdir))
    record: list[tuple[str, bytes]] = []
    srv = LabqflServer(spec)
    srv.run(local_grid(make_client_app(), names, crash={"C2": 2}, record=record))
    assert srv.rounds[1].dropped_after_masking == ["C2"]
    assert len(record) > 300
    leaks = [(label, hit) for label, blob in record if (hit := _leaks(blob, keys))]
    # round 2: C1, C3, C4 reveal their keys with C2 in their reveal replies — and nothing else
    # leaves a store anywhere: no other message, no node state (protobuf or pickled)
    assert leaks == [("message from C1", ["C1-C2"]), ("message from C3", ["C2-C3"]), ("message from C4", ["C2-C4"])]
    for p in mask_graph(names):
        for node in p.split("-"):
            with KeyStore.for_node(node, kdir) as s:
                acc = s.accounting()[p]
                if node == "C2":
                    continue  # the lost node still holds its round-2 reservations until its next message
                assert acc["available"] == {} and acc["reserved"] == {}, (node, p, acc)


def test_abort_before_masking_releases_the_reservations(make_stores, local_grid, tmp_path, mnist_dir) -> None:
    names = ["C1", "C2", "C3"]
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1)
    per_round = spec0.q * spec0.model().n_params + REFS_TAG_BITS
    kdir = make_stores(names, per_round)
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1, keystore_dir=str(kdir),
                               min_survivors=3)
    # C2's node has an empty key store: it cannot reserve for C2-C3 and drops before masking
    grid = local_grid(make_client_app(), names, node_config={"C2": {"labqfl-keystore": str(tmp_path / "empty")}})
    with pytest.raises(SecureAggregationError, match="aborted"):
        LabqflServer(spec).run(grid)
    with KeyStore.for_node("C1", kdir) as s:
        for p in ("C1-C2", "C1-C3"):
            assert s.accounting()[p]["available"] == {"fl": per_round} and s.accounting()[p]["reserved"] == {}


def test_abort_after_masking_spends_the_reservations(make_stores, local_grid, mnist_dir) -> None:
    names = ["C1", "C2", "C3"]
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1)
    per_round = spec0.q * spec0.model().n_params + REFS_TAG_BITS
    kdir = make_stores(names, per_round)
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1, keystore_dir=str(kdir),
                               min_survivors=3)
    with pytest.raises(SecureAggregationError, match="aborted"):
        LabqflServer(spec).run(local_grid(make_client_app(), names, crash={"C2": 1}))
    for node, pairs in {"C1": ("C1-C2", "C1-C3"), "C3": ("C1-C3", "C2-C3")}.items():
        with KeyStore.for_node(node, kdir) as s:
            for p in pairs:  # read for masking: spent, never back in the pool
                assert s.accounting()[p]["consumed"] == {"fl": per_round} and s.accounting()[p]["reserved"] == {}


def test_reservations_a_killed_round_left_are_voided_at_both_ends_and_never_released(tmp_path) -> None:
    """A node process killed mid-round (Ctrl-C, a crash) leaves its mask reservations in its store,
    and no later round finished them: the pair's two stores disagreed for good (the master's bits
    reserved, the slave's free, so a key drawn from the slave's end was refused there).  The next
    run's keys stage voids them — spent, never released, since either end may have masked with them
    — and the master's announcement makes the slave discard the same bits."""
    bid = str(uuid.uuid4())
    _store(tmp_path, "C1", bid=bid, nbits=128).close()
    _store(tmp_path, "C2", bid=bid, nbits=128).close()
    with NodeKeyStore("C1", tmp_path) as m, NodeKeyStore("C2", tmp_path) as s:
        r1 = m.reserve_master("C1-C2", 32, "m1", round_index=1, run_tag="old")  # slave reserved and read
        s.reserve_slave("C1-C2", r1, 32, "s1", round_index=1, run_tag="old")
        s.words("s1", 4, 8)
        m.reserve_master("C1-C2", 32, "m2", round_index=2, run_tag="old")  # the slave never saw these refs
        live = m.reserve_master("C1-C2", 16, "m3", round_index=1, run_tag="new")  # this run's round: kept
        # the processes die; a new run's keys stage (round 1) at each node
        assert m.void_stranded("new", 1) == 2 and s.void_stranded("new", 1) == 1
        assert m.store.reservation("m3") is not None
        with pytest.raises(KeyStoreError):
            m.store.release("m2")  # voided: never back in the pool
        announced = m.spent_refs("C1-C2")
        assert sorted(map(tuple, announced)) == [(bid, 0, 64)]  # both voided reservations, merged (merge_spent)
        assert s.discard("C1-C2", announced) == 32 and s.discard("C1-C2", announced) == 0  # idempotent
        s.reserve_slave("C1-C2", live, 16, "s3", round_index=1, run_tag="new")
        acc_m, acc_s = m.store.accounting()["C1-C2"], s.store.accounting()["C1-C2"]
        assert acc_m["available"] == acc_s["available"] == {"fl": 128 - 80}
        assert acc_m["reserved"] == acc_s["reserved"] == {"fl": 16}
        # in step again: a key drawn at the slave's end is accepted at the master's
        km = s.store.take("C1-C2", 24, "fl")
        assert np.array_equal(m.store.take_exact("C1-C2", km.refs, "fl").bits, km.bits)


class _KilledGrid:
    """A LocalGrid whose node processes are all killed (Ctrl-C) when the server sends round
    ``kill_round``'s mask messages, after ``deliver``'s nodes handled theirs: nothing reaches a
    node afterwards (not the server's abort either), as when every process of the run dies."""

    def __init__(self, grid: Any, kill_round: int, deliver: tuple[str, ...] = ()) -> None:
        self.grid, self.kill_round, self.deliver, self.dead = grid, kill_round, deliver, False

    def get_node_ids(self) -> Any:
        return self.grid.get_node_ids()

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        if self.dead:
            return []
        cfg = messages[0].content.config_records.get("labqfl") if messages else None
        if cfg is not None and cfg.get("stage") == "mask" and int(cfg["round"]) == self.kill_round:
            self.grid.send_and_receive([m for m in messages if self.grid.nodes[m.metadata.dst_node_id] in self.deliver])
            self.dead = True
            raise KeyboardInterrupt
        return self.grid.send_and_receive(messages, timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


@pytest.mark.parametrize("deliver", [(), ("C2", "C3")], ids=["before-masking", "slaves-masked"])
def test_a_run_after_an_interrupted_one_leaves_every_pair_s_stores_in_step(make_stores, local_grid, mnist_dir,
                                                                           deliver) -> None:
    names = ["C1", "C2", "C3"]
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1)
    per_round = spec0.q * spec0.model().n_params + REFS_TAG_BITS
    kdir = make_stores(names, 3 * per_round)
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1,
                               keystore_dir=str(kdir))
    with pytest.raises(KeyboardInterrupt):
        LabqflServer(spec).run(_KilledGrid(local_grid(make_client_app(), names), 1, deliver))
    LabqflServer(spec).run(local_grid(make_client_app(), names))  # new processes: fresh node state
    for p in mask_graph(names):
        a, b = p.split("-")
        with KeyStore.for_node(a, kdir) as sa, KeyStore.for_node(b, kdir) as sb:
            acc_a, acc_b = sa.accounting()[p], sb.accounting()[p]
            assert acc_a["reserved"] == acc_b["reserved"] == {}, (p, acc_a, acc_b)
            assert acc_a["available"] == acc_b["available"] == {"fl": per_round}, (p, acc_a, acc_b)
            km = sb.take(p, 64, "fl")  # drawn at the other end: the same free bits
            assert np.array_equal(sa.take_exact(p, km.refs, "fl").bits, km.bits)


def test_a_second_fl_run_on_the_same_store_makes_the_first_fail_with_one_clear_error(tmp_path) -> None:
    """Review s31 (concurrency, F2): a second Flower run's keys stage voids the first run's live
    reservations (a node store serves one FL run at a time); the first run then failed with ~500 lines
    of 'no pending reservation for key ID …'. Now one error names what happened and the rule."""
    bid = str(uuid.uuid4())
    _store(tmp_path, "C1", bid=bid, nbits=128).close()
    with NodeKeyStore("C1", tmp_path) as a, NodeKeyStore("C1", tmp_path) as b:
        a.reserve_master("C1-C2", 32, "run-a-key", round_index=1, run_tag="run-a")
        assert b.void_stranded("run-b", 1) == 1  # run B's keys stage
        with pytest.raises(SecureAggregationError, match="voided at node C1 by FL run run-b.*one FL run at a time"):
            a.words("run-a-key", 4, 8)
