"""One definition of the test-round error count: ``PairCounts.matched_test_counts``."""

from __future__ import annotations

import numpy as np

from labqfl.contracts.types import PairCounts


def _counts(intensities_i: tuple[float, ...], intensities_j: tuple[float, ...]) -> PairCounts:
    ki, kj = len(intensities_i), len(intensities_j)
    clicks = np.arange(ki * kj * 4, dtype=np.int64).reshape(ki, kj, 2, 2) + 10
    errors_x2 = clicks // 5
    return PairCounts("C1-C2", 10**6, intensities_i, intensities_j, (0.5,) * ki, (0.5,) * kj, 0.5, 0.5,
                      clicks, errors_x2, np.zeros_like(clicks))


def test_matched_cells_only_and_key_cell_left_out() -> None:
    c = _counts((0.4, 0.1, 0.0), (0.4, 0.1, 0.0))
    clicks, errs = c.matched_test_counts()
    # equal non-zero intensities: (0,0) and (1,1); the key cell (0,0,X,X) is left out
    want_c = int(c.clicks[0, 0, 1, 1] + c.clicks[1, 1, 0, 0] + c.clicks[1, 1, 1, 1])
    want_e = int(c.errors_x2[0, 0, 1, 1] + c.errors_x2[1, 1, 0, 0] + c.errors_x2[1, 1, 1, 1])
    assert (clicks, errs) == (want_c, want_e)
    assert c.matched_test_counts(bases=(0,)) == (int(c.clicks[1, 1, 0, 0]), int(c.errors_x2[1, 1, 0, 0]))


def test_unequal_intensity_lists_pair_by_value_not_index() -> None:
    c = _counts((0.4, 0.1), (0.1, 0.4))
    clicks, _ = c.matched_test_counts(bases=(1,))
    assert clicks == int(c.clicks[0, 1, 1, 1] + c.clicks[1, 0, 1, 1])
    # no (signal, signal) cell by index here: nothing is mistaken for the key cell
    assert c.matched_test_counts(bases=(0,))[0] == int(c.clicks[0, 1, 0, 0] + c.clicks[1, 0, 0, 0])
