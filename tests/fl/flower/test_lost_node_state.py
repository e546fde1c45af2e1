"""The key store, not Flower's node state, keeps a node from using a key twice (review s34 second look, F2/F3).

A ClientApp pushes its reply before its node state (``context.state``), and a state push that fails is only
logged (flwr 1.42, run_clientapp.py): a master whose process dies in between has sent its reply while the
SuperNode keeps the state from before the message. Here the next message is handed exactly that state (a deep
copy taken before), as the reviewer's reproducers did. The store's delivery kinds (``reserve-tagged``,
``reserve-masked``) must refuse what the lost marks (``read``, ``masked``, the mask-once marker) would have.
"""

from __future__ import annotations

import copy
import json

import pytest
from flower_helpers import ModNodes
from flwr.app import Context

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import STATE_RESV, TAG
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import split_pair
from labqfl.keystore import KeyStore

LEVELS = 2 ** (8 - 2) - 1


def _nodes(make_stores, mnist_dir) -> tuple[ModNodes, object]:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=8, rounds=2, keys="qkd", seed=1,
                               rounding="nearest")
    kdir = make_stores(spec.names, 8192)
    return ModNodes(spec, {c: {"labqfl-keystore": str(kdir)} for c in spec.names}), kdir


def _fields(nodes: ModNodes, c: str, participants: list[str]) -> dict:
    sa = nodes.spec.secagg()
    among = [p for p in sa.pairs(nodes.spec.names) if all(x in participants for x in split_pair(p))]
    return {"pairs": [p for p in among if c in split_pair(p)], "participants": participants, "levels": LEVELS,
            "position": nodes.spec.index_of(c)}


def _state_before(nodes: ModNodes, c: str) -> Context:
    """Node ``c``'s state as the SuperNode holds it now: what it keeps if the next message's state push is lost."""
    ctx = nodes.ctx[c]
    return Context(run_id=1, node_id=7, state=copy.deepcopy(ctx.state), run_config={},
                   node_config=dict(ctx.node_config))


def _bits(refs: list) -> set[tuple[str, int]]:
    return {(str(b), i) for b, o, n in refs for i in range(int(o), int(o) + int(n))}


def test_tagged_reservations_are_consumed_not_released_after_a_lost_refs_state(make_stores, mnist_dir) -> None:
    """F2: C1 tags its round-1 refs (sent to C2, who may mask with them) but its state push is lost, so its
    state still says 'never tagged'. The round-2 keys stage consumes those reservations (the store says tagged)
    and reserves other bits; before the fix it released them and reserved the same 192 bits again."""
    nodes, kdir = _nodes(make_stores, mnist_dir)
    pairs = nodes.spec.secagg().pairs(nodes.spec.names)
    mine = [p for p in pairs if split_pair(p)[0] == "C1"]
    keys = {c: nodes.answer(c, "keys", r=1, master_pairs=[p for p in pairs if split_pair(p)[0] == c],
                            slave_pairs=[p for p in pairs if split_pair(p)[1] == c]) for c in nodes.spec.names}
    before_refs = _state_before(nodes, "C1")
    kids1 = json.loads(str(before_refs.state.config_records[STATE_RESV]["kids"]))
    nodes.answer("C1", "refs", r=1, pairs=mine, **{f"nonce.{p}": keys[split_pair(p)[1]][f"nonce.{p}"] for p in mine})
    nodes.ctx["C1"] = before_refs  # the refs process died after its reply: its state never reached the SuperNode
    k2 = nodes.answer("C1", "keys", r=2, master_pairs=mine, slave_pairs=[])
    refs1, refs2 = json.loads(str(keys["C1"]["refs.C1-C2"])), json.loads(str(k2["refs.C1-C2"]))
    assert not _bits(refs1) & _bits(refs2), (refs1, refs2)  # no bit of the tagged key masks round 2
    with KeyStore.for_node("C1", kdir) as st:
        for p in mine:
            assert st.delivery(kids1[p])["state"] == "delivered"  # consumed (spent), not 'released'
            assert st.delivery(kids1[p + TAG])["state"] == "delivered"


def test_a_second_refs_tag_after_a_lost_state_is_refused_by_the_store(make_stores, mnist_dir) -> None:
    """One tag per tag key even when the refs stage's state push was lost: the store says the key was read."""
    nodes, _ = _nodes(make_stores, mnist_dir)
    pairs = nodes.spec.secagg().pairs(nodes.spec.names)
    mine = [p for p in pairs if split_pair(p)[0] == "C1"]
    keys = {c: nodes.answer(c, "keys", r=1, master_pairs=[p for p in pairs if split_pair(p)[0] == c],
                            slave_pairs=[p for p in pairs if split_pair(p)[1] == c]) for c in nodes.spec.names}
    before_refs = _state_before(nodes, "C1")
    nonces = {f"nonce.{p}": keys[split_pair(p)[1]][f"nonce.{p}"] for p in mine}
    nodes.answer("C1", "refs", r=1, pairs=mine, **nonces)
    nodes.ctx["C1"] = before_refs
    with pytest.raises(SecureAggregationError, match="refs tag key .* was used already.*one tag per tag key"):
        nodes.answer("C1", "refs", r=1, pairs=mine, **nonces)


@pytest.mark.parametrize("client,second", [("C1", ["C1", "C2"]), ("C2", ["C2", "C3"])])
def test_a_second_mask_after_a_lost_state_is_refused_by_the_store(make_stores, mnist_dir, client, second) -> None:
    """F3: the node masked its round-1 upload, but the state push (mask-once marker, ``masked`` list) was lost;
    a second mask message of the round (other participants) is refused: the store says those pair keys masked
    an upload. Before the fix the second upload went out, and the two recovered the client's update."""
    nodes, _ = _nodes(make_stores, mnist_dir)
    relay = nodes.qkd_keys_and_refs()
    before_mask = _state_before(nodes, client)
    nodes.masked(client, **_fields(nodes, client, list(nodes.spec.names)), **relay[client])
    nodes.ctx[client] = before_mask  # the mask process died after its upload went out
    with pytest.raises(SecureAggregationError, match="already masked an upload .*its key store says so"):
        nodes.masked(client, **_fields(nodes, client, second), **relay[client])
