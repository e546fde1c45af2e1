"""Cj's node responder on ``qkd/pair`` (labqfl.nodes.client._JServed) reads a message's fields only
once it matches its kind's schema (labqfl.qkd.twoparty.CI_MESSAGES): a malformed ``ann/confirm`` or
``block/open`` (a field missing, an unknown one, one of another type) no longer raises out of the
session (ending it with INTERNAL) or feeds announcements on its word; the pair end refuses it through
the ordinary refusal path (finite-key review s32 F1)."""

from __future__ import annotations

import types

import pytest

from labqfl.nodes.client import _JCtl, _JServed
from labqfl.qkd.messaging import Message
from labqfl.qkd.twoparty import REFUSED


class _End:
    """A stand-in pair end that refuses every message it is handed (as PairEndJ does a malformed one)."""

    def __init__(self) -> None:
        self.got: list[Message] = []

    def handle(self, req: Message) -> Message:
        self.got.append(req)
        return Message(REFUSED, {"reason": "refused"})


class _Feed:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def until(self, end, lo, hi) -> None:
        self.calls.append(("until", lo, hi))

    def until_hi(self, end, hi) -> None:
        self.calls.append(("until_hi", hi))


OK_CONFIRM = {"lo": 0, "hi": 10, "n": 3, "n_slots": 5, "digest": b"d" * 32}
OK_OPEN = {"block": "b", "start": 0, "end": 10, "n_slots": 5, "n_ann": 3, "n": 2}


@pytest.mark.parametrize(("kind", "fields"), [
    ("ann/confirm", {k: v for k, v in OK_CONFIRM.items() if k != "lo"}),
    ("ann/confirm", {**OK_CONFIRM, "junk": b"x" * 100}),
    ("ann/confirm", {**OK_CONFIRM, "hi": "10"}),
    ("block/open", {k: v for k, v in OK_OPEN.items() if k != "end"}),
    ("block/open", {**OK_OPEN, "junk": 1})])
def test_a_malformed_message_reaches_the_end_unread_and_feeds_nothing(kind, fields) -> None:
    feed, end = _Feed(), _End()
    served = _JServed(types.SimpleNamespace(feed=feed), end)  # type: ignore[arg-type]
    rep = served.handle(Message(kind, fields))
    assert rep.kind == REFUSED and feed.calls == [] and [m.kind for m in end.got] == [kind]


def test_well_formed_messages_still_feed_the_announcements_they_refer_to() -> None:
    feed, end = _Feed(), _End()
    served = _JServed(types.SimpleNamespace(feed=feed), end)  # type: ignore[arg-type]
    served.handle(Message("ann/confirm", OK_CONFIRM))
    served.handle(Message("block/open", OK_OPEN))
    assert feed.calls == [("until", 0, 10), ("until_hi", 10)]


class _Untouchable:
    """A node, store and feed in one that fail the test if anything is read or changed."""

    def __getattr__(self, name: str):
        raise AssertionError(f"{name} touched by a malformed qkd/pairctl message")


PREPARE = {"block": "b", "start": 0, "end": 10, "need": 384, "refs": "[]", "key": "auth-key-1"}


@pytest.mark.parametrize(("kind", "fields", "words"), [
    ("block/prepare", {**PREPARE, "junk": "x" * 100}, "carries unknown field 'junk'"),
    ("block/prepare", {k: v for k, v in PREPARE.items() if k != "need"}, "lacks field 'need'"),
    ("auth/void", {"key": "auth-key-1", "refs": [1, 2]}, "field 'refs' is a list, expected str"),
    ("block/commit", {"block": "b", "held": "[]", "extra": 1}, "carries unknown field 'extra'"),
    ("block/skip", {"end": "10"}, "field 'end' is a str, expected int"),
    ("pending/list", {"ids": "[]"}, "carries unknown field 'ids'"),
    ("no/such", {}, "unexpected message 'no/such' from C1 on qkd/pairctl")])
def test_a_malformed_pairctl_message_is_refused_before_anything_is_read(kind, fields, words) -> None:
    jp = types.SimpleNamespace(ci="C1", pair="C1-C2", node=_Untouchable(), feed=_Untouchable(), end=None,
                               acq=_Untouchable(), supply=_Untouchable())
    rep = _JCtl(jp).handle(Message(kind, fields))  # type: ignore[arg-type]
    assert rep.kind == "node/refused" and words in str(rep.fields["reason"]), rep.fields
