"""The first LDPC block plans for a QBER range (session 43): Ci sends ``qber_low`` — the key's QBER predicted from the
block's test rounds minus one standard deviation (``PairEndI.qber_low``) — beside ``qber`` (plus one) in ``ec/start``,
and Cj's Bob plans with it (``plan_ldpc(q, qber_low=…)``).  Cascade and later blocks send none; a value outside
[0, qber], or one with Cascade, refuses the block with one reason naming it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import test_twoparty
from test_ldpc_construction_pair import _Recorder
from test_message_schema import _assert_refused, _run, _with
from test_twoparty import _distil

import labqfl.qkd.ldpc as ldpc

acquisition = test_twoparty.acquisition


def _starts(acquisition, engine):
    chans: list[_Recorder] = []

    def channel(ei, ej):
        chans.append(_Recorder(ei, ej))
        return chans[-1]

    r, _, sink, _ = _distil(acquisition, pair_channel=channel, engine=engine)
    return r, sink, [m for m in chans[0].sent if m.kind == "ec/start"]


def test_the_first_ldpc_block_sends_its_qber_range_and_bob_plans_with_it(acquisition, monkeypatch):
    plans = []
    plan = ldpc.plan_ldpc
    monkeypatch.setattr(ldpc, "plan_ldpc", lambda q, **kw: plans.append((q, kw)) or plan(q, **kw))
    r, sink, starts = _starts(acquisition, "ldpc")
    assert len(starts) == 1
    q, low = starts[0].fields["qber"], starts[0].fields["qber_low"]
    assert 0 < low < q
    assert plans == [(q, {"qber_low": low})]
    blk = r.blocks[0]
    assert not blk.abort, blk.abort_reason
    assert r.delivered_bits > 0
    for bits_i, bits_j in sink.keys[test_twoparty.PAIR]:
        assert bits_i.size > 0 and np.array_equal(bits_i, bits_j)


def test_cascade_sends_no_qber_range(acquisition):
    _, _, starts = _starts(acquisition, "cascade")
    assert starts and all("qber_low" not in m.fields for m in starts)


@pytest.mark.parametrize(("engine", "low"), [("ldpc", 0.3), ("ldpc", -0.001), ("ldpc", math.nan), ("cascade", 0.001)])
def test_a_qber_low_outside_0_to_qber_or_with_cascade_refuses_the_block_naming_it(acquisition, engine, low):
    r, d, sink, outcomes = _run(acquisition, "i", "ec/start", lambda m: _with(m, qber_low=low), in_transit=False,
                                engine=engine)
    _assert_refused(r, d, sink, outcomes, "ec/start: qber_low=")
