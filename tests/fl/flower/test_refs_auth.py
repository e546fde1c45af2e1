"""Key references relayed by the server are authenticated end to end (Flower engine, qkd keys;
docs/secure_aggregation.md §9): each master tags its refs and its slave's fresh nonce with a
Wegman–Carter tag under a one-time tag key from the pair's store, and the slave checks the tag
before it uses any ref. A server that forges, alters or replays refs is refused; no upload is
masked with bits its master did not reserve for it, and no key bit is used twice."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid
from flwr.app import Message

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import make_client_app
from labqfl.fl.flower.keys import REFS_TAG_BITS, refs_forgery_probability, refs_statement
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import mask_graph
from labqfl.keystore import KeyStore

NAMES = ["C1", "C2", "C3"]
NOT_AUTHENTICATED = "key references for pair C1-C2 not authenticated by its master C1"


def _spec(mnist_dir: str, kdir: Any = "", **kw: Any) -> FlowerSpec:
    base: dict[str, Any] = dict(data_dir=mnist_dir, clients=3, q=8, rounds=1, keys="qkd", seed=1)
    base.update(kw)
    return FlowerSpec.for_task("mnist-qnn", keystore_dir=str(kdir), **base)


def _per_round(mnist_dir: str) -> int:
    spec = _spec(mnist_dir)
    return spec.q * spec.model().n_params


def _free(kdir: Any, node: str, pair: str) -> list[tuple[int, int]]:
    with KeyStore.for_node(node, kdir) as st:
        return [rng for rs in st.free_ranges(pair, ["fl"]).values() for rng in rs]


def _covers(free: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in free)


def test_forged_refs_are_refused_by_the_slave_and_their_bits_stay_unused(make_stores, local_grid, mnist_dir) -> None:
    """The server gives slave C2 refs of free bits its master C1 never reserved for this round (the
    bits C1 will reserve next round): C2 refuses, uploads nothing, and the bits stay free at both
    ends — so when C1 masks with them later, it is their first and only use. (The old code masked
    C2's upload with them: the same pad as C1's next-round upload.)"""
    qn = _per_round(mnist_dir)
    kdir = make_stores(NAMES, 2 * (qn + REFS_TAG_BITS))
    forged: list[list[Any]] = []

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node == "C2" and stage == "mask":
            (bid, off, _), = json.loads(str(cfg["refs.C1-C2"]))
            forged.append([bid, off + qn + REFS_TAG_BITS, qn])  # round 2's mask bits of C1
            cfg["refs.C1-C2"] = json.dumps(forged)
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES), meddle)
    srv = LabqflServer(_spec(mnist_dir, kdir))
    srv.run(grid)
    assert NOT_AUTHENTICATED in grid.error_of("C2", "mask", 1)
    assert srv.rounds[0].dropped_after_masking == ["C2"]  # no upload from C2, masked or not
    _, start, length = forged[0]
    for node in ("C1", "C2"):  # nobody ever used the forged bits: free at both ends
        assert _covers(_free(kdir, node, "C1-C2"), start, start + length), node


def test_refs_replayed_from_a_round_the_slave_missed_are_refused(make_stores, local_grid, mnist_dir) -> None:
    """Round 1: the server withholds C2's mask message, so C1 reveals its key of C1-C2 for dropout
    recovery while those bits stay free at C2. Round 2: the server replays round 1's refs, tag key
    refs and tag to C2 — with the old code C2 masked with bits the server already holds. Now C2's
    fresh round-2 nonce is not the one the tag covers: refused, and the revealed bits stay unused."""
    qn = _per_round(mnist_dir)
    kdir = make_stores(NAMES, 2 * (qn + REFS_TAG_BITS))
    grid: MeddlingGrid

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node != "C2" or stage != "mask":
            return True
        if r == 1:
            return False  # withheld: C2 looks lost after masking
        for k, v in grid.mask_cfgs[("C2", 1)].items():
            if k.endswith(".C1-C2") and k.split(".")[0] in ("refs", "reftag", "tag", "void"):
                cfg[k] = v
        if "void.C1-C2" not in grid.mask_cfgs[("C2", 1)] and "void.C1-C2" in cfg:
            del cfg["void.C1-C2"]
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES), meddle)
    srv = LabqflServer(_spec(mnist_dir, kdir, rounds=2))
    srv.run(grid)
    assert srv.rounds[0].dropped_after_masking == ["C2"]
    assert NOT_AUTHENTICATED in grid.error_of("C2", "mask", 2)
    (_, start, length), = json.loads(str(grid.mask_cfgs[("C2", 1)]["refs.C1-C2"]))
    assert _covers(_free(kdir, "C2", "C1-C2"), start, start + length)  # revealed at C1, never used at C2


def test_a_slave_refuses_altered_void_refs_before_discarding_anything(make_stores, local_grid, mnist_dir) -> None:
    """The server adds a void ref naming bits its master has not spent: the slave would have
    discarded them (its store out of step with the master's for good). It refuses instead, and
    discards nothing."""
    qn = _per_round(mnist_dir)
    kdir = make_stores(NAMES, 2 * (qn + REFS_TAG_BITS))
    fake: list[list[Any]] = []

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node == "C2" and stage == "mask":
            (bid, off, _), = json.loads(str(cfg["refs.C1-C2"]))
            fake.append([bid, off + qn + REFS_TAG_BITS, 64])
            cfg["void.C1-C2"] = json.dumps(fake)
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES), meddle)
    LabqflServer(_spec(mnist_dir, kdir)).run(grid)
    assert NOT_AUTHENTICATED in grid.error_of("C2", "mask", 1)
    _, start, length = fake[0]
    assert _covers(_free(kdir, "C2", "C1-C2"), start, start + length)


@pytest.mark.parametrize("self_masks", [False, True], ids=["masks", "self-masks"])
def test_honest_runs_authenticate_every_pair_and_leave_both_ends_of_every_pair_in_step(
        make_stores, local_grid, mnist_dir, self_masks) -> None:
    """Two honest rounds: every slave's check passes, the refs stage is timed, each pair spends its
    mask (and pads) plus 256 tag-key bits per round, and both ends of every pair end with the same
    available bits and nothing reserved."""
    spec0 = _spec(mnist_dir, clients=4, rounds=2, self_masks=self_masks)
    n = spec0.model().n_params
    per_round = spec0.secagg().key_bits_per_pair(n) + REFS_TAG_BITS
    kdir = make_stores(spec0.names, 2 * per_round + 40)
    grid = MeddlingGrid(local_grid(make_client_app(), spec0.names))
    srv = LabqflServer(_spec(mnist_dir, kdir, clients=4, rounds=2, self_masks=self_masks))
    srv.run(grid)
    assert not any(rep.has_error() for *_, rep in grid.replies)
    for fr in srv.rounds:
        assert not fr.dropped_before_masking and not fr.dropped_after_masking
        assert fr.key_bits_per_pair == per_round and fr.tag_bits_per_pair == REFS_TAG_BITS
        assert "refs" in fr.stage_seconds
    for p in mask_graph(spec0.names):
        a, b = p.split("-")
        with KeyStore.for_node(a, kdir) as sa, KeyStore.for_node(b, kdir) as sb:
            acc_a, acc_b = sa.accounting()[p], sb.accounting()[p]
            assert acc_a["available"] == acc_b["available"] == {"fl": 40}, (p, acc_a, acc_b)
            assert acc_a["reserved"] == acc_b["reserved"] == {}, (p, acc_a, acc_b)


def test_a_master_that_fails_the_refs_stage_is_dropped_before_masking_and_tagged_bits_are_never_released(
        make_stores, local_grid, mnist_dir) -> None:
    """C1 never answers its refs message (too few clients are left: the round is given up before any
    mask message). C1 tagged nothing, so its reservations go back to the pool; C2 tagged the refs of
    C2-C3, which the server holds and could still hand to C3, so those bits are consumed, never
    released (a released mask key could be reserved again for another upload)."""
    qn = _per_round(mnist_dir)
    kdir = make_stores(NAMES, qn + REFS_TAG_BITS)
    grid = MeddlingGrid(local_grid(make_client_app(), NAMES), lambda node, stage, r, cfg: (node, stage) != ("C1", "refs"))
    with pytest.raises(SecureAggregationError, match="aborted"):
        LabqflServer(_spec(mnist_dir, kdir, min_survivors=3)).run(grid)
    assert not any(stage == "mask" for _, stage, _, _ in grid.replies)
    with KeyStore.for_node("C1", kdir) as st:
        for p in ("C1-C2", "C1-C3"):
            assert st.accounting()[p]["available"] == {"fl": qn + REFS_TAG_BITS} and st.accounting()[p]["reserved"] == {}
    with KeyStore.for_node("C2", kdir) as st:
        acc = st.accounting()["C2-C3"]
        assert acc["consumed"] == {"fl": qn + REFS_TAG_BITS} and acc["reserved"] == {} and acc["available"] == {}


def test_the_statement_binds_every_field_and_the_forgery_bound_is_per_verification() -> None:
    refs = [["b1", 0, 64]]
    base = dict(refs=refs, tag_refs=[["b1", 64, 256]], pad_refs=[], void_refs=[])
    s = refs_statement("run", 3, "C1-C2", bytes(16), **base)  # type: ignore[arg-type]
    variants = [refs_statement("run", 4, "C1-C2", bytes(16), **base),  # type: ignore[arg-type]
                refs_statement("run", 3, "C1-C3", bytes(16), **base),  # type: ignore[arg-type]
                refs_statement("run", 3, "C1-C2", b"\1" + bytes(15), **base),  # type: ignore[arg-type]
                refs_statement("rum", 3, "C1-C2", bytes(16), **base),  # type: ignore[arg-type]
                refs_statement("run", 3, "C1-C2", bytes(16), **{**base, "refs": [["b1", 1, 64]]}),  # type: ignore[arg-type]
                refs_statement("run", 3, "C1-C2", bytes(16), **{**base, "void_refs": [["b1", 0, 8]]}),  # type: ignore[arg-type]
                refs_statement("run", 3, "C1-C2", bytes(16), **{**base, "refs": [], "pad_refs": refs})]  # type: ignore[arg-type]
    assert len({s, *variants}) == 1 + len(variants)
    words = -(-len(s) // 8) + 1
    assert refs_forgery_probability(s) == pytest.approx((words / 2.0**64) ** 2) and refs_forgery_probability(s) < 1e-30
    with pytest.raises(ValueError, match="malformed"):
        refs_statement("run", 3, "C1-C2", bytes(16), refs=[["b1", -1, 64]], tag_refs=[], pad_refs=[], void_refs=[])


def test_a_master_tags_a_pair_once_and_a_slave_checks_a_nonce_once(make_stores, mnist_dir) -> None:
    """A second refs request for the same pair and round (a second tag under the same one-time pad
    would let the server forge) and a second mask message to the slave (its nonce is used) are
    refused."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from labqfl.fl.flower.client import labqfl_secagg_mod

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    spec = _spec(mnist_dir, make_stores(["C1", "C2"], 4096), clients=2)
    ctx = {c: Context(run_id=1, node_id=7, state=RecordDict(), run_config={}, node_config={"labqfl-client": c})
           for c in ("C1", "C2")}

    n = spec.model().n_params

    def train(msg: Message, context: Any) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(np.zeros(n))}),
                                   "metrics": MetricRecord({"num_examples": 10})}), reply_to=msg)

    def send(node: str, stage: str, **fields: Any) -> Message:
        d = dict(spec.to_config(), stage=stage, round=1, n_params=n, run_tag="t", **fields)
        msg = Message(RecordDict({"labqfl": ConfigRecord(d)}), dst_node_id=7, message_type="train", group_id="1")
        return labqfl_secagg_mod(msg, ctx[node], train)

    keys1 = send("C1", "keys", master_pairs=["C1-C2"]).content.config_records["labqfl"]
    keys2 = send("C2", "keys", slave_pairs=["C1-C2"]).content.config_records["labqfl"]
    nonce = str(keys2["nonce.C1-C2"])
    assert len(bytes.fromhex(nonce)) == 16
    tag = send("C1", "refs", pairs=["C1-C2"], **{"nonce.C1-C2": nonce}).content.config_records["labqfl"]["tag.C1-C2"]
    assert len(bytes.fromhex(str(tag))) == 16
    with pytest.raises(SecureAggregationError, match="twice"):
        send("C1", "refs", pairs=["C1-C2"], **{"nonce.C1-C2": bytes(16).hex()})
    mask = {"pairs": ["C1-C2"], "participants": ["C1", "C2"], "levels": 100, "position": 1,
            **{f"{k}.C1-C2": keys1[f"{k}.C1-C2"] for k in ("refs", "reftag")}, "tag.C1-C2": tag}
    assert "masked" in send("C2", "mask", **mask).content.array_records  # the honest refs pass
    with pytest.raises(SecureAggregationError, match="mask a second upload in this round"):
        send("C2", "mask", **mask)  # the same message again: one upload per round (review s32)
    from flwr.app import ConfigRecord as Rec

    from labqfl.fl.flower.client import STATE_MASKED, STATE_RESV

    del ctx["C2"].state[STATE_MASKED]  # were that marker lost, the reservation is marked as masked with
    with pytest.raises(SecureAggregationError, match=r"already masked an upload with the keys of pair\(s\) \['C1-C2'\]"):
        send("C2", "mask", **mask)
    resv = dict(ctx["C2"].state.config_records[STATE_RESV])
    ctx["C2"].state[STATE_RESV] = Rec({**resv, "masked": "[]"})  # and were both marks lost, the nonce was used
    del ctx["C2"].state[STATE_MASKED]
    with pytest.raises(SecureAggregationError, match="holds no nonce"):
        send("C2", "mask", **mask)


