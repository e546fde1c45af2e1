"""Honest uncertainties: over repeated seeds the truth lies inside ±1.96σ about 95 % of the time.

Bound: with a true coverage of 95 %, P(fewer than 16 of 20 inside) = 0.3 % and P(fewer than 33 of
40) = 0.6 % (binomial), so the checks below fail only for uncertainties that are too small (or
for a biased estimator), not by bad luck. The seeds are fixed, so the test is deterministic.
"""

from __future__ import annotations

from labqfl.calibration import dark_counts, vpi_bias


def test_calib_dark_count_coverage_over_seeds(station_factory, calh) -> None:
    inside = total = 0
    for seed in range(20):
        st = station_factory(calh.snspd_set, seed=100 + seed)
        r = dark_counts(calh.ctx_for(st, seed), integration_s=1.0, bias_steps=())
        for q in r.quantities:
            assert q.true is not None
            total += 1
            inside += abs(q.value - q.true) < 1.96 * q.uncertainty
        st.close()
    assert total == 40
    assert inside >= 33, f"only {inside}/40 dark-count rates within 1.96σ of the truth"


def test_calib_vpi_coverage_over_seeds(station_factory, calh) -> None:
    inside = {"v_pi_v": 0, "bias_phase_rad": 0}
    n = 20
    for seed in range(n):
        st = station_factory(calh.snspd_set, seed=200 + seed)
        r = vpi_bias(calh.ctx_for(st, seed), ["C2"], n_points=21, integration_s=0.005)
        for q in r.quantities:
            key = q.name.split(".", 1)[1]
            inside[key] += abs(q.value - q.true) < 1.96 * q.uncertainty
        st.close()
    for key, k in inside.items():
        assert k >= 16, f"only {k}/{n} of C2.{key} within 1.96σ of the truth"
