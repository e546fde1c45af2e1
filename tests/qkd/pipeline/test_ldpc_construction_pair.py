"""The pair protocol carries the LDPC code construction (labqfl.qkd.ldpc.build_code, ``construction``): Cj's Bob
sends it in ``ldpc/init`` for a construction other than 0 (an optional field of CJ_MESSAGES), Ci's Alice builds
the same code, and an unknown construction refuses the block with one reason naming it.  Before, the schema
did not list the field and every block of a construction-1/2 plan was refused ("carries unknown field")."""

from __future__ import annotations

import numpy as np
import pytest
import test_twoparty
from test_message_schema import _assert_refused, _run, _with
from test_twoparty import _distil

import labqfl.qkd.ldpc as ldpc
from labqfl.qkd.messaging import LocalChannel

acquisition = test_twoparty.acquisition


class _Recorder(LocalChannel):
    """A LocalChannel that keeps every message it carries."""

    def __init__(self, ei, ej) -> None:
        super().__init__(ej, ei.tx, ej.tx)
        self.sent: list = []

    def _transfer(self, msg, sender, receiver):
        self.sent.append(msg)
        return super()._transfer(msg, sender, receiver)


@pytest.mark.parametrize("construction", [1, 2, 3])
def test_a_block_of_a_construction_1_2_or_3_plan_goes_through(acquisition, construction, monkeypatch):
    """The small station's block has QBER ≈ 0.6 % (below 1.2 %: constructions 1, 2 and 3 build their own
    high-rate code, mother rate 0.91 instead of construction 0's 0.88)."""
    plan = ldpc.plan_ldpc
    monkeypatch.setattr(ldpc, "plan_ldpc", lambda q, **kw: plan(q, **{**kw, "construction": construction}))
    chans: list[_Recorder] = []

    def channel(ei, ej):
        chans.append(_Recorder(ei, ej))
        return chans[-1]

    outcomes: list = []
    r, _, sink, (ei, ej) = _distil(acquisition, pair_channel=channel, on_outcome=outcomes.append, engine="ldpc")
    blk = r.blocks[0]
    assert blk.qber_estimate < 0.012
    assert not blk.abort, blk.abort_reason
    assert outcomes and all(o.accepted for o in outcomes)
    assert r.delivered_bits > 0 and sink.keys
    init = [m for m in chans[0].sent if m.kind == "ldpc/init"]
    assert len(init) == 1 and init[0].fields["construction"] == construction
    assert init[0].fields["rate"] > 0.875  # the code only constructions 1, 2 and 3 build there
    for bits_i, bits_j in sink.keys[test_twoparty.PAIR]:  # the same key at both ends
        assert bits_i.size > 0 and np.array_equal(bits_i, bits_j)


def test_an_unknown_construction_refuses_the_block_naming_it(acquisition):
    r, d, sink, outcomes = _run(acquisition, "j", "ldpc/init", lambda m: _with(m, construction=4), in_transit=False,
                                engine="ldpc")
    _assert_refused(r, d, sink, outcomes, "ldpc/init: construction=4 must be one of (0, 1, 2, 3)")


def test_a_construction_of_another_type_refuses_the_block_naming_it(acquisition):
    r, d, sink, outcomes = _run(acquisition, "j", "ldpc/init", lambda m: _with(m, construction="2"), in_transit=False,
                                engine="ldpc")
    _assert_refused(r, d, sink, outcomes, "message 'ldpc/init' from Cj: field 'construction' is a str, expected int")
