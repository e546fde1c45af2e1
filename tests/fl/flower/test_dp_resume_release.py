"""A DP round of one training job is masked once, whatever signed spec asks for it again (review s36 cons, "DP on
resume"): ``labqfl run --resume`` signs a new spec for the interrupted segment, and a round masked under the first
spec (perhaps already unmasked: a noisy release) was masked again under the second, fresh noise over the same
updates, so the server could average the two releases of one round while the accountant counted one. The node's
record (``specsig.claim_mask``) now keeps the DP rounds it masked per job and refuses the second; without DP the
consistency pin decides (one survivor set per round of a job), so another spec may mask the round again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.identity import ReplySigner
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import OPERATOR, SignedSpec, claim_mask, sign_spec, spec_record_path
from labqfl.net import make_node_certs


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> ReplySigner:
    d = tmp_path_factory.mktemp("certs-dp")
    make_node_certs(d, ["C1", "C2", "C3", OPERATOR])
    return ReplySigner((d / f"node-{OPERATOR}.pem").read_bytes(), (d / f"node-{OPERATOR}.key").read_bytes())


def _signed(op: ReplySigner, **kw: Any) -> SignedSpec:
    base: dict[str, Any] = dict(task="mnist-lenet5", clients=3, q=16, rounds=4, keys="csprng", clip=1.0,
                                rounding="nearest", node_wait_s=1.0)
    base.update(kw)
    return sign_spec(FlowerSpec(**base), op, valid_s=600)


def test_a_dp_round_of_a_job_is_masked_once_across_signed_specs(operator: ReplySigner, tmp_path: Path) -> None:
    record = spec_record_path(tmp_path, "C1")
    first = _signed(operator, dp_epsilon=8.0, dp_delta=1e-5)
    resumed = _signed(operator, dp_epsilon=8.0, dp_delta=1e-5, first_round=2)  # the resume's own signature
    assert first.spec_id != resumed.spec_id and first.spec().job() == resumed.spec().job()
    claim_mask(record, first, 1, "run-a")
    claim_mask(record, first, 2, "run-a")  # interrupted after masking round 2
    with pytest.raises(SecureAggregationError, match="DP training job .* masked its upload of that round already"):
        claim_mask(record, resumed, 2, "run-b")
    claim_mask(record, resumed, 3, "run-b")  # the next round goes on
    doc = json.loads(record.read_text())
    assert doc["dp_jobs"][first.spec().job()] == {"1": first.spec_id, "2": first.spec_id, "3": resumed.spec_id}


def test_without_dp_another_spec_of_the_job_may_mask_the_round_again(operator: ReplySigner, tmp_path: Path) -> None:
    record = spec_record_path(tmp_path, "C1")
    first, resumed = _signed(operator), _signed(operator, first_round=2)
    claim_mask(record, first, 2, "run-a")
    claim_mask(record, resumed, 2, "run-b")  # no noisy release to repeat; the consistency pin holds the set
    assert "dp_jobs" not in json.loads(record.read_text())


def test_another_dp_job_is_its_own(operator: ReplySigner, tmp_path: Path) -> None:
    record = spec_record_path(tmp_path, "C1")
    claim_mask(record, _signed(operator, dp_epsilon=8.0, dp_delta=1e-5), 1, "run-a")
    claim_mask(record, _signed(operator, dp_epsilon=8.0, dp_delta=1e-5, seed=7), 1, "run-b")  # other updates


def test_a_damaged_dp_table_is_refused_naming_the_record(operator: ReplySigner, tmp_path: Path) -> None:
    record = spec_record_path(tmp_path, "C1")
    signed = _signed(operator, dp_epsilon=8.0, dp_delta=1e-5)
    claim_mask(record, signed, 1, "run-a")
    doc = json.loads(record.read_text())
    doc["dp_jobs"] = {"job-x": {"one": "abc"}}
    record.write_text(json.dumps(doc))
    with pytest.raises(SecureAggregationError, match="cannot be read"):
        claim_mask(record, signed, 2, "run-a")
