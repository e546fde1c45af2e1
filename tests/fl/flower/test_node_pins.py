"""What a client node holds itself rather than taking from the server's message (review s34: the node
rebuilt the run's spec from every message, so its checks compared the server's message with the
server's own settings, and a malicious server recovered client updates without any dropout lie):
the run tag of its round (pinned at ``keys``), which reservations it already masked with, the floors
of a mask plan, its key mode, the DP plan it computes, and the most words a round may reserve.
Every test here drives the client mod as that server would (it writes every field itself)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from flower_helpers import ModNodes

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import STATE_MASKED, STATE_SECRET
from labqfl.fl.flower.keys import REFS_TAG_BITS
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import split_pair
from labqfl.fl.secure import SecAggConfig
from labqfl.keystore import KeyStore

LEVELS = 2 ** (8 - 2) - 1


def _qkd_nodes(make_stores: Any, mnist_dir: str, clients: int = 3, **kw: Any) -> ModNodes:
    """Client nodes of a qkd run, each with its key store in its node config (as labqfl node supernode)."""
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=clients, q=8, rounds=1, keys="qkd", seed=1, **kw)
    kdir = make_stores(spec.names, 8192)
    return ModNodes(spec, {c: {"labqfl-keystore": str(kdir)} for c in spec.names})


def _mask_fields(nodes: ModNodes, c: str, participants: list[str]) -> dict[str, Any]:
    """The honest mask message's plan for client ``c`` among ``participants``."""
    sa = nodes.spec.secagg()
    among = [p for p in sa.pairs(nodes.spec.names) if all(x in participants for x in split_pair(p))]
    d: dict[str, Any] = {"pairs": [p for p in among if c in split_pair(p)], "participants": participants,
                         "levels": LEVELS, "position": nodes.spec.index_of(c)}
    if nodes.spec.self_masks:
        d["threshold"] = sa.share_threshold(participants)
    return d


def _honest_round(nodes: ModNodes) -> None:
    relay = nodes.qkd_keys_and_refs()
    for c in nodes.spec.names:
        assert nodes.masked(c, **_mask_fields(nodes, c, nodes.spec.names), **relay[c]).size == nodes.n


def _free(nodes: ModNodes, node: str, pair: str) -> int:
    with KeyStore.for_node(node, Path(str(nodes.ctx[node].node_config["labqfl-keystore"]))) as st:
        return int(st.available_bits(pair, "fl"))


def test_a_second_mask_message_with_another_run_tag_is_refused(make_stores, mnist_dir) -> None:
    """Review s34 F1: after an honest round the server sent C1 a mask message for {C1, C2} and C2 one for
    {C2, C3}, both with run tag "t2": C1 and C2 masked again with the same reserved pair words, and
    y1 − (y1b) = k13, y2 − y2b = −k12 gave C1's quantised update exactly. The run tag is pinned at keys."""
    nodes = _qkd_nodes(make_stores, mnist_dir)
    _honest_round(nodes)
    for c, part in (("C1", ["C1", "C2"]), ("C2", ["C2", "C3"])):
        with pytest.raises(SecureAggregationError, match=rf"^round 1: the mask message to {c} carries run tag 't2', "
                                                         "but its keys stage of this round was for run tag 't'"):
            nodes.send(c, "mask", run="t2", **_mask_fields(nodes, c, part))
    with pytest.raises(SecureAggregationError, match="carries run tag 't2'"):  # nor any other stage of the round
        nodes.send("C1", "refs", run="t2", pairs=["C1-C2"], **{"nonce.C1-C2": bytes(16).hex()})


def test_a_reservation_read_for_a_mask_is_never_read_for_a_mask_again(make_stores, mnist_dir) -> None:
    """Review s34 F1 with self-masks: the second mask drew a fresh self-mask and sent its shares under the
    same share-pad bits (a two-time pad; one ordinary unmask answer then gave both self-masks). Whatever
    gets past the per-round marker, the reservations themselves are marked when read for a mask."""
    nodes = _qkd_nodes(make_stores, mnist_dir, self_masks=True)
    _honest_round(nodes)
    del nodes.ctx["C1"].state[STATE_MASKED]  # the per-round marker lost (or got around)
    with pytest.raises(SecureAggregationError,
                       match=r"C1 already masked an upload with the keys of pair\(s\) \['C1-C2', 'C1-C3'\]"):
        nodes.send("C1", "mask", **_mask_fields(nodes, "C1", nodes.spec.names))


def test_a_message_spec_with_min_survivors_of_one_gets_no_unmasked_upload(make_stores, mnist_dir) -> None:
    """Review s34 F2: ``spec.min_survivors=1`` in the mask message, participants [C1] and no pairs: C1
    answered its quantised update in the clear. The node's own floor (≥ 2 participants) refuses it."""
    nodes = _qkd_nodes(make_stores, mnist_dir)
    evil = dataclasses.replace(nodes.spec, min_survivors=1)
    nodes.send("C1", "keys", spec=evil, master_pairs=[])
    with pytest.raises(SecureAggregationError, match=r"^round 1: the mask message names 1 participant\(s\), at least "
                                                     r"2 needed \(an aggregate of one client is its update\)"):
        nodes.send("C1", "mask", spec=evil, pairs=[], participants=["C1"], levels=LEVELS, position=0)


