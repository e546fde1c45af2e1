"""``_kernels.merge_tags`` on the paths of its D0/D1 merge: one detector silent, carry and sync tags tied with
detector tags, long interleaved streams (the default station's shape: two detectors of similar rates, a sync per
1024 slots, a short carry)."""

from __future__ import annotations

import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K


def _check(srcs: list[np.ndarray], carry_c: np.ndarray) -> None:
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


@pytest.mark.parametrize("silent", [1, 2, None])
@pytest.mark.parametrize("seed", range(6))
def test_merge_with_a_silent_detector_or_both_and_ties(seed, silent):
    rng = np.random.default_rng(seed)
    sizes = [rng.integers(0, 12), 400, 400, rng.integers(0, 60)]
    srcs = [np.sort(rng.integers(0, 300, s)).astype(np.int64) for s in sizes]
    if silent is not None:
        srcs[silent] = srcs[silent][:0]
    _check(srcs, rng.integers(4, 9, srcs[0].size).astype(np.int16))


def test_merge_of_long_streams_like_a_window():
    rng = np.random.default_rng(7)
    d0 = np.sort(rng.integers(10_000, 5_000_000_000, 40_000)).astype(np.int64)
    d1 = np.sort(rng.integers(10_000, 5_000_000_000, 39_000)).astype(np.int64)
    sync = np.arange(1, 4884, dtype=np.int64) * 10_240_000
    carry = np.sort(rng.integers(10_000, 60_000, 80)).astype(np.int64)
    d1[::97] = d0[: d1[::97].size]  # ties between the detectors
    _check([carry, d0, np.sort(d1), sync], rng.integers(4, 9, carry.size).astype(np.int16))
