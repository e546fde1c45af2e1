"""The decoy LPs' fast paths against their references: the cached constraint geometry gives the
same rows bit for bit, and the memo returns exactly what solving the LPs again would."""

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from labqfl.qkd.decoy import (
    PHASE_ERROR_TARGETS,
    _constraint_rows,
    _constraint_rows_reference,
    _decoy_yield_bounds,
    decoy_yield_bounds,
)

_MUS = st.lists(st.sampled_from([0.0, 1e-3, 0.03, 0.1, 0.25, 0.5, 0.8]), min_size=1, max_size=3)


def _gains(seed: int, ki: int, kj: int, mu_i, mu_j) -> tuple[np.ndarray, np.ndarray]:
    """Gain bounds of a lossy channel (random transmittance, dark counts, relative width)."""
    rng = np.random.default_rng(seed)
    eta, dark, w = 10 ** rng.uniform(-4, -0.5), 10 ** rng.uniform(-8, -4), rng.uniform(1e-3, 0.5)
    mi, mj = np.asarray(mu_i)[:, None], np.asarray(mu_j)[None, :]
    q = 1.0 - (1.0 - dark) * np.exp(-eta * (mi + mj) * rng.uniform(0.7, 1.3, (ki, kj)))
    return np.clip(q * (1 - w), 0, 1), np.clip(q * (1 + w), 0, 1)


@settings(max_examples=60, deadline=None)
@given(mu_i=_MUS, mu_j=_MUS, seed=st.integers(0, 2**32 - 1), zero_upper=st.booleans())
def test_cached_constraint_rows_equal_the_reference_bit_for_bit(mu_i, mu_j, seed, zero_upper):
    gl, gu = _gains(seed, len(mu_i), len(mu_j), mu_i, mu_j)
    if zero_upper:
        gu[0, 0] = gl[0, 0] = 0.0  # the 1e-12 floor of the row scale
    a, b = _constraint_rows(mu_i, mu_j, gl, gu)
    a_ref, b_ref = _constraint_rows_reference(mu_i, mu_j, gl, gu)
    assert a.shape == a_ref.shape and b.shape == b_ref.shape
    assert a.tobytes() == a_ref.tobytes() and b.tobytes() == b_ref.tobytes()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lower=st.booleans())
def test_memoised_bounds_equal_a_fresh_solve_and_are_not_shared(seed, lower):
    """Every call gives what a fresh solve gives (infeasible inputs included), a second call with
    the same inputs too, and changing a returned array changes nothing later."""
    mu = (0.03, 0.1, 0.0)
    gl, gu = _gains(seed, 3, 3, mu, mu)
    if seed % 3 == 0:
        gl[1, 1], gu[1, 1] = 0.9, 0.95  # inconsistent with any yields
    first = decoy_yield_bounds(mu, mu, gl, gu, targets=PHASE_ERROR_TARGETS, lower=lower)
    fresh = _decoy_yield_bounds(mu, mu, gl.copy(), gu.copy(), PHASE_ERROR_TARGETS, lower)
    assert first.feasible == fresh.feasible
    assert first.y_upper.tobytes() == fresh.y_upper.tobytes() and first.y_lower.tobytes() == fresh.y_lower.tobytes()
    first.y_upper[:] = -1.0
    again = decoy_yield_bounds(mu, mu, gl, gu, targets=PHASE_ERROR_TARGETS, lower=lower)
    assert again.y_upper.tobytes() == fresh.y_upper.tobytes()
    nudged = gu.copy()
    nudged[0, 1] = np.nextafter(nudged[0, 1], 2.0)  # one ulp: a different LP, solved anew
    other = decoy_yield_bounds(mu, mu, gl, nudged, targets=PHASE_ERROR_TARGETS, lower=lower)
    ref = _decoy_yield_bounds(mu, mu, gl, nudged, PHASE_ERROR_TARGETS, lower)
    assert other.y_upper.tobytes() == ref.y_upper.tobytes() and other.feasible == ref.feasible


def _scipy_optimum(a: np.ndarray, b: np.ndarray, col: int, upper: bool) -> float:
    """The LP's optimum from SciPy's HiGHS, solved from scratch (labqfl's solver until 2026-12-05) at
    primal and dual feasibility tolerances of 10^-10, capped by its own duals' weak-duality certificate
    (the primal point is feasible only to the tolerances: seed 365354 below, rows violated by 10^-9 put
    Y_11's minimum 7.7·10^-7 (relative) below what the duals prove); the example is skipped when SciPy
    finds the random gains inconsistent with any yields. At SciPy's default 10^-7 its "optimum" is
    sometimes short of the LP's: for Y_00's maximum at mu = (0.001, 0.03) on both sides, seed 1470,
    7.18708·10^-5, while a point 5·10^-15 from feasible (in A·y ≤ b) reaches 7.18859·10^-5 (CI of
    2026-12-05 failed on it; the certified bound was that exact 7.18859·10^-5)."""
    from scipy.optimize import linprog

    c = np.zeros(a.shape[1])
    c[col] = 1.0
    tight = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
    res = linprog(-c if upper else c, A_ub=a, b_ub=b, bounds=[(0.0, 1.0)] * a.shape[1], method="highs", options=tight)
    assume(res.status == 0)
    lam = np.abs(res.ineqlin.marginals)
    if upper:
        return min(float(-res.fun), float(b @ lam + np.maximum(0.0, c - a.T @ lam).sum()))
    return max(float(res.fun), float(np.minimum(0.0, c + a.T @ lam).sum() - b @ lam))