def test_secagg_config_refuses_min_survivors_below_two() -> None:
    with pytest.raises(ValueError, match=r"SecAggConfig.min_survivors must be >= 2 \(an aggregate of one client is "
                                         r"that client's update\), got 1"):
        SecAggConfig(q=8, min_survivors=1)
    assert SecAggConfig(q=8, min_survivors=2).survivors_needed == 2


def test_the_key_mode_is_the_node_s_not_the_message_s(make_stores, mnist_dir) -> None:
    """Review s34 F3: a node with a key store followed a message saying ``keys=csprng``, answered an
    X25519 key and masked with the public keys the server relayed (its own): every update recovered,
    0 QKD bits used. A node with a key store is a qkd node unless its own config says csprng."""
    nodes = _qkd_nodes(make_stores, mnist_dir)
    cs = dataclasses.replace(nodes.spec, keys="csprng")
    with pytest.raises(SecureAggregationError, match="^round 1: the server's message asks C1 to mask with "
                                                     "keys='csprng', but this node uses keys='qkd'"):
        nodes.send("C1", "keys", spec=cs, master_pairs=["C1-C2", "C1-C3"])
    assert STATE_SECRET not in nodes.ctx["C1"].state  # no key drawn, nothing answered
    kdir = nodes.ctx["C1"].node_config["labqfl-keystore"]
    chosen = ModNodes(cs, {"C1": {"labqfl-keystore": kdir, "labqfl-keys": "csprng"}})  # the operator's choice
    assert len(bytes(chosen.answer("C1", "keys", master_pairs=["C1-C2", "C1-C3"])["pk"])) == 32
    with pytest.raises(SecureAggregationError, match="asks C1 to mask with keys='qkd', but this node uses keys='csprng'"):
        chosen.send("C1", "keys", r=2, spec=nodes.spec, master_pairs=["C1-C2", "C1-C3"])
    bad = ModNodes(cs, {"C1": {"labqfl-keys": "ecdh"}})
    with pytest.raises(SecureAggregationError, match="node config 'labqfl-keys' is 'ecdh'; expected 'qkd' or 'csprng'"):
        bad.send("C1", "keys", master_pairs=[])


def test_a_mask_message_without_the_run_s_dp_plan_or_with_another_sigma_is_refused(mnist_dir) -> None:
    """Review s34 F5: with DP on, a mask message without ``dp_plan`` got a plain quantisation (no noise),
    and one with σ = 1e-6 got the update to 4e-9. The node now computes the plan from the spec (NOTE:
    still the server's until specs are operator-signed) and refuses any other, or none."""
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=2, q=32, rounds=5, keys="csprng", seed=1,
                               dp_epsilon=8.0)
    nodes = ModNodes(spec)  # simulation nodes (no key store): csprng
    plan = spec.dp_plan()
    low = json.dumps(dataclasses.replace(plan, sigma=1e-6).as_dict())
    cases = ((nodes.n, {}, "the mask message has no DP plan, but the run has DP on"),
             (plan.d_pad, {"dp_plan": low}, r"differs from the run's \(field: sent, expected\): sigma: 1e-06"),
             (plan.d_pad, {"dp_plan": json.dumps(plan.as_dict())}, ""))
    for r, (n, fields, why) in enumerate(cases, start=1):
        pk = nodes.answer("C2", "keys", r=r, n_params=n)["pk"]
        nodes.send("C1", "keys", r=r, n_params=n)
        msg = dict(r=r, n_params=n, pairs=["C1-C2"], participants=["C1", "C2"], levels=1, position=0,
                   **{"pk.C2": pk}, **fields)
        if why:
            with pytest.raises(SecureAggregationError, match=why):
                nodes.send("C1", "mask", **msg)
        else:
            assert nodes.masked("C1", **msg).size == plan.d_pad  # the run's own plan is accepted


def test_unread_reservations_go_back_at_the_next_keys_stage_and_n_params_is_bounded(make_stores, mnist_dir) -> None:
    """Review s34 F7: a keys message with a huge ``n_params`` made the master reserve its whole pool, and the
    next keys message consumed it unread (20480 free bits → 0, the slave's end still free). Now n is at most
    the model's upload, and reservations never tagged nor read go back at the next keys stage; tagged ones
    are still spent (the slave may have masked with them)."""
    nodes = _qkd_nodes(make_stores, mnist_dir, clients=2)
    free0 = _free(nodes, "C1", "C1-C2")
    per_round = 8 * nodes.n + REFS_TAG_BITS
    nodes.send("C1", "keys", r=1, master_pairs=["C1-C2"])
    assert _free(nodes, "C1", "C1-C2") == free0 - per_round
    nodes.send("C1", "keys", r=2, master_pairs=[])
    assert _free(nodes, "C1", "C1-C2") == free0  # never tagged, never read: released
    nodes.send("C1", "keys", r=3, master_pairs=["C1-C2"])
    nodes.send("C1", "refs", r=3, pairs=["C1-C2"], **{"nonce.C1-C2": bytes(16).hex()})
    nodes.send("C1", "keys", r=4, master_pairs=[])
    assert _free(nodes, "C1", "C1-C2") == free0 - per_round  # tagged: spent, never released
    free1 = _free(nodes, "C1", "C1-C2")
    with pytest.raises(SecureAggregationError, match=rf"n_params={(free1 - 256) // 8}; the run's model 'mnist-qnn' "
                                                     rf"uploads {nodes.n} words"):
        nodes.send("C1", "keys", r=5, master_pairs=["C1-C2"], n_params=(free1 - 256) // 8)
    assert _free(nodes, "C1", "C1-C2") == free1  # nothing reserved
