"""Review s36 F2: a spec without a job ID belongs to the job its training settings give
(``FlowerSpec.derived_job_id``), so a retry of the same training under a new signed spec (even with another number of
rounds) is the same job, and a second survivor set of a round is refused: before, each spec was its own job and the
server could difference two sums of one round."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_consistency import N_WORDS, _grid, _server, _spec

from labqfl.errors import SecureAggregationError


def test_the_default_job_is_the_training_settings() -> None:
    base = _spec(job_id="")
    job = base.job()
    assert job.startswith("job-") and job == base.derived_job_id()
    for same in (dict(rounds=5), dict(first_round=2), dict(keys="qkd"), dict(graph="ring-k", k=2),
                 dict(self_masks=False), dict(min_survivors=3), dict(colluders=0), dict(data_dir="/x"),
                 dict(test_size=100), dict(stage_timeout_s=5.0)):
        assert dataclasses.replace(base, **same).job() == job, same  # how it is masked or run: one job
    for other in (dict(seed=1), dict(lr=0.01), dict(task="mnist-qnn"), dict(samples_per_client=50),
                  dict(non_iid=True), dict(clip=0.5)):
        assert dataclasses.replace(base, **other).job() != job, other  # other updates: another job
    assert dataclasses.replace(base, job_id="campaign-7").job() == "campaign-7"


def test_a_retry_under_a_new_spec_without_job_id_is_the_same_job(local_grid: Any, ring_certs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """Review s36 F2: job A trains round 1 over everyone; the operator's retry (a new signed spec, no job ID,
    another number of rounds) had a job of its own, so the server could withhold C3 after masking there and
    difference the two sums of round 1. Now both are the job the settings give, and the set is refused."""
    first = _server(ring_certs, job_id="", colluders=0)
    grid = _grid(local_grid, ring_certs, tmp_path)
    nodes, weights = first.connect(grid)
    first.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    retry = _server(ring_certs, job_id="", colluders=0, rounds=3)
    assert retry.signed_spec.spec_id != first.signed_spec.spec_id  # type: ignore[union-attr]
    grid = _grid(local_grid, ring_certs, tmp_path, crash={"C3": 1})
    nodes, weights = retry.connect(grid)
    with pytest.raises(SecureAggregationError, match="round 1 aborted before any unmask"):
        retry.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    job = _spec(job_id="").derived_job_id()
    for c in ("C1", "C2"):
        assert f"round 1 of job {job!r}: this node already signed survivors ['C1', 'C2', 'C3']" in \
            grid.error_of(c, "consistency", 1)
    assert not [1 for n, s, r, rep in grid.replies if s == "unmask"]
