"""Ci checks every reply Cj gives on ``qkd/pairctl`` against its schema (labqfl.nodes.client.PAIRCTL_REPLIES)
before it reads a field: a reply with an unknown, missing or mistyped field (or of an unexpected kind) is one
MessageError naming Cj, the kind and the field, and Ci acts on no part of it. Before, Ci read what it needed and
ignored the rest: an extra field rode along, a mistyped ``spent`` crashed ``release``, a malformed
``pending/ids`` escaped the pair thread as a ValueError.

Real client node C2 (Cj) over mutual TLS, its replies changed on the way back (the fixtures of
test_pairctl_hostile). Each case checks what both ends hold afterwards: no key stored at one end only, no
authentication bit spent at one end only."""

from __future__ import annotations

import json
import logging
import re
import types
from typing import Any

import numpy as np
import pytest
from node_helpers import sibling

import labqfl.nodes.client as client
from labqfl.net import NodeCredentials
from labqfl.nodes.client import AUTH_KEY_PREFIX, PAIRCTL_MESSAGES, PAIRCTL_REPLIES, block_id_for
from labqfl.qkd.messaging import Message, MessageError

_hostile = sibling("test_pairctl_hostile", __file__)
#: the fixture (real node C2, C1's store, a qkd/pairctl session with C1's certificate) and helpers reused
c2 = _hostile.c2
ACQ, PAIR, RNG, _free, _ipair = _hostile.ACQ, _hostile.PAIR, _hostile.RNG, _hostile._free, _hostile._ipair


def _meddled(request: Any, kind: str, change: Any) -> Any:
    """``request``, with every reply of ``kind`` changed by ``change`` (fields → fields) on its way back."""
    seen: list[str] = []

    def go(msg: Message) -> Message:
        rep = request(msg)
        seen.append(rep.kind)
        return Message(rep.kind, change(dict(rep.fields))) if rep.kind == kind else rep
    go.seen = seen  # type: ignore[attr-defined]
    return go


def _plus(**extra: Any) -> Any:
    return lambda f: {**f, **extra}


def _minus(name: str) -> Any:
    return lambda f: {k: v for k, v in f.items() if k != name}


def test_every_pairctl_request_has_its_replies() -> None:
    assert set(PAIRCTL_REPLIES) == set(PAIRCTL_MESSAGES)
    assert all("node/refused" in r and len(r) == 2 for r in PAIRCTL_REPLIES.values())


WHO = "from C2 (qkd/pairctl reply to 'block/prepare')"


def test_a_block_prepared_with_an_unknown_field_is_voided_at_both_ends_at_once(c2) -> None:
    """Cj took the bits and answered with a field more: Ci takes none of it (its supply stays empty), asks Cj at
    once (``auth/void``: taken) and voids its reservation: spent at both ends, never used (before: taken, used)."""
    loaded: list[Any] = []
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "block/prepared", _plus(junk="x" * 100)))
    ip.supply = types.SimpleNamespace(load=loaded.append)
    with pytest.raises(MessageError, match=re.escape(f"message 'block/prepared' {WHO} carries unknown field 'junk'")):
        ip._draw_auth("b-junk", 0, 100, 192)
    assert loaded == [] and ip.ctl.request.seen == ["block/prepared", "auth/voided"]
    assert not c2.s1.pending_reservations("auth")
    assert _free(c2.s1) == _free(c2.node.store) == (4096, 1024 - 192)  # the same bits spent at both ends


@pytest.mark.parametrize(("change", "words"), [
    (_minus("reason"), f"message 'node/refused' {WHO} lacks field 'reason' (expected missing: str, reason: str, "
                       "spent: str)"),
    (_plus(spent=5), f"message 'node/refused' {WHO}: field 'spent' is a int, expected str"),
    (_plus(out_of_step="b"), f"message 'node/refused' {WHO} carries unknown field 'out_of_step'"),
    (_plus(spent="5"), "node/refused: field 'spent' is '5' (expected a JSON list of key references"),
    (_plus(missing='[["x"]]'), "node/refused: field 'missing' is '[[\"x\"]]' (expected a JSON list of block IDs)"),
])
def test_a_malformed_refusal_of_block_prepare_spends_nothing_at_either_end(c2, change, words) -> None:
    """C2 refuses a block ID it already holds (spending nothing); the refusal is changed on its way back. Ci
    neither releases nor discards on its word: it asks (``auth/void``: never taken) and only then releases."""
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "node/refused", change))
    with pytest.raises(MessageError) as e:
        ip._draw_auth(c2.gid, 0, 100, 192)  # C2: "block ... is already in C2's key store"
    assert words in str(e.value)
    assert not c2.s1.pending_reservations("auth")
    assert _free(c2.s1) == _free(c2.node.store) == (4096, 1024)  # nothing spent at either end
    assert c2.node.store.distilled_slots(PAIR, ACQ) == []