#: how far (relative) a certified bound may lie on the wrong side of SciPy's reference: rounding in the
#: two certificates' sums (labqfl's and the one capping the reference, :func:`_scipy_optimum`). The
#: reference's primal point alone is no such reference: seeds 110342, 536870912, 365354 below put it
#: 1.5·10^-9, 1.4·10^-8 and 7.7·10^-7 (relative) on the wrong side of what its own duals prove, each
#: time exactly labqfl's bound. decoy_yield_bounds adds a 10^-7 relative margin to every bound; a bound
#: read off a solver stopped early is wrong by far more (test_a_bound_stays_valid_when_the_solver_stops_early).
_ROUNDING = 1e-9


def _on_the_valid_side(value: float, ref: float, upper: bool) -> bool:
    return value >= ref * (1 - _ROUNDING) - 1e-12 if upper else value <= ref * (1 + _ROUNDING) + 1e-12


@example(mu_i=[0.001, 0.03], mu_j=[0.001, 0.03], seed=1470)  # a reference at SciPy's default tolerances fell short
@example(mu_i=[0.001, 0.03], mu_j=[0.03, 0.001], seed=3238)  # equilibration's duals certified only 9.6e-7 of 7.5e-7
@example(mu_i=[0.1, 0.0, 0.001], mu_j=[0.001, 0.03, 0.8], seed=110342)  # the reference's point 1.5e-9 infeasible
@example(mu_i=[0.0, 0.001], mu_j=[0.001, 0.25], seed=604445)  # certified only with scaling 4 (decoy._RESOLVES)
@example(mu_i=[0.0, 0.001], mu_j=[0.001, 0.25], seed=12425)  # certified only with scaling 4
@example(mu_i=[0.0, 0.03, 0.001], mu_j=[0.001], seed=536870912)  # the reference's minimum 1.4e-8 below the truth
@example(mu_i=[0.001, 0.1], mu_j=[0.0, 0.1], seed=365354)  # the reference's point 1e-9 infeasible: its duals cap it
@settings(max_examples=25, deadline=None)
@given(mu_i=_MUS, mu_j=_MUS, seed=st.integers(0, 2**32 - 1))
def test_warm_started_bounds_match_a_fresh_solve(mu_i, mu_j, seed):
    """Every certified bound of the warm-started model lies on the valid side of SciPy's fresh optimum
    (an upper bound never below it, a lower bound never above it, up to :data:`_ROUNDING`) and close to
    it, upper and lower, on feasible random channels. Close: within 10^-4 (relative) + 10^-9; on the
    default station's LPs the bounds lie within 6·10^-8 (relative) of SciPy's."""
    from labqfl.qkd.decoy import _YieldLp

    gl, gu = _gains(seed, len(mu_i), len(mu_j), mu_i, mu_j)
    a, b = _constraint_rows(mu_i, mu_j, gl, gu)
    lp = _YieldLp(a, b)
    for col in (0, 2, 5, 8, 10):
        for upper in (True, False):
            ref = _scipy_optimum(a, b, col, upper)
            feasible, value = lp.bound(col, upper)
            assert feasible
            assert _on_the_valid_side(value, ref, upper)
            assert abs(value - ref) <= abs(ref) * 1e-4 + 1e-9


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_bound_stays_valid_when_the_solver_stops_early(seed):
    """With HiGHS's primal simplex stopped after one iteration its objective value is a feasible point's,
    no optimum, yet the bound is a duality certificate: never below the true maximum (never above the
    true minimum). A bound read off the solver's objective value, as before 2026-12-05, fails this."""
    from labqfl.qkd.decoy import _YieldLp

    mu = (0.03, 0.1, 0.0)
    gl, gu = _gains(seed, 3, 3, mu, mu)
    a, b = _constraint_rows(mu, mu, gl, gu)
    early = _YieldLp(a, b)
    early.h.setOptionValue("simplex_iteration_limit", 1)
    early.h.setOptionValue("presolve", "off")
    early.h.setOptionValue("simplex_strategy", 4)  # primal simplex: its early iterates are feasible, not optimal
    for col in PHASE_ERROR_TARGETS:
        c = col[0] * 4 + col[1]
        hi, lo = _scipy_optimum(a, b, c, True), _scipy_optimum(a, b, c, False)
        assert _on_the_valid_side(early.bound(c, True)[1], hi, True)
        assert _on_the_valid_side(early.bound(c, False)[1], lo, False)
