"""``labqfl run``'s metrics.json carries, per pair, the counts each error rate is over, in process and over
nodes (physics review s34 F4).

``distill.pairs.<Ci-Cj>.error_rate`` gave ``X_key``, ``X_test`` and ``Y_test`` with no count: a Y test rate of
0 from five decoy–decoy clicks read like a pair's QBER. ``PairResult.as_dict`` (what ``labqfl distill --json``,
the in-process run's :func:`labqfl.mainjob.distill_pair_metrics` and a client node's ``ctl/results`` are built
from) now adds ``error_rate_counts`` {``X_key``: processed bits, ``X_test``, ``Y_test``: matched test clicks}.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_helpers import armed_client, disarm

from labqfl.contracts.types import Announcements, PairCounts
from labqfl.mainjob import distill_pair_metrics
from labqfl.nodes.client import _IPair
from labqfl.nodes.runjob import _pair_metrics, _timeline
from labqfl.qkd.messaging import Message
from labqfl.qkd.pipeline import PairResult

ACQ = "nodes/00000000-0000-4000-8000-0000000000f4"


def _fill(r: PairResult) -> PairResult:
    """A pair's totals: 20,000 key bits with 110 errors, 2,621 X test clicks (41 errors), 5 Y test clicks (none)."""
    r.processed_bits, r.key_errors = 20_000, 110
    r.test_clicks, r.test_errors_x2 = {"X": 2621, "Y": 5}, {"X": 82, "Y": 0}
    return r


def _check(d: dict[str, Any]) -> None:
    assert d["error_rate_counts"] == {"X_key": 20_000, "X_test": 2621, "Y_test": 5}
    # Y_test from 5 clicks is no measurement: None, its count beside it (review s36 physics F7; was 0.0)
    assert d["error_rate"] == {"X_key": pytest.approx(0.0055), "X_test": pytest.approx(41 / 2621), "Y_test": None}


def test_a_pair_results_dict_carries_the_counts_of_its_error_rates() -> None:
    _check(_fill(PairResult("C1-C2")).as_dict(1.0))
    empty = PairResult("C1-C3").as_dict(1.0)
    assert empty["error_rate_counts"] == {"X_key": 0, "X_test": 0, "Y_test": 0}
    assert empty["error_rate"] == {"X_key": None, "X_test": None, "Y_test": None}


def test_the_in_process_runs_metrics_carry_them() -> None:
    pairs = distill_pair_metrics({"C1-C2": _fill(PairResult("C1-C2"))}, 1.0)
    _check(pairs["C1-C2"])
    assert pairs["C1-C2"]["qber_x"] == pytest.approx(0.0055)


@pytest.fixture()
def c1(tmp_path: Path) -> Any:
    """A real client node C1 armed for ``ACQ`` (its pair threads as Ci waiting for announcements)."""
    c = armed_client(tmp_path, "C1", ACQ)
    yield c
    disarm(c)


def test_the_nodes_runs_metrics_carry_them_from_ci_s_results(c1: Any) -> None:
    """Over nodes, metrics.json's pairs are Ci's ``ctl/results`` (its PairResult as a dict) through
    :func:`labqfl.nodes.runjob._pair_metrics`: the counts Ci's pair thread summed arrive unchanged."""
    _fill(c1.a.i_pairs["C1-C2"].result)
    rep = c1.node.ctl_wait(Message("ctl/wait", {"acq": ACQ, "timeout": 0.1}))
    pairs = _pair_metrics(json.loads(str(rep.get("results"))))
    assert set(pairs) == set(c1.a.i_pairs) and "C1-C2" in pairs
    _check(pairs["C1-C2"])
    assert pairs["C1-C3"]["error_rate_counts"] == {"X_key": 0, "X_test": 0, "Y_test": 0}
    # the report's timeline over nodes carries the X test clicks too (its minimum-clicks rule; it was None)
    tl = {e["pair"]: e for e in _timeline(pairs, 1.0)}
    assert tl["C1-C2"]["qber_events"] == pairs["C1-C2"]["error_rate_counts"]["X_test"]


def test_ci_s_pair_thread_counts_the_test_clicks_its_sifting_matched() -> None:
    """Ci's pair thread sums, per sifted chunk, the clicks of the matched test cells
    (:meth:`~labqfl.contracts.types.PairCounts.matched_test_counts`, as the in-process pipeline): they are the
    ``error_rate_counts`` its ``ctl/results`` carry, and the rates are over them."""
    rng = np.random.default_rng(4)
    shape = (3, 3, 2, 2)  # signal, decoy, vacuum at both ends
    chunks = [PairCounts("C1-C2", 10_000, (0.5, 0.1, 0.0), (0.4, 0.1, 0.0), (0.6, 0.2, 0.2), (0.6, 0.2, 0.2), 0.7,
                         0.7, rng.integers(50, 500, size=shape), rng.integers(0, 40, size=shape),
                         np.zeros(shape, dtype=np.int64)) for _ in range(2)]
    ip = object.__new__(_IPair)  # Ci's driver of the pair, without its sessions
    ip.ch, ip.pair, ip.result = object(), "C1-C2", PairResult("C1-C2")
    ip.node = types.SimpleNamespace(schedule=types.SimpleNamespace(slots_of_pair=lambda _p, s: s))
    for k, c in enumerate(chunks):
        ip.end = types.SimpleNamespace(sift_chunk=lambda *_a, c=c: types.SimpleNamespace(n_key=123, counts=c))
        ip._sift(Announcements("C1-C2", np.zeros(0, np.int64), np.zeros(0, np.uint8)), 100 * k, 100 * (k + 1), 0)
    d = ip.result.as_dict(1.0)
    for name, b in (("X_test", 0), ("Y_test", 1)):
        clicks, errors_x2 = (sum(v) for v in zip(*(c.matched_test_counts(bases=(b,)) for c in chunks), strict=True))
        assert d["error_rate_counts"][name] == clicks > 0  # unequal signals: the decoy-decoy cell only
        assert d["error_rate"][name] == pytest.approx(errors_x2 / 2 / clicks)
    assert clicks == sum(int(c.clicks[1, 1, 1, 1]) for c in chunks)