def _pending_at_c2(c2: Any) -> tuple[str, np.ndarray]:
    bid = block_id_for(ACQ, PAIR, 0, 100)
    bits = RNG.integers(0, 2, 512, dtype=np.uint8)
    c2.node.write_pending(PAIR, bid, bits, 0, {"run_id": ""})
    return bid, bits


def test_a_block_committed_with_an_unknown_field_fails_the_block_and_the_key_is_at_both_ends(c2) -> None:
    bid, bits = _pending_at_c2(c2)
    c2.s1.add_block(PAIR, bits, block_id=bid, purpose="general")
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "block/committed", _plus(held="[]")))
    with pytest.raises(MessageError, match="message 'block/committed' from C2 \\(qkd/pairctl reply to 'block/commit'\\) "
                                           "carries unknown field 'held'"):
        ip._commit(bid, [bid])
    assert c2.s1.has_block(bid) and c2.node.store.has_block(bid)  # C2 committed: stored at both ends


@pytest.mark.parametrize(("change", "words"), [
    (_plus(out_of_step=7), "field 'out_of_step' is a int, expected str"),
    (_minus("reason"), "lacks field 'reason'"),
    (_plus(spent="[]"), "carries unknown field 'spent'"),
])
def test_a_malformed_refusal_of_block_commit_retires_nothing(c2, change, words) -> None:
    """C2 holds the block nowhere (its real answer: out of step); changed on the way back, Ci retires nothing on
    its word (before: ``out_of_step`` of another type, or no reason, was read as a plain refusal)."""
    bid = block_id_for(ACQ, PAIR, 0, 100)
    c2.s1.add_block(PAIR, RNG.integers(0, 2, 300, dtype=np.uint8), block_id=bid, purpose="general")
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "node/refused", change))
    with pytest.raises(MessageError, match=f"message 'node/refused' from C2 \\(qkd/pairctl reply to 'block/commit'\\).*"
                                           f"{words}"):
        ip._commit(bid, [bid])
    assert c2.s1.available_bits(PAIR, "general") == 4096 + 300  # nothing retired, nothing read


@pytest.mark.parametrize(("change", "words"), [
    (_plus(junk=1), "message 'pending/ids' from C2 (qkd/pairctl reply to 'pending/list') carries unknown field 'junk'"),
    (_minus("ids"), "message 'pending/ids' from C2 (qkd/pairctl reply to 'pending/list') lacks field 'ids'"),
    (_plus(ids=b"[]"), "field 'ids' is a bytes, expected str"),
    (_plus(ids="{not json"), "pending/ids: field 'ids' is '{not json' (expected a JSON list of block IDs)"),
])
def test_a_malformed_pending_ids_resolves_nothing(c2, tmp_path, monkeypatch, caplog, change, words) -> None:
    """At the end of the pair's run (both tries, the second over a fresh session): C2's pending block is neither
    stored nor destroyed on a reply Ci cannot read; it stays until the pair's next session."""
    bid, bits = _pending_at_c2(c2)
    c2.s1.add_block(PAIR, bits, block_id=bid, purpose="general")
    real_open = client.open_session

    def open_meddled(*a: Any, **kw: Any) -> Any:
        ch = real_open(*a, **kw)
        ch.request = _meddled(ch.request, "pending/ids", change)
        return ch

    monkeypatch.setattr(client, "open_session", open_meddled)
    creds = NodeCredentials.load(tmp_path / "certs", "C1")  # the fixture's certificates
    ip = _ipair(c2.s1, None)
    ip.ctl = open_meddled(c2.node.server.address, creds, "C2", "qkd/pairctl", fields={"pair": PAIR, "acq": ACQ})
    ip.acq = types.SimpleNamespace(acq=ACQ, peers={"C2": c2.node.server.address})
    ip.node.creds = creds
    with caplog.at_level(logging.WARNING, logger="labqfl.nodes.client"):
        ip._resolve_pending_at_end()
    ip.ctl.close()
    assert words in caplog.text and "could not be resolved at the end" in caplog.text
    assert c2.node.pending_ids(PAIR) == [bid] and not c2.node.store.has_block(bid)  # untouched at C2


