"""Cj refuses, at once, a message of Ci's that its block's state does not expect (review s39 ec F7):
an ``ec/start`` sent again after error correction finished (before: Cj started Bob again on the same
block), an ``ec/start`` after the verification passed, one in place of Alice's answer while
reconciliation runs (before: Bob took it as the answer to ``cascade/init``), and a parity message out
of reconciliation.  The misbehaving Ci is an honest one whose channel sends one earlier message of
the block again, through Ci's own authenticator (so the transcript tags alone would match): the
refusal names the message, the block and the state; the block is refused at both ends with the pads
in step, and the pair's other blocks are unaffected.  Over a LocalChannel and a NodeChannel (mutual
TLS), as tests/qkd/pipeline/test_twoparty.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from qkdpp_helpers import small_station

from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.messaging import LocalChannel, Message
from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream
from labqfl.qkd.twoparty import REFUSED, PairEndI, PairEndJ

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


def _distil(acq, replay: _Replay, *, engine="cascade", pair_channel=None):
    cfg, blocks, logs = acq
    sink = MemorySink()
    outcomes: list = []

    def channel(ei: PairEndI, ej: PairEndJ):
        ej.on_outcome = outcomes.append
        return replay.wrap(pair_channel(ei, ej) if pair_channel else LocalChannel(ej, ei.tx, ej.tx))

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
