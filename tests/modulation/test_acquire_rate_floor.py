"""`labqfl acquire`'s pair report gives a test error rate (X_test, Y_test) only from
labqfl.qkd.pipeline.MIN_RATE_CLICKS matched clicks on, as `labqfl distill`'s metrics do (review s36 physics F7,
left open by 2abb340): "0.0" from a handful of Y-basis clicks read as a measured rate. The count stays beside it."""

from __future__ import annotations

import pytest

from labqfl.app.acquire import pair_summary
from labqfl.config import load_station_config
from labqfl.qkd.pipeline import MIN_RATE_CLICKS

from .test_four_client_report import D0, D1, EXAMPLE, _report


def test_a_test_rate_from_fewer_than_min_rate_clicks_is_null_with_its_count() -> None:
    cfg = load_station_config(EXAMPLE)
    rep = _report()
    c = rep.counts["C1-C2"]["combo"]
    c[1, 1, 3, 1, D0], c[1, 1, 3, 1, D1] = 0, 5  # decoy-decoy Y: 5 clicks, no error ("0.0" before)
    c14 = rep.counts["C1-C4"]["combo"]
    c14[0, 0, 1, 1, D0], c14[0, 0, 1, 1, D1] = MIN_RATE_CLICKS - 2, 0  # Y test: equal bits, no error; with the
    c14[1, 1, 1, 1, :] = 0
    c14[1, 1, 1, 1, D0] = 1  # decoy-decoy cell's one click, 9 in all
    for name in ("C1-C2", "C1-C4"):
        rep.counts[name]["outcomes"][:] = rep.counts[name]["combo"].sum(axis=(0, 1, 2, 3))
    out = pair_summary(rep, cfg)
    assert out["C1-C2"]["error_rate_counts"]["Y_test"] == 5
    assert out["C1-C2"]["error_rate"]["Y_test"] is None
    assert out["C1-C2"]["error_rate"]["X_test"] == pytest.approx(5 / 100)  # 100 clicks: a rate
    assert out["C1-C2"]["error_rate"]["X_key"] == pytest.approx(10 / 1000)
    assert out["C1-C4"]["error_rate_counts"]["Y_test"] == MIN_RATE_CLICKS - 1
    assert out["C1-C4"]["error_rate"]["Y_test"] is None
    c14[1, 1, 1, 1, D0] = 2  # ten clicks: a rate again
    rep.counts["C1-C4"]["outcomes"][:] = c14.sum(axis=(0, 1, 2, 3))
    out = pair_summary(rep, cfg)
    assert out["C1-C4"]["error_rate_counts"]["Y_test"] == MIN_RATE_CLICKS
    assert out["C1-C4"]["error_rate"]["Y_test"] == 0.0
