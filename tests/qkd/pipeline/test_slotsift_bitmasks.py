"""slot_sift's bit-mask helpers (LLVM vector compares through Numba intrinsics) against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.qkd.slotsift import _channel_times, _double_clicks_at


@pytest.mark.parametrize("n", [0, 1, 5, 63, 64, 65, 127, 128, 1000, 100_003])
def test_double_click_positions_equal_numpy(n: int) -> None:
    # Cj's key bytes: 0/1 a bit, 2/3 a double click (2|bit), other bytes too (>= 2 counts)
    rng = np.random.default_rng(n)
    for p in (0.0, 0.01, 0.5, 1.0):
        b = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), n, p=[(1 - p) / 2, (1 - p) / 2, p / 3, p / 3, p / 3])
        got = _double_clicks_at(b)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.flatnonzero(b >= 2))


@pytest.mark.parametrize("c", [1, -5, 32767, -32768, 70_000, -70_000])
def test_channel_times_with_any_channel_number(c: int) -> None:
    # a channel outside int16 matches no tag (as numpy's comparison of the int16 channels)
    rng = np.random.default_rng(abs(c))
    for n in (0, 63, 64, 65, 4097):
        ch = rng.choice(np.array([1, 2, -5, 32767, -32768], np.int16), n)
        ts = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
        want = ts[ch == c] - 3
        np.testing.assert_array_equal(_channel_times(ts, ch, c, np.int64(3)), want)
        if -32768 <= c <= 32767:
            np.testing.assert_array_equal(_channel_times(ts, ch, np.int16(c), np.int64(3)), want)
