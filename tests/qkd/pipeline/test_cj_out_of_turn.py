"""Cj refuses, at once, a message of Ci's that its block's state does not expect (review s39 ec F7):
an ``ec/start`` sent again after error correction finished (before: Cj started Bob again on the same
block), an ``ec/start`` after the verification passed, one in place of Alice's answer while
reconciliation runs (before: Bob took it as the answer to ``cascade/init``), and a parity message out
of reconciliation; and (review s40 protorev F2) a message in the states "block open, error correction not
started", "verification attempt k of n failed" and "verification failed at all n attempts".  The
misbehaving Ci is an honest one whose channel sends one earlier message of the block again, through Ci's own authenticator (so the transcript tags alone would match): the
refusal names the message, the block and the state; the block is refused at both ends with the pads
in step, and the pair's other blocks are unaffected.  Over a LocalChannel and a NodeChannel (mutual
TLS), as tests/qkd/pipeline/test_twoparty.py.  A request of Bob's with no known answer of Alice's (an engine
changed, ``twoparty._ALICE_ANSWERS`` not) refuses the block as an internal error naming it (review s40 protorev
F1; before: the block was refused with "Cj expected only block/confirm")."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from qkdpp_helpers import small_station

from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd import twoparty
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.messaging import LocalChannel, Message
from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream
from labqfl.qkd.twoparty import REFUSED, PairEndI, PairEndJ, ProtocolSettings, _BobRelay, _JBlock

PAIR = "C1-C2"
PARAMS = SecurityParameters(eps_sec=1e-4)
DUR = 0.05


@pytest.fixture(scope="module")
def acquisition():
    cfg = small_station()
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(DUR))
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    return cfg, blocks, logs


class _Replay:
    """Ci's channel, made misbehaving: just before Ci's first message of kind ``before`` it sends
    Ci's first message of kind ``again`` once more (the same fields, tagged by Ci's authenticator as
    any message of Ci's) and keeps Cj's answer in ``answer``."""

    def __init__(self, again: str, before: str) -> None:
        self.again, self.before = again, before
        self.sent: Message | None = None
        self.answer: Message | None = None

    def wrap(self, ch):  # type: ignore[no-untyped-def]
        request = ch.request

        def replaying(msg: Message) -> Message:
            if msg.kind == self.again and self.sent is None:
                self.sent = msg
            if msg.kind == self.before and self.sent is not None and self.answer is None:
                self.answer = request(self.sent)
            return request(msg)

        ch.request = replaying
        return ch


def _distil(acq, replay: _Replay | None, *, engine="cascade", pair_channel=None):
    cfg, blocks, logs = acq
    sink = MemorySink()
    outcomes: list = []

    def channel(ei: PairEndI, ej: PairEndJ):
        ej.on_outcome = outcomes.append
        ch = pair_channel(ei, ej) if pair_channel else LocalChannel(ej, ei.tx, ej.tx)
        return ch if replay is None else replay.wrap(ch)

    res, d = distill_stream(cfg, blocks, logs, sink, DistillSettings(block_bits=1_000_000, params=PARAMS, engine=engine),
                            total_slots=int(DUR * cfg.laser.rep_rate_hz), pair_channel=channel)
    return res[PAIR], d, sink, outcomes


def _assert_refused_out_of_turn(replay: _Replay, r, d, sink, outcomes, state: str) -> None:
    """Cj's answer to the replayed message is the refusal naming message, block and state; the block
    is refused at both ends for it (the tags matched: Ci's authenticator tagged the replay), the pads
    stay in step and every later block is accepted as usual."""
    assert replay.sent is not None and replay.answer is not None, "the replay was never sent"
    assert replay.answer.kind == REFUSED, f"Cj answered {replay.answer.kind!r} to the replayed {replay.again!r}"
    why = str(replay.answer.get("reason"))
    block = outcomes[0].block_id
    assert re.match(re.escape(f"{replay.again!r} out of turn (block {block!r}, state: ") + state, why), why
    assert not outcomes[0].accepted and why in outcomes[0].reason
    blk = r.blocks[0]
    assert blk.abort and blk.final_key_bits == blk.delivered_bits == 0 and why in blk.abort_reason
    assert blk.auth_checks == 2  # the tags were exchanged (and matched)
    assert [o.accepted for o in outcomes[1:]] == [True] * (len(outcomes) - 1)
    assert len(sink.keys.get(PAIR, [])) == len(outcomes) - 1
    assert all(np.array_equal(a, b) for a, b in sink.keys.get(PAIR, []))
    st = d.pairs[PAIR]
    assert st.auth_i.key_bits_used == st.auth_j.key_bits_used > 0
    assert st.pool_i.available == st.pool_j.available


@pytest.mark.parametrize("engine", ["cascade", "ldpc"])
def test_an_ec_start_sent_again_after_error_correction_is_refused_at_once(acquisition, engine):
    """Before: Cj ran a new Bob on the same block and answered the replay with his first request."""
    replay = _Replay("ec/start", "verify/request")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay, engine=engine), r"error correction done( \(continued \d times\))?\)")


def test_an_ec_start_after_the_verification_passed_is_refused_at_once(acquisition):
    replay = _Replay("ec/start", "pa/seed")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay), r"verification attempt \d passed")


def test_an_ec_start_in_place_of_alices_answer_is_refused_at_once(acquisition):
    """Before: Bob took it as Alice's answer to ``cascade/init`` (whose answer he does not read) and
    went on; the block was refused one message later, for a reason that named neither."""
    replay = _Replay("ec/start", "cascade/ok")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay),
                                re.escape("error correction running, Bob asked 'cascade/init')"))


def test_a_parity_message_after_error_correction_is_refused_naming_the_state(acquisition):
    replay = _Replay("cascade/parities", "verify/request")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay), r"error correction done( \(continued \d times\))?\)")


@functools.cache
def _cascade_verified() -> ModuleType:
    """tests/qkd/reconciliation/test_cascade_verified.py as a module, for its ``_first_run_leaves_an_error`` and
    ``_more_missing_the_error`` (under ``--import-mode=importlib`` a test module of another folder is not
    importable by name)."""
    path = Path(__file__).parents[1] / "reconciliation" / "test_cascade_verified.py"
    spec = importlib.util.spec_from_file_location("_cj_out_of_turn_cascade_verified", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_sifting_message_sent_again_after_block_open_is_refused_at_once(acquisition):
    replay = _Replay("ann/confirm", "ec/start")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay),
                                re.escape("block open, error correction not started); Cj expected 'ec/start'"))


def test_a_verify_request_sent_again_after_a_failed_attempt_is_refused_at_once(acquisition, monkeypatch):
    """The first block's first verification fails (its first Cascade run leaves an error): Cj expects ``ec/more``;
    Ci's first ``verify/request`` sent again in its place is refused."""
    _cascade_verified()._first_run_leaves_an_error(monkeypatch)
    replay = _Replay("verify/request", "ec/more")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay),
                                r"verification attempt 1 of [2-9] failed\); Cj expected 'ec/more'")


