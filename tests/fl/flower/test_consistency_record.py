"""Review s36 F5: a node's record of the survivor sets it signed (``consistency.json``) is refused, naming the file,
when a round key is not a canonical round number ('01', ' 1', '-1': lookups never matched them, so the node would
sign a second set) or the sets are not sorted lists of distinct names; nothing is written over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.specsig import consistency_record_path, pin_survivors, pinned_survivors


@pytest.mark.parametrize("entry", [{"01": {"survivors": ["C1", "C2"], "dropped": []}},
                                   {" 1": {"survivors": ["C1", "C2"], "dropped": []}},
                                   {"-1": {"survivors": ["C1", "C2"], "dropped": []}},
                                   {"1": {"survivors": [1, 2], "dropped": []}},
                                   {"1": {"survivors": ["C2", "C1"], "dropped": []}},
                                   {"1": {"survivors": ["C1", "C1"], "dropped": []}}])
def test_a_consistency_record_that_is_not_what_the_node_writes_is_refused(tmp_path: Path, entry: dict) -> None:
    path = consistency_record_path(tmp_path, "C1")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "jobs": {"job-1": entry}}), encoding="utf-8")
    for call in (lambda: pinned_survivors(path, "job-1", 1),
                 lambda: pin_survivors(path, "job-1", 1, ["C1", "C3"], ["C2"])):
        with pytest.raises(SecureAggregationError, match="cannot be read") as exc:
            call()
        assert str(path) in str(exc.value)
    assert json.loads(path.read_text())["jobs"]["job-1"] == entry  # nothing written over it
