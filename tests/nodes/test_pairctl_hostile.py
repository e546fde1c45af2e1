"""A forged or buggy ``qkd/pairctl`` message can refuse or withhold a block, never change a key (review s32, F2).

The hostile peer holds node C1's own certificate (a compromised or buggy partner: the transport's identity
check cannot stop it) and talks to a real client node C2 over mutual TLS. Before: ``auth/void`` discarded
whatever refs arrived (C2's general key included, at C2 only), ``block/prepare`` claimed the slots before it
checked the refs and kept the claim when it refused, ``block/commit`` answered ``block/committed`` for a block
C2 held neither pending nor stored, and Ci discarded any ``spent`` refs a refusal named.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends.qrng import new_client_log

from labqfl.keystore import KeyStore
from labqfl.net import NodeCredentials, make_node_certs
from labqfl.nodes.client import (
    AUTH_KEY_PREFIX,
    AUTH_REFILL_SUFFIX,
    ClientNode,
    _Acq,
    _IPair,
    _JPair,
    block_id_for,
)
from labqfl.nodes.common import NodeError, open_session
from labqfl.qkd.messaging import Message

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f2"
RNG = np.random.default_rng(32)


@pytest.fixture()
def c2(tmp_path: Path) -> Any:
    """A real client node C2 (serving, acquisition ``ACQ`` armed as ``ctl/arm`` leaves it), C1's store holding
    the same general block and authentication block, and a ``qkd/pairctl`` session opened with C1's certificate."""
    certs, data = tmp_path / "certs", tmp_path / "data"
    make_node_certs(certs, ["C1", "C2", "detector", "ctl"])
    node = ClientNode("C2", station=None, data_dir=data, listen="127.0.0.1:0", certs=certs)
    node.server.start()
    a = _Acq(ACQ, new_client_log(node.cfg.client("C2"), 1 << 20), {})
    for p, ci in node.j_of.items():
        a.j_pairs[p] = _JPair(node, a, p, ci)
    node.acqs[ACQ] = a
    s1 = KeyStore.for_node("C1", data)
    gid = block_id_for("nodes/earlier", PAIR, 0, 1000)
    gen, auth = RNG.integers(0, 2, 4096, dtype=np.uint8), RNG.integers(0, 2, 1024, dtype=np.uint8)
    for st in (node.store, s1):
        st.add_block(PAIR, gen, block_id=gid, purpose="general")
        st.add_block(PAIR, auth, block_id=gid + AUTH_REFILL_SUFFIX, purpose="auth")
    ch = open_session(node.server.address, NodeCredentials.load(certs, "C1"), "C2", "qkd/pairctl",
                      fields={"pair": PAIR, "acq": ACQ}, timeout_s=30)
    ns = types.SimpleNamespace(node=node, s1=s1, ch=ch, gid=gid, aid=gid + AUTH_REFILL_SUFFIX)
    yield ns
    ch.close()
    node.server.stop(0)
    s1.close()
    node.store.close()


def _free(st: KeyStore) -> tuple[int, int]:
    """Free bits of the pair's ``general`` and ``auth`` pools."""
    return tuple(sum(b - a for r in st.free_ranges(PAIR, [pool]).values() for a, b in r)  # type: ignore[return-value]
                 for pool in ("general", "auth"))


def test_a_forged_auth_void_spends_no_bit_at_cj(c2) -> None:
    refs = [[c2.gid, 0, 4096], [c2.aid, 0, 1024]]  # C2's whole general block and its authentication block
    rep = c2.ch.request(Message("auth/void", {"key": f"{AUTH_KEY_PREFIX}forged", "refs": json.dumps(refs)}))
    assert rep.kind == "auth/voided" and int(rep.get("taken")) == 0 and json.loads(str(rep.get("spent"))) == []
    assert _free(c2.node.store) == _free(c2.s1) == (4096, 1024)  # nothing discarded at C2 (before: 0 and 0)
    km = c2.s1.take(PAIR, 256, "general")  # the next pad still works: C1 allocates, C2 takes by reference
    assert np.array_equal(c2.node.store.take_exact(PAIR, km.refs, "general").bits, km.bits)
    bad = c2.ch.request(Message("auth/void", {"key": "fl-pad-1", "refs": json.dumps(refs)}))
    assert bad.kind == "node/refused"
    assert "key ID 'fl-pad-1' is not a block authentication reservation (expected blockauth-<uuid>)" in bad.get("reason")