def test_an_ec_more_sent_again_after_the_last_failed_attempt_is_refused_at_once(acquisition, monkeypatch):
    """Every verification attempt of the first block fails (the continuations find nothing): Cj expects only
    ``pa/seed`` (of an empty key); Ci's first ``ec/more`` sent again in its place is refused."""
    verified = _cascade_verified()
    verified._first_run_leaves_an_error(monkeypatch)
    monkeypatch.setattr(verified.CascadeBob, "more", verified._more_missing_the_error)
    replay = _Replay("ec/more", "pa/seed")
    _assert_refused_out_of_turn(replay, *_distil(acquisition, replay),
                                r"verification failed at all [2-9] attempts\); Cj expected 'pa/seed'")


def test_the_refusal_names_each_state_once_and_a_one_attempt_plan_in_the_singular():
    """Review s40 protorev F3: before, "(before block/open, state: sifting, no block open)" and "verification
    failed at all 1 attempts".  A stand-in Cj (``_out_of_turn`` reads only its settings)."""
    def why(kind: str, eps_cor: float = 1e-15, **state) -> str:  # type: ignore[no-untyped-def]
        b = _JBlock()
        for k, v in state.items():
            setattr(b, k, v)
        j = SimpleNamespace(settings=ProtocolSettings(params=SecurityParameters(eps_sec=1e-4, eps_cor=eps_cor)))
        return PairEndJ._out_of_turn(j, b, kind)  # type: ignore[arg-type]

    assert why("ec/start") == ("'ec/start' out of turn (no block open, state: sifting); Cj expected 'ann/confirm' "
                               "or 'sift/flags' or 'test/bases' or 'test/bits' or 'block/open'")
    after_ec = dict(block_id="acq/C1-C2/0", opened=True, key=np.zeros(5000, np.uint8), relay=_BobRelay(),
                    ec_done=True)
    assert why("ec/more", 2.0 ** -40, tags=[1], **after_ec) == (  # 2^-40: one attempt (test_cascade_verified.py)
        "'ec/more' out of turn (block 'acq/C1-C2/0', state: verification failed at its only attempt); "
        "Cj expected 'pa/seed'")
    assert why("ec/more", tags=[1, 2, 3, 4], mores=3, **after_ec) == (
        "'ec/more' out of turn (block 'acq/C1-C2/0', state: verification failed at all 4 attempts); "
        "Cj expected 'pa/seed'")


