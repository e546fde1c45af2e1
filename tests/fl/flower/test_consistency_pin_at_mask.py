"""Review s36 F3: a round of a job that a node pinned for a survivor set that this round's participants cannot form
(a survivor gone for good) is refused before any node trains or reads any key, with the way on in the error;
before, every retry spent the mask stage's key and was refused at the consistency stage. The nodes refuse it at
the mask stage; since session 38 the pinned nodes name their set in the keys reply and the server aborts such a
round before masking, so no mask message is sent at all (the nodes' mask-stage check stays, for a server that
does not keep to the pins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_consistency import N_WORDS, _grid, _server

from labqfl.errors import SecureAggregationError


def test_a_pinned_round_that_cannot_be_formed_is_refused_at_the_mask_stage(local_grid: Any, ring_certs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    first = _server(ring_certs, colluders=0)  # round 1 of job-1 pinned over all three
    grid = _grid(local_grid, ring_certs, tmp_path, lambda n, s, r, cfg: not (s == "unmask" and n == "C3"))
    nodes, weights = first.connect(grid)
    with pytest.raises(SecureAggregationError):
        first.round(grid, 1, np.zeros(N_WORDS), nodes, weights)  # C3 gone after signing
    again = _server(ring_certs, colluders=0)  # the job resumed without C3
    grid = _grid(local_grid, ring_certs, tmp_path, lambda n, s, r, cfg: not (n == "C3" and s != "setup"))
    nodes, weights = again.connect(grid)
    with pytest.raises(SecureAggregationError, match=r"round 1 aborted before masking: its nodes signed survivor "
                                                     r"set\(s\) \[\['C1', 'C2', 'C3'\]\] for this round of job 'job-1' "
                                                     r"before .* cannot form it; .*another --seed"):
        again.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert not grid.mask_cfgs and not [1 for n, s, r, rep in grid.replies if s == "consistency"]
    assert [s for n, s, r, rep in grid.replies if n == "C1"] == ["setup", "keys", "abort"]


def test_the_nodes_refuse_a_pinned_round_at_the_mask_stage_if_the_server_does_not_keep_to_the_pin(
        local_grid: Any, ring_certs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _server(ring_certs, colluders=0)
    grid = _grid(local_grid, ring_certs, tmp_path, lambda n, s, r, cfg: not (s == "unmask" and n == "C3"))
    nodes, weights = first.connect(grid)
    with pytest.raises(SecureAggregationError):
        first.round(grid, 1, np.zeros(N_WORDS), nodes, weights)  # C3 gone after signing
    again = _server(ring_certs, colluders=0)
    monkeypatch.setattr(again, "_keep_to_pin", lambda grid, r, n, nodes, ok, fail, part: (ok, fail))
    grid = _grid(local_grid, ring_certs, tmp_path, lambda n, s, r, cfg: not (n == "C3" and s != "setup"))
    nodes, weights = again.connect(grid)
    with pytest.raises(SecureAggregationError):
        again.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    for c in ("C1", "C2"):
        err = grid.error_of(c, "mask", 1)
        assert ("round 1 of job 'job-1': " + c + " already signed survivors ['C1', 'C2', 'C3'], dropped []") in err, err
        assert "masks nothing and reads no key: refused" in err and "new job ID" in err, err
        assert "difference the sums" in err, err
    assert not [1 for n, s, r, rep in grid.replies if s == "consistency"]
