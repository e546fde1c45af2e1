"""The client node reports the same X_test/Y_test figures as the in-process pipeline on the same
sifted data: the test rounds of equal bases and equal non-zero intensities, the key cell left out
(:meth:`labqfl.contracts.types.PairCounts.matched_test_counts`, docs/postprocessing.md). The node
used to sum every intensity cell of a basis, so unequal-intensity cells (which show errors on a
perfect loop) entered its figures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from labqfl.contracts.types import Announcements, PairCounts
from labqfl.nodes.client import _IPair
from labqfl.qkd.pipeline import Distiller, PairResult

PAIR = "C1-C2"


def _counts(seed: int) -> PairCounts:
    rng = np.random.default_rng(seed)
    shape = (3, 3, 2, 2)  # signal, decoy, vacuum at both ends; every cell populated
    clicks = rng.integers(50, 500, size=shape)
    return PairCounts(PAIR, 10_000, (0.5, 0.1, 0.0), (0.5, 0.1, 0.0), (0.6, 0.2, 0.2), (0.6, 0.2, 0.2),
                      0.7, 0.7, clicks, rng.integers(0, 40, size=shape), np.zeros(shape, dtype=np.int64))


def _sifter(counts: PairCounts) -> Any:
    return lambda *_args: SimpleNamespace(n_key=123, counts=counts)


def _node_figures(chunks: list[PairCounts]) -> PairResult:
    jp = object.__new__(_IPair)  # Ci's driver of the pair, without its sessions
    jp.ch, jp.pair, jp.result = object(), PAIR, PairResult(PAIR)
    jp.node = SimpleNamespace(schedule=SimpleNamespace(slots_of_pair=lambda _p, s: s))
    for k, c in enumerate(chunks):
        jp.end = SimpleNamespace(sift_chunk=_sifter(c))
        jp._sift(Announcements(PAIR, np.zeros(0, np.int64), np.zeros(0, np.uint8)), 100 * k, 100 * (k + 1), 0)
    return jp.result


def _in_process_figures(chunks: list[PairCounts]) -> PairResult:
    d = object.__new__(Distiller)  # the pipeline's sifting step, without a station
    d.slotter = SimpleNamespace(dropped_slots_of_pair=lambda *_a: 0)
    d._played = None
    d.schedule = SimpleNamespace(slots_of_pair=lambda _p, s: s)
    st = SimpleNamespace(pair=PAIR, result=PairResult(PAIR), channel=None,
                         end_j=SimpleNamespace(receive=lambda *_a: None))
    for k, c in enumerate(chunks):
        st.end_i = SimpleNamespace(sift_chunk=_sifter(c))
        d._sift_into(st, Announcements(PAIR, np.zeros(0, np.int64), np.zeros(0, np.uint8)), 100 * k, 100 * (k + 1))
    return st.result


def test_node_and_in_process_pipeline_report_the_same_test_error_rates() -> None:
    chunks = [_counts(1), _counts(2)]
    node, local = _node_figures(chunks), _in_process_figures(chunks)
    assert node.test_clicks == local.test_clicks and node.test_errors_x2 == local.test_errors_x2
    assert node.as_dict(1.0)["error_rate"] == local.as_dict(1.0)["error_rate"]
    expect = {b: sum(c.matched_test_counts(bases=(bb,))[0] for c in chunks) for b, bb in (("X", 0), ("Y", 1))}
    assert node.test_clicks == expect
    every_cell_y = sum(int(c.clicks[:, :, 1, 1].sum()) for c in chunks)
    assert node.test_clicks["Y"] < every_cell_y  # unequal and vacuum intensity cells are left out