def test_a_request_of_bobs_with_no_known_answer_refuses_as_an_internal_error_naming_it(acquisition, monkeypatch):
    """An engine's new request kind that ``_ALICE_ANSWERS`` lacks (here: its entry for ``cascade/done`` removed)
    refuses each block at Cj before the request is sent, naming it as an internal error, at both ends with the
    pads in step; nothing is stored.  Before: Ci's answer was refused with "... Bob asked 'cascade/done');
    Cj expected only block/confirm", which blamed Ci."""
    monkeypatch.delitem(twoparty._ALICE_ANSWERS, "cascade/done")
    r, d, sink, outcomes = _distil(acquisition, None)
    why = ("internal error: Bob's request 'cascade/done' has no known answer of Alice's "
           "(labqfl.qkd.twoparty._ALICE_ANSWERS")
    assert outcomes and all(not o.accepted and o.reason.startswith(why) for o in outcomes), [o.reason for o in outcomes]
    assert all(b.abort and why in b.abort_reason and b.final_key_bits == 0 and b.auth_checks == 2
               for b in r.blocks), [b.abort_reason for b in r.blocks]
    assert not sink.keys.get(PAIR)
    st = d.pairs[PAIR]
    assert st.auth_i.key_bits_used == st.auth_j.key_bits_used > 0
    assert st.pool_i.available == st.pool_j.available


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["C1", "C2"])
    return d


def test_an_ec_start_sent_again_between_nodes_is_refused_at_once(acquisition, certs):
    servers: list = []

    def channel(ei: PairEndI, ej: PairEndJ):
        srv = NodeServer(NodeCredentials.load(certs, "C2")).start()
        servers.append(srv)
        srv.route("qkd/pair", lambda peer, hello: ServedSession(ej, ej.tx, on_close=ej.on_session_end),
                  allowed_peers={"C1"})
        return NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "qkd/pair",
                           fields={"pair": ei.pair}, authenticator=ei.tx)

    replay = _Replay("ec/start", "verify/request")
    try:
        r, d, sink, outcomes = _distil(acquisition, replay, pair_channel=channel)
        d.pairs[PAIR].channel.close()
    finally:
        for s in servers:
            s.stop()
    _assert_refused_out_of_turn(replay, r, d, sink, outcomes, r"error correction done( \(continued \d times\))?\)")
