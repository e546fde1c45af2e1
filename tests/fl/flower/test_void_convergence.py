"""A slave that misses any number of rounds after the refs stage catches up (second review s32, F2):
the master's void announcement covers every mask reservation it spent (merged into ranges, paged),
not only its 16 most recent deliveries — with those, a slave lost for more than 8 rounds kept the
oldest bits free for good and the pair's two stores never agreed again."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from labqfl.fl.flower.keys import USE, VOID_PAGE_RANGES, NodeKeyStore, merge_spent
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.keystore import KeyStore

PAIR = "C1-C2"


def _free(kdir: Any, node: str) -> list[tuple[int, int]]:
    with KeyStore.for_node(node, kdir) as st:
        return sorted(rng for rs in st.free_ranges(PAIR, ["fl"]).values() for rng in rs)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("missed", [20])
def test_a_slave_that_missed_many_rounds_after_the_refs_stage_converges_with_its_master(make_stores, mnist_dir,
                                                                                        missed) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    from labqfl.fl.flower.client import labqfl_secagg_mod

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    kdir = make_stores(["C1", "C2"], 1 << 15)
    spec = FlowerSpec.for_task("mnist-qnn", keystore_dir=str(kdir), data_dir=mnist_dir, clients=2, q=8,
                               rounds=missed + 2, keys="qkd", seed=1)
    n = spec.model().n_params
    ctx = {c: Context(run_id=1, node_id=7, state=RecordDict(), run_config={}, node_config={"labqfl-client": c})
           for c in ("C1", "C2")}

    def train(msg: Message, context: Any) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(np.zeros(n))}),
                                   "metrics": MetricRecord({"num_examples": 10})}), reply_to=msg)

    def send(node: str, stage: str, r: int, **fields: Any) -> Any:
        d = dict(spec.to_config(), stage=stage, round=r, n_params=n, run_tag="t", **fields)
        msg = Message(RecordDict({"labqfl": ConfigRecord(d)}), dst_node_id=7, message_type="train", group_id=str(r))
        return labqfl_secagg_mod(msg, ctx[node], train).content.config_records.get("labqfl")

    for r in range(1, missed + 2):
        k1 = send("C1", "keys", r, master_pairs=[PAIR])
        k2 = send("C2", "keys", r, slave_pairs=[PAIR])
        tag = send("C1", "refs", r, pairs=[PAIR], **{f"nonce.{PAIR}": k2[f"nonce.{PAIR}"]})[f"tag.{PAIR}"]
        if r <= missed:
            continue  # the slave is lost after the refs stage (a crash, a timeout, a withheld mask message)
        mask = {"pairs": [PAIR], "participants": ["C1", "C2"], "levels": 100, "position": 0, f"tag.{PAIR}": tag,
                **{f"{k}.{PAIR}": k1[f"{k}.{PAIR}"] for k in ("refs", "reftag", "void") if f"{k}.{PAIR}" in k1}}
        send("C1", "mask", r, **mask)
        send("C2", "mask", r, **mask)
        send("C1", "end", r)
        send("C2", "end", r)
    assert _free(kdir, "C2") == _free(kdir, "C1")  # in step again: nothing free at the slave only
    assert _free(kdir, "C1")  # and the pair still has key left


class _Finished:
    """A stand-in key store: ``finished`` lists given deliveries (newest first)."""

    def __init__(self, deliveries: list[dict[str, Any]]) -> None:
        self.deliveries = deliveries

    def finished(self, pair: str, *, limit: int | None = 16) -> list[dict[str, Any]]:
        return self.deliveries[:limit]


def _master(deliveries: list[dict[str, Any]]) -> NodeKeyStore:
    ks = NodeKeyStore.__new__(NodeKeyStore)
    ks.store = _Finished(deliveries)  # type: ignore[assignment]
    return ks


def test_spent_refs_merge_into_ranges_and_pages_cover_every_range_in_turn() -> None:
    # 300 spent deliveries in 150 blocks (two adjacent reservations each), one slave-end and one other use
    master = [{"refs": [(f"b{i // 2:03d}", 64 * (i % 2), 64)], "info": {"use": USE, "end": "master"}}
              for i in reversed(range(300))]
    other = [{"refs": [("x", 0, 8)], "info": {"use": USE, "end": "slave"}},
             {"refs": [("y", 0, 8)], "info": {"use": "etsi"}}]
    ranges = merge_spent([d["refs"] for d in master])
    assert len(ranges) == 150 and all(length == 128 and start == 0 for _, start, length in ranges)
    assert ranges[0][0] == "b149"  # newest first
    ks = _master(master + other)
    pages = -(-150 // VOID_PAGE_RANGES)
    seen: set[tuple[str, int, int]] = set()
    for r in range(pages - 1):
        got = ks.spent_refs(PAIR, r)
        assert len(got) <= 2 * VOID_PAGE_RANGES
        assert {tuple(x) for x in got} >= set(ranges[:VOID_PAGE_RANGES])  # the newest page every time
        seen |= {tuple(x) for x in got}  # type: ignore[misc]
    assert seen == set(ranges)  # x and y (not the master's FL deliveries) never announced
    assert merge_spent([[("b", 0, 8), ("b", 16, 8)], [("b", 4, 8)]]) == [("b", 0, 12), ("b", 16, 8)]  # no gap filled
