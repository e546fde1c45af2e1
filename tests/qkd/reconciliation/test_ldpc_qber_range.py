"""Session 43: ``plan_ldpc(q, qber_low=…)`` plans for a QBER range — the mother code of ``q`` (so a block at ``q``
still decodes), the filler count and first attempt of ``qber_low`` (so a block whose QBER lies lower discloses
less), steps at least 1/6 of the way between them.  The pipeline's first LDPC block uses it: its estimate from
few test clicks came out 1.4–2.5 times the key's QBER on the default station (docs/reconciliation.md, session 43)."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.bench import noisy_frame
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.ldpc import LdpcAlice, LdpcBob, build_code, plan_ldpc
from labqfl.qkd.messaging import LocalChannel


def test_a_range_keeps_the_code_and_the_most_disclosed_and_starts_lower() -> None:
    a, b = plan_ldpc(0.0116), plan_ldpc(0.0116, qber_low=0.007)
    assert (b.rate, b.code_n, b.z, b.construction) == (a.rate, a.code_n, a.z, a.construction) == (0.89, 65536, 256, 3)
    code = build_code(a.code_n, a.rate, a.code_seed, a.z, a.construction)
    assert a.d < b.d <= code.untainted.size and b.start_revealed < a.start_revealed
    assert code.m - b.d + b.start_revealed < code.m - a.d + a.start_revealed  # the first attempt discloses less
    last_a, last_b = code.m - a.d + a.reveal_limit, code.m - b.d + b.reveal_limit  # m + f_extra·h(q)·(n − d)
    assert abs(last_b - last_a) <= 0.01 * last_a  # the last about as much as before (n − d is a little smaller)
    assert b.step >= 0.95 * 1.08 * (binary_entropy(0.0116) - binary_entropy(0.007)) * (code.n - b.d) / 6
    assert plan_ldpc(0.0116, qber_low=None) == a == plan_ldpc(0.0116, qber_low=0.0116) == plan_ldpc(0.0116, qber_low=0.02)


@pytest.mark.parametrize(("q_true", "f_above", "f_below"), [(0.0085, 1.40, 1.30), (0.0116, None, 1.25)])
def test_a_range_discloses_less_when_the_estimate_was_high_and_still_decodes_at_its_top(q_true, f_above, f_below):
    """Estimate 1.16 %, low end 0.7 %: a block at 0.85 % (as on the default station, where the first block's estimate
    came out 1.4–2.5 times the key's QBER) needs f 1.459 with the plan of 1.16 % alone, 1.236 with the range
    (10 frames, measured in session 43); a block at 1.16 % itself still decodes, in more attempts."""
    frames, seed = 6, 5
    f = {}
    for low in (None, 0.007):
        plan = plan_ldpc(0.0116, qber_low=low)
        x, y = noisy_frame(frames * plan.key_bits_per_frame, q_true, seed)
        res = LdpcBob(y, 0.0116, plan=plan).run(LocalChannel(LdpcAlice(x, filler_rng=np.random.default_rng(seed))))
        assert res.frame_errors == 0
        np.testing.assert_array_equal(res.corrected, x)
        f[low] = res.leaked_bits / (x.size * binary_entropy(q_true))
    assert f[0.007] < f_below, f
    if f_above is not None:
        assert f[None] > f_above, f