def test_a_refused_block_prepare_claims_no_slot(c2) -> None:
    st = c2.node.store
    whole = {"block": "x-evil", "start": 0, "end": 1 << 62, "need": 0, "key": f"{AUTH_KEY_PREFIX}1"}
    rep = c2.ch.request(Message("block/prepare", {**whole, "refs": "[]"}))
    assert rep.kind == "node/refused" and "refs '[]' are not key references" in rep.get("reason")
    spent = c2.s1.take(PAIR, 64, "auth")  # bits C2 spent already (C1 took them, C2 took them by reference)
    st.take_exact(PAIR, spent.refs, "auth")
    rep = c2.ch.request(Message("block/prepare", {**whole, "key": f"{AUTH_KEY_PREFIX}2",
                                                  "refs": json.dumps([list(r) for r in spent.refs])}))
    assert rep.kind == "node/refused" and "already consumed" in rep.get("reason")
    assert json.loads(str(rep.get("spent"))) == [list(r) for r in spent.refs]
    assert st.distilled_slots(PAIR, ACQ) == []  # before: [0, 2^62) claimed, every later block refused
    st.check_slots_free(PAIR, ACQ, 1000, 2000)


def test_block_prepare_takes_the_bits_under_ci_s_key_id_then_auth_void_answers_taken(c2) -> None:
    """Positive control of the key-ID record: a real reservation C2 took is reported taken (Ci voids it)."""
    kid = f"{AUTH_KEY_PREFIX}real"
    refs = c2.s1.reserve(PAIR, 192, "auth", kid)
    rep = c2.ch.request(Message("block/prepare", {"block": "b-1", "start": 0, "end": 100, "need": 0, "key": kid,
                                                  "refs": json.dumps(refs)}))
    assert rep.kind == "block/prepared"
    assert c2.node.store.distilled_slots(PAIR, ACQ) == [(0, 100, "b-1")]
    rep = c2.ch.request(Message("auth/void", {"key": kid, "refs": json.dumps(refs)}))
    assert rep.kind == "auth/voided" and int(rep.get("taken")) == 1 and int(rep.get("bits")) == 192
    other = c2.ch.request(Message("auth/void", {"key": kid, "refs": json.dumps([[c2.gid, 0, 8]])}))
    assert other.kind == "node/refused" and "over other bits" in other.get("reason")


def test_block_commit_of_a_block_cj_holds_nowhere_is_refused_out_of_step(c2) -> None:
    """The review's t2b: a forged ``pending/resolve {held: []}`` between C2's ``block/accepted`` and C1's
    ``block/commit`` destroyed C2's pending copy, and the real commit was still answered ``block/committed``."""
    bid = block_id_for(ACQ, PAIR, 0, 100)
    c2.node.write_pending(PAIR, bid, RNG.integers(0, 2, 512, dtype=np.uint8), 0, {"run_id": ""})
    assert c2.ch.request(Message("pending/resolve", {"held": "[]"})).kind == "pending/resolved"
    rep = c2.ch.request(Message("block/commit", {"block": bid, "held": json.dumps([bid])}))
    assert rep.kind == "node/refused" and rep.get("out_of_step") == bid
    assert f"block {bid} is neither pending at C2 nor in its key store" in rep.get("reason")


def _ipair(store: KeyStore, request: Any) -> Any:
    ip: Any = object.__new__(_IPair)
    ip.pair, ip.cj = PAIR, "C2"
    ip.supply = types.SimpleNamespace(load=lambda bits: None)
    ip.node = types.SimpleNamespace(store=store, name="C1", auth_inflight=set())
    ip.ctl = types.SimpleNamespace(request=request)
    return ip