def test_a_master_masks_one_upload_per_round(make_stores, mnist_dir) -> None:
    """Review s32 (second look): a malicious server sent a master a second mask message in the same round, with
    another participant set; the master masked a second upload with the same pair words and the server recovered
    its quantised update exactly (y1b − (y2b − y2a) = v1 in a 3-client round). The second one is refused."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from labqfl.fl.flower.client import labqfl_secagg_mod

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    spec = _spec(mnist_dir, make_stores(["C1", "C2"], 4096), clients=2)
    ctx = Context(run_id=1, node_id=7, state=RecordDict(), run_config={}, node_config={"labqfl-client": "C1"})
    n = spec.model().n_params

    def train(msg: Message, context: Any) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(np.full(n, 0.1))}),
                                   "metrics": MetricRecord({"num_examples": 10})}), reply_to=msg)

    def send(stage: str, r: int = 1, run: str = "t", **fields: Any) -> Message:
        d = dict(spec.to_config(), stage=stage, round=r, n_params=n, run_tag=run, **fields)
        msg = Message(RecordDict({"labqfl": ConfigRecord(d)}), dst_node_id=7, message_type="train", group_id="1")
        return labqfl_secagg_mod(msg, ctx, train)

    send("keys", master_pairs=["C1-C2"])
    send("refs", pairs=["C1-C2"], **{"nonce.C1-C2": bytes(range(16)).hex()})
    mask = {"pairs": ["C1-C2"], "participants": ["C1", "C2"], "levels": 100, "position": 0}
    first = send("mask", **mask).content.array_records["masked"]["masked"].numpy()
    assert first.size == n
    with pytest.raises(SecureAggregationError, match="C1 was asked to mask a second upload in this round"):
        send("mask", **mask)
    send("keys", r=2, master_pairs=["C1-C2"])  # the next round masks again, with its own keys
    send("refs", r=2, pairs=["C1-C2"], **{"nonce.C1-C2": bytes(range(16, 32)).hex()})
    assert send("mask", r=2, **mask).content.array_records["masked"]["masked"].numpy().size == n


@pytest.mark.xfail(strict=True, reason="residual of the UNSIGNED path only (a simulation without node keys; "
                                       "docs/secure_aggregation.md §9): a pair key revealed after a dropout lie is "
                                       "still free in the slave's store and can be named as its refs tag key. Closed "
                                       "where nodes have signing keys: test_refs_signed.py")
def test_unsigned_simulation_residual_a_tag_key_made_of_bits_revealed_after_a_dropout_lie(
        make_stores, local_grid, mnist_dir) -> None:
    """NOT a security claim: it documents the residual of the unsigned path (no ``labqfl-cert`` /
    ``labqfl-ca`` node config: a Flower simulation, Ray, one machine). Round 1: the server withholds
    C2's mask message and declares C2 lost, so C1 reveals its words of C1-C2 — bits still free in
    C2's store. Round 2: the server names 256 of those known bits as C2's tag key, forges refs (bits
    of a later round) and computes the tag itself. A secure slave would refuse; without a master
    signature this one cannot tell, and masks with the forged refs (strict xfail: the assertion that
    it refuses fails). With signing keys configured (a deployment) the same attack is refused:
    ``test_refs_signed.py::test_a_tag_key_made_of_bits_revealed_after_a_dropout_lie_is_refused_when_refs_are_signed``."""
    from labqfl.fl.flower.keys import REFS_TAG_LANES
    from labqfl.qkd.authentication import BitPool, WegmanCarterAuthenticator

    spec = _spec(mnist_dir, clients=3, q=16, rounds=2)
    qn = spec.q * spec.model().n_params
    assert qn >= REFS_TAG_BITS
    kdir = make_stores(NAMES, 3 * (qn + REFS_TAG_BITS))
    srv = LabqflServer(_spec(mnist_dir, kdir, q=16, rounds=2))
    grid: MeddlingGrid

    def reply_cfg(node: str, stage: str, r: int) -> Any:
        return next(rep for n, s, rr, rep in grid.replies if (n, s, rr) == (node, stage, r))

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node != "C2" or stage != "mask":
            return True
        if r == 1:
            return False  # the dropout lie
        words = reply_cfg("C1", "reveal", 1).content.array_records["revealed"]["C1-C2"].numpy()
        known = np.unpackbits(np.asarray(words, dtype=">u2").view(np.uint8))[:REFS_TAG_BITS]
        (bid, off, _), = json.loads(str(grid.mask_cfgs[("C2", 1)]["refs.C1-C2"]))
        tag_refs, forged = [[bid, off, REFS_TAG_BITS]], [[bid, off + 2 * (qn + REFS_TAG_BITS), qn]]
        nonce = bytes.fromhex(str(reply_cfg("C2", "keys", 2).content.config_records["labqfl"]["nonce.C1-C2"]))
        statement = refs_statement(srv.run_tag, 2, "C1-C2", nonce, refs=forged, tag_refs=tag_refs, pad_refs=[],
                                   void_refs=[])
        auth = WegmanCarterAuthenticator(BitPool(known), lanes=REFS_TAG_LANES)
        cfg["refs.C1-C2"], cfg["reftag.C1-C2"] = json.dumps(forged), json.dumps(tag_refs)
        cfg["tag.C1-C2"] = auth.tag(statement).hex()
        if "void.C1-C2" in cfg:
            del cfg["void.C1-C2"]
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES), meddle)
    srv.run(grid)
    assert srv.rounds[0].dropped_after_masking == ["C2"]
    assert NOT_AUTHENTICATED in grid.error_of("C2", "mask", 2)
