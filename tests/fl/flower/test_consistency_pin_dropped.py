"""Review s37 F4: a round of a job that the survivors pinned with a client dropped after masking (S, D ≠ ∅) can
only be unmasked if D is lost after masking again. Retrained with every client back (a resume of a run over nodes
retrains from its last checkpoint), the participants are S ∪ D, which passed the mask-stage check, so every node
masked (spending the round's key) and was refused at the consistency stage, on every retry. Now each node that
holds such a pin refuses at the mask stage, before it trains or reads any key, with the way on in the error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_consistency import N_WORDS, _grid, _server

from labqfl.errors import SecureAggregationError


def test_a_round_pinned_with_a_dropped_client_is_refused_at_the_mask_stage_when_it_is_back(
        local_grid: Any, ring_certs: dict[str, Path], tmp_path: Path) -> None:
    first = _server(ring_certs, colluders=0)  # need 2 of 3: C3 lost after masking round 1, unmasked over C1, C2
    grid = _grid(local_grid, ring_certs, tmp_path, crash={"C3": 1})
    nodes, weights = first.connect(grid)
    assert first.round(grid, 1, np.zeros(N_WORDS), nodes, weights).dropped_after_masking == ["C3"]
    again = _server(ring_certs, colluders=0)  # the job resumed from before round 1, C3 back
    grid = _grid(local_grid, ring_certs, tmp_path)
    nodes, weights = again.connect(grid)
    with pytest.raises(SecureAggregationError):
        again.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    for c in ("C1", "C2"):
        err = grid.error_of(c, "mask", 1)
        assert err, f"{c} did not refuse at the mask stage"
        assert ("round 1 of job 'job-1': " + c + " already signed survivors ['C1', 'C2'], dropped ['C3']") in err, err
        assert "masks nothing and reads no key: refused" in err and "another --seed" in err, err
        assert "['C3'], cannot be in its aggregate" in err, err
    # no pinning node masked, and no consistency message was sent (C3, which signed nothing for round 1, holds no
    # pin and masks: its pads of the round are spent, see docs/secure_aggregation.md §9)
    assert not [1 for n, s, r, rep in grid.replies if s == "mask" and n != "C3" and not rep.has_error()]
    assert not [1 for n, s, r, rep in grid.replies if s == "consistency"]
