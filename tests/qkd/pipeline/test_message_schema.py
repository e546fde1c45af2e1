"""Each message of the pair protocol has a schema (labqfl.qkd.twoparty.CI_MESSAGES / CJ_MESSAGES,
checked by labqfl.qkd.messaging.field_problem): a message with a field no handler reads, without a
field or with one of another type refuses the block at both ends, with one reason naming the kind and
the field, through the ordinary refusal path — the tags are still exchanged, both ends spend the same
pads, nothing is stored (review s32, finite-key F1: unknown fields rode along into the transcript)."""

from __future__ import annotations

import numpy as np
import pytest
import test_twoparty
from test_twoparty import PAIR, _auth_in_step, _distil, _node_pair

import labqfl.net.transport as transport
from labqfl.qkd.messaging import (
    LocalChannel,
    Message,
    MessageSchema,
    decode_message,
    encode_message,
    field_problem,
)
from labqfl.qkd.twoparty import CI_MESSAGES, CJ_MESSAGES

#: the fixtures of test_twoparty (a module-scoped acquisition of the small station, node certificates)
acquisition, certs = test_twoparty.acquisition, test_twoparty.certs
JUNK = b"x" * 1000


def _with(msg: Message, **fields) -> Message:
    return Message(msg.kind, {**msg.fields, **fields}, msg.disclosed, msg.credit)


def _without(msg: Message, name: str) -> Message:
    return Message(msg.kind, {k: v for k, v in msg.fields.items() if k != name}, msg.disclosed, msg.credit)


class _Meddler(LocalChannel):
    """Changes the first message of ``kind`` sent by ``side`` ("i": Ci's requests, "j": Cj's answers)
    with ``change``: ``in_transit`` after the sender's authenticator absorbed the original (the two
    transcripts then differ), otherwise before (a sender that itself adds the field: they agree)."""

    def __init__(self, ei, ej, side: str, kind: str, change, in_transit: bool = True) -> None:
        super().__init__(ej, ei.tx, ej.tx)
        self.side, self.kind, self.change, self.in_transit = side, kind, change, in_transit
        self.done = 0

    def _transfer(self, msg, sender, receiver):
        mine = (sender is self.authenticator) == (self.side == "i")
        if not mine or self.done or msg.kind != self.kind:
            return super()._transfer(msg, sender, receiver)
        self.done += 1
        if not self.in_transit:
            msg = self.change(msg)
        payload = encode_message(msg)
        tag = sender.tag(payload)
        if self.in_transit:
            payload = encode_message(self.change(decode_message(payload)))
        receiver.verify(payload, tag)
        self.stats.count(msg, len(payload), len(tag))
        return decode_message(payload)


def _run(acq, side, kind, change, *, in_transit=True, engine="cascade"):
    chans = []

    def channel(ei, ej):
        chans.append(_Meddler(ei, ej, side, kind, change, in_transit))
        return chans[0]

    outcomes = []
    r, d, sink, _ = _distil(acq, pair_channel=channel, on_outcome=outcomes.append, engine=engine)
    assert chans[0].done == 1
    return r, d, sink, outcomes


def _assert_refused(r, d, sink, outcomes, words: str) -> None:
    blk = r.blocks[0]
    assert blk.abort and blk.final_key_bits == blk.delivered_bits == r.delivered_bits == 0
    assert outcomes and not outcomes[0].accepted
    assert words in blk.abort_reason or words in outcomes[0].reason, (blk.abort_reason, outcomes[0].reason)
    assert sink.keys == {}
    _auth_in_step(d)  # the same pads spent at both ends


@pytest.mark.parametrize(("side", "kind", "engine"), [
    ("i", "sift/flags", "cascade"), ("i", "cascade/parities", "cascade"), ("i", "cascade/block-parities", "cascade"),
    ("j", "cascade/round", "cascade"), ("j", "test/bits", "cascade"), ("i", "ldpc/syndromes", "ldpc"),
    ("j", "ec/done", "cascade"), ("i", "pa/seed", "cascade")])
def test_an_unknown_field_added_in_transit_refuses_the_block_at_both_ends_naming_it(acquisition, side, kind, engine):
    r, d, sink, outcomes = _run(acquisition, side, kind, lambda m: _with(m, junk=JUNK), engine=engine)
    _assert_refused(r, d, sink, outcomes, f"message {kind!r} from {'Ci' if side == 'i' else 'Cj'} carries unknown "
                                          "field 'junk'")