@pytest.mark.parametrize(("change", "words"), [
    (_plus(junk="x"), "carries unknown field 'junk'"),
    (_minus("taken"), "lacks field 'taken'"),
    (_plus(taken="1"), "field 'taken' is a str, expected int"),
    (_plus(taken=2), "auth/voided: field 'taken' is 2 (expected 1: C2 took reservation"),
    (_plus(spent=json.dumps([["", 0, 8]])), "auth/voided: field 'spent': key reference"),
])
def test_a_malformed_auth_voided_leaves_the_reservation_reserved(c2, change, words) -> None:
    """A stale reservation (a Ci stopped before its block started); C2 never took it. On a reply Ci cannot read
    it neither voids nor releases: the bits stay reserved (no block draws them) until the next session asks."""
    kid = f"{AUTH_KEY_PREFIX}stale"
    c2.s1.reserve(PAIR, 192, "auth", kid)
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "auth/voided", change))
    with pytest.raises(MessageError) as e:
        ip._void_stale_auth()
    assert words in str(e.value) and ("from C2 (qkd/pairctl reply to 'auth/void')" in str(e.value)
                                      or str(e.value).startswith("auth/voided: "))
    assert [r["key_id"] for r in c2.s1.pending_reservations("auth")] == [kid]
    assert _free(c2.s1) == (4096, 1024 - 192) and _free(c2.node.store) == (4096, 1024)  # reserved, not spent
    _ipair(c2.s1, c2.ch.request)._void_stale_auth()  # positive control: the next session's well-formed answer
    assert _free(c2.s1) == _free(c2.node.store) == (4096, 1024)


def test_a_malformed_block_skipped_or_frames_lost_fails_the_pair(c2) -> None:
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "block/skipped", _plus(end=5)))
    ip.result, ip.ch = types.SimpleNamespace(dropped_bits=0), object()
    ip.end = types.SimpleNamespace(n_bits=0, drop_block=lambda ch: None)
    ip.block_index = ip.block_start = 0
    with pytest.raises(MessageError, match="message 'block/skipped' from C2 \\(qkd/pairctl reply to 'block/skip'\\) "
                                           "carries unknown field 'end'"):
        ip._drop(100)
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "frames/lost", _plus(frames=np.array([1], np.int64))))
    ip.node.streams_in = lambda pair: True
    ip.acq = types.SimpleNamespace(unplayed=lambda lo, hi: [])
    chunk = client._Chunk(PAIR, 0, 100, 0, None)
    with pytest.raises(MessageError, match="message 'frames/lost' from C2 \\(qkd/pairctl reply to 'frames/lost'\\): "
                                           "field 'frames' is a ndarray, expected str"):
        ip._played_only(chunk)
    ip = _ipair(c2.s1, _meddled(c2.ch.request, "frames/lost", _plus(frames='[1, "2"]')))
    ip.node.streams_in, ip.acq = (lambda pair: True), types.SimpleNamespace(unplayed=lambda lo, hi: [])
    with pytest.raises(MessageError, match=r"frames/lost: field 'frames' is '\[1, \"2\"\]' \(expected a JSON list of "
                                           r"frame indices\)"):
        ip._played_only(chunk)


def test_an_unexpected_reply_kind_is_named() -> None:
    ip = _ipair(types.SimpleNamespace(), lambda msg: Message("block/committed", {}))
    with pytest.raises(MessageError, match=r"unexpected message 'block/committed' from C2 \(qkd/pairctl reply to "
                                           r"'block/skip'\) \(expected one of block/skipped, node/refused\)"):
        ip._ctl_request(Message("block/skip", {"end": 1}), "block/skipped")
