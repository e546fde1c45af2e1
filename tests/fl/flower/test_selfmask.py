"""Self-masks on the Flower engine (in-process Grid): exact aggregates with dropouts, share pads from
each node's own key store consumed once, the client mod refusing both kinds of secret about a peer."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import CFG, STATE_SECRET, labqfl_secagg_mod, make_client_app
from labqfl.fl.flower.keys import REFS_TAG_BITS, new_ecdh_key
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.masks import mask_graph
from labqfl.fl.secure import secure_round
from labqfl.fl.training import local_updates
from labqfl.keystore import KeyStore


def _reference(spec: FlowerSpec, dropped: set[str]) -> np.ndarray:
    data, model = spec.data(), spec.model()
    g = model.init_params(spec.seed)
    ups, _ = local_updates(model, g, data.clients, spec.local(), spec.seed, 1)
    weights = {c: float(len(y)) for c, (_, y) in data.clients.items()}
    ref = secure_round(ups, weights, spec.secagg(), CsprngKeySource(), round_index=1,
                       rng=np.random.default_rng([spec.seed, 9000, 1]), dropped=dropped)
    return g + ref.aggregate


def test_flower_self_masks_with_a_client_lost_after_masking_csprng(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=6, q=16, rounds=1, keys="csprng", seed=5,
                               graph="ring-4", self_masks=True, threshold=3)
    srv = LabqflServer(spec)
    res = srv.run(local_grid(make_client_app(), spec.names, crash={"C3": 1}))
    fr = srv.rounds[0]
    assert fr.dropped_after_masking == ["C3"] and fr.self_masks and fr.threshold == 3
    n = spec.model().n_params
    assert fr.key_bits_per_pair == (16 + 2 * 17) * n
    assert fr.share_reveal_bits == 17 * n * 5 * 3  # t shares for each of the 5 survivors
    assert np.array_equal(res.final_params, _reference(spec, {"C3"}))


def test_flower_self_masks_qkd_pads_come_from_each_node_store_once(make_stores, local_grid, mnist_dir) -> None:
    names = [f"C{i}" for i in range(1, 5)]
    spec0 = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=1, keys="qkd", seed=1,
                                self_masks=True)
    n = spec0.model().n_params
    per_round = (8 + 2 * 9) * n + REFS_TAG_BITS  # mask, both pads and the refs tag key
    kdir = make_stores(names, per_round + 11)
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=1, keys="qkd", seed=1,
                               self_masks=True, keystore_dir=str(kdir))
    srv = LabqflServer(spec)
    res = srv.run(local_grid(make_client_app(), spec.names, crash={"C2": 1}))
    assert srv.rounds[0].dropped_after_masking == ["C2"] and srv.rounds[0].threshold == 3
    assert np.array_equal(res.final_params, _reference(spec, {"C2"}))
    for p in mask_graph(names):
        for node in p.split("-"):
            if node == "C2":
                continue  # the crashed node finishes its reservations at its next message
            with KeyStore.for_node(node, kdir) as st:
                assert st.available_bits(p, "fl") == 11
                # mask and both pads consumed (overwritten in the store), not left reserved
                assert sum(st.accounting()[p]["consumed"].values()) == per_round


def _unmask_msg(spec: FlowerSpec, n: int, **fields: object) -> Message:
    d = spec.to_config()
    d.update(stage="unmask", round=1, n_params=n, run_tag="t", **fields)
    cts = fields.pop("cts", None)
    content = RecordDict({CFG: ConfigRecord({k: v for k, v in d.items() if k != "cts"})})
    if cts is not None:
        content["cts"] = cts  # type: ignore[assignment]
    return Message(content, dst_node_id=1, message_type="train", group_id="1")


def test_flower_client_mod_refuses_both_kinds_of_secret_about_one_peer() -> None:
    spec = FlowerSpec(task="mnist-qnn", clients=3, q=8, keys="csprng", self_masks=True)
    ctx = Context(run_id=1, node_id=1, node_config={"labqfl-client": "C1"}, state=RecordDict(), run_config={})

    def call(msg: Message) -> Message:
        return labqfl_secagg_mod(msg, ctx, lambda m, c: pytest.fail("training must not run"))

    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    # one request, both kinds about C3
    with pytest.raises(SecureAggregationError, match=r"both the pairwise key and the self-mask share about \['C3'\]"):
        call(_unmask_msg(spec, 4, pairs=["C1-C3"], share_owners=["C3"], dropped=["C3"], survivors=["C1", "C2"]))
    # two requests of one round: first C2's share (C2 "survived"), then the key with C2 ("dropped")
    sk, _ = new_ecdh_key()
    _, pk2 = new_ecdh_key()
    ctx.state[STATE_SECRET] = ConfigRecord({"round": 1, "run": "t", "sk": sk})  # as its keys stage (run tag pinned)
    rep = call(_unmask_msg(spec, 4, pairs=[], share_owners=["C2"], dropped=[], survivors=["C1", "C2", "C3"],
                           **{"pk.C2": pk2}, cts=ArrayRecord({"C2": Array(np.zeros(4, dtype=np.uint32))})))
    assert list(rep.content.array_records["shares"].keys()) == ["C2"]
    ctx.state[STATE_SECRET] = ConfigRecord({"round": 1, "run": "t", "sk": sk})
    with pytest.raises(SecureAggregationError, match="already revealed its self-mask share of C2"):
        call(_unmask_msg(spec, 4, pairs=["C1-C2"], share_owners=[], dropped=["C2"], survivors=["C1", "C3"],
                         **{"pk.C2": pk2}))