@pytest.mark.parametrize(("side", "kind"), [("i", "block/open"), ("j", "cascade/init"), ("i", "cascade/ok")])
def test_an_unknown_field_the_sender_itself_added_refuses_the_block_although_the_tags_match(acquisition, side, kind):
    """Both transcripts hold the extra field (the tags agree): only the schema refuses it. Before,
    the block was accepted with the field absorbed into both transcripts."""
    r, d, sink, outcomes = _run(acquisition, side, kind, lambda m: _with(m, junk=JUNK), in_transit=False)
    _assert_refused(r, d, sink, outcomes, "carries unknown field 'junk'")
    assert "transcript authentication failed" not in r.blocks[0].abort_reason
    assert r.blocks[0].auth_checks == 2  # tags exchanged and matched: two pads at each end


@pytest.mark.parametrize(("side", "kind", "field"), [("i", "ec/start", "qber"), ("j", "sift/flags", "flags"),
                                                     ("i", "ann/confirm", "digest")])
def test_a_missing_field_refuses_the_block_naming_it(acquisition, side, kind, field):
    r, d, sink, outcomes = _run(acquisition, side, kind, lambda m: _without(m, field), in_transit=False)
    _assert_refused(r, d, sink, outcomes, f"message {kind!r} from {'Ci' if side == 'i' else 'Cj'} lacks field "
                                          f"{field!r}")


@pytest.mark.parametrize(("kind", "change"), [
    ("block/confirm", lambda m: _with(m, junk=JUNK)), ("block/confirmed", lambda m: _with(m, junk=JUNK)),
    ("block/accept", lambda m: _with(m, junk=JUNK))])
def test_a_malformed_tag_exchange_message_is_refused_with_the_pads_in_step(acquisition, kind, change):
    side = "j" if kind == "block/confirmed" else "i"
    r, d, sink, outcomes = _run(acquisition, side, kind, change)
    _assert_refused(r, d, sink, outcomes, "carries unknown field 'junk'")


def test_an_unknown_field_added_between_nodes_refuses_the_block_at_both_ends(acquisition, certs, monkeypatch):
    done = []

    def meddle(payload, tag):
        if not done and payload.startswith(b"LQM1"):
            msg = decode_message(payload)
            if msg.kind == "test/bases":
                done.append(1)
                payload = encode_message(_with(msg, junk=JUNK))
        return frame(payload, tag)

    frame = transport._frame
    monkeypatch.setattr(transport, "_frame", meddle)
    servers: list = []
    outcomes = []
    try:
        r, d, sink, _ = _distil(acquisition, pair_channel=_node_pair(certs, servers), on_outcome=outcomes.append)
        d.pairs[PAIR].channel.close()
    finally:
        for s in servers:
            s.stop()
    assert done
    _assert_refused(r, d, sink, outcomes, "message 'test/bases' from Ci carries unknown field 'junk'")


def test_every_honest_message_matches_its_schema_and_field_problem_names_what_is_wrong():
    assert not set(CI_MESSAGES) - set(CJ_MESSAGES) - {
        "ann/confirm", "block/open", "ec/start", "cascade/ok", "cascade/block-parities", "cascade/parities",
        "ldpc/ok", "ldpc/filler", "verify/request", "ec/more", "pa/seed", "block/confirm", "block/accept",
        "block/drop"}
    s = {"k/x": MessageSchema({"a": "int"}, {"b": "array"})}
    assert field_problem(Message("k/x", {"a": 1}), s) == ""
    assert field_problem(Message("k/x", {"a": 1, "b": np.zeros(2)}), s) == ""
    assert "unexpected message 'k/y'" in field_problem(Message("k/y", {}), s)
    assert "lacks field 'a'" in field_problem(Message("k/x", {}), s)
    assert "unknown field 'c'" in field_problem(Message("k/x", {"a": 1, "c": 2}), s)
    assert "field 'a' is a str, expected int" in field_problem(Message("k/x", {"a": "1"}), s)
    assert "expected a 1-D array" in field_problem(Message("k/x", {"a": 1, "b": np.zeros((2, 2))}), s)
