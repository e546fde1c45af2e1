"""Session 42: the mother rate of construction 2's default codes by measured tables (``ldpc._C2_RATES``,
``ldpc._C2_RATE_CAPS``), no higher
than the f_mother rule's.  The rule took rate 0.66 at QBER 5.25 %, at the high-QBER end of its range, and 48 frames
decoded at f 1.147; rate 0.64 decodes them at 1.121 (docs/reconciliation.md, session 42)."""

from __future__ import annotations

import numpy as np

import labqfl.qkd.ldpc as ldpc
from labqfl.bench import noisy_frame
from labqfl.qkd.ldpc import LdpcAlice, LdpcBob, c2_mother_rate, plan_ldpc
from labqfl.qkd.messaging import LocalChannel


def _rule_rate(q: float, **kw: object) -> float:
    """The f_mother rule's rate: the planner's own f_mother, passed explicitly (which turns the tables off)."""
    f_mother = ldpc._MS_F_MOTHER + ldpc._MS_F_MOTHER_LOW_Q * max(0.0, 0.02 - q)
    return plan_ldpc(q, f_mother=f_mother, **kw).rate  # type: ignore[arg-type]


def test_default_plan_at_5_25_percent_takes_rate_0_64_and_leaks_less() -> None:
    q, seed, frames = 0.0525, 930, 48
    plan = plan_ldpc(q)
    assert (plan.rate, _rule_rate(q)) == (0.64, 0.66)
    x, y = noisy_frame(frames * plan.key_bits_per_frame, q, seed + 525)  # as docs/scripts/ldpc_construction_fer.py
    res = LdpcBob(y, q, plan=plan).run(LocalChannel(LdpcAlice(x, filler_rng=np.random.default_rng(seed))))
    assert res.frame_errors == 0
    np.testing.assert_array_equal(res.corrected, x)
    assert res.efficiency < 1.13, res.efficiency  # 1.1206 at rate 0.64; 1.147 at the rule's 0.66


def test_fast_preset_at_2_percent_takes_rate_0_83_and_leaks_less() -> None:
    """The bench's 2 % point: the rule's rate 0.84 gave the fast preset f 1.1676 on these 48 frames (1.1517 at 0.83)."""
    q, seed, frames = 0.02, 970, 48
    plan = plan_ldpc(q, preset="fast")
    assert (plan.rate, _rule_rate(q, preset="fast")) == (0.83, 0.84)
    x, y = noisy_frame(frames * plan.key_bits_per_frame, q, seed + 200)  # as docs/scripts/ldpc_construction_fer.py
    res = LdpcBob(y, q, plan=plan).run(LocalChannel(LdpcAlice(x, filler_rng=np.random.default_rng(seed))))
    assert res.frame_errors == 0
    np.testing.assert_array_equal(res.corrected, x)
    assert res.efficiency < 1.16, res.efficiency


def test_the_table_never_raises_the_rate_and_keeps_to_construction_2_default_codes() -> None:
    for q in np.arange(0.008, 0.092, 0.001):
        assert plan_ldpc(float(q)).rate <= _rule_rate(float(q))
    for q in (0.02, 0.0488, 0.0525, 0.08):  # where the tables lower the rate
        assert plan_ldpc(q).rate < _rule_rate(q)
        for kw in ({"construction": 0}, {"preset": "long"}, {"code_n": 16384}):  # not measured: the rule
            assert plan_ldpc(q, **kw).rate == _rule_rate(q, **kw)  # type: ignore[arg-type]
    assert c2_mother_rate(0.0462) is None and c2_mother_rate(0.0888) is None and c2_mother_rate(0.0189) is None
    assert c2_mother_rate(0.0463) == 0.66 and c2_mother_rate(0.0525) == 0.64 and c2_mother_rate(0.08) == 0.52
    assert plan_ldpc(0.0188).rate == _rule_rate(0.0188) == 0.84  # below 1.9 %: the rule
    assert c2_mother_rate(0.019) == c2_mother_rate(0.0204) == 0.83 and c2_mother_rate(0.0205) is None
    assert plan_ldpc(0.0525, f_mother=1.15).rate == 0.66  # an explicit f_mother keeps the rule


def test_construction_3_takes_rate_0_87_at_1_35_to_1_4_percent() -> None:
    """Construction 3's heavier rate-0.88 code left 1 of 96 frames undecoded at 1.39 % (f 1.1756; rate 0.87: 1.1438,
    session 43): there the default plan takes 0.87; construction 2 keeps the rule's 0.88, and below 1.35 % both do."""
    for q in (0.0135, 0.0139):
        assert plan_ldpc(q).rate == 0.87 and plan_ldpc(q, construction=2).rate == _rule_rate(q) == 0.88
    assert plan_ldpc(0.0134).rate == 0.88
    assert c2_mother_rate(0.0139) is None and c2_mother_rate(0.0139, 3) == 0.87
