"""The simulator's scratch buffers (``_Acq.buffer``): exactly the shape asked for and always C-contiguous,
whatever was asked before. A strided view is another Numba specialisation of every kernel it reaches: until
2026-12-05 a window needing fewer columns than an earlier one got a slice of the wider buffer, and the optics
node compiled ``detector_window`` a second time mid-acquisition on a cold cache (docs/nodes.md)."""

from __future__ import annotations

import numpy as np
from labqfl.sim_backends.testbed import _Acq


def _acq() -> _Acq:
    return _Acq(epoch=0, period_ps=10_000.0, n_slots=0, keys={}, delays={}, channels={}, res_ps=1, cut_margin=0)


def test_a_narrower_or_shorter_request_gets_a_contiguous_array_of_its_shape_in_the_same_memory() -> None:
    acq = _acq()
    first = acq.buffer("meas", (2, 1000), np.int64)
    for shape in ((2, 400), (1, 999), (2, 1000), (2, 7), (3, 100)):
        b = acq.buffer("meas", shape, np.int64)
        assert b.shape == shape and b.dtype == np.int64
        assert b.flags.c_contiguous
        assert np.shares_memory(b, first)  # reused, not reallocated: at most 2000 elements
    assert acq.buffer("meas", (2, 1001), np.int64).flags.c_contiguous  # grown


def test_buffers_of_different_names_do_not_share_memory() -> None:
    acq = _acq()
    a = acq.buffer("dark", (2, 64), np.int64)
    b = acq.buffer("meas", (2, 64), np.int64)
    assert not np.shares_memory(a, b)
