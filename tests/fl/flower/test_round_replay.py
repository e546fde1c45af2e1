"""A node masks one upload per round of an operator-signed spec, in rising round order, whatever the run
tag (labqfl.fl.flower.specsig.claim_mask; review s35 second look F2).

Training is deterministic in (parameters, round): a server that had a node mask round 1 again after
round 2 under the same run tag (or in a second Flower run that reuses the tag) differenced the replays
(three replays of round 1, one client withheld each time: A12 + A13 - A23 = C1's quantised update
exactly; with DP, k replays average the noise down by √k). These tests fail on the code before: every
replay was answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_spec_replay import N_WORDS, NAMES, _grid, _signed, _spec, _train
from test_spec_replay import certs as certs  # noqa: F401  (the module's fixture)

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.specsig import claim_round, spec_record_path


def test_round_one_again_after_round_two_in_the_same_run_tag_is_refused_by_every_node(
        local_grid: Any, certs: Path, tmp_path: Path) -> None:
    """The reviewer's r3/r1: one run tag, rounds 1, 2, then 1 again (same parameters)."""
    signed = _signed(certs)
    srv = LabqflServer(_spec(), signed_spec=signed)
    grid = _grid(local_grid, certs, tmp_path)
    nodes, weights = srv.connect(grid)
    for r in (1, 2):
        srv.round(grid, r, np.zeros(N_WORDS), nodes, weights, end=False)
    with pytest.raises(SecureAggregationError, match="round 1 aborted"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights, end=False)
    for c in NAMES:
        err = grid.error_of(c, "keys", 1)
        assert f"round 1 of the operator-signed spec {signed.spec_id}: this node already masked" in err, err
        assert str(spec_record_path(tmp_path / c, c)) in err
    assert sum(1 for _, s, r, rep in grid.replies if s == "mask" and r == 1 and not rep.has_error()) == 3  # once


def test_a_second_flower_run_that_reuses_the_run_tag_is_refused(
        local_grid: Any, certs: Path, tmp_path: Path) -> None:
    """The reviewer's r13: a fresh Flower run (new node Contexts) of the same signed spec under the first
    run's tag trained every round again."""
    signed = _signed(certs)
    first = LabqflServer(_spec(), signed_spec=signed)
    _train(first, _grid(local_grid, certs, tmp_path), range(1, 3))
    again = LabqflServer(_spec(), signed_spec=signed)
    again.run_tag = first.run_tag
    grid = _grid(local_grid, certs, tmp_path)
    nodes, weights = again.connect(grid)
    with pytest.raises(SecureAggregationError, match="round 1 aborted"):
        again.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    for c in NAMES:
        assert "already masked its upload of round 1" in grid.error_of(c, "keys", 1)


def test_the_mask_record_refuses_a_second_mask_whatever_the_run_tag_and_backward_rounds(
        certs: Path, tmp_path: Path) -> None:
    """The mask stage's own record: a keys stage may repeat (a node restarted before it masked), an upload
    may not; rounds go upward; another spec has its own rounds."""
    from labqfl.fl.flower.specsig import claim_mask

    signed, path = _signed(certs), tmp_path / "rec.json"
    claim_round(path, signed, 1, "T")
    claim_round(path, signed, 1, "T")  # a keys stage repeated under its run tag before masking: goes on
    claim_mask(path, signed, 1, "T")
    for tag in ("T", "U"):
        with pytest.raises(SecureAggregationError, match="already masked its upload of round 1"):
            claim_mask(path, signed, 1, tag)
    with pytest.raises(SecureAggregationError, match="already masked its upload of round 1"):
        claim_round(path, signed, 1, "T")
    claim_round(path, signed, 3, "T")
    claim_mask(path, signed, 3, "T")
    with pytest.raises(SecureAggregationError, match="already masked round 3, a later round"):
        claim_mask(path, signed, 2, "T")
    other = _signed(certs)  # a new signature (labqfl run's next segment, a resumed run): its own rounds
    claim_round(path, other, 1, "V")
    claim_mask(path, other, 1, "V")
