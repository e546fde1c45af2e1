"""Review s36 F6 (defence in depth): at unmask a deployed node checks the survivor and dropped sets against its own
mask stage's participants again, whatever spec or run its pin came from, before it looks at the signatures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from test_consistency import _deployed, _signer, _spec

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import STATE_PLAN, _check_consistency
from labqfl.fl.flower.specsig import OPERATOR, consistency_record_path, pin_survivors, sign_spec


def test_unmask_rechecks_the_sets_against_this_rounds_participants(ring_certs: dict[str, Path], tmp_path: Path) -> None:
    """A pin {C1, C2} / {C3} from an earlier spec of the job, and this run's mask stage had only C1 and C2: an
    unmask message naming the pinned sets is refused for the participants, before the signatures are looked at."""
    spec = _spec()
    signed = sign_spec(spec, _signer(ring_certs, OPERATOR), valid_s=600)
    cfg = _deployed(ring_certs, tmp_path)["C1"]
    state = RecordDict({STATE_PLAN: ConfigRecord({"round": 1, "run": "run-x", "participants": json.dumps(["C1", "C2"]),
                                                  "t": 2})})
    ctx = Context(run_id=1, node_id=1, node_config=cfg, state=state, run_config={})
    pin_survivors(consistency_record_path(tmp_path / "C1", "C1"), "job-1", 1, ["C1", "C2"], ["C3"])
    with pytest.raises(SecureAggregationError, match=r"together these are not this round's participants \['C1', 'C2'\]"):
        _check_consistency(ctx, ConfigRecord({}), spec, "C1", 1, "run-x", signed, ["C1", "C2"], ["C3"])
