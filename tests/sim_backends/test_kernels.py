"""Fast kernels of the simulator against obviously-correct NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K


@pytest.mark.parametrize("seed", range(20))
def test_merge_tags_equals_a_stable_sort_of_the_concatenation(seed):
    rng = np.random.default_rng(seed)
    # few distinct times so that ties between (and within) the streams are frequent
    srcs = [np.sort(rng.integers(0, 40, rng.integers(0, 30))).astype(np.int64) for _ in range(4)]
    carry_c = rng.integers(1, 9, srcs[0].size).astype(np.int16)
    chans = [np.int16(2), np.int16(3), np.int16(1)]
    n = sum(s.size for s in srcs)
    out_t = np.empty(n, dtype=np.int64)
    out_c = np.empty(n, dtype=np.int16)
    K.merge_tags(srcs[0], carry_c, srcs[1], chans[0], srcs[2], chans[1], srcs[3], chans[2], out_t, out_c)
    t = np.concatenate(srcs)
    c = np.concatenate([carry_c] + [np.full(s.size, ch, dtype=np.int16) for s, ch in zip(srcs[1:], chans, strict=True)])
    order = np.argsort(t, kind="stable")
    np.testing.assert_array_equal(out_t, t[order])
    np.testing.assert_array_equal(out_c, c[order])
