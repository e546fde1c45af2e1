"""Review s37 F4: a round of a job that the survivors pinned with a client dropped after masking (S, D ≠ ∅) can
only be unmasked if D is lost after masking again. Retrained with every client back (a resume of a run over nodes
retrains from its last checkpoint), the participants are S ∪ D, which passed the mask-stage check, so every node
masked (spending the round's key) and was refused at the consistency stage, on every retry. Then (28d93e7) each
node that holds such a pin refused at the mask stage, before it trained or read any key, with the way on in the
error; but C3, back and holding no pin, still masked. Now the pinned nodes refuse at the keys stage, so the round
is aborted before any mask message (test_consistency_pin_keys.py checks the key stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_consistency import N_WORDS, _grid, _server

from labqfl.errors import SecureAggregationError


def test_a_round_pinned_with_a_dropped_client_is_refused_at_the_keys_stage_when_it_is_back(
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
        err = grid.error_of(c, "keys", 1)
        assert err, f"{c} did not refuse at the keys stage"
        assert ("round 1 of job 'job-1': " + c + " already signed survivors ['C1', 'C2'], dropped ['C3']") in err, err
        assert "masks nothing and reads no key: refused" in err and "another --seed" in err, err
        assert "['C3'], cannot be in its aggregate" in err, err
    # no mask message at all: also C3, which signed nothing for round 1 and holds no pin, masked nothing
    assert not [1 for n, s, r, rep in grid.replies if s in ("mask", "consistency")]
