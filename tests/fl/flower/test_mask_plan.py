"""A client node checks the server's mask message against the run's spec before it masks: the server
chooses only who takes part; the node's pairs, the participants' sufficiency and connectivity and the
self-mask threshold follow from the spec. Without the check a server that sends no pairs gets the
quantised update in the clear, and one that sends a threshold of 1 with the node as its only holder
gets the self-mask from the node's own unmask answer (docs/secure_aggregation.md §13)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import labqfl_secagg_mod
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.quantize import quantize

UPDATE = np.random.default_rng(0).normal(0, 0.3, 10)
ALL4 = ["C1", "C2", "C3", "C4"]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _train(msg: Message, context: Any) -> Message:
    return Message(RecordDict({"update": ArrayRecord({"update": Array(UPDATE)}),
                               "metrics": MetricRecord({"num_examples": 10})}), reply_to=msg)


def _node(spec: FlowerSpec, name: str) -> tuple[Context, Any]:
    """A client node's context after its keys stage, and a function sending it one stage's message."""
    ctx = Context(run_id=1, node_id=7, state=RecordDict(), run_config={}, node_config={"labqfl-client": name})

    def send(stage: str, **fields: Any) -> Message:
        d = dict(spec.to_config(), stage=stage, round=1, n_params=UPDATE.size, run_tag="t", **fields)
        msg = Message(RecordDict({"labqfl": ConfigRecord(d)}), dst_node_id=7, message_type="train", group_id="1")
        return labqfl_secagg_mod(msg, ctx, _train)

    send("keys", master_pairs=[p for p in spec.secagg().pairs(spec.names) if p.startswith(f"{name}-")])
    return ctx, send


def _peer_keys(spec: FlowerSpec, name: str, pairs: list[str]) -> dict[str, bytes]:
    """Public keys of ``name``'s peers on ``pairs`` (fresh ECDH keys: the values do not matter here)."""
    from labqfl.fl.flower.keys import new_ecdh_key

    peers = {p.replace(name, "").strip("-") for p in pairs}
    return {f"pk.{peer}": new_ecdh_key()[1] for peer in peers}


def test_the_honest_mask_message_is_accepted_and_masks_the_update() -> None:
    spec = FlowerSpec(clients=4, keys="csprng", q=16, rounding="nearest", clip=1.0)
    _, send = _node(spec, "C2")
    pairs = ["C1-C2", "C2-C3", "C2-C4"]
    rep = send("mask", pairs=pairs, levels=4095, position=1, participants=ALL4, **_peer_keys(spec, "C2", pairs))
    y = rep.content.array_records["masked"]["masked"].numpy()
    v, _ = quantize(UPDATE, clip=1.0, levels=4095, q=16)
    assert y.size == v.size and not np.array_equal(y, v)


@pytest.mark.parametrize(("fields", "why"), [
    ({"pairs": [], "participants": ALL4}, r"gives C2 the pairs \[\]; the mask graph among the round's participants "
                                          r"gives \['C1-C2', 'C2-C3', 'C2-C4'\]"),
    ({"pairs": ["C1-C2"], "participants": ALL4}, "gives C2 the pairs"),
    ({"pairs": ["C1-C2", "C2-C3", "C2-C4", "C2-C9"], "participants": ALL4}, "gives C2 the pairs"),
    ({"pairs": [], "participants": []}, r"participants \[\] are not clients of this run in loop order including C2"),
    ({"pairs": [], "participants": ["C2"]}, r"names 1 participant\(s\), at least 2 needed"),
    ({"pairs": ["C1-C2"], "participants": ["C2", "C1"]}, "in loop order"),
    ({"pairs": ["C1-C2"], "participants": ["C1", "C2", "C9"]}, "not clients of this run"),
])
def test_a_mask_message_that_departs_from_the_spec_is_refused_before_masking(fields: dict[str, Any], why: str) -> None:
    spec = FlowerSpec(clients=4, keys="csprng", q=16, rounding="nearest", clip=1.0)
    _, send = _node(spec, "C2")
    with pytest.raises(SecureAggregationError, match=r"^round 1: .*" + why):
        send("mask", levels=4095, position=1, **fields, **_peer_keys(spec, "C2", fields["pairs"]))


def test_a_self_mask_threshold_below_the_spec_s_rule_is_refused() -> None:
    """The attack the check stops: no pairs and t = 1 (the node its own only holder) made y − s = v
    with s taken from the node's own unmask answer; a lower t with the right pairs is refused too."""
    spec = FlowerSpec(clients=4, keys="csprng", q=16, rounding="nearest", clip=1.0, self_masks=True)
    pairs = ["C1-C2", "C2-C3", "C2-C4"]
    for fields, why in (({"pairs": [], "threshold": 1}, "gives C2 the pairs"),
                        ({"pairs": pairs, "threshold": 1}, "self-mask threshold is 1; this run's rule gives 3")):
        _, send = _node(spec, "C2")
        with pytest.raises(SecureAggregationError, match=re.escape(why)):
            send("mask", levels=4095, position=1, participants=ALL4, **fields, **_peer_keys(spec, "C2", fields["pairs"]))
    _, send = _node(spec, "C2")
    rep = send("mask", levels=4095, position=1, participants=ALL4, pairs=pairs, threshold=3,
               **_peer_keys(spec, "C2", pairs))
    assert not rep.has_error() and "masked" in rep.content.array_records


def test_participants_split_in_a_sparse_graph_are_refused() -> None:
    """ring-2 over six clients: C1, C2 and C4, C5 are two groups; a round over them would let the server
    unmask each group's partial sum, so the node refuses (the server's own rule, enforced at the node)."""
    spec = FlowerSpec(clients=6, keys="csprng", q=16, rounding="nearest", clip=1.0, graph="ring-k", k=2)
    _, send = _node(spec, "C2")
    with pytest.raises(SecureAggregationError, match="are not connected in the mask graph"):
        send("mask", levels=4095, position=1, participants=["C1", "C2", "C4", "C5"], pairs=["C1-C2"],
             **_peer_keys(spec, "C2", ["C1-C2"]))