def test_ci_discards_only_bits_of_its_own_reservation_that_cj_names_spent(c2) -> None:
    s1 = c2.s1
    sent: list[Any] = []

    def refuse(msg: Message) -> Message:  # a lying Cj: "spent" names C1's general block and half the reservation
        refs = json.loads(str(msg.get("refs")))
        sent.append(refs)
        b, o, n = refs[0]
        return Message("node/refused", {"reason": "no", "spent": json.dumps([[c2.gid, 0, 4096], [b, o, n // 2]])})

    with pytest.raises(NodeError, match="of this block's reservation only"):
        _ipair(s1, refuse)._draw_auth("b-2", 0, 100, 192)
    assert sent and sent[0][0][0] == c2.aid
    assert _free(s1) == (4096, 1024 - 96)  # the general block untouched (before: discarded), 96 bits spent
    assert not s1.pending_reservations("auth")


def test_ci_retires_its_copy_and_stops_the_pair_when_cj_refuses_the_commit_out_of_step(c2) -> None:
    s1, bid = c2.s1, "blk-commit"
    s1.add_block(PAIR, RNG.integers(0, 2, 300, dtype=np.uint8), block_id=bid, purpose="general")
    ip = _ipair(s1, lambda msg: Message("node/refused", {"reason": "nowhere", "out_of_step": bid}))
    with pytest.raises(NodeError, match=r"pair C1-C2 out of step: nowhere; the block's 300 bits stored at C1 retired"):
        ip._commit(bid, [bid])
    assert s1.available_bits(PAIR, "general") == 4096  # the block Cj does not hold: never used here either
    ip = _ipair(s1, lambda msg: Message("node/refused", {"reason": "disk full"}))
    s1.add_block(PAIR, RNG.integers(0, 2, 300, dtype=np.uint8), block_id="blk-2", purpose="general")
    with pytest.raises(NodeError, match="disk full"):
        ip._commit("blk-2", ["blk-2"])
    assert s1.available_bits(PAIR, "general") == 4096 + 300  # another refusal: Cj's copy stays pending, kept here


def test_a_slot_claim_lost_after_the_take_spends_the_bits_at_both_ends(c2, monkeypatch) -> None:
    """Cj takes the bits first and claims the slots after: when the claim then fails (another session claimed
    them in between), the refusal names every bit taken, and Ci spends exactly those of its reservation."""
    st = c2.node.store
    st.claim_slots(PAIR, ACQ, 0, 100, "a-block-of-another-session")
    monkeypatch.setattr(st, "check_slots_free", lambda *a: None)  # the claim raced in after this check
    ip = _ipair(c2.s1, c2.ch.request)
    with pytest.raises(NodeError, match=r"overlap slots \[0, 100\).*of this block's reservation only"):
        ip._draw_auth("b-3", 0, 100, 192)
    assert _free(c2.s1) == _free(st) == (4096, 1024 - 192)  # spent at both ends, never used
    assert not c2.s1.pending_reservations("auth")


def test_a_second_announcement_session_for_one_acquisition_is_refused(tmp_path) -> None:
    from labqfl.qkd.messaging import MessageError

    certs = tmp_path / "certs"
    make_node_certs(certs, ["C2", "detector"])
    node = ClientNode("C2", station=None, data_dir=tmp_path / "data", listen="127.0.0.1:0", certs=certs)
    node.server.start()
    node.acqs[ACQ] = _Acq(ACQ, new_client_log(node.cfg.client("C2"), 1 << 20), {})
    det = NodeCredentials.load(certs, "detector")
    try:
        first = open_session(node.server.address, det, "C2", "ann", fields={"acq": ACQ}, timeout_s=30)
        with pytest.raises(MessageError, match="detector detector already opened the announcement session"):
            open_session(node.server.address, det, "C2", "ann", fields={"acq": ACQ}, timeout_s=30)
        first.close()
    finally:
        node.server.stop(0)
        node.store.close()
